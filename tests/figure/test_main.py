"""python -m reproduce.figure: listing, bad flags and missing checkpoints in one line (through the
command, and its flag checks in process), and the batch job (--all) killed part-way continuing
where it stopped, redoing nothing finished."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from reproduce.figure import __main__ as figure_command
from reproduce.figure.runner import figure_config, figure_names
from reproduce.figure.sources import ModelSource

from tests.support.paths import ROOT

FIGURES = figure_names()


@pytest.mark.slow  # two command starts; the flag checks in process below
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


@pytest.mark.slow  # a command start; in process: test_flag_checks_in_process_...
def test_seeds_flag_refuses_a_checkpoint(tmp_path):
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=bigram", "--seeds=3",
                        f"--checkpoint={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and "--seeds" in out.stderr


@pytest.mark.slow  # two command starts; in process: test_flag_checks_in_process_...
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
  models = {m for n in FIGURES for m in figure_config(n, "test").models}
  runs = {m: ModelSource("test", models_dir=workdir / "models").run(m)[1] for m in models}
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


def _flags(**given):
  """The figure command's flags as parsed, with their defaults (define_flags) unless given."""
  defaults = dict(name=None, all=False, list=False, preset="cpu", workdir="figures",
                  models_dir=None, corpus=None, compute_dtype=None, seeds=1, checkpoint=None,
                  tl_config=None, verbose=False, cpu_devices="auto")
  return SimpleNamespace(**dict(defaults, **given))


def test_flag_checks_in_process_one_line_each_and_exit_status_2(capsys, tmp_path):
  """The checks behind the command's one-line errors, called directly (no interpreter start-up):
  what to make, the flags that clash with --checkpoint, and --tl_config; the flags that pass give
  the figures and the model source they say."""
  for given, message in (
      (dict(), "error: give --name=NAME, --all or --list"),
      (dict(name="eigen_histogram"), "error: unknown figure 'eigen_histogram'"),
      (dict(name="bigram", compute_dtype="float32", checkpoint="x"),
       "error: --compute_dtype chooses how models are trained; a --checkpoint is not trained"),
      (dict(name="bigram", seeds=3, checkpoint="x"), "error: --seeds must be ≥ 1, and a "
       "--checkpoint has one seed only"),
      (dict(all=True, seeds=0), "error: --seeds must be ≥ 1")):
    with pytest.raises(SystemExit) as e:
      figure_command._figures_to_make(_flags(**given))  # pylint: disable=protected-access
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith(message), given
  assert figure_command._figures_to_make(_flags(all=True)) == list(figure_names())  # pylint: disable=protected-access
  assert figure_command._figures_to_make(_flags(name="bigram", seeds=2)) == ["bigram"]  # pylint: disable=protected-access
  for given, message in ((dict(checkpoint=str(tmp_path), tl_config="{bad"),
                          "error: --tl_config: not valid JSON"),
                         (dict(tl_config="{}"), "error: --tl_config describes the weights of a "
                                                "--checkpoint; give --checkpoint")):
    with pytest.raises(SystemExit) as e:
      figure_command._source(_flags(**given))  # pylint: disable=protected-access
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
  source = figure_command._source(_flags(  # pylint: disable=protected-access
      checkpoint=str(tmp_path), workdir=str(tmp_path / "figs"), preset="test",
      tl_config='{"positional_embedding_type": "shortformer"}'))
  assert source == ModelSource(preset="test", models_dir=tmp_path / "figs" / "models",
                               checkpoint=str(tmp_path),
                               tl_config={"positional_embedding_type": "shortformer"})


def test_the_paper_preset_on_a_small_corpus_is_refused_before_any_work(capsys, tmp_path,
                                                                        monkeypatch):
  """The corpus is checked against the token budget before the plan's measurements, before any
  tokenizer is trained or file written: one line, exit status 2, pointing to accelerators."""
  monkeypatch.setenv("CIRCUITS_REPRO_CACHE", str(tmp_path / "cache"))
  source = ModelSource("paper", models_dir=tmp_path / "figures" / "models")
  with pytest.raises(SystemExit) as e:
    figure_command._check_corpora(source, {"attn0l", "attn2l"})  # pylint: disable=protected-access
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count("\n") == 1, err
  assert err.startswith("error: model attn0l (paper preset): config field data.corpus = 'stdlib'")
  assert "passes over it" in err and "GPUs and TPUs" in err and "BUILD.md" in err
  assert not (tmp_path / "cache").exists() and not (tmp_path / "figures").exists()
  small = tmp_path / "text"
  small.mkdir()
  for i in range(3):
    (small / f"doc{i}.txt").write_text("a small corpus\n" * 100)
  with pytest.raises(SystemExit):  # the one --corpus option is the models' training corpus
    figure_command._check_corpora(dataclasses.replace(source, corpus=str(small)), {"attn2l"})  # pylint: disable=protected-access
  assert f"data.corpus = '{small}'" in capsys.readouterr().err


@pytest.mark.slow  # a command start
def test_train_corpus_is_the_corpus_option_by_its_older_name(tmp_path):
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--all", "--preset=paper",
                        f"--train_corpus={tmp_path}", f"--workdir={tmp_path / 'figures'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, CIRCUITS_REPRO_CACHE=str(tmp_path / "cache")))
  assert out.returncode == 2, out.stderr
  assert out.stderr.count("error:") == 1 and str(tmp_path) in out.stderr
  assert "plan:" not in out.stdout
