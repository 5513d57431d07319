"""reproduce.train.workdir: one run per work directory (a dead holder is stale), failed starts
write nothing, changed configs are refused, unwritable folders and damaged metrics are named."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reproduce.train.loop import WorkdirLock, train
from reproduce.train.workdir import WorkdirLocked

from tests.support.paths import ROOT
from tests.support.runs import (LIMIT, copy_run as _copy_run, run_command as _run,
                                train_command as _cli)


@pytest.mark.slow  # a training process killed; the lock in process: test_a_held_lock_...
def test_second_run_in_a_workdir_is_refused_and_a_dead_holder_is_stale(cache_dir, tmp_path):
  workdir = tmp_path / "shared"
  first = subprocess.Popen(_cli(workdir, cache_dir, "--config.train.steps=100000",
                                "--config.data.max_epochs=1e4",  # 230 passes over the corpus
                                "--config.train.checkpoint_every=100000"),
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + LIMIT
    lock_file = workdir / "lock"
    while time.time() < deadline and not (lock_file.exists() and lock_file.read_text()):
      assert first.poll() is None, "the first run ended early"
      time.sleep(0.05)
    second = _run(_cli(workdir, cache_dir, "--config.train.steps=100000",
                       "--config.data.max_epochs=1e4", "--config.train.checkpoint_every=100000"))
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1, second.stderr  # one line
    assert "in use by another training run" in second.stderr
    assert f"PID {first.pid} on host {socket.gethostname()}" in second.stderr
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  assert json.loads((workdir / "lock").read_text())["pid"] == first.pid  # left behind by SIGKILL
  messages = []
  lock = WorkdirLock(workdir, log=messages.append)  # the dead holder does not block
  lock.release()
  assert any(f"stale lock {workdir / 'lock'} from PID {first.pid}" in m for m in messages)


def test_failed_start_writes_nothing_and_a_start_without_checkpoint_takes_a_new_config(
    make_config, tmp_path):
  workdir = tmp_path / "w"
  with pytest.raises(ValueError, match="passes over it"):  # the corpus, before tokenizing it
    train(make_config(model=dict(n_ctx=100000)), workdir, log=lambda *_: None)
  with pytest.raises(ValueError, match="fewer than n_ctx=100000"):
    train(make_config(model=dict(n_ctx=100000), data=dict(max_epochs=1e9)), workdir,
          log=lambda *_: None)
  with pytest.raises(ValueError, match="micro_batch_size=3 must divide"):
    train(make_config(train=dict(micro_batch_size=3)), workdir, log=lambda *_: None)
  assert not workdir.exists()

  # An earlier start (another config) that wrote files but no checkpoint yet.
  workdir.mkdir()
  earlier = make_config(model=dict(d_head=4)).to_dict()
  (workdir / "config.json").write_text(json.dumps(earlier))
  (workdir / "metrics.jsonl").write_text(json.dumps({"step": 0, "heldout_loss": 9.0}) + "\n")
  messages = []
  result = train(make_config(train=dict(steps=2)), workdir, log=messages.append)
  assert result.step == 2 and any("starting over with the new config" in m for m in messages)
  assert json.loads((workdir / "config.json").read_text())["model"]["d_head"] == 8
  aside = [p for p in workdir.iterdir() if p.name.startswith("earlier-start-")]
  assert len(aside) == 1 and json.loads((aside[0] / "config.json").read_text()) == earlier
  assert all(r.get("heldout_loss") != 9.0 for r in map(json.loads, (
      workdir / "metrics.jsonl").read_text().splitlines()))


def test_changed_config_in_existing_workdir_is_refused(trained_2l, make_config):
  with pytest.raises(ValueError, match="different config.*model.d_head"):
    train(make_config("attn2l", model=dict(d_head=4)), trained_2l.workdir)


def test_unwritable_workdir_is_named_before_any_work(make_config, tmp_path):
  if os.geteuid() == 0:
    target = Path("/sys/circuits-repro-test/run")  # not even root may create folders here
  else:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked / "run"
  with pytest.raises(PermissionError, match=f"work directory {target} cannot be written"):
    train(make_config(), target, log=lambda *_: None)
  assert not target.exists()


def test_metrics_truncated_last_line_is_dropped_corrupt_line_is_named(
    trained_2l, make_config, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  metrics = workdir / "metrics.jsonl"
  good = metrics.read_text()
  metrics.write_text(good + '{"step": 30, "lo')  # a SIGKILL in the middle of a write
  messages = []
  train(make_config("attn2l"), workdir, log=messages.append)
  assert any("metrics.jsonl:" in m and "unfinished record" in m for m in messages), messages
  assert metrics.read_text() == good

  lines = good.splitlines()
  lines[1] = lines[1][:10]
  metrics.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a metrics record"):
    train(make_config("attn2l"), workdir, log=lambda *_: None)


def test_a_held_lock_refuses_a_second_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
  """In one process: a second lock on a held work directory is refused naming the holder (this
  process); released, it can be taken; a lock file naming a process that has ended is stale,
  reported and taken over (as after a SIGKILL, without training)."""
  first = WorkdirLock(tmp_path, log=pytest.fail)
  assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
  with pytest.raises(WorkdirLocked, match=f"in use by another training run \\(PID {os.getpid()} "
                     f"on host {socket.gethostname()}, started "):
    WorkdirLock(tmp_path, log=pytest.fail)
  first.release()
  assert (tmp_path / "lock").read_text() == ""
  WorkdirLock(tmp_path, log=pytest.fail).release()  # free again: nothing to report
  ended = subprocess.Popen([sys.executable, "-c", "pass"])
  ended.wait()
  (tmp_path / "lock").write_text(json.dumps({"pid": ended.pid, "host": socket.gethostname(),
                                             "started": "earlier"}))
  messages = []
  lock = WorkdirLock(tmp_path, log=messages.append)
  assert messages == [f"stale lock {tmp_path / 'lock'} from PID {ended.pid} on host "
                      f"{socket.gethostname()} (no longer running) taken over"]
  assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
  lock.release()
