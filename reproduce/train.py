"""Training: one pure jitted AdamW step, data-parallel over all devices, resumable from its workdir.

    python -m reproduce.train --config=configs/attn2l.py:cpu --workdir=runs/attn2l
    python -m reproduce.train --config=configs/attn2l.py:test --config.train.steps=60 --workdir=/tmp/w

Running the same command again resumes from the newest sound checkpoint (exactly: batch i is a
pure function of (seed, i)).  The work directory gets ``config.json``, ``tokenizer.json``,
``metrics.jsonl`` (one JSON record per log/eval step), ``checkpoints/``, ``snapshots/`` and
``lock`` (held while a run trains there: one writer per work directory).  Everything that can be
checked (config, batch arithmetic, corpus, data length, a writable work directory, the config of
the run already there) is checked before anything is written, so a failed start never blocks the
corrected retry; a work directory with no checkpoint yet may be restarted with a new config.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from reproduce import checkpoint, data, scores
from reproduce.config import (apply_overrides, check_corpus_size, load_config,
                              split_config_flags, validate)
from reproduce.corpus import corpus_from_config
from reproduce.host import CPU_DEVICES_HELP, cpu_has_amx, split_cpu
from reproduce.model import forward, largest_divisor_at_most, mean_loss, token_losses
from reproduce.tokenizer import TokenizedCorpus, prepare_tokens
from reproduce.weights import ModelConfig, Weights, init_weights

# Fields that may change between a run and its resumption (they do not change the maths).
RESUMABLE_CHANGES = ("train.log_every", "train.eval_every", "train.eval_windows",
                     "train.checkpoint_every", "train.keep_checkpoints", "data.cache_dir",
                     "data.shard_tokens", "train.compute_dtype", "train.attention",
                     "train.loss_block_elements", "data.max_epochs")
INDUCTION_PROBE_LENGTH = 50  # random tokens per half of the eval's repeated sequence


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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  step: jax.Array
  weights: Weights
  opt_state: Any


def learning_rate_schedule(t) -> optax.Schedule:
  """Linear warmup to ``lr``, constant, then cosine to ``lr·final_lr_fraction`` over the last
  ``decay_fraction`` of the steps after warmup (``decay_fraction=1``: plain warmup + cosine)."""
  warmup = min(t.warmup_steps, t.steps)
  decay = max(1, int(round(t.decay_fraction * (t.steps - warmup))))
  constant = t.steps - warmup - decay
  parts = [optax.linear_schedule(0.0, t.lr, warmup)] if warmup else []
  if constant > 0:
    parts.append(optax.constant_schedule(t.lr))
  parts.append(optax.cosine_decay_schedule(t.lr, decay, alpha=t.final_lr_fraction))
  boundaries = list(np.cumsum([warmup] * bool(warmup) + [constant] * (constant > 0)))
  return optax.join_schedules(parts, boundaries) if len(parts) > 1 else parts[0]


def make_optimizer(config) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW; a frozen (sinusoidal) W_pos gets no decay and no update."""
  t = config.train
  frozen_pos = config.model.pos_init == "sinusoidal"
  decay_mask = lambda w: dataclasses.replace(
      jax.tree.map(lambda _: True, w), W_pos=not frozen_pos)
  return optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.adamw(learning_rate_schedule(t), b1=t.adam_b1, b2=t.adam_b2,
                  weight_decay=t.weight_decay, mask=decay_mask))


