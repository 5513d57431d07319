"""One entry point for weights: our training checkpoints, TransformerLens-format files and model
folders as published (``model_folder``), and the training checkpoints such a folder ships."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterator, Optional, Tuple

import jax.numpy as jnp

from reproduce.core import model_folder, tl_format
from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights, check_weights, fold_for_analysis


def load_with_meta(path, tl_config: Optional[dict] = None, fold: bool = True
                   ) -> Tuple[ModelConfig, Weights, dict]:
  """(architecture, weights, meta) from any weight source.

  ``path`` may be a training work directory (its newest readable checkpoint), one checkpoint or
  snapshot step directory, a TransformerLens-format weight file (``.npz``, ``.safetensors`` or
  PyTorch's zip format, with its architecture in a ``config.json`` beside it, see
  ``tl_format``), or a model folder as published (``model_folder``: its final weights).
  ``tl_config`` gives the TransformerLens config of a weight file or folder (it replaces
  ``config.json``; needed where there is none, as in ARENA's folder).
  ``meta`` holds the step, tokens seen, training config and tokenizer reference of our
  checkpoints; for weight files it holds ``source="transformer_lens"``, ``path``,
  ``config_source``, ``config_form``, ``notes``, ``tokenizer_name`` (when the config names one),
  ``dtypes`` (torch files: tensors per stored dtype), ``folder`` (model folders) and
  ``tokenizer`` (``{"path": ...}`` when a ``tokenizer.json`` lies beside the weights).

  ``fold=True`` (the default) returns analysis-ready weights, processed as TransformerLens's
  default loading does (``weights.fold_for_analysis``): the same function up to a per-position
  logit constant, and every circuit number equals a TransformerLens user's.  Layer norm with
  shortformer positions added after it (LN(x) + W_pos, e.g. Redwood's 2-layer model) folds too:
  W_pos then keeps the raw W_Q, W_K as its own readers (``Weights.W_Q_pos``, ``W_K_pos``), and
  the token path equals TransformerLens's processing of the same weights as a standard model
  with W_pos = 0.  ``meta["folded"]`` says whether the layer norm is folded (True also for
  models without one); it is False only for ``fold=False`` on a model with gains, which gives
  the raw weights (the circuit functions refuse those).
  """
  path = Path(path)
  if model_folder.is_model_folder(path):
    cfg, weights, meta = _from_weight_file(model_folder.weights_file(path), tl_config, path)
    meta.update(folder=str(path), training_checkpoints=len(
        model_folder.training_checkpoints(path)))
  elif path.is_file() or path.suffix in tl_format.WEIGHT_SUFFIXES + tl_format.PICKLE_SUFFIXES:
    folder = model_folder.folder_of_checkpoint(path)  # checkpoints/<name>_<n>.pth: its folder's
    cfg, weights, meta = _from_weight_file(path, tl_config, folder)  # config and tokenizer
  else:
    from reproduce.core import checkpoint  # pylint: disable=import-outside-toplevel  # Orbax: only for training checkpoints
    weights, meta = checkpoint.load_checkpoint(path)
    cfg = ModelConfig.from_any(meta["config"]["model"])
    workdir_tokenizer = path / "tokenizer.json"
    for candidate in (workdir_tokenizer, path.parent.parent / "tokenizer.json"):
      if candidate.is_file():
        meta["tokenizer"] = dict(meta.get("tokenizer", {}), path=str(candidate))
        break
  return _analysis_ready(cfg, weights, meta, fold)


def _from_weight_file(path: Path, tl_config: Optional[dict], folder: Optional[Path] = None):
  """(config, raw weights, meta) of one TransformerLens-format file; ``folder`` (default: the
  file's) holds its config.json and tokenizer.json."""
  cfg, weights, info = tl_format.load_with_info(path, tl_config, folder)
  meta = dict(info, source="transformer_lens", path=str(path))
  tokenizer = Path(folder or path.parent) / "tokenizer.json"
  if tokenizer.is_file():
    meta["tokenizer"] = {"path": str(tokenizer)}
  return cfg, weights, meta


def _analysis_ready(cfg: ModelConfig, weights: Weights, meta: dict, fold: bool):
  """Float32 weights, checked, and folded unless ``fold`` is False."""
  weights = Weights.from_dict({k: jnp.asarray(v, jnp.float32) for k, v in weights.to_dict().items()})
  check_weights(cfg, weights)
  if fold:
    cfg, weights = fold_for_analysis(cfg, weights)
  meta["folded"] = not weights.has_norm_parameters
  return cfg, weights, meta


def load_training_checkpoint(folder, point: model_folder.TrainingCheckpoint,
                             tl_config: Optional[dict] = None, fold: bool = True
                             ) -> Tuple[ModelConfig, Weights, dict]:
  """(architecture, weights, meta) of one of a model folder's training checkpoints, with the
  folder's config.json (or ``tl_config``); meta holds ``checkpoint``, ``checkpoint_kind`` and
  ``tokens_seen`` or ``step`` (whichever the file name counts)."""
  cfg, weights, meta = _from_weight_file(point.path, tl_config, Path(folder))
  meta.update(folder=str(folder), checkpoint=point.value, checkpoint_kind=point.kind)
  meta["step" if point.kind == "steps" else "tokens_seen"] = point.value
  return _analysis_ready(cfg, weights, meta, fold)


def iter_training_checkpoints(folder, tl_config: Optional[dict] = None, fold: bool = True,
                              log=print) -> Iterator[Tuple[model_folder.TrainingCheckpoint,
                                                            ModelConfig, Weights, dict]]:
  """(checkpoint, architecture, weights, meta) for each of a model folder's training checkpoints
  (``model_folder.training_checkpoints``), in order, read one at a time, with one progress line
  each through ``log``.  They share the folder's config.json (or ``tl_config``).  The iterator
  keeps no reference to a checkpoint once the next is asked for; a ``for`` loop's variables
  still hold the previous one while the next is read, so ``del`` them at the end of the loop
  body to hold strictly one."""
  points = model_folder.training_checkpoints(folder)
  if not points:
    raise FileNotFoundError(f"{folder}: no training checkpoints (checkpoints/<name>_<n>.pth)")
  for index, point in enumerate(points, 1):
    started = time.time()
    cfg, weights, meta = load_training_checkpoint(folder, point, tl_config, fold)
    log(f"training checkpoint {index}/{len(points)}: {point.kind} {point.value:,} "
        f"({point.path.name}, {point.path.stat().st_size / 1e6:,.0f} MB, read in "
        f"{time.time() - started:.1f}s)")
    yield point, cfg, weights, meta
    del cfg, weights, meta


@dataclasses.dataclass(frozen=True)
class TrainingSnapshots:
  """A model's training snapshots, whichever kind it has: our run's ``snapshots/<step>/``
  (Orbax; step and tokens seen recorded in each) or a model folder's
  ``checkpoints/<name>_<n>.pth`` (n counts tokens or steps, ``model_folder``).

  ``axis`` is what the x axis of a trajectory counts: "tokens" (our runs; folders whose file
  names count tokens) or "steps" (folders whose names count steps).  Iterating reads one
  snapshot at a time, in training order, with one progress line each.
  """

  source: str  # what they are, for messages: "run snapshots" or "training checkpoints"
  root: Path  # the run's work directory or the model folder
  labels: Tuple[int, ...]  # run: steps; folder: the numbers in the file names
  paths: Tuple[Path, ...]  # run: snapshots/<step>/; folder: checkpoints/<name>_<n>.pth
  axis: str  # "tokens" or "steps"
  tl_config: Optional[dict] = None  # the folder's TransformerLens config, when given

  def __len__(self) -> int:
    return len(self.labels)

  def position(self, meta: dict) -> Optional[int]:
    """Where a snapshot (its ``meta``) sits on ``axis``: its tokens seen or its step."""
    return meta.get("tokens_seen" if self.axis == "tokens" else "step")

  def load(self, index: int, fold: bool = True) -> Tuple[ModelConfig, Weights, dict]:
    """The ``index``-th snapshot (0: the earliest) as (architecture, weights, meta)."""
    if self.source == "run snapshots":
      return load_with_meta(self.paths[index], fold=fold)
    point = model_folder.TrainingCheckpoint(self.labels[index], self.axis, self.paths[index])
    return load_training_checkpoint(self.root, point, self.tl_config, fold)

  def describe(self, index: int) -> str:
    """The ``index``-th snapshot in words, e.g. "the run's step-0 snapshot"."""
    label = self.labels[index]
    if self.source == "run snapshots":
      return f"the run's step-{label} snapshot"
    return f"the folder's training checkpoint at {self.axis} {label:,}"

  def __iter__(self) -> Iterator[Tuple[ModelConfig, Weights, dict]]:
    return self.iterate()

  def iterate(self, log=print, fold: bool = True) -> Iterator[Tuple[ModelConfig, Weights, dict]]:
    """(architecture, weights, meta) of each snapshot in order, one in memory at a time (the
    caller drops its references before asking for the next), a progress line each."""
    for index in range(len(self)):
      started = time.time()
      loaded = self.load(index, fold)
      log(f"{self.source} {index + 1}/{len(self)}: {self.axis} "
          f"{self.position(loaded[2]) or 0:,} ({self.paths[index].name}, read in "
          f"{time.time() - started:.1f}s)")
      yield loaded
      del loaded


def training_snapshots(path, tl_config: Optional[dict] = None) -> Optional[TrainingSnapshots]:
  """The training snapshots of a work directory of ours (``snapshots/<step>/``) or of a model
  folder as published (``checkpoints/<name>_<n>.pth``); None when ``path`` has none."""
  path = Path(path)
  if model_folder.is_model_folder(path):
    points = model_folder.training_checkpoints(path)
    if not points:
      return None
    return TrainingSnapshots("training checkpoints", path, tuple(p.value for p in points),
                             tuple(p.path for p in points), points[0].kind, tl_config)
  if (path / "snapshots").is_dir():
    # A finished snapshot is a folder named by its step (checkpoint.checkpoint_steps; Orbax
    # renames it into place when complete), listed here without importing Orbax.
    steps = sorted(int(p.name) for p in (path / "snapshots").iterdir()
                   if p.name.isdigit() and p.is_dir())
    if steps:
      return TrainingSnapshots("run snapshots", path, tuple(steps),
                               tuple(path / "snapshots" / str(s) for s in steps), "tokens")
  return None


def load(path, tl_config: Optional[dict] = None, fold: bool = True
         ) -> Tuple[ModelConfig, Weights]:
  """(architecture, weights) from a work directory, a checkpoint step, a TL-format file or a
  model folder; analysis-ready (folded) unless ``fold=False`` (see ``load_with_meta``)."""
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
