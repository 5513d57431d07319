"""Two-layer attention-only model: composition, induction heads, term importance.

    python -m reproduce.train --config=configs/attn2l.py:cpu --workdir=runs/attn2l

cpu preset (experiments/RECIPE.md): 4 heads × 32, d_model 128, vocab 2048, n_ctx 256, fixed
sinusoidal positions in Q/K, AdamW at a constant 1e-2 after 200 warmup steps with a cosine over
the last 25%; 2,500 steps × 4,096 tokens (10.2M tokens), about 2.5 minutes on a 2-core laptop
(≈75k tokens/s with bf16 products on AMX, ≈60k in float32).  Expected: a previous-token head in
layer 0 (score ≈ 0.9 on text) by ~7M tokens, then an induction head in layer 1 forming between
~4M and ~10M tokens (prefix matching 0.05 → 0.45–0.6), with the ICL score falling across that
window; held-out loss ≈ 2.6–2.8.

paper preset: 12 heads × 64, d_model 768, vocab 50,000, n_ctx 2048, 20,000 steps × 2¹⁹ tokens
(10.5B; IH sees induction heads form after ~1-3B), 64 log-spaced snapshots (see
``reproduce.config.preset``); needs ``--config.data.corpus`` pointing at ~1B+ tokens of text.
"""

from reproduce.config import preset

CPU = {
    "model": dict(pos_init="sinusoidal"),
    "train": dict(steps=2500, lr=1e-2, warmup_steps=200, decay_fraction=0.25, n_snapshots=48,
                  eval_every=250),
}


def get_config(variant: str = "cpu"):
  return preset(2, variant, **(CPU if variant == "cpu" else {}))
