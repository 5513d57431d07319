"""Shared fixtures: a private token cache, the `test` presets, one tiny trained run, and the
figures made once on the `test` preset (by a process of their own, beside the tests, which read
them last).  The default suite runs in two processes on a machine with two or more cores
(tests/support/two_processes.py; ``CIRCUITS_REPRO_TEST_PROCESSES=1``: one).

The tests' programs are tiny, so compiling them costs far more than running them: XLA's CPU
backend compiles here without LLVM's optimisation passes (``--xla_backend_optimization_level=0``,
about 40% less time for the suite; the same HLO, the same numbers up to float rounding).  The
flag reaches the commands the tests start too (they inherit the environment), so runs compared
bit for bit are compiled alike.  ``CIRCUITS_REPRO_TEST_XLA_OPT=1`` keeps XLA's default.
"""

import os

if os.environ.get("CIRCUITS_REPRO_TEST_XLA_OPT") != "1":  # before JAX starts its backend
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import json  # pylint: disable=wrong-import-position
import subprocess  # pylint: disable=wrong-import-position
import sys  # pylint: disable=wrong-import-position
from pathlib import Path  # pylint: disable=wrong-import-position

import pytest  # pylint: disable=wrong-import-position

from reproduce.config import load_config  # pylint: disable=wrong-import-position
from tests.support.helpers import MECHANISM  # pylint: disable=wrong-import-position
from tests.support.paths import ROOT  # pylint: disable=wrong-import-position

pytest_plugins = ("tests.support.two_processes",)  # the default suite on two cores


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("token-cache"))


@pytest.fixture(scope="session")
def make_config(cache_dir):
  """make_config("attn2l", train=dict(steps=5)) → the `test` preset with a private cache."""

  def make(name="attn2l", **sections):
    c = load_config(f"{name}:test")
    c.unlock()
    c.data.cache_dir = cache_dir
    for section, fields in sections.items():
      c[section].update(fields)
    c.lock()
    return c

  return make


@pytest.fixture(scope="session")
def trained_2l(make_config, tmp_path_factory):
  """A 2-layer `test` run trained once for every test that needs a checkpoint."""
  from reproduce.train.loop import train  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp("trained_2l")
  return train(make_config("attn2l"), workdir, log=lambda *_: None)


def _uses_figures(item) -> bool:
  return "figures" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items):
  """The tests that read the figures run last: the figures are made meanwhile (``figures``)."""
  items[:] = [i for i in items if not _uses_figures(i)] + [i for i in items if _uses_figures(i)]


@pytest.fixture(scope="session", autouse=True)
def _figures_job(request, tmp_path_factory, cache_dir):
  """Starts making every figure in a process of its own (tests/support/figures_job.py) when the
  session's first test runs, if any selected test needs the figures; ends it with the session.
  ``CIRCUITS_REPRO_TEST_FIGURES_INLINE=1`` makes them in this process instead, when needed."""
  if (os.environ.get("CIRCUITS_REPRO_TEST_FIGURES_INLINE") == "1"
      or not any(_uses_figures(i) for i in request.session.items)):
    yield None
    return
  workdir = tmp_path_factory.mktemp("figures")
  log = open(workdir.parent / "figures-job.log", "w")  # pylint: disable=consider-using-with
  job = subprocess.Popen([sys.executable, "-m", "tests.support.figures_job", str(workdir),
                          cache_dir], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  yield workdir, job, Path(log.name)
  if job.poll() is None:
    job.kill()
  job.wait()
  log.close()


@pytest.fixture(scope="session")
def figures(_figures_job, tmp_path_factory, cache_dir):  # pylint: disable=redefined-outer-name
  """Every figure made once on the `test` preset (models trained once, shared): (the figures'
  folder, {figure: what make_figure returned}, {model key: Model}).  Made by the background job
  above, then the models are read here as ``make_figure`` keeps them (trained, so only loaded)."""
  from reproduce.figure.runner import figure_config, figure_names, make_figure  # pylint: disable=import-outside-toplevel
  from reproduce.figure.sources import ModelSource  # pylint: disable=import-outside-toplevel
  source = ModelSource("test", cache_dir=cache_dir)
  loaded = {}
  if _figures_job is None:
    workdir = tmp_path_factory.mktemp("figures")
    summaries = {name: make_figure(name, source, workdir, log=lambda *_: None, loaded=loaded)
                 for name in figure_names()}
    return workdir, summaries, loaded
  workdir, job, log = _figures_job
  try:
    job.wait(timeout=1800)
  except subprocess.TimeoutExpired:
    job.kill()
    pytest.fail(f"the figures job took over 30 minutes; its log: {log}")
  if job.returncode != 0:
    pytest.fail(f"the figures job failed (exit status {job.returncode}):\n"
                + log.read_text()[-5000:])
  summaries = json.loads((workdir / "summaries.json").read_text())
  models = sorted({m for name in figure_names() for m in figure_config(name, "test").models})
  source.in_folder(workdir).models(models, loaded, log=lambda *_: None)
  return workdir, summaries, loaded


@pytest.fixture(scope="session")
def mechanism_figures(tmp_path_factory, trained_2l):
  """Each mechanism figure's run() on the session's trained 2L `test` model (no extra training;
  the figures accept any depth: skip_trigrams and induction_heads read every layer)."""
  from reproduce.figure.runner import figure_config, figure_module  # pylint: disable=import-outside-toplevel
  from reproduce.figure.sources import model_from_run  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp("mechanism")
  model = model_from_run("attn2l", trained_2l.workdir, tokens=trained_2l.tokens)
  claims = {}
  for name in MECHANISM:
    (workdir / name).mkdir()
    claims[name] = figure_module(name).run(figure_config(name, "test"), {"attn2l": model},
                                           workdir / name)
  return workdir, claims, model
