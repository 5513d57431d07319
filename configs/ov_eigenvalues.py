"""Figure `ov_eigenvalues` (FW, 'Summarizing OV/QK Matrices'): every head's full-OV and full-QK
eigenvalues in the complex plane.

    python -m reproduce.figure --name ov_eigenvalues

Eigenvalues of W_E W_OV W_U and W_E W_QK W_Eᵀ (by the low-rank trick), drawn on symmetric-log
axes.  No claims (FW states none about them; the copying majority is eigen_hist's claim, FW's
one-layer QK statement is tested in skip_trigrams)."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l",)  # model configs (configs/<name>.py) trained at the preset and analysed
  c.copying_threshold = 0.5  # OV heads drawn in red above this (eigen_hist makes the claim)
  c.lock()
  return c
