"""Nothing lost, nothing silent: corrupt checkpoints, concurrent runs, failed starts, config
mismatches, paths inside checkpoints, errors that name the file, and the installed package.

Real files and real subprocesses throughout; every subprocess has a time limit.
"""

import concurrent.futures
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import reproduce
from reproduce.core import checkpoint
from reproduce.core.weights import init_weights
from reproduce.figure import report
from reproduce.figure.sources import model_from_run
from reproduce.train.loop import WorkdirLock, train

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 240  # seconds for any one subprocess


def _cli(workdir, cache_dir, *extra, module="reproduce.train"):
  return [sys.executable, "-m", module, "--config=configs/attn2l.py:test",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}", *extra]


def _run(args, cwd=ROOT, **kw):
  return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=LIMIT, **kw)


def _copy_run(trained, tmp_path, name="copy"):
  workdir = tmp_path / name
  shutil.copytree(trained.workdir, workdir)
  (workdir / "lock").unlink(missing_ok=True)
  return workdir


def _flip_one_byte(step_dir: Path) -> Path:
  """Flips one bit in the middle of the largest weight data file of a checkpoint."""
  data = [p for p in (step_dir / "weights").rglob("*") if p.is_file() and p.parent.name == "d"]
  target = max(data, key=lambda p: p.stat().st_size)
  raw = bytearray(target.read_bytes())
  raw[len(raw) // 2] ^= 0x40
  target.write_bytes(bytes(raw))
  return target


# 1. -------------------------------------------------------------------------------------------

def test_flipped_byte_in_checkpoint_is_detected_moved_aside_and_resumed_past(
    trained_2l, cache_dir, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  _flip_one_byte(workdir / "checkpoints" / "30")

  with pytest.raises(checkpoint.CheckpointError, match="30 is corrupt: weights"):
    reproduce.load(workdir / "checkpoints" / "30")  # figure --checkpoint=<step dir>
  messages = []
  weights, meta = checkpoint.load_checkpoint(workdir, log=messages.append)  # --checkpoint=<run>
  assert meta["step"] == 20 and any("30 is corrupt" in m for m in messages), messages
  assert checkpoint.last_sound_step(workdir / "checkpoints") == 20  # what divergence names

  # resume: 30 moved aside, 20 → 30 again, on one device as the fixture trained (another device
  # count sums the gradient in another order: equal only to float rounding)
  out = _run(_cli(workdir, cache_dir, "--cpu_devices=1"))
  assert out.returncode == 0, out.stderr
  assert "30 is corrupt" in out.stdout and "resuming" in out.stdout and "from step 20" in out.stdout
  assert out.stderr == "", out.stderr  # no library log noise without --verbose
  aside = list((workdir / "unreadable-checkpoints").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("30-")
  _, resumed = reproduce.load(workdir)
  for name, x in trained_2l.weights.to_dict().items():
    np.testing.assert_array_equal(np.asarray(x), np.asarray(getattr(resumed, name)), err_msg=name)


def test_non_finite_weights_are_refused(trained_2l, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  step_dir = workdir / "snapshots" / "30"
  weights, meta = checkpoint.load_checkpoint(step_dir)
  w = weights.to_dict()
  w["W_O"] = np.asarray(w["W_O"]).copy()
  w["W_O"].flat[3] = np.nan
  shutil.rmtree(step_dir)
  ckpts = checkpoint.RunCheckpoints(workdir)
  meta = {k: v for k, v in meta.items() if k not in ("checksums", "format", "weight_shapes")}
  ckpts.save_snapshot(30, reproduce.Weights.from_dict(w), meta)  # checksums match the NaN
  ckpts.wait()
  ckpts.close()
  with pytest.raises(checkpoint.CheckpointError, match="non-finite values in weight W_O"):
    reproduce.load(step_dir)



def test_an_optimiser_state_saved_before_the_positional_readers_resumes(tmp_path):
  """Runs trained before ``Weights`` gained W_Q_pos / W_K_pos saved their optimiser state as a
  dataclass without them: written here by such a class, it restores into today's layout."""
  cfg = reproduce.ModelConfig(2, 2, 4, 8, 11, 6)
  weights = init_weights(cfg, jax.random.key(0))
  old_fields = [f.name for f in dataclasses.fields(reproduce.Weights)
                if f.name not in ("W_Q_pos", "W_K_pos")]
  OldWeights = jax.tree_util.register_dataclass(
      dataclasses.make_dataclass("OldWeights", [(n, object, None) for n in old_fields],
                                 frozen=True))
  tx = optax.adamw(1e-3)
  old_state = tx.init(OldWeights(**{n: getattr(weights, n) for n in old_fields}))
  old_state = jax.tree.map(lambda x: np.asarray(x) + np.asarray(3, np.asarray(x).dtype),
                           old_state)  # not the init values
  ckpts = checkpoint.RunCheckpoints(tmp_path)
  ckpts.save(7, weights, old_state, {"step": 7})
  ckpts.wait()
  step, got_weights, got_state, _ = ckpts.restore_latest(weights, tx.init(weights),
                                                         log=pytest.fail)
  ckpts.close()
  assert step == 7 and not (tmp_path / "unreadable-checkpoints").exists()
  assert jax.tree.structure(got_state) == jax.tree.structure(tx.init(weights))
  for want, got in zip(jax.tree.leaves(old_state), jax.tree.leaves(got_state)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  for name, x in weights.to_dict().items():
    np.testing.assert_array_equal(np.asarray(getattr(got_weights, name)), np.asarray(x))

# 2. -------------------------------------------------------------------------------------------

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


# 3. -------------------------------------------------------------------------------------------

def test_failed_start_writes_nothing_and_a_start_without_checkpoint_takes_a_new_config(
    make_config, tmp_path):
  workdir = tmp_path / "w"
  with pytest.raises(ValueError, match="fewer than n_ctx=100000"):
    train(make_config(model=dict(n_ctx=100000)), workdir, log=lambda *_: None)
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


# 4. -------------------------------------------------------------------------------------------

def test_checkpoint_of_another_config_is_a_mismatch_and_nothing_moves(
    trained_2l, make_config, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  (workdir / "config.json").unlink()
  before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  with pytest.raises(checkpoint.CheckpointConfigMismatch,
                     match=r"config mismatch: checkpoint .*30 .*model.d_head: 8 → 4"):
    train(make_config(model=dict(d_head=4)), workdir, log=lambda *_: None)
  after = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                 if p.name != "lock")
  assert after == before  # nothing moved, no config.json written, no restart from 0


# 6. -------------------------------------------------------------------------------------------

def test_paths_stored_in_a_checkpoint_are_shown_not_followed(trained_2l, cache_dir, tmp_path):
  workdir = _copy_run(trained_2l, tmp_path)
  secret = tmp_path / "secret.txt"
  secret.write_text("SECRET-MARKER " * 200)
  elsewhere = tmp_path / "elsewhere-cache"
  for step_dir in (workdir / "checkpoints").iterdir():
    meta_file = step_dir / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["config"]["data"].update(corpus=str(secret), cache_dir=str(elsewhere))
    meta["tokenizer"]["path"] = str(tmp_path / "stolen-tokenizer.json")
    meta_file.write_text(json.dumps(meta))
  messages = []
  model = model_from_run("edited", workdir, cache_dir=cache_dir, log=messages.append)
  assert not elsewhere.exists()
  assert any(str(secret) in m and "not read" in m for m in messages), messages
  text = model.tokens.tokenizer().decode([int(t) for t in model.tokens.train[:20000]])
  assert "SECRET-MARKER" not in text and "import" in text  # the default corpus: Python source
  assert model.tokens.bos_id == trained_2l.tokens.bos_id

  mine = tmp_path / "mine"
  mine.mkdir()
  for i in range(4):
    (mine / f"{i}.txt").write_text(f"my own words, file {i}. " * 300)
  named = model_from_run("edited", workdir, cache_dir=cache_dir, log=messages.append,
                         corpus=str(mine))
  assert "my own words" in named.tokens.tokenizer().decode([int(t) for t in
                                                            named.tokens.train[:200]])


# 7. -------------------------------------------------------------------------------------------

def test_cli_errors_are_one_line_naming_the_problem(trained_2l, cache_dir, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  broken = _copy_run(trained_2l, tmp_path, "broken")
  (broken / "config.json").write_text('{"name": "attn2l", "model": {')
  python = sys.executable
  cases = [
      (_cli(tmp_path / "w", cache_dir, "--config.train.lrr=0.1"),
       ["train.lrr", 'Did you mean "lr"']),
      (_cli(tmp_path / "w", cache_dir, "--config.train.steps=abc"),
       ["--config.train.steps=abc", "int"]),
      (_cli(tmp_path / "w", cache_dir, "--config.train.lr=-1"), ["train.lr", "must be > 0"]),
      # every CLI that takes a config parses it, and its overrides, the same way
      ([python, "-m", "reproduce.prepare", "--config=attn2l:test", "--config.data.corpsu=x"],
       ["--config.data.corpsu", 'Did you mean "corpus"']),
      ([python, "-m", "reproduce.bench", "train", "--config=configs/attn2l.py:test",
        "--config.trian.steps=3"], ["--config.trian.steps", 'Did you mean "train"']),
      ([python, "-m", "reproduce.bench", "plan", "--config=attn9l:test"],
       ["no config named 'attn9l'"]),
      (_cli(a_file / "run", cache_dir), [f"{a_file} (on the path to", "is a file"]),
      (_cli(broken, cache_dir), [f"{broken / 'config.json'} is not valid JSON"]),
  ]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:  # each case is a process start-up
    outs = list(pool.map(lambda case: _run(case[0]), cases))
  for (args, needles), out in zip(cases, outs):
    assert out.returncode == 2, (args, out.stderr)
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    for needle in needles:
      assert needle in out.stderr, (needle, out.stderr)
  assert not (tmp_path / "w").exists() and a_file.read_text() == "not a directory"


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

def test_the_report_reads_a_metrics_log_cut_short_as_training_does(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text('{"step": 10, "loss": 3.5, "elapsed_s": 4.0}\n'
                     '{"step": 20, "heldout_loss": 3.25}\n{"step": 30, "lo')
  assert report.training_record(tmp_path) == {"final_loss": 3.5, "heldout_loss": 3.25,
                                              "seconds": 4.0}
  metrics.write_text('{"step": 10, "loss": 3.5}\nnot json\n{"step": 30, "loss": 2.0}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a metrics record"):
    report.training_record(tmp_path)


# 9. -------------------------------------------------------------------------------------------

def test_clone_works_from_another_directory(tmp_path):
  """configs/ and experiments/ are found as reproduce.configs / reproduce.experiments from a
  clone used elsewhere (they are not on sys.path: only the clone's root is)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  out = _run([sys.executable, "-c", (
      "import sys; from reproduce.config import load_config; from reproduce.figure import runner as figure; "
      "c = load_config('configs/attn2l.py:test'); assert c.model.n_layers == 2; "
      "assert figure.figure_module('bigram').DESCRIPTION; "
      "assert 'configs' not in sys.modules and 'experiments' not in sys.modules; print('OK')")],
      cwd=tmp_path, env=env)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_a_second_clone_on_the_path_uses_its_own_configs_and_experiments(tmp_path):
  """A second checkout (a git worktree, say) put on PYTHONPATH imports its own configs/ and
  experiments/, not those of the clone the editable install was made from."""
  other = tmp_path / "other"
  for name in ("reproduce", "configs", "experiments"):
    shutil.copytree(ROOT / name, other / name, ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy2(ROOT / "setup.cfg", other / "setup.cfg")
  out = _run([sys.executable, "-c", (
      "import reproduce.configs, reproduce.experiments; from reproduce.figure import runner as figure; "
      "print(reproduce.configs.__file__); print(reproduce.experiments.__file__); "
      "print(figure.figure_module('bigram').__file__)")],
      cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(other)))
  assert out.returncode == 0, out.stderr
  assert all(line.startswith(str(other)) for line in out.stdout.split()), out.stdout


@pytest.mark.slow
def test_installed_package_runs_readme_commands_from_elsewhere(tmp_path):
  """``pip install .`` into a throwaway venv: reproduce.configs / reproduce.experiments are
  installed, nothing generic at the top level, and README's commands work from another folder."""
  src = tmp_path / "src"
  files = _run(["git", "ls-files", "-co", "--exclude-standard"]).stdout.split()
  for f in files:
    if (ROOT / f).is_file():
      (src / f).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / f, src / f)
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=LIMIT)
  python = str(venv / "bin" / "python")
  site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp_path).stdout.strip())
  (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # jax & co.
  install = _run([python, "-m", "pip", "install", "--no-deps", "-q",
                  str(src)], cwd=tmp_path)
  assert install.returncode == 0, install.stderr[-3000:]
  assert (site / "reproduce" / "configs" / "attn2l.py").is_file()
  assert (site / "reproduce" / "experiments" / "bigram.py").is_file()
  assert not (site / "configs").exists() and not (site / "experiments").exists()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  out = _run([python, "-m", "reproduce.figure", "--list"], cwd=elsewhere)
  assert out.returncode == 0 and "induction_formation" in out.stdout, out.stderr
  out = _run([python, "-m", "reproduce.train", "--config=configs/attn2l.py:test",
              f"--workdir={elsewhere / 'run'}", "--config.train.steps=3",
              f"--config.data.cache_dir={tmp_path / 'cache'}"], cwd=elsewhere)
  assert out.returncode == 0, out.stderr
  assert "step      3/3" in out.stdout
  imported = _run([python, "-c", "import reproduce.config as c; print(c.__file__)"],
                  cwd=elsewhere).stdout
  assert imported.startswith(str(site)), imported

