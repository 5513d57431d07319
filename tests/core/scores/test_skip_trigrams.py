"""reproduce.core.scores.skip_trigrams: ranked skip-trigrams and own-logit ranks against every row
of the dense circuits, and skip-trigram counts against loops."""

import numpy as np
import pytest

from reproduce.core import scores

from tests.support.helpers import random_model


def dense_circuits(cfg, w, layer, head, tokens):
  """The head's QK (scaled) and OV circuits over ``tokens`` × ``tokens``, dense, float64."""
  E, U = np.asarray(w.W_E, np.float64), np.asarray(w.W_U, np.float64)
  g = lambda a: np.asarray(a[layer, head], np.float64)
  qk = E @ g(w.W_Q) @ g(w.W_K).T @ E.T / np.sqrt(cfg.d_head)
  ov = E @ g(w.W_V) @ g(w.W_O) @ U
  return qk[np.ix_(tokens, tokens)], ov[np.ix_(tokens, tokens)]


def test_ranked_skip_trigrams_against_every_row():
  """Each destination's sources are the top of its own QK row (centred over sources), each
  source's outputs the top of its own OV row; destinations by their row's top gain."""
  cfg, w = random_model(n_layers=2, n_heads=2, d_vocab=15)
  tokens = np.array([1, 2, 4, 5, 7, 8, 9, 11, 13])
  got = scores.ranked_skip_trigrams(w, tokens, n_destinations=4, k=2, chunk=4)
  for l in range(2):
    for h in range(2):
      qk, ov = dense_circuits(cfg, w, l, h, tokens)
      qk = qk - qk.mean(axis=1, keepdims=True)  # per destination, over sources
      ov = ov - ov.mean(axis=1, keepdims=True)  # per source, over outputs
      chosen = sorted(range(len(tokens)), key=lambda d: -qk[d].max())[:4]
      assert list(got["dest"][l, h]) == list(tokens[chosen])
      for r, d in enumerate(chosen):
        np.testing.assert_allclose(got["dest_row"][l, h, r], qk[d], rtol=1e-4, atol=1e-5)
        sources = np.argsort(-qk[d])[:2]
        assert list(got["source"][l, h, r]) == list(tokens[sources])
        np.testing.assert_allclose(got["source_gain"][l, h, r], qk[d, sources], rtol=1e-4)
        for i, s in enumerate(sources):
          outs = np.argsort(-ov[s])[:2]
          assert list(got["out"][l, h, r, i]) == list(tokens[outs])
          np.testing.assert_allclose(got["out_gain"][l, h, r, i], ov[s, outs], rtol=1e-4)


def test_a_destinations_sources_depend_on_its_own_row_only():
  """Sharpening one destination's query (its QK row) must leave every other destination's
  sources as they were: the old ranking compared QK entries across destinations, so one sharp
  row became every source's top destination."""
  cfg, w = random_model(n_layers=1, n_heads=1, d_model=20, d_vocab=20, std=0.5, seed=3)
  w = w.replace(W_E=np.eye(20, dtype=np.float32))  # one-hot: W_Q's row t is token t's query
  tokens = np.arange(1, 20)
  before = scores.ranked_skip_trigrams(w, tokens, n_destinations=19, k=3)
  sharp = np.array(w.W_Q)
  sharp[0, 0, 5] *= 20
  after = scores.ranked_skip_trigrams(w.replace(W_Q=sharp), tokens, n_destinations=19, k=3)
  assert after["dest"][0, 0, 0] == 5  # the sharpened row is now the most selective
  sources = lambda r: {int(d): list(s) for d, s in zip(r["dest"][0, 0], r["source"][0, 0])}
  b, a = sources(before), sources(after)
  assert all(a[d] == b[d] for d in b if d != 5)


def test_own_logit_row_rank_against_loops():
  cfg, w = random_model(n_layers=1, n_heads=2, d_vocab=13)
  tokens = np.array([0, 2, 3, 6, 7, 12])
  got = scores.own_logit_row_rank(w, tokens, chunk=4)
  for h in range(2):
    _, ov = dense_circuits(cfg, w, 0, h, tokens)
    for ti in range(len(tokens)):
      below = sum(ov[ti, o] < ov[ti, ti] for o in range(len(tokens)) if o != ti)
      assert got[0, h, ti] == pytest.approx(below / (len(tokens) - 1))


def test_skip_trigram_counter_against_loops():
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 5, 400)
  counter = scores.SkipTrigramCounter(tokens, window=6)
  before = lambda s, p: s in tokens[max(p - 6, 0):p]
  for s, d, o in [(0, 1, 2), (3, 3, 3), (4, 0, 1), (2, 2, 0)]:
    expect = sum(tokens[p] == d and tokens[p + 1] == o and before(s, p)
                 for p in range(len(tokens) - 1))
    assert counter.count(s, d, o) == expect
  short = np.array([3, 1, 4, 1, 5, 9, 2, 6, 1, 4])
  assert list(scores.SkipTrigramCounter(short, 2).followers(1)) == [4, 5]
