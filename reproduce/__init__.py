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
import importlib.abc
import importlib.util
import sys
from pathlib import Path

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


_CLONE = Path(__file__).resolve().parent.parent


class _CloneFolders(importlib.abc.MetaPathFinder):
  """``reproduce.configs`` and ``reproduce.experiments`` from the source checkout this package
  was imported from (its ``configs/`` and ``experiments/``).  An editable install maps them to
  the clone it was made from, which is another one for a second clone or a git worktree run with
  ``PYTHONPATH``; in an installed wheel (no ``setup.cfg`` beside the package) nothing changes."""

  FOLDERS = {"reproduce.configs": "configs", "reproduce.experiments": "experiments"}

  def find_spec(self, name, path=None, target=None):  # pylint: disable=unused-argument
    folder = _CLONE / self.FOLDERS.get(name, "")
    if name not in self.FOLDERS or not (_CLONE / "setup.cfg").is_file() \
        or not (folder / "__init__.py").is_file():
      return None
    return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])


if not any(isinstance(f, _CloneFolders) for f in sys.meta_path):
  sys.meta_path.insert(0, _CloneFolders())
