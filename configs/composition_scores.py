"""Figure `composition_scores` (FW, 'Analyzing a Two-Layer Model', corrected): Q-, K- and
V-composition of every head with every head of each later layer (every layer pair l1 < l2), minus
the random baseline.

    python -m reproduce.figure --name composition_scores

Claims (experiments/composition_scores.py): each induction head's strongest K-composition is
with a previous-token head; that K-composition exceeds every head pair's at random init; its Q-
and V-composition stay within the random-init range.  The erratum's permuted-norm variant is
drawn below."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn2l",)  # model configs (configs/<name>.py) trained at the preset and analysed
  # Random factor pairs of the model's shapes (d_model × d_head) averaged for the baseline.
  c.baseline_samples = 256
  c.seed = 0
  # Previous-token / induction score that labels a head: attention of 0.3 on one position is
  # ≥ 7× a uniform pattern's over the induction probe's 50-token repeat (1/50 per position).
  c.role_threshold = 0.3  # roles measured as experiment.head_roles does (see ov_qk_scatter)
  c.draw_erratum = True
  c.lock()
  return c
