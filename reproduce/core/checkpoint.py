"""Orbax checkpoints of a training run's work directory.

    <workdir>/checkpoints/<step>/   weights + optimiser state + meta: resumable, newest few kept
    <workdir>/snapshots/<step>/     weights + meta at log-spaced steps, all kept (training dynamics)

``meta`` holds the step, the tokens seen, the resolved config and the tokenizer reference, so a
checkpoint directory describes itself, and the sha256 of every stored array (its dtype, shape and
bytes), so a checkpoint whose data changed after it was written is detected when it is read.
Restoring walks back from the newest checkpoint: one that cannot be read, fails its checksums or
holds non-finite weights is reported, moved aside and skipped; one written for a different
config is a ``CheckpointConfigMismatch`` and nothing is moved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from reproduce.core.weights import POSITIONAL_READER_NAMES, SMEAR_NAME, Weights

FORMAT = "circuits-repro/1"


class CheckpointError(RuntimeError):
  """A checkpoint that is missing, unreadable, corrupt or not ours."""


class CheckpointConfigMismatch(ValueError):
  """A readable checkpoint written by a run with a different config."""


def _host(x) -> np.ndarray:
  """A host copy of an array; for a replicated array of a multi-process job, this process's copy."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(x)


def array_checksums(tree) -> dict:
  """{key path: sha256 of dtype, shape and bytes} for every array of a pytree."""
  sums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.ascontiguousarray(_host(leaf))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.reshape(-1).view(np.uint8))  # the array's own bytes, no copy
    sums[jax.tree_util.keystr(path)] = h.hexdigest()
  return sums


def verify_arrays(where: str, trees: dict, meta: dict) -> None:
  """Raises CheckpointError unless every array matches its recorded checksum and every weight is
  finite.  ``trees`` maps a part name ("weights", "opt_state") to the restored (packed) pytree;
  checkpoints written before checksums were recorded are checked for finiteness only."""
  recorded = meta.get("checksums")
  for part, tree in trees.items():
    if recorded is not None:
      if part not in recorded:
        raise CheckpointError(f"checkpoint {where} records no checksums for its {part}")
      got = array_checksums(tree)
      bad = sorted(k for k in set(got) | set(recorded[part])
                   if got.get(k) != recorded[part].get(k))
      if bad:
        raise CheckpointError(f"checkpoint {where} is corrupt: {part} {', '.join(bad[:4])}"
                              f"{' …' if len(bad) > 4 else ''} differ from the checksums "
                              "recorded when it was written")
  for name, w in trees["weights"].items():
    if not np.all(np.isfinite(_host(w))):
      raise CheckpointError(f"checkpoint {where} holds non-finite values in weight {name}")


def _manager(directory: Path, max_to_keep: Optional[int]):
  # In a multi-process job every manager needs its own barrier names: the checkpoint and the
  # snapshot of the same step are written at once and would otherwise share them.
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True,
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


# Optional weights that ``Weights`` gained after runs had saved optimiser states without them,
# newest first: an older state lacks that field and every one after it (when absent, None).
LATER_WEIGHT_FIELDS = ((SMEAR_NAME,), POSITIONAL_READER_NAMES)


def _without_absent(tree, names):
  """``tree`` with each ``Weights`` in it as a dict of its fields less those of ``names`` it
  lacks (None): the layout of optimiser states saved before those fields existed."""
  def plain(w):
    return {f.name: getattr(w, f.name) for f in dataclasses.fields(w)
            if not (f.name in names and getattr(w, f.name) is None)}
  return jax.tree.map(lambda x: plain(x) if isinstance(x, Weights) else x, tree,
                      is_leaf=lambda x: isinstance(x, Weights))


def _weights_meta(weights: Weights, meta: dict, stored: dict) -> dict:
  """``meta`` plus the format tag, the weights' shapes and the checksums of the ``stored`` parts."""
  shapes = {k: list(v.shape) for k, v in weights.to_dict().items()}
  return dict(meta, format=FORMAT, weight_shapes=shapes,
              checksums={part: array_checksums(tree) for part, tree in stored.items()})


