"""reproduce.train.loop: training learns, resumes exactly after SIGKILL, stops on NaN keeping the
last good checkpoint, does not retrain a finished run, and trains over two processes joined by
jax.distributed.

The two-process runs: each process owns one CPU device; their gradients meet in a gloo
all-reduce.  The reference is one process with two (fake) CPU devices and the same global batch:
the same partitioned program, and an all-reduce of two addends is exact in any order (a + b =
b + a in floating point), so the final parameters must be bitwise equal.  A plain one-device
process sums the batch in another order, so against it the check is a tolerance (see
``test_two_process_checkpoint_resumes_...``)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import reproduce
from reproduce.train.loop import TrainingDiverged, train
from reproduce.train.workdir import read_metrics

from tests.support.paths import ROOT
from tests.support.runs import train_command as _cli


def _records(workdir):
  return [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_loss_decreases(trained_2l):
  losses = [r["loss"] for r in _records(trained_2l.workdir) if "loss" in r]
  evals = [r["heldout_loss"] for r in _records(trained_2l.workdir) if "heldout_loss" in r]
  assert losses[-1] < losses[0] - 0.1, losses
  assert evals[-1] < evals[0] - 0.1, evals
  assert trained_2l.step == 30


@pytest.mark.slow  # two 100-step training processes; resuming in process: core/test_checkpoint.py
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, cache_dir):
  steps = ["--config.train.steps=100", "--config.train.checkpoint_every=20",
           "--config.train.log_every=20", "--config.train.eval_every=50"]
  straight = subprocess.Popen(_cli(tmp_path / "straight", cache_dir, *steps), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # meanwhile
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_cli(killed, cache_dir, *steps), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while not (killed / "checkpoints" / "40").is_dir() and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = [int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()]
  assert saved and max(saved) < 100, "the run finished before it could be killed"
  resumed = subprocess.run(_cli(killed, cache_dir, *steps), cwd=ROOT, check=True,
                           capture_output=True, text=True)
  assert f"resuming {killed} from step" in resumed.stdout
  assert straight.wait(timeout=300) == 0
  (_, a), (_, b) = reproduce.load(tmp_path / "straight"), reproduce.load(killed)
  for name, x in a.to_dict().items():
    np.testing.assert_array_equal(np.asarray(x), np.asarray(getattr(b, name)), err_msg=name)
  steps_logged = [r["step"] for r in _records(killed) if "loss" in r]
  assert steps_logged == sorted(set(steps_logged))  # no duplicate records after the resume


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(make_config, tmp_path):
  c = make_config(train=dict(lr=1e30, warmup_steps=0, log_every=1, checkpoint_every=1,
                             eval_every=100, grad_clip=1e30))
  with pytest.raises(TrainingDiverged, match="the last good checkpoint is step") as err:
    train(c, tmp_path, log=lambda *_: None)
  bad_step = int(str(err.value).split("at step ")[1].split(";")[0])
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) < bad_step


def test_finished_run_is_not_retrained(trained_2l, make_config):
  messages = []
  result = train(make_config("attn2l"), trained_2l.workdir, log=messages.append)
  assert any("already trained" in m for m in messages) and result.step == 30


@pytest.mark.slow  # a whole bfloat16 run; its step: train/test_step.py
def test_test_preset_trains_in_bfloat16(make_config, tmp_path):
  lines = []
  c = make_config("attn2l", train=dict(compute_dtype="bfloat16"))
  result = train(c, tmp_path / "bf16", log=lines.append)
  records = [json.loads(l) for l in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in records if "loss" in r]
  assert losses[-1] < losses[0] - 0.1, losses
  assert any("compute bfloat16" in l for l in lines), lines  # the choice is logged
  assert result.weights.W_Q.dtype == np.float32


def test_training_stops_before_writing_anything_when_the_corpus_is_too_small(make_config,
                                                                            tmp_path):
  c = make_config("attn0l", data=dict(max_epochs=1e-3))
  with pytest.raises(ValueError, match="data.max_epochs"):
    train(c, tmp_path / "run", log=lambda *_: None)
  assert not (tmp_path / "run" / "config.json").exists()
  assert not (tmp_path / "run" / "checkpoints").exists()


TIMEOUT_S = 300  # per launch; the processes are killed past it


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_command(workdir, cache_dir):
  # float32 on every CPU kind: the one-device resume is compared within float32 rounding (with
  # bf16 products, on AMX, a rounding flipped by the other summation order moves weights by
  # ~1e-6); the equalities hold in any dtype.
  return [sys.executable, "-m", "reproduce.train", "--config=configs/attn2l.py:test",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}",
          "--config.train.compute_dtype=float32"]


def _start(workdir, cache_dir, processes: int = 1, fake_devices: int = 1):
  """Starts a training job: ``processes`` processes joined on a fresh local port (1: a plain
  process), each with ``fake_devices`` CPU devices.  Returns the Popen objects."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={fake_devices}")
  command = _train_command(workdir, cache_dir)
  if processes == 1:
    return [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)]
  port = _free_port()
  env["JAX_COORDINATOR_BIND_ADDRESS"] = f"127.0.0.1:{port}"  # never listen beyond this machine
  return [subprocess.Popen(command + ["--distributed", f"--coordinator_address=127.0.0.1:{port}",
                                      f"--num_processes={processes}", f"--process_id={i}"],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
          for i in range(processes)]


def _finish(procs) -> str:
  """Waits (bounded) for every process; returns process 0's output; fails with all outputs."""
  deadline = time.time() + TIMEOUT_S
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=max(1.0, deadline - time.time()))[0])
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    outputs = [p.communicate()[0] for p in procs]
    pytest.fail(f"job timed out after {TIMEOUT_S}s:\n" + "\n---\n".join(o[-2000:] for o in outputs))
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{out[-3000:]}"
  return outputs[0]


