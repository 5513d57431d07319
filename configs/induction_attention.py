"""Figure `induction_attention` (FW, induction heads): attention of every head on repeated random
tokens and on real text, value-weighted, as a PNG and a standalone interactive HTML page.

    python -m reproduce.figure --name induction_attention

Claims: a head of a layer ≥ 1 shows the induction stripe (score ≥ 0.3 on BOS + 20 random tokens
× 3), and the 2L model's loss on the repeats is below its own loss on the first copy and below
the 1L model's on the same repeats (the papers give no number; log 20 is drawn, no longer a bar)."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  # model configs (configs/<name>.py) trained at the preset and analysed; the 1L model first:
  # its repeat loss is the anchor of the 2L model's claim
  c.models = ("attn1l", "attn2l")
  c.length = 20  # random tokens per repeat (FW: 20)
  c.repeats = 3
  c.samples = 8  # sequences averaged for scores and the loss curve
  c.text_tokens = 48  # tokens of held-out text drawn
  # Stripe score of an induction head: 6× the uniform 1/20 of attention spread over the repeat.
  c.min_induction = 0.3
  c.lock()
  return c
