"""Figure `eigen_hist` (FW, 'Detecting Copying Behavior'): histogram of OV-circuit positivity over
all heads.

    python -m reproduce.figure --name eigen_hist

Positivity Re(Σλ)/Σ|λ| of every head's full OV circuit, trained vs the same model at random init
(its step-0 snapshot).  Claim: a majority of the 1L model's heads copy (positivity above both 0.5
and every random-init head; FW: 10 of 12).  Control: random-init heads sit near 0."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l", "attn2l")  # model configs (configs/<name>.py) trained at the preset and analysed
  # FW's "mostly positive eigenvalues": half-way from random (0) to pure copying (1); the claim
  # also requires being above the largest random-init positivity of the same model.
  c.copying_threshold = 0.5
  # Control: a random d_head-rank matrix has eigenvalues spread symmetrically about 0, so the
  # mean over heads is 0 up to noise ≈ 0.3/√(heads); 0.2 catches a biased init.
  c.random_init_max_abs_mean = 0.2
  c.lock()
  return c