class RunCheckpoints:
  """The resumable checkpoints and the snapshots of one work directory."""

  def __init__(self, workdir: Path, keep: int = 2):
    self.workdir = Path(workdir)
    self.resumable = _manager(self.workdir / "checkpoints", keep)
    self.snapshots = _manager(self.workdir / "snapshots", None)

  def save(self, step: int, weights: Weights, opt_state: Any, meta: dict) -> None:
    if step in self.resumable.all_steps():  # written before an interruption; resuming is exact
      return
    stored = {"weights": _pack(weights.to_dict()), "opt_state": _pack(opt_state)}
    self.resumable.save(step, args=ocp.args.Composite(
        weights=ocp.args.StandardSave(stored["weights"]),
        opt_state=ocp.args.StandardSave(stored["opt_state"]),
        meta=ocp.args.JsonSave(_weights_meta(weights, meta, stored))), force=True)

  def save_snapshot(self, step: int, weights: Weights, meta: dict) -> None:
    if step in self.snapshots.all_steps():
      return
    stored = {"weights": _pack(weights.to_dict())}
    self.snapshots.save(step, args=ocp.args.Composite(
        weights=ocp.args.StandardSave(stored["weights"]),
        meta=ocp.args.JsonSave(_weights_meta(weights, meta, stored))), force=True)

  def restore_latest(self, weights_like: Weights, opt_state_like: Any,
                     log: Callable[[str], None] = print,
                     check_meta: Optional[Callable[[dict], None]] = None,
                     ) -> Optional[Tuple[int, Weights, Any, dict]]:
    """Newest sound checkpoint as (step, weights, opt_state, meta), or None if there is none.

    A checkpoint that cannot be read, fails its checksums or holds non-finite weights is moved to
    ``unreadable-checkpoints/`` with the reason logged, and the previous one is tried.
    ``check_meta`` sees each checkpoint's meta before its arrays are read; the
    ``CheckpointConfigMismatch`` it raises stops the search with nothing moved.
    """
    for step in sorted(self.resumable.all_steps(), reverse=True):
      where = self.workdir / "checkpoints" / str(step)
      try:
        meta = dict(self.resumable.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"])
      except Exception as e:  # pylint: disable=broad-except
        self._move_aside(step, f"checkpoint {where} is unreadable ({type(e).__name__}: "
                         f"{str(e)[:200]})", log)
        continue
      if check_meta is not None:
        check_meta(meta)  # a config mismatch propagates: nothing is moved
      try:
        restored = self._restore_arrays(step, weights_like, opt_state_like)
        packed = {"weights": dict(restored["weights"]), "opt_state": restored["opt_state"]}
        verify_arrays(str(where), packed, meta)
      except CheckpointError as e:
        self._move_aside(step, str(e), log)
        continue
      except Exception as e:  # pylint: disable=broad-except
        self._move_aside(step, f"checkpoint {where} is unreadable ({type(e).__name__}: "
                         f"{str(e)[:200]})", log)
        continue
      weights = _unpack(packed["weights"], weights_like.to_dict())
      opt_state = _unpack(packed["opt_state"], opt_state_like)
      return step, Weights.from_dict(weights), opt_state, meta
    return None

  def _restore_arrays(self, step: int, weights_like: Weights, opt_state_like: Any) -> dict:
    """The weights and optimiser state of ``step``, shaped as ``weights_like`` and
    ``opt_state_like``.  Optimiser states written before ``Weights`` had some of its optional
    fields (``LATER_WEIGHT_FIELDS``: the smeared-key logits, before them the positional readers
    W_Q_pos, W_K_pos) hold no entry for them: when the current layout does not match, the
    older layouts are tried in turn, those fields read left out of the target, then put back
    as None."""
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    read = lambda opt_target: self.resumable.restore(step, args=ocp.args.Composite(
        weights=ocp.args.StandardRestore(abstract(_pack(weights_like.to_dict()))),
        opt_state=ocp.args.StandardRestore(abstract(_pack(opt_target))),
        meta=ocp.args.JsonRestore()))
    layouts = [()] + [sum(LATER_WEIGHT_FIELDS[:i + 1], ()) for i in range(len(LATER_WEIGHT_FIELDS))]
    for n, names in enumerate(layouts):
      try:
        restored = dict(read(_without_absent(opt_state_like, names) if names else opt_state_like))
        break
      except ValueError as e:
        if "tree structures do not match" not in str(e) or n == len(layouts) - 1:
          raise
    if not names:
      return restored
    is_weights = lambda x: isinstance(x, Weights)
    restored["opt_state"] = jax.tree.map(
        lambda like, got: Weights(**got) if is_weights(like) else got,
        opt_state_like, restored["opt_state"], is_leaf=is_weights)
    return restored

  def _move_aside(self, step: int, problem: str, log: Callable[[str], None]) -> None:
    """Moves checkpoint ``step`` to ``unreadable-checkpoints/`` and logs ``problem`` (a sentence
    naming it) and where it went."""
    source = self.workdir / "checkpoints" / str(step)
    aside = self.workdir / "unreadable-checkpoints" / f"{step}-{int(time.time())}"
    log(f"WARNING: {problem}; moved it to {aside} and trying the previous one")
    if jax.process_index() == 0:  # every process decides alike; one moves
      aside.parent.mkdir(exist_ok=True)
      source.rename(aside)
    self.resumable.reload()

  def wait(self) -> None:
    self.resumable.wait_until_finished()
    self.snapshots.wait_until_finished()

  def close(self) -> None:
    self.resumable.close()
    self.snapshots.close()


def _restore_weights(directory: Path, step: int) -> Tuple[Weights, dict]:
  """One checkpoint's weights and meta, checked against its recorded checksums.  Read with a
  plain checkpointer on ``<directory>/<step>``: a checkpoint manager would list and read every
  step's metadata first (0.26 s a snapshot in a 48-snapshot run, against 0.05)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    reader = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  path = (Path(directory) / str(step)).absolute()
  try:
    meta = dict(reader.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    if meta.get("format") != FORMAT:
      raise CheckpointError(f"{directory / str(step)} is not a circuits-repro checkpoint")
    # An explicit one-device target: a checkpoint written by a multi-process job records that
    # job's devices, which Orbax will not restore onto another topology by itself.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {k: jax.ShapeDtypeStruct(tuple(s) if 0 not in s else (1,), np.float32,
                                      sharding=device)
              for k, s in meta.get("weight_shapes", {}).items()}
    restored = reader.restore(path, args=ocp.args.Composite(
        weights=ocp.args.StandardRestore(target)))
  finally:
    reader.close()
  packed = {k: np.asarray(v) for k, v in dict(restored["weights"]).items()}
  verify_arrays(str(directory / str(step)), {"weights": packed},
                dict(meta, checksums={"weights": meta["checksums"]["weights"]})
                if "checksums" in meta else meta)
  shapes = meta.get("weight_shapes", {})
  weights = {k: np.zeros(shapes[k], np.float32) if 0 in shapes.get(k, [1]) else v
             for k, v in packed.items()}
  return Weights.from_dict(weights), meta


def last_sound_step(directory: Path) -> Optional[int]:
  """The newest checkpoint in ``directory`` that reads back and passes its checksums, or None."""
  for step in reversed(checkpoint_steps(directory)):
    try:
      _restore_weights(Path(directory), step)
      return step
    except Exception:  # pylint: disable=broad-except
      continue
  return None


def checkpoint_steps(directory: Path) -> List[int]:
  """The finished steps in ``directory``: its sub-folders named by a step number.

  Orbax writes a step into a temporary folder and renames it to ``<step>`` when complete, so a
  listing is enough, and it needs no Orbax manager: in a multi-process job a manager syncs every
  process at barriers, and whether this is called may differ between processes (whether the
  folder exists yet is a race), which would pair mismatched barriers.
  """
  directory = Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


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
                            f"{str(e)[:300]}") from None
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
    except CheckpointError as e:
      reason = str(e)
    except Exception as e:  # pylint: disable=broad-except
      reason = (f"checkpoint {directory / str(step)} is unreadable ({type(e).__name__}: "
                f"{str(e)[:200]})")
    errors.append(f"step {step}: {reason}")
    log(f"WARNING: {reason}; trying the previous one")
  raise CheckpointError(f"no readable checkpoint in {directory}: " + "; ".join(errors))
