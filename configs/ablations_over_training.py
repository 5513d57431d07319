"""Figure `ablations_over_training` (IH, 'Argument 3'): every head ablated with the attention
patterns preserved, across training.

    python -m reproduce.figure --name ablations_over_training

At an evenly spaced subset of each model's log-spaced training snapshots (the formation
window's two ends always in it), each head of the 1L and 2L models is ablated with every pattern
and norm scale held at the unablated run's, on ``induction_formation``'s held-out windows.
Plotted per head: the change in the ICL score (on all its ICL windows), beside the full
ablation's, and the per-token loss change on its K = 64 per-token windows projected on the unit
before-and-after vector (the 2L model's per-token losses at its window's end minus its start).
Claims (2L, IH "Argument 3", pattern-preserving): after the window the induction heads together
remove almost all (≥ 0.9) of the ICL, at the window's start at most a quarter of that; most other
heads remove < 0.1; the most negative projection is an induction head's.
"""

import ml_collections

from reproduce.config import project_module


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l", "attn2l")  # model configs (configs/<name>.py) trained at the preset
  # The shared pass this figure reads (windows, per-token losses, formation window, ``formed``).
  c.formation = project_module("configs", "induction_formation").get_config(preset)
  # Snapshots measured per model, an evenly spaced subset of the log-spaced snapshots (0: every
  # snapshot): the cost per snapshot is one pass over the ICL windows per kind of ablation and
  # heads × K windows × T tokens of unembedding for the projection.
  c.snapshots = {"test": 0, "cpu": 5}.get(preset, 16)
  # IH, "Argument 3": ablating the induction heads removes "almost all" of the in-context
  # learning, read as at least nine tenths (as in head_ablations).
  c.almost_all = 0.9
  # Before the window: IH finds "more than 75% of the final ICL forms inside the window", so at
  # its start the induction heads can carry at most the quarter left: their ΔICL there at most
  # 0.25 × after it.
  c.before_fraction = 0.25
  # The other heads each remove less than what "almost all" leaves, 1 − 0.9.
  c.little = 0.1
  c.lock()
  return c
