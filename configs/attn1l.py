"""One-layer attention-only model: skip-trigrams, copying OV circuits, positional heads.

    python -m reproduce.train --config=configs/attn1l.py:cpu --workdir=runs/attn1l

cpu preset (docs/RECIPE.md): 12 heads × 16 as in the paper's 1L model, d_model 128,
vocab 2048, n_ctx 256, fixed sinusoidal positions in Q/K, AdamW at a constant 1e-2 after 200
warmup steps with a cosine over the last 25%; 1,500 steps × 4,096 tokens (6.1M tokens), a
few minutes on a 2-core laptop (docs/PERFORMANCE.md).
Expected: most of the 12 heads with OV positivity > 0.5 (10 of 12 at seed 0); held-out loss
≈ 3.25; no prefix matching at any snapshot.

paper preset: 12 heads × 64, d_model 768, vocab 50,000, n_ctx 2048, 10.5B tokens (see
``reproduce.config.preset``); needs ``--config.data.corpus`` pointing at ~1B+ tokens of text.
``paper_32x128`` is FW's other one-layer model, 32 heads × d_head 128 on the same residual width
and schedule (its own model name, ``attn1l_32x128``, so it never shares a run directory):

    python -m reproduce.train --config=configs/attn1l.py:paper_32x128 --workdir=runs/attn1l-wide \
        --config.data.corpus=/data/text
"""

from reproduce.config import preset

CPU = {
    "model": dict(n_heads=12, d_head=16, pos_init="sinusoidal"),
    "train": dict(steps=1500, lr=1e-2, warmup_steps=200, decay_fraction=0.25, n_snapshots=32,
                  eval_every=250),
}


WIDE = "paper_32x128"


def get_config(variant: str = "cpu"):
  if variant == WIDE:
    c = preset(1, "paper", model=dict(n_heads=32, d_head=128))
    c.unlock()
    c.name = "attn1l_32x128"
    c.lock()
    return c
  return preset(1, variant, **(CPU if variant == "cpu" else {}))
