"""Training: the pure step (``step``), how it computes on this platform (``plan``), the run
directory (``workdir``) and the loop that ties them together (``loop``).

    python -m reproduce.train --config=configs/attn2l.py:cpu --workdir=runs/attn2l
"""
