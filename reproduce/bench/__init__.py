"""Benchmarks: scripts that print numbers, never run inside tests (``python -m reproduce.bench``,
its subcommands in ``__main__``): training speed and MFU, circuit maths at paper scale, the
comparison with TransformerLens (``compare``), the token-store build (``prepare``), every figure
at a public model's shape (``figures``), and the export of the accelerator programs
(``export``)."""
