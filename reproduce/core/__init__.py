"""The analysis core: the weight pytree, the model's forward pass and its kernels, the per-head
circuits, path expansion, head scores, and reading and writing weight files.  It imports jax,
numpy and file-format readers only (``module`` adds Flax, ``checkpoint`` Orbax); nothing here
imports the runner (training, figures, benchmarks)."""
