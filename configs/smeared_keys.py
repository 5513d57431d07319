"""Figure `smeared_keys` (IH, 'Argument 2'): smeared-key models beside the vanilla ones.

    python -m reproduce.figure --name smeared_keys

The best head's prefix matching and the ICL score over training of the 1L and 2L models with and
without smeared keys (configs/attn{1,2}l_smeared.py), from the snapshot passes that
`induction_formation` makes (shared), and each smeared head's learned σ(α).  Claims (IH,
"Argument 2"): the smeared 1L model forms an induction head (best prefix matching ≥ 0.3, where
the vanilla 1L stays < 0.1) and learns more in context than the vanilla 1L (a lower final ICL
score, beyond 2 standard errors of the difference); the smeared 2L model forms its induction
head at fewer tokens than the vanilla 2L.
"""

import ml_collections

from reproduce.config import project_module


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  # The vanilla models, then their smeared-key twins (trained once, shared with other figures).
  c.models = ("attn1l", "attn2l", "attn1l_smeared", "attn2l_smeared")
  # induction_formation's settings at this preset: the same per-snapshot passes (shared) and its
  # thresholds: formed (prefix matching ≥ 0.3), unformed (< 0.1), the window's token ratio.
  c.formation = project_module("configs", "induction_formation").get_config(preset)
  # The smeared models' own passes (no other figure reads them) leave out what this figure never
  # reads: the per-token losses and the previous-token scores and traces.
  c.smeared_formation = project_module("configs", "induction_formation").get_config(preset)
  with c.smeared_formation.unlocked():
    c.smeared_formation.token_loss_windows = 0
    c.smeared_formation.previous_token_windows = 0
  # "Gains ICL": the smeared 1L's final ICL score below the vanilla 1L's by more than this many
  # standard errors of the difference, sqrt(se_smeared² + se_vanilla²) (each over the windows).
  c.standard_errors = 2.0
  c.lock()
  return c
