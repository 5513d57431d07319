"""One-layer attention-only model with smeared keys (IH, 'Argument 2'): ``configs/attn1l.py``'s
recipe at every preset with ``model.smear_keys`` on, under its own model name
(the vanilla name + ``_smeared``: ``attn1l_smeared``, ``attn1l_32x128_smeared``), so it never
shares a run directory or a label with the vanilla model.

    python -m reproduce.train --config=configs/attn1l_smeared.py:cpu --workdir=runs/attn1l-smeared

Each head's key is mixed with the previous position's, k'_j = σ(α) k_j + (1 − σ(α)) k_{j−1},
one trainable α per head starting at 0 (σ = 1/2; docs/METHODS.md, "Smeared keys").  A key can
then carry the previous token, so one layer can build an induction head, which the vanilla 1L
model cannot (IH: one-layer smeared-key models form induction heads and go through the phase
change).

Expected (cpu preset, 1,500 steps, 6.1M tokens): a head whose prefix matching passes 0.3 and a
final ICL score below the vanilla 1L model's.  Measured (seed 0): see docs/METHODS.md,
"Smeared keys".
"""

from reproduce.config import project_module, with_model_fields



def get_config(variant: str = "cpu"):
  vanilla = project_module("configs", "attn1l").get_config(variant)
  return with_model_fields(vanilla, vanilla.name + "_smeared", smear_keys=True)
