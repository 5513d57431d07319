"""Two-layer attention-only model with smeared keys (IH, 'Argument 2'): ``configs/attn2l.py``'s
recipe with ``model.smear_keys`` on, under its own model name (``attn2l_smeared``), so it never
shares a run directory or a label with the vanilla model.

    python -m reproduce.train --config=configs/attn2l_smeared.py:cpu --workdir=runs/attn2l-smeared

Each head's key is mixed with the previous position's, k'_j = σ(α) k_j + (1 − σ(α)) k_{j−1},
one trainable α per head starting at 0 (σ = 1/2; docs/METHODS.md, "Smeared keys").  IH: two-layer
smeared-key models go through the phase change earlier than vanilla ones.

cpu preset: the vanilla recipe (4 heads × 32, d_model 128, vocab 2048, n_ctx 256, sinusoidal
positions, AdamW 1e-2 after 200 warm-up steps, cosine over the last 25%) cut to 1,000 steps
(4.1M tokens) with 32 snapshots.  The vanilla 2L forms its induction head between ~4M and ~11M
tokens.  A first run of 2,250 steps (seed 0, bf16 products) formed it by step 500 (2.0M tokens:
the best layer-1 head's prefix matching at the periodic evaluations 0.04 at step 250, 0.74 at
500, 0.81 at 1,000, 0.87 at 2,250), so the run was cut to 1,500 steps; there the formation
windows of seeds 0, 1, 2 ended at 1.8M, 3.0M and 1.8M tokens, so it was cut again, to 1,000
(docs/RECIPE.md): the cosine starts at step 750 (3.07M tokens), and both runs see the same
schedule up to there, so "earlier" is measured on the same footing.  At 1,000 steps the best
head first reaches 0.3 at 1.6M, 2.1M and 1.3M tokens (seeds 0, 1, 2), inside the shared
schedule; seed 1's window, 1.6M → 3.3M, ends just after it.
test and paper presets: attn2l's, smeared.
"""

from reproduce.config import project_module, with_model_fields

CPU_STEPS = 1000
CPU_SNAPSHOTS = 32


def get_config(variant: str = "cpu"):
  vanilla = project_module("configs", "attn2l").get_config(variant)
  c = with_model_fields(vanilla, vanilla.name + "_smeared", smear_keys=True)
  if variant == "cpu":
    c.train.steps = CPU_STEPS
    c.train.n_snapshots = CPU_SNAPSHOTS
  return c