def _weights(workdir):
  return {k: np.asarray(v) for k, v in reproduce.weights_of(workdir).to_dict().items()}


def _loss_records(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
  """The 2-process run and its 1-process, 2-device reference, trained side by side."""
  base = tmp_path_factory.mktemp("distributed")
  two, ref = base / "two-processes", base / "one-process-two-devices"
  jobs = [_start(two, cache_dir, processes=2), _start(ref, cache_dir, fake_devices=2)]
  outputs = [_finish(job) for job in jobs]
  assert "2 device(s)" in outputs[0] and "2 device(s)" in outputs[1], outputs
  return two, ref


@pytest.mark.slow  # four launches of 1-2 processes: about 2-4 minutes on 2 cores
def test_two_processes_equal_one_process_bitwise(runs):
  two, ref = runs
  a, b = _weights(two), _weights(ref)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  # process 0 alone writes the metrics: each record once, and the same losses
  assert _loss_records(two) == _loss_records(ref)
  assert all((two / f).is_file() for f in ("config.json", "tokenizer.json"))
  assert not list(two.glob("*.tmp"))


def _without_last_checkpoint(source: Path, target: Path) -> Path:
  """A copy of a finished run whose newest resumable checkpoint is step 20 of 30."""
  shutil.copytree(source, target)
  shutil.rmtree(target / "checkpoints" / "30")
  return target


@pytest.mark.slow
def test_two_process_checkpoint_resumes_in_two_and_in_one_process(runs, tmp_path, cache_dir):
  two, ref = runs
  again_two = _without_last_checkpoint(two, tmp_path / "resumed-by-two")
  again_one = _without_last_checkpoint(two, tmp_path / "resumed-by-one")
  jobs = [_start(again_two, cache_dir, processes=2), _start(again_one, cache_dir)]
  outputs = [_finish(job) for job in jobs]
  for workdir, out in zip((again_two, again_one), outputs):
    assert f"resuming {workdir} from step 20" in out, out[-2000:]
  expected = _weights(ref)
  resumed_two = _weights(again_two)
  for name in expected:
    np.testing.assert_array_equal(resumed_two[name], expected[name], err_msg=name)
  # One device sums the batch in another order, so float32 rounding differs through the last
  # 10 Adam steps (learning rate 4e-3 → 0): measured at most 3e-8 (one ulp of the ~0.1 weights);
  # the bound leaves 30× room.
  resumed_one = _weights(again_one)
  for name in expected:
    np.testing.assert_allclose(resumed_one[name], expected[name], rtol=0, atol=1e-6,
                               err_msg=name)
  steps = [s for s, _ in _loss_records(again_one)]
  assert steps == sorted(set(steps)) and steps[-1] == 30


def test_every_training_record_names_the_products_dtype(trained_2l):
  records = [r for r in read_metrics(trained_2l.workdir / "metrics.jsonl") if "loss" in r]
  assert records and {r["compute_dtype"] for r in records} <= {"float32", "bfloat16"}
