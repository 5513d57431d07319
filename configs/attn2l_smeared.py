"""Two-layer attention-only model with smeared keys (IH, 'Argument 2'): ``configs/attn2l.py``'s
recipe with ``model.smear_keys`` on, under its own model name (``attn2l_smeared``), so it never
shares a run directory or a label with the vanilla model.

    python -m reproduce.train --config=configs/attn2l_smeared.py:cpu --workdir=runs/attn2l-smeared

Each head's key is mixed with the previous position's, k'_j = σ(α) k_j + (1 − σ(α)) k_{j−1},
one trainable α per head starting at 0 (σ = 1/2; docs/METHODS.md, "Smeared keys").  IH: two-layer
smeared-key models go through the phase change earlier than vanilla ones.

cpu preset: the vanilla recipe (4 heads × 32, d_model 128, vocab 2048, n_ctx 256, sinusoidal
positions, AdamW 1e-2 after 200 warm-up steps, cosine over the last 25%) cut to 2,250 steps
(9.2M tokens, half the vanilla run) with 32 snapshots.  The vanilla 2L forms its induction head
between ~6M and ~11M tokens; the smeared 1L model (configs/attn1l_smeared.py, same schedule)
formed one between 1.4M and 2.3M tokens (seed 0).  Expected: the smeared 2L forms by ~3M
tokens too, well inside the constant-learning-rate phase: the cosine starts at step 1,738 here
(7.1M tokens), 3,425 in the vanilla run, so both runs see the same schedule up to 7.1M tokens
and "earlier" is measured on the same footing.  Not measured at this preset when written (no
cpu run of it was affordable then): the figure `smeared_keys` reports it.
test and paper presets: attn2l's, smeared.
"""

from reproduce.config import project_module, with_model_fields

CPU_STEPS = 2250
CPU_SNAPSHOTS = 32


def get_config(variant: str = "cpu"):
  vanilla = project_module("configs", "attn2l").get_config(variant)
  c = with_model_fields(vanilla, vanilla.name + "_smeared", smear_keys=True)
  if variant == "cpu":
    c.train.steps = CPU_STEPS
    c.train.n_snapshots = CPU_SNAPSHOTS
  return c
