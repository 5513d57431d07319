"""Figure `induction_heads` (IH, 'Key Concepts'; FW, 'Analyzing a Two-Layer Model'): what the
induction heads do besides matching.

    python -m reproduce.figure --name induction_heads

Per head of the 1L and 2L models: IH's prefix-matching score against its copying score (both on
BOS + 25 random middle-frequency tokens × 4), the random-init heads beside them; attention on BOS
from tokens with no earlier copy (first occurrences in repeated random tokens and in held-out
text); the mean attention of every layer-0 head at offsets 0, 1, 2, … on text.  Expected: the 2L
model's induction heads copy (copying score above every random-init head), rest on BOS when
there is nothing to copy, and the 1L model has no prefix-matching head; FW's 2L model also has a
layer-0 head that averages over the last few tokens (ours may not: reported either way).
"""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l", "attn2l")  # model configs (configs/<name>.py) trained and analysed
  # Prefix-matching and copying scores: on IH's probe, BOS + 25 random tokens × 4, 10 samples
  # (scores.prefix_probe: the same definition in every figure).
  # Held-out windows of the model's full n_ctx for the text measures (in chunks of windows).
  c.text_windows = 32 if preset != "test" else 8
  # Induction head: prefix-matching score ≥ 0.3, three times the most a head attending
  # uniformly over ≥ 10 positions could score (and far above every random-init head).
  c.role_threshold = 0.3
  # Resting on BOS (FW: "if they don't find it, they attend to the first token"): no number in
  # the paper, so no threshold here: BOS must take more attention than the one other position
  # that takes most (scores.MaskedTopOffBos), averaged over the destinations with no earlier
  # copy.  Until issue 32 it was ≥ 0.5, our own number.
  # Averaging head (FW's corrected composition figure: a head attending to "the last several
  # tokens, rather than just the previous token"): within the last 8 tokens (offsets 0 … 7) it
  # holds most of its attention (≥ 0.5) and spreads it over several of them: exp(entropy) of
  # that profile ≥ 3, where a previous-token or self-attending head scores 1 and an even split
  # over 3 tokens scores 3.  Decided from FW's words before measuring (docs/RECIPE.md logs
  # the earlier values).
  c.averaging_window = 8
  c.min_window_mass = 0.5
  c.min_spread = 3.0
  c.offsets_shown = 8
  c.lock()
  return c
