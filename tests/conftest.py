"""Shared fixtures: a private token cache, the `test` presets, and one tiny trained run."""

import pytest

from reproduce.config import load_config


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
