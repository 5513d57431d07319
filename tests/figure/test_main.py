"""python -m reproduce.figure: listing, bad flags and missing checkpoints in one line, and the
batch job (--all) killed part-way continuing where it stopped, redoing nothing finished."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reproduce.figure.runner import figure_config, figure_names
from reproduce.figure.sources import ModelSource

from tests.support.paths import ROOT

FIGURES = figure_names()


def test_cli_lists_figures_and_rejects_bad_flags():
  listing = subprocess.run([sys.executable, "-m", "reproduce.figure", "--list"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
  assert all(name in listing for name in FIGURES)
  bad = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=bigram",
                        "--preset=laptop"], cwd=ROOT, capture_output=True, text=True)
  assert bad.returncode != 0 and "laptop" in bad.stderr


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=eigen_hist",
                        f"--checkpoint={tmp_path / 'nope'}", f"--workdir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode != 0 and "no checkpoint at" in out.stderr


def test_seeds_flag_refuses_a_checkpoint(tmp_path):
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=bigram", "--seeds=3",
                        f"--checkpoint={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and "--seeds" in out.stderr


def test_tl_config_flag_errors_are_one_line(tmp_path):
  root = ROOT
  for flags, message in (([f"--checkpoint={tmp_path}", "--tl_config={bad"],
                          "error: --tl_config: not valid JSON"),
                         (["--tl_config={}"], "error: --tl_config describes the weights of a "
                                              "--checkpoint; give --checkpoint")):
    out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=ov_eigenvalues",
                          f"--workdir={tmp_path}", *flags], cwd=root, capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(message)


TIMEOUT_S = 600  # per run of the batch job


def _batch_job(workdir, cache_dir):
  command = [sys.executable, "-m", "reproduce.figure", "--all", "--preset=test",
             f"--workdir={workdir}"]
  env = dict(os.environ, CIRCUITS_REPRO_CACHE=str(cache_dir), JAX_PLATFORMS="cpu")
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _kill_when(proc, ready, what):
  deadline = time.time() + TIMEOUT_S
  while not ready() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  out = proc.communicate()[0]
  assert ready(), f"never reached {what}:\n{out[-3000:]}"
  return out


def _finished_figures(workdir):
  return [n for n in FIGURES if (workdir / n / "claims.json").is_file()]


@pytest.mark.slow  # three runs of the batch job: 1-3 minutes on 2 cores
def test_killed_batch_job_continues_where_it_stopped(tmp_path, cache_dir):
  workdir = tmp_path / "figures"
  runs = {m: ModelSource("test", models_dir=workdir / "models").run(m)[1]
          for m in ("attn0l", "attn1l", "attn2l")}
  checkpoints = lambda m: {int(p.name) for p in (runs[m] / "checkpoints").glob("*")
                           if p.name.isdigit()}

  # 1. killed while training the 1-layer model (the 0-layer one is finished)
  _kill_when(_batch_job(workdir, cache_dir), lambda: runs["attn1l"].is_dir() and
             checkpoints("attn1l") & {10, 20}, "a checkpoint of the 1-layer model")
  assert 30 not in checkpoints("attn1l"), "the 1-layer model finished before it could be killed"
  assert not _finished_figures(workdir)  # training comes first

  # 2. run again: the finished model is reused, the interrupted one resumes; killed among figures
  proc = _batch_job(workdir, cache_dir)
  out = _kill_when(proc, lambda: len(_finished_figures(workdir)) >= 2, "two finished figures")
  assert f"{runs['attn0l']} is already trained" in out, out[-3000:]
  assert f"resuming {runs['attn1l']} from step" in out, out[-3000:]
  done = _finished_figures(workdir)
  assert len(done) < len(FIGURES), "every figure was made before the job could be killed"
  before = {n: ((workdir / n / "claims.json").read_bytes(),
                (workdir / n / "claims.json").stat().st_mtime_ns) for n in done}

  # 3. run again to the end: nothing finished is redone
  proc = _batch_job(workdir, cache_dir)
  out = proc.communicate(timeout=TIMEOUT_S)[0]
  assert proc.returncode == 0, out[-3000:]
  remaining = set(FIGURES) - set(done)
  needed = {m for n in remaining for m in figure_config(n, "test").models}
  for m in needed:  # only the models the remaining figures read are loaded, none retrained
    assert f"{runs[m]} is already trained" in out, (m, out[-3000:])
  assert "training attn" not in out
  for n in done:
    assert f"figure {n}: up to date, skipped" in out
    claims = workdir / n / "claims.json"
    assert (claims.read_bytes(), claims.stat().st_mtime_ns) == before[n], n
  for n in remaining:
    assert f"figure {n}: analysing" in out
  assert _finished_figures(workdir) == list(FIGURES)
  assert (workdir / "index.html").is_file()
  assert all(json.loads((workdir / n / "claims.json").read_text())["preset"] == "test"
             for n in FIGURES)
