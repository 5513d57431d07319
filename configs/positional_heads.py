"""Figure `positional_heads` (FW, 'Primarily Positional Attention Heads'): each head's purely
positional attention.

    python -m reproduce.figure --name positional_heads

Softmax of the masked position–position score W_pos W_QK W_posᵀ / sqrt(d_head); heads ranked by
mean attention at offset 0 (self) and offset 1 (previous token).  Claim (one-layer models, as
FW's statement): some head is primarily positional, putting ≥ 0.5 of its positional attention on
the present or the previous token (the two summed)."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l", "attn2l")  # model configs (configs/<name>.py) trained at the preset and analysed
  # Leading positions drawn: min(positions, n_ctx); the offset scores use the whole context.
  c.positions = 24
  c.min_offset_attention = 0.5
  c.lock()
  return c
