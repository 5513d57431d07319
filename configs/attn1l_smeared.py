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
final ICL score below the vanilla 1L model's.  Measured (seed 0, the figure's passes over the 29
snapshots): the best head's prefix matching 0.07 → 0.70 between 1.4M and 2.3M tokens (the
formation window), 0.90 at the end, where no vanilla 1L head passes 0.04; final ICL −0.72 ±
0.16 nats against the vanilla's −0.32 ± 0.16 (1.8 standard errors of the difference); held-out
loss 2.75 against 3.25; learned σ(α) from 0.02 to 0.90 (five heads below 0.5).
"""

from reproduce.config import project_module, with_model_fields



def get_config(variant: str = "cpu"):
  vanilla = project_module("configs", "attn1l").get_config(variant)
  return with_model_fields(vanilla, vanilla.name + "_smeared", smear_keys=True)
