"""Zero-layer model (embed → unembed): learns the corpus's bigram table (figure ``bigram``).

    python -m reproduce.train --config=configs/attn0l.py:cpu --workdir=runs/attn0l

cpu preset: d_model 128, vocab 2048, 1,000 steps × 16 × 256 tokens (4.1M tokens), under a
minute on a 2-core laptop (docs/PERFORMANCE.md).  Expected: held-out loss ≈ 4.2; the figure's log-prob
correlation with the empirical bigram table ≈ 0.89 (docs/RECIPE.md).

paper preset: d_model 768, vocab 50,000, n_ctx 2048, 10.5B tokens like the attention models (see
``reproduce.config.preset``); needs ``--config.data.corpus`` pointing at ~1B+ tokens of text.
"""

from reproduce.config import preset


def get_config(variant: str = "cpu"):
  cpu = {"train": dict(steps=1000, lr=1e-2)} if variant == "cpu" else {}
  return preset(0, variant, **cpu)
