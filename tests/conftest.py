"""Shared fixtures: a private token cache, the `test` presets, one tiny trained run, and the
figures made once on the `test` preset.

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

import shutil  # pylint: disable=wrong-import-position

import pytest  # pylint: disable=wrong-import-position

from reproduce.config import load_config  # pylint: disable=wrong-import-position
from tests.support.helpers import MECHANISM  # pylint: disable=wrong-import-position


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


@pytest.fixture(scope="session")
def figures(tmp_path_factory, cache_dir, trained_2l):
  """Runs every figure once on the `test` preset (models trained once, shared).  The 2-layer
  model is the session's ``trained_2l`` (the same config), copied to where the figures look for
  it: reused as already trained, not trained a second time."""
  from reproduce.figure.runner import figure_names, make_figure  # pylint: disable=import-outside-toplevel
  from reproduce.figure.sources import ModelSource  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp("figures")
  config, run = ModelSource("test", cache_dir=cache_dir).in_folder(workdir).run("attn2l")
  assert config.to_dict() == trained_2l.config.to_dict()
  shutil.copytree(trained_2l.workdir, run)
  (run / "lock").unlink(missing_ok=True)
  loaded = {}
  summaries = {name: make_figure(name,
                                 ModelSource("test", cache_dir=cache_dir),
                                 workdir,
                                 log=lambda *_: None,
                                 loaded=loaded) for name in figure_names()}
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
