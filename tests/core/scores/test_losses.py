"""reproduce.core.scores.losses: next-token losses in chunks of windows against the forward."""

import numpy as np
import pytest

from reproduce.core import scores
from reproduce.core.model import forward, token_losses

from tests.support.helpers import chunk_test_model as _model


@pytest.mark.parametrize("norm, pos", [("ln", "standard"), ("none", "shortformer")])
def test_sequence_losses_equal_the_forwards(budget, norm, pos):
  cfg, w = _model(norm, pos)
  rng = np.random.default_rng(1)
  inputs = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  expect = token_losses(forward(cfg, w, inputs)[0], targets)
  np.testing.assert_allclose(scores.sequence_losses(cfg, w, inputs, targets), expect,
                             rtol=1e-5, atol=1e-5)
