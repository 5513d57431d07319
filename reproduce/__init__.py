"""circuits-repro: "A Mathematical Framework for Transformer Circuits" in JAX/Flax.

    import reproduce
    config, weights = reproduce.load("runs/attn2l")          # or a TransformerLens-format file
                                                             # or a downloaded model folder
                                                             # (analysis-ready; fold=False: raw)
    logits, extras = reproduce.forward(config, weights, tokens, return_patterns=True)
    model = reproduce.load_model("runs/attn2l")              # the same, as a Flax NNX module

Two wings: ``reproduce.core`` is the analysis core (weights, the model, circuits, paths,
scores, weight-file I/O; it imports jax, numpy and file-format readers only), and the runner
(``reproduce.train``, ``reproduce.figure``, ``reproduce.bench`` and their helpers) trains models
and makes the figures on top of it.  The names below are loaded on first use, so importing one
core module never imports the rest.
"""

import importlib

_PUBLIC = {
    "load": "reproduce.core.loading", "load_with_meta": "reproduce.core.loading",
    "load_model": "reproduce.core.loading", "weights_of": "reproduce.core.loading",
    "iter_training_checkpoints": "reproduce.core.loading",
    "training_snapshots": "reproduce.core.loading",
    "forward": "reproduce.core.model", "ModelConfig": "reproduce.core.model",
    "Weights": "reproduce.core.weights", "AttentionOnlyTransformer": "reproduce.core.module",
    "save_transformer_lens": "reproduce.core.tl_format",
}
_RENAMED = {"save_transformer_lens": "save"}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'reproduce' has no attribute {name!r}")
  return getattr(importlib.import_module(_PUBLIC[name]), _RENAMED.get(name, name))
