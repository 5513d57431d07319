"""Training: the pure step (``step``), how it computes on this platform (``plan``), the run
directory (``workdir``) and the loop that ties them together (``loop``).

    python -m reproduce.train --config=configs/attn2l.py:cpu --workdir=runs/attn2l
"""

# Bump when a change to the code alters the weights that a config trains to (the step, the
# kernels, initialisation, batches, the tokenizer).  It is part of the key of every trained
# model's run directory in the figures' models folder, so the next run trains anew instead of
# reusing weights the new code would not produce.  Refactors that keep the weights bit for bit
# leave it alone.
# Version 2: CPUs with AVX512-BF16 but no AMX train with bfloat16 products by default (they
# trained in float32 before).
TRAINING_CODE_VERSION = 2
