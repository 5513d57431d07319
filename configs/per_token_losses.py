"""Figure `per_token_losses` (IH, 'Argument 1''s other views): the phase change in per-token
losses and in the weights.

    python -m reproduce.figure --name per_token_losses

From induction_formation's shared pass (no pass of its own): one PCA over every snapshot's
per-token losses of the 1L and 2L models, their trajectories in PC1–PC2; Loss(tokens seen,
context index) and ∂Loss/∂ln i_ctx as heatmaps; the previous-token K-composition QK trace of the
2L model's layer-1 heads.  Claims (2L): the sharpest turn of its trajectory lies in the
formation window, and the 1L trajectory turns less over the same span; the induction head's
trace gains at least half its rise in the window; after the window the loss falls further with
ln i_ctx beyond the ICL score's early position than before it."""

import ml_collections

from reproduce.config import project_module


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l", "attn2l")  # model configs (configs/<name>.py), trained at the preset
  # The shared pass and formation window it reads: induction_formation's own settings, so the
  # two figures share one pass per model (Model.shared).
  c.formation = project_module("configs", "induction_formation").get_config(preset)
  # Log-spaced bins of the context index for the heatmaps: 16 over 1 … 256 (ratio ≈ 1.4 each);
  # the first bins hold one index each, and empty ones are dropped.
  c.context_bins = 16
  c.lock()
  return c
