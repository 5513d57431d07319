"""Helpers shared by the tests (fixtures live in conftest.py)."""

import jax.numpy as jnp
import numpy as np

from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights


def random_model(n_layers=2, n_heads=3, d_head=4, d_model=12, d_vocab=23, n_ctx=10, seed=0,
                 std=0.4, **kw):
  """A small model with weights large enough that attention is far from uniform: every matrix
  ~ N(0, std²), positions learned, norm gains one (``init_weights``'s layout).  Drawn with
  NumPy: JAX's eager sampler compiles once per shape (seconds each on 2 cores)."""
  cfg = ModelConfig(n_layers, n_heads, d_head, d_model, d_vocab, n_ctx, **kw)
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(std * rng.standard_normal(shape), jnp.float32)
  L, H, D, E, V, T = n_layers, n_heads, d_model, d_head, d_vocab, n_ctx
  ln = cfg.norm == "ln"
  return cfg, Weights(
      W_E=normal(V, D), W_pos=normal(T, D), W_Q=normal(L, H, D, E), W_K=normal(L, H, D, E),
      W_V=normal(L, H, D, E), W_O=normal(L, H, E, D), W_U=normal(D, V),
      ln_gain=jnp.ones((L, D), jnp.float32) if ln else None,
      ln_final=jnp.ones((D,), jnp.float32) if ln else None)