def initial_weights(config) -> Weights:
  m = config.model
  return init_weights(ModelConfig.from_any(config), jax.random.key(config.train.seed),
                      init_std=m.init_std, qk_init_std=m.qk_init_std if m.qk_init_std > 0 else None,
                      pos_init=m.pos_init, pos_scale=m.pos_scale)


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """How the training step computes; every field is chosen by ``plan_step`` and logged."""
  compute_dtype: str  # "float32" or "bfloat16": the matmul/attention operand dtype
  attention: str  # "explicit", "xla" or "cudnn" (see model.residual_stream)
  n_micro: int  # gradient-accumulation slices per step
  loss_block: int  # logits held at once by the chunked cross-entropy
  reasons: tuple = ()  # one line per automatic choice or fallback

  def describe(self) -> str:
    return (f"step: compute {self.compute_dtype}, attention {self.attention}, "
            f"{self.n_micro} micro-batch(es), loss blocks of {self.loss_block:,} logits"
            + "".join(f"\n  {r}" for r in self.reasons))


def _cudnn_accepts(shape, dtype) -> Optional[str]:
  """None if cuDNN's fused attention compiles (forward and backward) for q/k/v of ``shape``
  [B, T, H, E] and ``dtype``; otherwise the error's first line."""
  spec = jax.ShapeDtypeStruct(shape, dtype)
  attend = lambda q, k, v: jax.nn.dot_product_attention(
      q, k, v, is_causal=True, implementation="cudnn").astype(jnp.float32).sum()
  try:
    jax.jit(jax.grad(attend, argnums=(0, 1, 2))).lower(spec, spec, spec).compile()
  except Exception as e:  # pylint: disable=broad-except  # any refusal means: use XLA
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
  return None


