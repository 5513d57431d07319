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
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P

from reproduce.cli import USER_ERRORS, quiet_libraries
from reproduce.config import (check_corpus_bound, check_corpus_size, define_config_flag,
                              parse_flags, validate)
from reproduce.core import checkpoint, scores
from reproduce.core.model import ModelConfig, forward, token_losses
from reproduce.core.weights import Weights
from reproduce.data import batches
from reproduce.data.corpus import corpus_from_config
from reproduce.data.store import TokenizedCorpus, format_seconds, prepare_tokens
from reproduce.host import CPU_DEVICES_HELP, split_cpu
from reproduce.train.plan import micro_batches, plan_step
from reproduce.train.step import (TrainState, compile_train_step, data_mesh, initial_weights,
                                  learning_rate_schedule, make_optimizer, put_batch,
                                  training_devices)
from reproduce.train.workdir import (Metrics, TrainingDiverged, WorkdirLock, check_workdir,
                                     config_differences, saved_config_conflict,
                                     set_aside_earlier_start)

INDUCTION_PROBE_LENGTH = 50  # random tokens per half of the eval's repeated sequence


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


@dataclasses.dataclass
class TrainResult:
  workdir: Path
  step: int
  weights: Weights
  config: Any
  tokens: TokenizedCorpus


def _refuse_conflict(workdir: Path, current: dict) -> None:
  conflict = saved_config_conflict(workdir, current)
  if conflict:
    raise ValueError(conflict)


def _checked_start(config, workdir: Path, devices, log):
  """Everything checked before anything is written: the mesh and its batch arithmetic, the work
  directory, the run already there, and the token store (built if missing) against n_ctx and
  the run's length.  Returns (mesh, tokens)."""
  t, cfg = config.train, ModelConfig.from_any(config)
  mesh = data_mesh(devices if devices is not None else training_devices(t.batch_size, log))
  if t.batch_size % mesh.size:
    raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the {mesh.size} "
                     "devices it is split over")
  micro_batches(config, mesh.size, mesh.devices.flat[0].platform)  # raises if it cannot divide
  check_workdir(workdir)
  _refuse_conflict(workdir, config.to_dict())  # early, before minutes of tokenizing
  corpus = corpus_from_config(config.data)
  check_corpus_bound(config, corpus)  # before minutes of tokenizing a corpus far too small
  tokens = prepare_tokens(corpus, cfg.d_vocab,
                          config.data.cache_dir or None, log=log,
                          sample_bytes=config.data.tokenizer_sample_bytes,
                          shard_tokens=config.data.shard_tokens)
  batches.train_batch(tokens.train, t.seed, 0, 1, cfg.n_ctx, tokens.bos_id)  # long enough for n_ctx?
  batches.eval_windows(tokens.heldout, 1, cfg.n_ctx, tokens.bos_id)
  check_corpus_size(config, len(tokens.train))
  return mesh, tokens


def _restore_or_start(config, workdir: Path, tx, ckpts, had_checkpoints, log):
  """(first step, weights, optimiser state): the newest sound checkpoint's, or step 0's."""
  current = config.to_dict()
  weights = initial_weights(config)
  opt_state = tx.init(weights)

  def same_config(meta):
    diffs = config_differences(meta.get("config", {}), current)
    if diffs:
      raise checkpoint.CheckpointConfigMismatch(
          f"config mismatch: checkpoint {workdir / 'checkpoints' / str(meta.get('step'))} was "
          f"written with a different config ({'; '.join(diffs)}); nothing was changed: use "
          "the original config or a new --workdir")

  restored = ckpts.restore_latest(weights, opt_state, log=log, check_meta=same_config)
  if restored is None and had_checkpoints:
    raise checkpoint.CheckpointError(
        f"no sound checkpoint left in {workdir / 'checkpoints'} (each was moved to "
        f"{workdir / 'unreadable-checkpoints'}, reasons above); run again to start over "
        "from step 0")
  if restored is None:
    return 0, weights, opt_state
  start, weights, opt_state, _ = restored
  log(f"resuming {workdir} from step {start}")
  return start, weights, opt_state


def _write_run_files(workdir: Path, tokens: TokenizedCorpus, current: dict) -> None:
  """The run's tokenizer and config, each written whole (temporary file, then rename)."""
  shutil.copyfile(tokens.tokenizer_path, workdir / "tokenizer.json.tmp")
  os.replace(workdir / "tokenizer.json.tmp", workdir / "tokenizer.json")
  tmp = workdir / "config.json.tmp"
  tmp.write_text(json.dumps(current, indent=1))
  os.replace(tmp, workdir / "config.json")


