"""Helpers shared by the tests (fixtures live in conftest.py)."""

import jax

from reproduce.core.model import ModelConfig
from reproduce.core.weights import init_weights


def random_model(n_layers=2, n_heads=3, d_head=4, d_model=12, d_vocab=23, n_ctx=10, seed=0,
                 std=0.4, **kw):
  """A small model with weights large enough that attention is far from uniform."""
  cfg = ModelConfig(n_layers, n_heads, d_head, d_model, d_vocab, n_ctx, **kw)
  return cfg, init_weights(cfg, jax.random.key(seed), init_std=std)
