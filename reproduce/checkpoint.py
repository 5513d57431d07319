"""Orbax checkpoints of a training run's work directory.

    <workdir>/checkpoints/<step>/   weights + optimiser state + meta: resumable, newest few kept
    <workdir>/snapshots/<step>/     weights + meta at log-spaced steps, all kept (training dynamics)

``meta`` holds the step, the tokens seen, the resolved config and the tokenizer reference, so a
checkpoint directory describes itself.  Restoring walks back from the newest checkpoint: one that
cannot be read is reported and skipped.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from reproduce.weights import Weights

FORMAT = "circuits-repro/1"


class CheckpointError(RuntimeError):
  """A checkpoint that is missing, unreadable or not ours."""


def _manager(directory: Path, max_to_keep: Optional[int], read_only: bool = False):
  # In a multi-process job every manager needs its own barrier names: the checkpoint and the
  # snapshot of the same step are written at once and would otherwise share them.
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=Path(directory).name))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return ocp.CheckpointManager(directory.absolute(), options=options)


def snapshot_steps(total_steps: int, n_snapshots: int) -> List[int]:
  """Step 0 plus ``n_snapshots − 1`` log-spaced steps up to ``total_steps`` (duplicates merged)."""
  if n_snapshots <= 0:
    return []
  steps = {0, total_steps}
  if n_snapshots > 2:
    steps |= set(np.unique(np.round(np.geomspace(1, total_steps, n_snapshots - 1))).astype(int))
  return sorted(s for s in steps if 0 <= s <= total_steps)


def _pack(tree):
  """Orbax cannot store zero-size arrays (a 0-layer model's W_Q, say): store a 1-element stand-in."""
  return jax.tree.map(lambda x: np.zeros((1,), x.dtype) if x.size == 0 else x, tree)


def _unpack(tree, like):
  return jax.tree.map(lambda x, ref: np.zeros(ref.shape, ref.dtype) if ref.size == 0 else x,
                      tree, like)


def _weights_meta(weights: Weights, meta: dict) -> dict:
  shapes = {k: list(v.shape) for k, v in weights.to_dict().items()}
  return dict(meta, format=FORMAT, weight_shapes=shapes)


class RunCheckpoints:
  """The resumable checkpoints and the snapshots of one work directory."""

  def __init__(self, workdir: Path, keep: int = 2):
    self.workdir = Path(workdir)
    self.resumable = _manager(self.workdir / "checkpoints", keep)
    self.snapshots = _manager(self.workdir / "snapshots", None)

  def save(self, step: int, weights: Weights, opt_state: Any, meta: dict) -> None:
    if step in self.resumable.all_steps():  # written before an interruption; resuming is exact
      return
    self.resumable.save(step, args=ocp.args.Composite(
        weights=ocp.args.StandardSave(_pack(weights.to_dict())),
        opt_state=ocp.args.StandardSave(_pack(opt_state)),
        meta=ocp.args.JsonSave(_weights_meta(weights, meta))), force=True)

  def save_snapshot(self, step: int, weights: Weights, meta: dict) -> None:
    if step in self.snapshots.all_steps():
      return
    self.snapshots.save(step, args=ocp.args.Composite(
        weights=ocp.args.StandardSave(_pack(weights.to_dict())),
        meta=ocp.args.JsonSave(_weights_meta(weights, meta))), force=True)

  def restore_latest(self, weights_like: Weights, opt_state_like: Any,
                     log: Callable[[str], None] = print) -> Optional[Tuple[int, Weights, Any, dict]]:
    """Newest readable checkpoint as (step, weights, opt_state, meta), or None if there is none."""
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    for step in sorted(self.resumable.all_steps(), reverse=True):
      try:
        restored = self.resumable.restore(step, args=ocp.args.Composite(
            weights=ocp.args.StandardRestore(abstract(_pack(weights_like.to_dict()))),
            opt_state=ocp.args.StandardRestore(abstract(_pack(opt_state_like))),
            meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        aside = self.workdir / "unreadable-checkpoints" / f"{step}-{int(time.time())}"
        log(f"WARNING: checkpoint {self.workdir / 'checkpoints' / str(step)} is unreadable "
            f"({type(e).__name__}: {str(e)[:200]}); moved it to {aside} and trying the "
            "previous one")
        aside.parent.mkdir(exist_ok=True)
        (self.workdir / "checkpoints" / str(step)).rename(aside)
        self.resumable.reload()
        continue
      weights = _unpack(dict(restored["weights"]), weights_like.to_dict())
      opt_state = _unpack(restored["opt_state"], opt_state_like)
      return step, Weights.from_dict(weights), opt_state, dict(restored["meta"])
    return None

  def wait(self) -> None:
    self.resumable.wait_until_finished()
    self.snapshots.wait_until_finished()

  def close(self) -> None:
    self.resumable.close()
    self.snapshots.close()


def _restore_weights(directory: Path, step: int) -> Tuple[Weights, dict]:
  mngr = _manager(directory, None, read_only=True)
  try:
    meta = dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    if meta.get("format") != FORMAT:
      raise CheckpointError(f"{directory / str(step)} is not a circuits-repro checkpoint")
    shapes = meta.get("weight_shapes", {})
    # An explicit one-device target: a checkpoint written by a multi-process job records that
    # job's devices, which Orbax will not restore onto another topology by itself.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {k: jax.ShapeDtypeStruct(tuple(s) if 0 not in s else (1,), np.float32,
                                      sharding=device) for k, s in shapes.items()}
    restored = mngr.restore(step, args=ocp.args.Composite(
        weights=ocp.args.StandardRestore(target)))
  finally:
    mngr.close()
  weights = {k: np.zeros(shapes[k], np.float32) if 0 in shapes.get(k, [1]) else np.asarray(v)
             for k, v in dict(restored["weights"]).items()}
  return Weights.from_dict(weights), meta


def checkpoint_steps(directory: Path) -> List[int]:
  if not Path(directory).is_dir():
    return []
  mngr = _manager(Path(directory), None, read_only=True)
  try:
    return sorted(mngr.all_steps())
  finally:
    mngr.close()


def load_checkpoint(path: Path, log: Callable[[str], None] = print) -> Tuple[Weights, dict]:
  """Weights and meta from a work directory (its newest readable checkpoint) or one step dir.

  A step directory is ``<workdir>/checkpoints/<step>`` or ``<workdir>/snapshots/<step>``.
  """
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"no checkpoint at {path}")
  logging.getLogger("absl").setLevel(logging.ERROR)
  if path.name.isdigit() and path.parent.name in ("checkpoints", "snapshots"):
    try:
      return _restore_weights(path.parent, int(path.name))
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"checkpoint {path} is unreadable: {type(e).__name__}: "
                            f"{str(e)[:300]}") from e
  directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
  steps = checkpoint_steps(directory)
  if not steps and (path / "snapshots").is_dir():
    directory, steps = path / "snapshots", checkpoint_steps(path / "snapshots")
  if not steps:
    raise CheckpointError(f"{path} holds no checkpoints (expected a training work directory, "
                          "a checkpoint step directory, or a .npz/.safetensors weight file)")
  errors = []
  for step in reversed(steps):
    try:
      return _restore_weights(directory, step)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"step {step}: {type(e).__name__}: {str(e)[:200]}")
      log(f"WARNING: checkpoint {directory / str(step)} is unreadable; trying the previous one")
  raise CheckpointError(f"no readable checkpoint in {directory}: " + "; ".join(errors))
