"""Real multi-process training: two processes on 127.0.0.1, joined by ``jax.distributed``.

Each process owns one CPU device; their gradients meet in a gloo all-reduce.  The reference is
one process with two (fake) CPU devices and the same global batch: the same partitioned program,
and an all-reduce of two addends is exact in any order (a + b = b + a in floating point), so the
final parameters must be bitwise equal.  A plain one-device process sums the batch in another
order, so against it the check is a tolerance (see ``test_two_process_checkpoint_resumes_...``).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import reproduce

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # per launch; the processes are killed past it
pytestmark = pytest.mark.slow  # four launches of 1-2 processes: about 2-4 minutes on 2 cores


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
