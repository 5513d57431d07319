"""A training run's work directory: its lock, its metrics file, the config it was started with
(and what may change on resume), and setting aside an earlier start's files."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import jax

from reproduce.core import checkpoint

# Fields that may change between a run and its resumption (they do not change the maths).
RESUMABLE_CHANGES = ("train.log_every", "train.eval_every", "train.eval_windows",
                     "train.checkpoint_every", "train.keep_checkpoints", "data.cache_dir",
                     "data.shard_tokens", "train.compute_dtype", "train.attention",
                     "train.loss_block_elements", "data.max_epochs")


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


class WorkdirLocked(RuntimeError):
  """Another live process is training in the work directory."""


class WorkdirLock:
  """An advisory lock on ``<workdir>/lock``, which names its holder (PID, host, start time).

  ``fcntl.flock`` is released by the OS when the holder exits, however it exits, so a lock file
  left by a killed run is stale by construction: it is reported and taken over.  Where the file
  system has no flock, a lock file naming a live process on this host, or any process on another
  host, is respected.
  """

  def __init__(self, workdir: Path, log: Callable[[str], None] = print):
    self.path = Path(workdir) / "lock"
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    previous = self._holder()
    try:
      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) and not self._held_by_other(previous):
        previous = None  # no flock here: an abandoned lock file is taken over below
      else:
        os.close(self.fd)
        who = (f"PID {previous.get('pid')} on host {previous.get('host')}, started "
               f"{previous.get('started')}") if previous else "holder unknown"
        raise WorkdirLocked(f"{workdir} is in use by another training run ({who}; lock file "
                            f"{self.path}); wait for it to end or use another --workdir") from None
    if previous and previous.get("pid"):
      log(f"stale lock {self.path} from PID {previous.get('pid')} on host "
          f"{previous.get('host')} (no longer running) taken over")
    os.ftruncate(self.fd, 0)
    os.write(self.fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())

  def _holder(self) -> Optional[dict]:
    try:
      holder = json.loads(os.pread(self.fd, 4096, 0) or b"null")
    except ValueError:
      return None
    return holder if isinstance(holder, dict) else None

  @staticmethod
  def _held_by_other(holder: Optional[dict]) -> bool:
    if not holder or holder.get("pid") in (None, os.getpid()):
      return False
    if holder.get("host") != socket.gethostname():
      return True
    try:
      os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
      return False
    except (OSError, ValueError):
      return True
    return True

  def release(self) -> None:
    if self.fd is not None:
      os.ftruncate(self.fd, 0)
      os.close(self.fd)  # closing releases the flock
      self.fd = None


def config_differences(saved: dict, current: dict):
  """``["section.field: saved → current", …]`` for every field that differs, except the
  ``RESUMABLE_CHANGES``; fields present on one side only count as differences."""
  diffs = []
  for section in sorted(set(saved) | set(current), key=str):
    old, new = saved.get(section), current.get(section)
    if isinstance(old, dict) or isinstance(new, dict):
      old, new = old if isinstance(old, dict) else {}, new if isinstance(new, dict) else {}
      for k in sorted(set(old) | set(new)):
        name = f"{section}.{k}"
        if name not in RESUMABLE_CHANGES and old.get(k) != new.get(k):
          diffs.append(f"{name}: {old.get(k)!r} → {new.get(k)!r}")
    elif old != new:
      diffs.append(f"{section}: {old!r} → {new!r}")
  return diffs


def read_json_file(path: Path):
  """The JSON in ``path``; a ValueError naming the file when it is not valid JSON."""
  try:
    return json.loads(Path(path).read_text(encoding="utf-8"))
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it may be damaged: move it aside "
                     "(the checkpoints also record the config) or use another --workdir") from None


def read_metrics(path: Path, log: Callable[[str], None] = print) -> list:
  """The records of a ``metrics.jsonl``, in order ([] when there is no file).

  A last line cut short (a run killed while writing it) is dropped with a warning; any other line
  that is not a JSON object is a ValueError naming the file and line.
  """
  path = Path(path)
  if not path.is_file():
    return []
  text = path.read_text(encoding="utf-8", errors="replace")
  lines = text.splitlines()
  records = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    except ValueError as e:
      if n == len(lines) and not text.endswith("\n"):
        log(f"WARNING: {path}:{n} is an unfinished record (the run was stopped while "
            "writing it); dropped")
        continue
      raise ValueError(f"{path}:{n} is not a metrics record ({e}); move the file aside "
                       "to continue") from None
    records.append(record)
  return records


class Metrics:
  """Appends JSON records to ``metrics.jsonl``; on resume, drops records past the resumed step
  (and a last line cut short, ``read_metrics``)."""

  def __init__(self, path: Path, resume_step: int, log: Callable[[str], None] = print):
    self.path = path
    if path.exists() and jax.process_index() == 0:
      kept = [r for r in read_metrics(path, log)
              if resume_step and r.get("step", 0) <= resume_step]
      tmp = path.with_suffix(".tmp")
      tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
      os.replace(tmp, path)

  def write(self, record: dict) -> None:
    if jax.process_index() == 0:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


def check_workdir(workdir: Path) -> None:
  """Raises OSError naming the problem unless ``workdir`` is, or can be made, a writable directory.

  Nothing is left behind: the probe file is removed at once.
  """
  workdir = Path(workdir).absolute()
  existing = workdir
  while not existing.exists() and not existing.is_symlink():
    existing = existing.parent
  if not existing.is_dir():
    where = workdir if existing == workdir else f"{existing} (on the path to {workdir})"
    raise NotADirectoryError(f"work directory problem: {where} is a file, not a directory; "
                             "choose another --workdir")
  try:
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise PermissionError(f"work directory {workdir} cannot be written ({existing}: "
                          f"{e.strerror}); choose another --workdir") from None


def saved_config_conflict(workdir: Path, current: dict) -> Optional[str]:
  """Why ``workdir`` cannot take ``current``, or None.  A run with no checkpoint yet never
  conflicts (its config.json is replaced); one with checkpoints must keep its config."""
  saved_config = workdir / "config.json"
  if not saved_config.exists() or not checkpoint.checkpoint_steps(workdir / "checkpoints"):
    return None
  saved = read_json_file(saved_config)
  if not isinstance(saved, dict):
    raise ValueError(f"{saved_config} is not a config (a JSON object expected); it may be "
                     "damaged: move it aside (the checkpoints also record the config)")
  diffs = config_differences(saved, current)
  if diffs:
    return (f"{workdir} holds a run with a different config ({'; '.join(diffs)}); "
            "use a new --workdir or the original config")
  return None


def set_aside_earlier_start(workdir: Path, current: dict, log: Callable[[str], None]) -> None:
  """Starting from step 0 in a work directory whose earlier start (another config) wrote no
  checkpoint: its snapshots and metrics would mix with ours, so they are moved aside, not lost."""
  saved_config = workdir / "config.json"
  if not saved_config.exists():
    return
  try:
    saved = read_json_file(saved_config)
  except ValueError:
    saved = None  # damaged: set aside with the rest
  if isinstance(saved, dict) and not config_differences(saved, current):
    return
  earlier = [p for p in (workdir / "snapshots", workdir / "metrics.jsonl",
                         workdir / "config.json") if p.exists()]
  aside = workdir / f"earlier-start-{time.strftime('%Y%m%d-%H%M%S')}"
  aside.mkdir()
  for p in earlier:
    p.rename(aside / p.name)
  log(f"{workdir} had no checkpoint yet: starting over with the new config; the earlier start's "
      f"files are in {aside}")
