"""Two-layer attention-only model: composition, induction heads, term importance.

    python -m reproduce.train --config=configs/attn2l.py:cpu --workdir=runs/attn2l

cpu preset (docs/RECIPE.md): 4 heads × 32, d_model 128, vocab 2048, n_ctx 256, fixed
sinusoidal positions in Q/K, AdamW at a constant 1e-2 after 200 warmup steps with a cosine over
the last 25%; 4,500 steps × 4,096 tokens (18.4M tokens), the main job's longest training
(docs/PERFORMANCE.md).  Expected: a previous-token
head in layer 0 (score ≈ 0.9 on text) by ~8M tokens, then an induction head in layer 1 forming
between ~6M and ~11M tokens (prefix matching 0.1 → 0.6, seed 0: 6.2M → 10.6M, 58% of training)
and levelling off after it (0.7 at the end), with the ICL score falling across that window;
held-out loss ≈ 2.6–2.8.  The run continues well past the window so that the loss bump has an
"after" to compare with (docs/RECIPE.md, "A plateau after the phase change").

paper preset: 12 heads × 64, d_model 768, vocab 50,000, n_ctx 2048, 20,000 steps × 2¹⁹ tokens
(10.5B; IH sees induction heads form after ~1-3B), 64 log-spaced snapshots (see
``reproduce.config.preset``); needs ``--config.data.corpus`` pointing at ~1B+ tokens of text.
"""

from reproduce.config import preset

CPU = {
    "model": dict(pos_init="sinusoidal"),
    "train": dict(steps=4500, lr=1e-2, warmup_steps=200, decay_fraction=0.25, n_snapshots=48,
                  eval_every=250),
}


def get_config(variant: str = "cpu"):
  return preset(2, variant, **(CPU if variant == "cpu" else {}))
