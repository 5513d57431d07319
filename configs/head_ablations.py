"""Figure `head_ablations` (IH, 'Argument 3': knock-outs): ablate one head and measure what the
model loses in context.

    python -m reproduce.figure --name head_ablations

Every head of the 2L model is ablated in turn, and so are all induction heads together, two
ways: with every attention pattern (and norm scale) held at the unablated run's, IH's
pattern-preserving ablation, and fully (W_O = 0, later layers reading the ablated stream and
recomputing their patterns).  On the 2L model the two coincide for the layer-1 heads.
Measured: the fraction of the loss drop on repeated random tokens (first occurrence → repeat)
and of the in-context-learning score that the ablation removes.  Claims (IH, "Argument 3",
pattern-preserving): ablating the induction heads removes almost all (≥ 0.9) of both; ablating
most of the other heads of their layers removes little (< 0.1).  Control: fully ablating the
previous-token head that feeds them removes most (≥ 0.5) of both (FW's mechanism; IH's
ablations preserve the patterns, so no paper statement is about it).
"""

import ml_collections

from reproduce.core import scores


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn2l",)  # model configs (configs/<name>.py) trained at the preset and analysed
  # Random middle-frequency tokens per repeat: min(length, (n_ctx − 1) // 2), BOS + 2 repeats.
  c.length = 50
  c.samples = 16 if preset != "test" else 4  # repeated sequences
  # Held-out windows of n_ctx tokens for the ICL score, losses at positions (49, 499) when
  # n_ctx ≥ 500, else the same fractions of n_ctx (scores.icl_positions); head roles as in
  # roles.head_roles (16 windows of n_ctx; IH's prefix-matching probe).
  # The ICL score on as many windows as everywhere (scores.ICL_WINDOWS: one definition, one
  # number); the test preset uses fewer to stay fast.
  c.icl_windows = scores.ICL_WINDOWS if preset != "test" else 8
  # Head roles: previous-token score on text, prefix-matching score (the induction criterion)
  # on IH's probe.  0.3 is three times the most a head attending uniformly over ≥ 10 positions
  # could score.
  c.role_threshold = 0.3
  # IH, "Argument 3": ablating the induction heads removes "almost all" of the in-context
  # learning; read as at least nine tenths of what the unablated model has (the baseline is the
  # unablated model, 0 removed; ablating everything in context removes 1).  IH gives no number
  # beyond its words; until issue 32 we asked for "most", 0.5, which understated them.  The
  # other heads (most of which IH finds slightly increase the ICL) must each remove less than
  # what "almost all" leaves, 1 − 0.9.
  c.almost_all = 0.9
  # The control on the previous-token head (a full ablation, which no statement of the papers is
  # about): "most", more than half of both.
  c.most_removed = 0.5
  c.lock()
  return c
