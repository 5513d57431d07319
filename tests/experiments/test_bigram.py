"""experiments/bigram.py: the correlation gain and its bootstrap error against a loop; the
direct-path claim needs bigram content beyond the unigram."""

import numpy as np
import pytest

from reproduce.figure.runner import figure_config, figure_module


def _pearson(a, b):
  n = len(a)
  ma, mb = sum(a) / n, sum(b) / n
  cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
  va = sum((x - ma) ** 2 for x in a)
  vb = sum((y - mb) ** 2 for y in b)
  return cov / np.sqrt(va * vb)


def test_correlation_gain_and_its_bootstrap_error_against_a_loop():
  bigram = figure_module("bigram")
  rng = np.random.default_rng(1)
  y = rng.normal(size=60)
  x, ref = y + rng.normal(size=60), 0.3 * y + rng.normal(size=60)
  gain, error = bigram.correlation_gain(y, x, ref, resamples=20, seed=5)
  draws, draw = [], np.random.default_rng(5)
  for _ in range(20):
    idx = draw.integers(0, 60, 60)
    draws.append(_pearson(x[idx], y[idx]) - _pearson(ref[idx], y[idx]))
  assert gain == pytest.approx(_pearson(x, y) - _pearson(ref, y), rel=1e-9)
  mean = sum(draws) / len(draws)
  assert error == pytest.approx(np.sqrt(sum((d - mean) ** 2 for d in draws) / 19), rel=1e-9)


def test_direct_path_claim_needs_bigram_content_beyond_the_unigram():
  """A "residual" of the bigram statistics: holds when the direct path beats the unigram by
  more than 2 standard errors, fails when it is no better (not required to be a bigram model)."""
  bigram = figure_module("bigram")
  config = figure_config("bigram", "test")
  stats = {"correlation": 0.55, "n_pairs": 100}
  holds = bigram.claims_of(config, "m", 1, stats, 0.49, 0, 0,
                           {"gain": 0.06, "standard_error": 0.01})
  assert [c["id"] for c in holds] == ["bigram.direct_path_bigram_residual.m"] and holds[0]["holds"]
  assert '"residual"' in holds[0]["paper_says"]
  fails = bigram.claims_of(config, "m", 2, stats, 0.54, 0, 0,
                           {"gain": 0.01, "standard_error": 0.01})
  assert not fails[0]["holds"]
  assert bigram.claims_of(config, "m", 1, stats, 0.49, 0, 0, None) == []


def test_zero_layer_claims_hold_past_half_the_gap_and_fail_short_of_it():
  """Correlation: (r − r_u) / (1 − r_u) ≥ 0.5; held-out KL: (KL_u − KL) / KL_u ≥ 0.5."""
  bigram = figure_module("bigram")
  config = figure_config("bigram", "test")
  verdicts = lambda r, kl: {c["id"].split(".")[1]: c["holds"] for c in bigram.claims_of(
      config, "m", 0, {"correlation": r, "n_pairs": 100}, 0.4, kl, 2.8, None)}
  assert verdicts(0.9, 0.8) == {"correlation": True, "heldout_kl": True}  # 0.83, 0.71 closed
  assert verdicts(0.6, 2.0) == {"correlation": False, "heldout_kl": False}  # 0.33, 0.29 closed