def plan_step(config, n_devices: int, platform: str, check_cudnn: bool = True) -> StepPlan:
  """Resolves ``train.compute_dtype``, ``train.attention`` and ``train.micro_batch_size``.

  compute_dtype "auto": bfloat16 on GPU/TPU, and on CPUs with AMX (1.8–1.9× the float32 step at the
  anchor shape on Sapphire Rapids, experiments/SPEED.md, fifth pass); float32 on other CPUs.
  attention "auto": cuDNN's fused kernel on GPU; on CPU causal query blocks with a hand-written
  backward (``model.blocked_causal_attention``: 1.14× the explicit step at the anchor shape
  when introduced, where XLA's ``dot_product_attention`` ran at 0.6×); explicit patterns on
  TPU.  cuDNN falls back to XLA's ``dot_product_attention`` when it cannot take the shape (not
  a GPU, float32, head size...).
  Micro-batches: a set ``train.micro_batch_size`` wins (it must divide the per-device batch).
  Otherwise, with cuDNN nothing [T, T]-sized is materialised, so the whole per-device batch is
  one slice; with materialised patterns a slice keeps one layer's patterns under 2²⁹ floats on an
  accelerator, and on CPU holds about ``CPU_SLICE_TOKENS`` tokens (activations stay in cache).
  """
  t, m = config.train, config.model
  reasons = []
  dtype = t.compute_dtype
  if dtype == "auto":
    if platform != "cpu":
      dtype, why = "bfloat16", platform
    elif cpu_has_amx():
      dtype, why = "bfloat16", "CPU with AMX: bf16 products, float32 sums and state"
    else:
      dtype, why = "float32", "CPU without AMX"
    reasons.append(f"compute_dtype auto → {dtype} ({why})")
  attention = t.attention
  if attention == "auto":
    attention = {"gpu": "cudnn", "cpu": "blocked"}.get(platform, "explicit")
    reasons.append(f"attention auto → {attention} ({platform})")
  per_device = t.batch_size // n_devices
  if attention == "cudnn":
    size = t.micro_batch_size or per_device
    refusal = ("not a GPU" if platform != "gpu" else
               _cudnn_accepts((size, m.n_ctx, m.n_heads, m.d_head), jnp.dtype(dtype))
               if check_cudnn else None)
    if refusal:
      attention = "xla"
      reasons.append(f"cuDNN attention cannot take this step ({refusal}); using XLA's")
  size = t.micro_batch_size
  if size == 0:
    if attention == "cudnn":
      size = per_device
    elif platform == "cpu":
      size = largest_divisor_at_most(per_device, CPU_SLICE_TOKENS // m.n_ctx)
    else:
      size = largest_divisor_at_most(per_device, (1 << 29) // (m.n_heads * m.n_ctx ** 2))
  if per_device % size:
    raise ValueError(f"train.micro_batch_size={size} must divide the per-device batch "
                     f"{per_device} (batch_size {t.batch_size} over {n_devices} devices)")
  block = t.loss_block_elements or loss_block_elements(platform)
  return StepPlan(dtype, attention, per_device // size, block, tuple(reasons))


CPU_SLICE_TOKENS = 512  # tokens per gradient-accumulation slice on CPU (experiments/SPEED.md)


def micro_batches(config, n_devices: int, platform: str) -> int:
  """How many gradient-accumulation slices a step's batch is cut into (see ``plan_step``)."""
  return plan_step(config, n_devices, platform, check_cudnn=False).n_micro


def loss_block_elements(platform: str) -> int:
  """Logits held at once by the chunked cross-entropy (``train.loss_block_elements`` = 0):
  cache-sized on CPU (2²⁰ floats = 4 MiB; 2¹⁸ was not measurably better, experiments/SPEED.md),
  larger on
  accelerators."""
  return 1 << 20 if platform == "cpu" else 1 << 26


def train_step(config, tx: optax.GradientTransformation, plan: StepPlan, mesh: Mesh,
               state: TrainState, inputs, targets):
  """One AdamW step → (new state, {"loss", "grad_norm"}).  Pure; jitted by ``compile_train_step``.

  Each device takes its own rows of the batch (``shard_map`` over the mesh's ``data`` axis) and
  sums the gradients of ``plan.n_micro`` equal slices of them (slice j holds its rows j,
  j + n_micro, …); one ``psum`` after that loop adds the devices' sums, and the mean over all
  slices is the full-batch gradient.  Nothing inside the loop talks to another device (left to
  the SPMD partitioner, the loop gathered activations and reduced gradients at every slice).
  Weights, gradients and optimiser state are float32 whatever ``plan.compute_dtype``.
  """
  cfg = ModelConfig.from_any(config)
  frozen_pos = config.model.pos_init == "sinusoidal"
  n_micro = plan.n_micro
  dtype = None if plan.compute_dtype == "float32" else jnp.dtype(plan.compute_dtype)

  def loss_fn(weights, x, y):
    if frozen_pos:
      weights = weights.replace(W_pos=jax.lax.stop_gradient(weights.W_pos))
    return mean_loss(cfg, weights, x, y, plan.loss_block, compute_dtype=dtype,
                     attention=plan.attention)

  grad_fn = jax.value_and_grad(loss_fn)

  def device_sum(weights, inputs, targets):  # this device's rows → (Σ loss, Σ grads) everywhere
    if n_micro == 1:
      total = grad_fn(weights, inputs, targets)
    else:
      split = lambda a: a.reshape(-1, n_micro, a.shape[-1]).swapaxes(0, 1)

      def accumulate(total, xy):
        return jax.tree.map(jnp.add, total, grad_fn(weights, *xy)), None

      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, weights))
      total, _ = jax.lax.scan(accumulate, zeros, (split(inputs), split(targets)))
    return jax.lax.psum(total, "data")

  total = jax.shard_map(device_sum, mesh=mesh, in_specs=(P(), P("data"), P("data")),
                        out_specs=P(), check_vma=False)(state.weights, inputs, targets)
  loss, grads = jax.tree.map(lambda a: a / (n_micro * mesh.size), total)
  updates, opt_state = tx.update(grads, state.opt_state, state.weights)
  weights = optax.apply_updates(state.weights, updates)
  return TrainState(state.step + 1, weights, opt_state), {
      "loss": loss, "grad_norm": optax.tree.norm(grads)}


def training_devices(batch_size: int, log: Callable[[str], None] = print) -> list:
  """Every device; in a one-process job with more devices than divide ``batch_size`` (say 8 CPU
  devices and a batch of 4), the most that do."""
  devices = jax.devices()
  if jax.process_count() > 1:
    return devices
  n = largest_divisor_at_most(batch_size, len(devices))
  if n < len(devices):
    log(f"training on {n} of {len(devices)} devices (train.batch_size {batch_size} is split "
        "evenly)")
  return devices[:n]


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (all processes' devices when launched multi-process)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def compile_train_step(config, tx, mesh: Mesh, plan: Optional[StepPlan] = None,
                       log: Optional[Callable[[str], None]] = None):
  """The jitted step: weights and optimiser state replicated, batch rows split over ``data``.

  ``plan`` defaults to ``plan_step`` for the mesh's platform; ``log`` receives its description.
  """
  replicated = NamedSharding(mesh, P())
  rows = NamedSharding(mesh, P("data"))
  if plan is None:
    plan = plan_step(config, mesh.size, mesh.devices.flat[0].platform)
  if log is not None:
    log(plan.describe())
  step = jax.jit(functools.partial(train_step, config, tx, plan, mesh),
                 in_shardings=(replicated, rows, rows), out_shardings=(replicated, replicated),
                 donate_argnums=0)
  if mesh.devices.flat[0].platform != "cpu" or mesh.size == 1:
    return step

  def one_step_at_a_time(state, inputs, targets):
    # Several CPU devices of one process meet in an in-process all-reduce; when the devices are
    # allowed to queue many steps ahead, the rendezvous can starve (seen: 40 steps queued on 2
    # devices hung every time; waiting every 5 steps never did).  Waiting for the previous step
    # costs nothing measurable (experiments/SPEED.md), and the caller's host work (the next
    # batch) still overlaps the running step.
    jax.block_until_ready(state)
    return step(state, inputs, targets)
  one_step_at_a_time.lower = step.lower
  return one_step_at_a_time


def put_batch(mesh: Mesh, inputs: np.ndarray, targets: np.ndarray, local: bool = False):
  """Places a batch on the mesh, split by rows over the ``data`` axis.

  ``local=False``: ``inputs``/``targets`` are the whole global batch and each process keeps its
  own rows (``data.process_rows``).  ``local=True``: they are already this process's rows (what
  ``data.train_batch(..., rows=...)`` reads), so no host ever reads another's windows.
  """
  rows = NamedSharding(mesh, P("data"))
  n, i = jax.process_count(), jax.process_index()
  mine = slice(None) if local else data.process_rows(inputs.shape[0], i, n)
  global_shape = (inputs.shape[0] * (n if local else 1),) + inputs.shape[1:]
  make = lambda x: jax.make_array_from_process_local_data(rows, x[mine], global_shape)
  return make(inputs), make(targets)


def _config_differences(saved: dict, current: dict):
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


class _Metrics:
  """Appends JSON records to ``metrics.jsonl``; on resume, drops records past the resumed step.

  A last line cut short (a run killed while writing it) is dropped with a warning; any other line
  that is not a JSON record is an error naming the file and line.
  """

  def __init__(self, path: Path, resume_step: int, log: Callable[[str], None] = print):
    self.path = path
    if path.exists() and jax.process_index() == 0:
      text = path.read_text(encoding="utf-8", errors="replace")
      lines = text.splitlines()
      kept = []
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
        if resume_step and record.get("step", 0) <= resume_step:
          kept.append(line)
      tmp = path.with_suffix(".tmp")
      tmp.write_text("".join(line + "\n" for line in kept))
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


def _saved_config_conflict(workdir: Path, current: dict) -> Optional[str]:
  """Why ``workdir`` cannot take ``current``, or None.  A run with no checkpoint yet never
  conflicts (its config.json is replaced); one with checkpoints must keep its config."""
  saved_config = workdir / "config.json"
  if not saved_config.exists() or not checkpoint.checkpoint_steps(workdir / "checkpoints"):
    return None
  saved = read_json_file(saved_config)
  if not isinstance(saved, dict):
    raise ValueError(f"{saved_config} is not a config (a JSON object expected); it may be "
                     "damaged: move it aside (the checkpoints also record the config)")
  diffs = _config_differences(saved, current)
  if diffs:
    return (f"{workdir} holds a run with a different config ({'; '.join(diffs)}); "
            "use a new --workdir or the original config")
  return None


def _format_seconds(s: float) -> str:
  s = int(max(0, s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def evaluate(cfg: ModelConfig, weights: Weights, heldout_inputs, heldout_targets,
             probe: np.ndarray, probe_length: int) -> dict:
  """Held-out loss, plus each layer's best previous-token score (on held-out text) and best
  induction score (on ``probe``: BOS + ``probe_length`` tokens repeated twice), as the figures
  measure them; and the probe's loss on its first half and on the repeat."""
  logits, _ = forward(cfg, weights, heldout_inputs)
  record = {"heldout_loss": float(token_losses(logits, heldout_targets).mean())}
  if cfg.n_layers:
    with_probe = probe_length >= 2
    roles = scores.previous_token_and_induction(
        cfg, weights, heldout_inputs[:2, :256],  # a short excerpt: small patterns at any n_ctx
        probe if with_probe else None, probe_length)
    record["previous_token_max"] = [round(float(x), 4) for x in roles["previous_token"].max(1)]
    if with_probe:
      losses, n = roles["probe_losses"], probe_length
      record["repeat_loss_first_half"] = float(losses[:, : n - 1].mean())
      record["repeat_loss_second_half"] = float(losses[:, n:].mean())
      record["induction_max"] = [round(float(x), 4) for x in roles["induction"].max(1)]
  return record


def _set_aside_earlier_start(workdir: Path, current: dict, log: Callable[[str], None]) -> None:
  """Starting from step 0 in a work directory whose earlier start (another config) wrote no
  checkpoint: its snapshots and metrics would mix with ours, so they are moved aside, not lost."""
  saved_config = workdir / "config.json"
  if not saved_config.exists():
    return
  try:
    saved = read_json_file(saved_config)
  except ValueError:
    saved = None  # damaged: set aside with the rest
  if isinstance(saved, dict) and not _config_differences(saved, current):
    return
  earlier = [p for p in (workdir / "snapshots", workdir / "metrics.jsonl",
                         workdir / "config.json") if p.exists()]
  aside = workdir / f"earlier-start-{time.strftime('%Y%m%d-%H%M%S')}"
  aside.mkdir()
  for p in earlier:
    p.rename(aside / p.name)
  log(f"{workdir} had no checkpoint yet: starting over with the new config; the earlier start's "
      f"files are in {aside}")


@dataclasses.dataclass
class TrainResult:
  workdir: Path
  step: int
  weights: Weights
  config: Any
  tokens: TokenizedCorpus


def train(config, workdir, *, log: Callable[[str], None] = print,
          devices=None) -> TrainResult:
  """Trains (or resumes, or finds finished) the run in ``workdir``; returns its final state.

  Checks everything it can before writing anything; then holds ``<workdir>/lock`` (process 0 of
  a multi-process job only: all processes share the work directory) until it returns.
  """
  validate(config)
  t = config.train
  workdir = Path(workdir)
  cfg = ModelConfig.from_any(config)
  mesh = data_mesh(devices if devices is not None else training_devices(t.batch_size, log))
  if t.batch_size % mesh.size:
    raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the {mesh.size} "
                     "devices it is split over")
  micro_batches(config, mesh.size, mesh.devices.flat[0].platform)  # raises if it cannot divide
  check_workdir(workdir)
  current = config.to_dict()
  conflict = _saved_config_conflict(workdir, current)  # early, before minutes of tokenizing
  if conflict:
    raise ValueError(conflict)

  corpus = corpus_from_config(config.data)
  tokens = prepare_tokens(corpus, cfg.d_vocab, config.data.cache_dir or None, log=log,
                          sample_bytes=config.data.tokenizer_sample_bytes,
                          shard_tokens=config.data.shard_tokens)
  data.train_batch(tokens.train, t.seed, 0, 1, cfg.n_ctx, tokens.bos_id)  # long enough for n_ctx?
  data.eval_windows(tokens.heldout, 1, cfg.n_ctx, tokens.bos_id)
  check_corpus_size(config, len(tokens.train))

  lead = jax.process_index() == 0
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir, log=log) if lead else None
  except OSError as e:
    raise PermissionError(f"work directory {workdir} cannot be written ({e.strerror})") from None
  ckpts = None
  try:
    conflict = _saved_config_conflict(workdir, current)  # again, now that no one else writes
    if conflict:
      raise ValueError(conflict)
    tx = make_optimizer(config)
    weights = initial_weights(config)
    opt_state = tx.init(weights)

    def same_config(meta):
      diffs = _config_differences(meta.get("config", {}), current)
      if diffs:
        raise checkpoint.CheckpointConfigMismatch(
            f"config mismatch: checkpoint {workdir / 'checkpoints' / str(meta.get('step'))} was "
            f"written with a different config ({'; '.join(diffs)}); nothing was changed: use "
            "the original config or a new --workdir")

    had_checkpoints = checkpoint.checkpoint_steps(workdir / "checkpoints")
    if not had_checkpoints and lead:
      _set_aside_earlier_start(workdir, current, log)
    ckpts = checkpoint.RunCheckpoints(workdir, keep=t.keep_checkpoints)
    restored = ckpts.restore_latest(weights, opt_state, log=log, check_meta=same_config)
    if restored is None and had_checkpoints:
      raise checkpoint.CheckpointError(
          f"no sound checkpoint left in {workdir / 'checkpoints'} (each was moved to "
          f"{workdir / 'unreadable-checkpoints'}, reasons above); run again to start over "
          "from step 0")
    start = 0
    if restored is not None:
      start, weights, opt_state, _ = restored
      log(f"resuming {workdir} from step {start}")
    if lead:
      shutil.copyfile(tokens.tokenizer_path, workdir / "tokenizer.json.tmp")
      os.replace(workdir / "tokenizer.json.tmp", workdir / "tokenizer.json")
      tmp = workdir / "config.json.tmp"
      tmp.write_text(json.dumps(current, indent=1))
      os.replace(tmp, workdir / "config.json")
    metrics = _Metrics(workdir / "metrics.jsonl", start, log=log)

    replicated = NamedSharding(mesh, P())
    # From host values: every process holds the whole state, and a restored checkpoint's arrays,
    # committed to one local device, cannot be moved across processes directly.
    state = jax.device_put(
        jax.device_get(TrainState(jnp.asarray(start, jnp.int32), weights, opt_state)), replicated)
    step_fn = compile_train_step(config, tx, mesh, log=log)
    schedule = learning_rate_schedule(t)
    heldout_inputs, heldout_targets = data.eval_windows(tokens.heldout, t.eval_windows, cfg.n_ctx,
                                                        tokens.bos_id)
    snapshots = set(checkpoint.snapshot_steps(t.steps, t.n_snapshots))
    tokens_per_step = t.batch_size * cfg.n_ctx
    meta = lambda step: {"step": step, "tokens_seen": step * tokens_per_step,
                         "config": config.to_dict(), "tokenizer": tokens.reference()}

    def check_finite(step, loss):
      if not math.isfinite(loss):
        ckpts.wait()
        good = checkpoint.last_sound_step(workdir / "checkpoints")  # read back and verified
        raise TrainingDiverged(
            f"loss became {loss} at step {step}; the last good checkpoint is "
            f"{'none' if good is None else 'step ' + str(good)} in {workdir / 'checkpoints'}. "
            "Lower train.lr, raise train.warmup_steps or tighten train.grad_clip.")

    pool = scores.frequency_band(tokens.train, cfg.d_vocab, exclude=(tokens.bos_id, tokens.eot_id),
                                 counts=tokens.counts)
    probe_length = min(INDUCTION_PROBE_LENGTH, (cfg.n_ctx - 1) // 2, len(pool))
    probe = scores.repeated_sequences(pool, tokens.bos_id, probe_length, 2, 4, seed=12345)

    def evaluate_now(step, w):
      """Process 0 evaluates a host copy of the (replicated) weights; the others skip it."""
      if jax.process_index() != 0:
        return None
      rec = {"step": step, "tokens": step * tokens_per_step}
      rec.update(evaluate(cfg, jax.device_get(w), heldout_inputs, heldout_targets, probe,
                          probe_length))
      metrics.write(rec)
      return rec

    if start == 0 and 0 in snapshots:
      ckpts.save_snapshot(0, state.weights, meta(0))
      evaluate_now(0, state.weights)
    if start >= t.steps:
      log(f"{workdir} is already trained to step {start}")
    else:
      log(f"training {config.name}: {cfg.n_layers} layers, {cfg.n_heads}×{cfg.d_head} heads, "
          f"d_model {cfg.d_model}, vocab {cfg.d_vocab}, ctx {cfg.n_ctx}; steps {start}→{t.steps}, "
          f"{tokens_per_step:,} tokens/step, {mesh.size} device(s)")
    began, window_start, window_steps = time.time(), time.time(), 0
    interval_loss, interval_steps = jnp.zeros((), jnp.float32), 0  # summed on device, no sync
    my_rows = data.process_rows(t.batch_size, jax.process_index(), jax.process_count())
    for step in range(start, t.steps):
      inputs, targets = data.train_batch(tokens.train, t.seed, step, t.batch_size, cfg.n_ctx,
                                         tokens.bos_id, rows=my_rows)
      state, out = step_fn(state, *put_batch(mesh, inputs, targets, local=True))
      interval_loss, interval_steps = interval_loss + out["loss"], interval_steps + 1
      done = step + 1
      window_steps += 1
      if done == start + 1:  # exclude compilation from the throughput
        jax.block_until_ready(state)
        window_start, window_steps = time.time(), 0
      if done % t.log_every == 0 or done == t.steps:
        loss = float(interval_loss) / interval_steps  # mean over the steps since the last record
        interval_loss, interval_steps = jnp.zeros((), jnp.float32), 0
        check_finite(done, loss)
        now = time.time()
        rate = window_steps * tokens_per_step / max(now - window_start, 1e-9) if window_steps else 0.0
        eta = (t.steps - done) * tokens_per_step / rate if rate else float("nan")
        record = {"step": done, "tokens": done * tokens_per_step, "loss": loss,
                  "grad_norm": float(out["grad_norm"]), "lr": float(schedule(done - 1)),
                  "tokens_per_s": round(rate, 1), "elapsed_s": round(now - began, 1)}
        metrics.write(record)
        log(f"step {done:>6}/{t.steps} | loss {loss:.4f} | lr {record['lr']:.2e} | "
            f"{rate / 1e3:.1f}k tok/s | elapsed {_format_seconds(now - began)} | "
            f"ETA {_format_seconds(eta) if math.isfinite(eta) else '?'}")
        window_start, window_steps = time.time(), 0
      if done % t.eval_every == 0 or done == t.steps:
        rec = evaluate_now(done, state.weights)
        if rec is not None:
          log(f"  eval step {done}: held-out loss {rec['heldout_loss']:.4f}"
              + (f", previous-token max {rec['previous_token_max']}, induction max "
                 f"{rec.get('induction_max')}" if cfg.n_layers else ""))
      if done in snapshots:
        ckpts.save_snapshot(done, state.weights, meta(done))
      if done % t.checkpoint_every == 0 or done == t.steps:
        check_finite(done, float(out["loss"]))
        ckpts.save(done, state.weights, state.opt_state, meta(done))
    ckpts.wait()
  finally:
    if ckpts is not None:
      ckpts.close()
    if lock is not None:
      lock.release()
  final = int(state.step)
  return TrainResult(workdir=workdir, step=final, weights=jax.device_get(state.weights),
                     config=config, tokens=tokens)


def quiet_libraries(verbose: bool) -> None:
  """Library log lines and warnings off stderr (our own messages stay) unless ``verbose``."""
  import logging  # pylint: disable=import-outside-toplevel
  import warnings  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  if verbose:
    absl_logging.set_verbosity(absl_logging.INFO)
    return
  absl_logging.set_verbosity(absl_logging.FATAL)  # Orbax logs every file it writes, and retries
  logging.getLogger("absl").setLevel(logging.CRITICAL)
  warnings.simplefilter("ignore")


# Errors that are the user's to fix: one line, exit code 2.
USER_ERRORS = (ValueError, OSError, TrainingDiverged, WorkdirLocked, checkpoint.CheckpointError)


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """Joins a multi-process job: ``jax.distributed.initialize`` with whatever is given; the rest
  comes from the cluster (SLURM, Open MPI, TPU VM metadata) or from ``$JAX_COORDINATOR_ADDRESS``,
  ``$JAX_NUM_PROCESSES`` and ``$JAX_PROCESS_ID``.  On CPU the processes' collectives use gloo."""
  env = lambda name: int(os.environ[name]) if os.environ.get(name) else None
  num_processes = num_processes if num_processes is not None else env("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else env("JAX_PROCESS_ID")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def main(argv, overrides=()):
  from absl import flags  # pylint: disable=import-outside-toplevel
  FLAGS = flags.FLAGS
  quiet_libraries(FLAGS.verbose)
  try:
    if len(argv) > 1:
      raise ValueError(f"unexpected arguments {argv[1:]}")
    split_cpu(FLAGS.cpu_devices, distributed=FLAGS.distributed)
    if FLAGS.distributed:
      initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    config = apply_overrides(load_config(FLAGS.config), overrides)
    train(config, FLAGS.workdir, log=print if jax.process_index() == 0 else (lambda *_: None))
  except Exception as e:  # pylint: disable=broad-except
    if FLAGS.verbose:
      raise
    if isinstance(e, USER_ERRORS):
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"error: {type(e).__name__}: {e} (run with --verbose for the traceback)",
          file=sys.stderr)
    sys.exit(1)


def run_cli():
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("config", None, "config file and variant, e.g. configs/attn2l.py:cpu; "
                      "--config.section.field=value overrides one field")
  flags.DEFINE_string("workdir", None, "run directory (created; resumed if it holds a run)")
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-process jobs)")
  flags.DEFINE_bool("verbose", False, "library logs on stderr and tracebacks on errors")
  flags.DEFINE_string("cpu_devices", "auto", CPU_DEVICES_HELP)
  flags.DEFINE_string("coordinator_address", None, "with --distributed: host:port of process 0 "
                      "(default: $JAX_COORDINATOR_ADDRESS or the cluster's)")
  flags.DEFINE_integer("num_processes", None, "with --distributed: processes in the job "
                       "(default: $JAX_NUM_PROCESSES or the cluster's)")
  flags.DEFINE_integer("process_id", None, "with --distributed: this process's index "
                       "(default: $JAX_PROCESS_ID or the cluster's)")
  flags.mark_flags_as_required(["config", "workdir"])
  try:
    argv, overrides = split_config_flags(sys.argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  app.run(functools.partial(main, overrides=overrides), argv=argv)


if __name__ == "__main__":
  run_cli()
