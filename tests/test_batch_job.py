"""`reproduce.figure --all` as one resumable batch job: killed part-way (in training, then among
the figures) and run again, it continues where it stopped and redoes nothing finished."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reproduce.figure.outputs import write_json
from reproduce.figure.runner import (code_version, figure_config, figure_is_current,
                                     figure_names, measuring_sources, source_hash)
from reproduce.figure.sources import ModelSource

ROOT = Path(__file__).resolve().parents[1]
FIGURES = figure_names()
TIMEOUT_S = 600  # per run of the batch job


def _fake_claims(workdir, name, preset="test", **changes):
  """A claims.json as ``make_figure`` writes it for finished `test` runs (no training needed)."""
  config = figure_config(name, preset)
  models = {}
  for model_name in config.models:
    model_config, run = ModelSource(preset, models_dir=Path(workdir) / "models").run(model_name)
    models[model_name] = {"source": str(run), "step": model_config.train.steps}
  summary = {"figure": name, "preset": preset, "figure_config": config.to_dict(),
             "code": code_version(name), "models": models, "claims": []}
  summary.update(changes)
  (Path(workdir) / name).mkdir(parents=True, exist_ok=True)
  write_json(Path(workdir) / name / "claims.json", summary)
  return summary


def test_a_figure_is_current_only_for_the_same_models_steps_and_config(tmp_path):
  name = "induction_formation"  # reads two models
  assert not figure_is_current(name, ModelSource("test"), tmp_path)  # nothing made yet
  summary = _fake_claims(tmp_path, name)
  assert figure_is_current(name, ModelSource("test"), tmp_path)
  assert not figure_is_current(name, ModelSource("test", models_dir=tmp_path / "elsewhere"), tmp_path)

  changed_config = dict(summary["figure_config"], formed=0.5)
  _fake_claims(tmp_path, name, figure_config=changed_config)
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  earlier = {k: dict(v, step=v["step"] - 10) for k, v in summary["models"].items()}
  _fake_claims(tmp_path, name, models=earlier)  # made from an unfinished run
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  other_run = {k: dict(v, source=v["source"] + "x") for k, v in summary["models"].items()}
  _fake_claims(tmp_path, name, models=other_run)  # a model whose config (hash) has changed
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  one_model = {"attn2l": summary["models"]["attn2l"]}
  _fake_claims(tmp_path, name, models=one_model)
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  _fake_claims(tmp_path, name, preset="cpu")
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  _fake_claims(tmp_path, name, code="made-by-older-code")  # measured or judged by other code
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  (tmp_path / name / "claims.json").write_text("{not json")
  assert not figure_is_current(name, ModelSource("test"), tmp_path)


def test_a_figure_is_keyed_on_the_code_that_measures_and_judges_it(tmp_path):
  sources = {p.relative_to(ROOT).as_posix() for p in measuring_sources("bigram")}
  assert {"experiments/bigram.py", "configs/bigram.py", "reproduce/core/circuits.py",
          "reproduce/core/scores/patterns.py", "reproduce/figure/claims.py",
          "reproduce/data/batches.py"} <= sources
  assert "experiments/eigen_hist.py" not in sources
  module = tmp_path / "scores.py"
  module.write_text("THRESHOLD = 0.5\n")
  before = source_hash([module])
  module.write_text("THRESHOLD = 0.4\n")
  assert source_hash([module]) != before


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
