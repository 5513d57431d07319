"""reproduce.core.scores.direct_path: the direct path as a bigram model against the exact table."""

import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.core import scores
from reproduce.core.weights import Weights


def test_bigram_statistics_of_the_exact_table_and_of_a_random_model():
  rng = np.random.default_rng(3)
  V = 12
  tokens = rng.choice(V, size=5000, p=np.arange(1, V + 1) / np.arange(1, V + 1).sum())
  counts = np.zeros((V, V))
  np.add.at(counts, (tokens[:-1], tokens[1:]), 1)
  table = np.where(counts > 0, np.log(np.maximum(counts, 1) / counts.sum(1, keepdims=True)), -40)
  exact = Weights(W_E=jnp.eye(V), W_pos=jnp.zeros((4, V)), W_Q=jnp.zeros((0, 1, V, 1)),
                  W_K=jnp.zeros((0, 1, V, 1)), W_V=jnp.zeros((0, 1, V, 1)),
                  W_O=jnp.zeros((0, 1, 1, V)), W_U=jnp.asarray(table, jnp.float32))
  stats = scores.bigram_statistics(exact, tokens, min_count=5)
  assert stats["kl"] == pytest.approx(0, abs=1e-4) and stats["correlation"] > 0.9999
  assert stats["model_cross_entropy"] == pytest.approx(stats["conditional_entropy"], abs=1e-4)
  rand = exact.replace(W_U=jnp.asarray(rng.normal(size=(V, V)), jnp.float32))
  stats = scores.bigram_statistics(rand, tokens, min_count=1)
  p_emp = counts / counts.sum(1, keepdims=True)
  log_model = np.asarray(rand.W_U, np.float64)
  log_model = log_model - np.log(np.exp(log_model).sum(1, keepdims=True))
  mask = counts > 0
  kl = np.sum(counts[mask] / counts.sum() * (np.log(p_emp[mask]) - log_model[mask]))
  assert stats["kl"] == pytest.approx(kl, rel=1e-4)