class _Run:
  """One run's loop state: what it logs, evaluates, snapshots and checkpoints after each step."""

  def __init__(self, config, workdir: Path, mesh, tokens: TokenizedCorpus, ckpts, start: int,
               log: Callable[[str], None]):
    t = config.train
    self.config, self.t, self.cfg = config, t, ModelConfig.from_any(config)
    self.workdir, self.mesh, self.tokens, self.ckpts, self.log = workdir, mesh, tokens, ckpts, log
    self.start = start
    self.metrics = Metrics(workdir / "metrics.jsonl", start, log=log)
    self.schedule = learning_rate_schedule(t)
    self.heldout = batches.eval_windows(tokens.heldout, t.eval_windows, self.cfg.n_ctx,
                                        tokens.bos_id)
    self.snapshots = set(checkpoint.snapshot_steps(t.steps, t.n_snapshots))
    self.tokens_per_step = t.batch_size * self.cfg.n_ctx
    pool = scores.frequency_band(tokens.train, self.cfg.d_vocab,
                                 exclude=(tokens.bos_id, tokens.eot_id), counts=tokens.counts)
    self.probe_length = min(INDUCTION_PROBE_LENGTH, (self.cfg.n_ctx - 1) // 2, len(pool))
    self.probe = scores.repeated_sequences(pool, tokens.bos_id, self.probe_length, 2, 4,
                                           seed=12345)
    self.began = self.window_start = time.time()
    self.window_steps = 0
    self.interval_loss, self.interval_steps = jnp.zeros((), jnp.float32), 0  # summed on device

  def meta(self, step: int) -> dict:
    return {"step": step, "tokens_seen": step * self.tokens_per_step,
            "config": self.config.to_dict(), "tokenizer": self.tokens.reference()}

  def check_finite(self, step: int, loss: float) -> None:
    if not math.isfinite(loss):
      self.ckpts.wait()
      good = checkpoint.last_sound_step(self.workdir / "checkpoints")  # read back and verified
      raise TrainingDiverged(
          f"loss became {loss} at step {step}; the last good checkpoint is "
          f"{'none' if good is None else 'step ' + str(good)} in {self.workdir / 'checkpoints'}. "
          "Lower train.lr, raise train.warmup_steps or tighten train.grad_clip.")

  def evaluate(self, step: int, w):
    """Process 0 evaluates a host copy of the (replicated) weights; the others skip it."""
    if jax.process_index() != 0:
      return None
    rec = {"step": step, "tokens": step * self.tokens_per_step}
    rec.update(evaluate(self.cfg, jax.device_get(w), *self.heldout, self.probe,
                        self.probe_length))
    self.metrics.write(rec)
    return rec

  def log_progress(self, done: int, out) -> None:
    """Mean loss since the last record, throughput since the last log (compilation excluded)."""
    t = self.t
    loss = float(self.interval_loss) / self.interval_steps
    self.interval_loss, self.interval_steps = jnp.zeros((), jnp.float32), 0
    self.check_finite(done, loss)
    now = time.time()
    rate = (self.window_steps * self.tokens_per_step / max(now - self.window_start, 1e-9)
            if self.window_steps else 0.0)
    eta = (t.steps - done) * self.tokens_per_step / rate if rate else float("nan")
    record = {"step": done, "tokens": done * self.tokens_per_step, "loss": loss,
              "grad_norm": float(out["grad_norm"]), "lr": float(self.schedule(done - 1)),
              "tokens_per_s": round(rate, 1), "elapsed_s": round(now - self.began, 1),
              "compute_dtype": self.compute_dtype}
    self.metrics.write(record)
    self.log(f"step {done:>6}/{t.steps} | loss {loss:.4f} | lr {record['lr']:.2e} | "
             f"{rate / 1e3:.1f}k tok/s | elapsed {format_seconds(now - self.began)} | "
             f"ETA {format_seconds(eta) if math.isfinite(eta) else '?'}")
    self.window_start, self.window_steps = time.time(), 0

  def after_step(self, done: int, state, out) -> None:
    t = self.t
    self.interval_loss, self.interval_steps = self.interval_loss + out["loss"], self.interval_steps + 1
    self.window_steps += 1
    if done == self.start + 1:  # exclude compilation from the throughput
      jax.block_until_ready(state)
      self.window_start, self.window_steps = time.time(), 0
    if done % t.log_every == 0 or done == t.steps:
      self.log_progress(done, out)
    if done % t.eval_every == 0 or done == t.steps:
      rec = self.evaluate(done, state.weights)
      if rec is not None:
        self.log(f"  eval step {done}: held-out loss {rec['heldout_loss']:.4f}"
                 + (f", previous-token max {rec['previous_token_max']}, induction max "
                    f"{rec.get('induction_max')}" if self.cfg.n_layers else ""))
    if done in self.snapshots:
      self.ckpts.save_snapshot(done, state.weights, self.meta(done))
    if done % t.checkpoint_every == 0 or done == t.steps:
      self.check_finite(done, float(out["loss"]))
      self.ckpts.save(done, state.weights, state.opt_state, self.meta(done))

  def run(self, tx, state):
    """Steps ``start`` … ``train.steps`` − 1; returns the final state."""
    t, cfg, mesh = self.t, self.cfg, self.mesh
    plan = plan_step(self.config, mesh.size, mesh.devices.flat[0].platform)
    self.compute_dtype = plan.compute_dtype  # recorded with the losses: weights depend on it
    step_fn = compile_train_step(self.config, tx, mesh, plan, log=self.log)
    if self.start == 0 and 0 in self.snapshots:
      self.ckpts.save_snapshot(0, state.weights, self.meta(0))
      self.evaluate(0, state.weights)
    if self.start >= t.steps:
      self.log(f"{self.workdir} is already trained to step {self.start}")
    else:
      self.log(f"training {self.config.name}: {cfg.n_layers} layers, {cfg.n_heads}×{cfg.d_head} "
               f"heads, d_model {cfg.d_model}, vocab {cfg.d_vocab}, ctx {cfg.n_ctx}; steps "
               f"{self.start}→{t.steps}, {self.tokens_per_step:,} tokens/step, {mesh.size} "
               "device(s)")
    self.began, self.window_start, self.window_steps = time.time(), time.time(), 0
    my_rows = batches.process_rows(t.batch_size, jax.process_index(), jax.process_count())
    for step in range(self.start, t.steps):
      inputs, targets = batches.train_batch(self.tokens.train, t.seed, step, t.batch_size,
                                            cfg.n_ctx, self.tokens.bos_id, rows=my_rows)
      state, out = step_fn(state, *put_batch(mesh, inputs, targets, local=True))
      self.after_step(step + 1, state, out)
    self.ckpts.wait()
    return state


def train(config, workdir, *, log: Callable[[str], None] = print,
          devices=None) -> TrainResult:
  """Trains (or resumes, or finds finished) the run in ``workdir``; returns its final state.

  Checks everything it can before writing anything; then holds ``<workdir>/lock`` (process 0 of
  a multi-process job only: all processes share the work directory) until it returns.
  """
  validate(config)
  workdir = Path(workdir)
  mesh, tokens = _checked_start(config, workdir, devices, log)
  current = config.to_dict()
  lead = jax.process_index() == 0
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir, log=log) if lead else None
  except OSError as e:
    raise PermissionError(f"work directory {workdir} cannot be written ({e.strerror})") from None
  ckpts = None
  try:
    _refuse_conflict(workdir, current)  # again, now that no one else writes
    tx = make_optimizer(config)
    had_checkpoints = checkpoint.checkpoint_steps(workdir / "checkpoints")
    if not had_checkpoints and lead:
      set_aside_earlier_start(workdir, current, log)
    ckpts = checkpoint.RunCheckpoints(workdir, keep=config.train.keep_checkpoints)
    start, weights, opt_state = _restore_or_start(config, workdir, tx, ckpts, had_checkpoints,
                                                  log)
    if lead:
      _write_run_files(workdir, tokens, current)
    run = _Run(config, workdir, mesh, tokens, ckpts, start, log)
    # From host values: every process holds the whole state, and a restored checkpoint's arrays,
    # committed to one local device, cannot be moved across processes directly.
    state = jax.device_put(
        jax.device_get(TrainState(jnp.asarray(start, jnp.int32), weights, opt_state)),
        NamedSharding(mesh, P()))
    state = run.run(tx, state)
  finally:
    if ckpts is not None:
      ckpts.close()
    if lock is not None:
      lock.release()
  return TrainResult(workdir=workdir, step=int(state.step),
                     weights=jax.device_get(state.weights), config=config, tokens=tokens)


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


def main(argv):
  FLAGS = flags.FLAGS
  quiet_libraries(FLAGS.verbose)
  try:
    if len(argv) > 1:
      raise ValueError(f"unexpected arguments {argv[1:]}")
    split_cpu(FLAGS.cpu_devices, distributed=FLAGS.distributed)
    if FLAGS.distributed:
      initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    # FLAGS.config: loaded, overridden and validated by parse_flags
    train(FLAGS.config, FLAGS.workdir, log=print if jax.process_index() == 0 else (lambda *_: None))
  except Exception as e:  # pylint: disable=broad-except
    if FLAGS.verbose:
      raise
    if isinstance(e, USER_ERRORS):
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"error: {type(e).__name__}: {e} (run with --verbose for the traceback)",
          file=sys.stderr)
    sys.exit(1)


def define_flags():
  """The command line of ``python -m reproduce.train``."""
  define_config_flag()
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


def run_cli():
  """Parses the command line (``define_flags`` first) and trains."""
  app.run(main, flags_parser=parse_flags)
