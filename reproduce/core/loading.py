"""One entry point for weights: our training checkpoints and TransformerLens-format files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import jax.numpy as jnp

from reproduce.core import tl_format
from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights, check_weights, fold_for_analysis


def load_with_meta(path, tl_config: Optional[dict] = None, fold: bool = True
                   ) -> Tuple[ModelConfig, Weights, dict]:
  """(architecture, weights, meta) from any weight source.

  ``path`` may be a training work directory (its newest readable checkpoint), one checkpoint or
  snapshot step directory, or a TransformerLens-format ``.npz`` / ``.safetensors`` file (with
  its architecture in a ``config.json`` beside it, see ``tl_format``).
  ``meta`` holds the step, tokens seen, training config and tokenizer reference of our
  checkpoints; for weight files it holds ``{"source": "transformer_lens"}`` (plus the tokenizer
  path when a ``tokenizer.json`` lies beside the file).

  ``fold=True`` (the default) returns analysis-ready weights, processed as TransformerLens's
  default loading does (``weights.fold_for_analysis``): the same function up to a per-position
  logit constant, and every circuit number equals a TransformerLens user's.  ``meta["folded"]``
  says whether the layer norm is folded (True also for models without one); it is False only for
  ``fold=False`` or a model whose ``config.foldable`` is False (layer norm with shortformer
  positions added after it), and then ``meta["fold_problem"]`` says why.  Such weights keep
  their gains, and the circuit functions refuse them.  ``fold=False`` gives the raw weights.
  """
  path = Path(path)
  if path.is_file() or path.suffix in (".npz", ".safetensors") + tl_format.PICKLE_SUFFIXES:
    cfg, weights = tl_format.load(path, tl_config)
    meta = {"source": "transformer_lens", "path": str(path)}
    if (path.parent / "tokenizer.json").is_file():
      meta["tokenizer"] = {"path": str(path.parent / "tokenizer.json")}
  else:
    from reproduce.core import checkpoint  # pylint: disable=import-outside-toplevel  # Orbax: only for training checkpoints
    weights, meta = checkpoint.load_checkpoint(path)
    cfg = ModelConfig.from_any(meta["config"]["model"])
    workdir_tokenizer = path / "tokenizer.json"
    for candidate in (workdir_tokenizer, path.parent.parent / "tokenizer.json"):
      if candidate.is_file():
        meta["tokenizer"] = dict(meta.get("tokenizer", {}), path=str(candidate))
        break
  weights = Weights.from_dict({k: jnp.asarray(v, jnp.float32) for k, v in weights.to_dict().items()})
  check_weights(cfg, weights)
  meta["folded"] = not weights.has_norm_parameters
  if fold and not cfg.foldable:
    meta["fold_problem"] = (
        "layer norm with shortformer positions added after it (LN(x) + W_pos feeds W_Q and W_K): "
        "its gain cannot be folded into the weights, so circuit analysis would not be exact")
  elif fold:
    cfg, weights = fold_for_analysis(cfg, weights)
    meta["folded"] = True
  return cfg, weights, meta


def load(path, tl_config: Optional[dict] = None, fold: bool = True
         ) -> Tuple[ModelConfig, Weights]:
  """(architecture, weights) from a work directory, a checkpoint step or a TL-format file;
  analysis-ready (folded) unless ``fold=False`` (see ``load_with_meta``)."""
  cfg, weights, _ = load_with_meta(path, tl_config, fold)
  return cfg, weights


def load_model(path, tl_config: Optional[dict] = None, fold: bool = True):
  """What ``load`` reads, as a Flax NNX ``AttentionOnlyTransformer`` holding the weights."""
  from reproduce.core.module import AttentionOnlyTransformer  # pylint: disable=import-outside-toplevel  # Flax: only for the module
  cfg, weights = load(path, tl_config, fold)
  return AttentionOnlyTransformer(cfg, weights)


def weights_of(source, tl_config: Optional[dict] = None) -> Weights:  # folded when loaded
  """The stacked weight pytree of a ``Weights``, a model module (its ``weights()``), or anything
  ``load`` reads."""
  if isinstance(source, Weights):
    return source
  if callable(getattr(source, "weights", None)):
    return source.weights()
  return load(source, tl_config)[1]
