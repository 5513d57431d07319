"""Issue 20, items 3 and 4: one definition per score, and claims read against what the papers
say.  Each criterion or score that computes something new is compared with a slow, plainly
written NumPy loop, and each test has an input on which the criterion must fail."""

import numpy as np
import pytest

from helpers import random_model
from reproduce.core import circuits, scores
from reproduce.core.model import forward
from reproduce.figure.roles import HeadRoles, head_roles
from reproduce.figure.runner import figure_config, figure_module
from reproduce.figure.sources import Model


def test_present_or_previous_sums_the_two_offsets_against_a_loop():
  positional = figure_module("positional_heads")
  cfg, w = random_model(n_layers=1, n_heads=3, std=0.8, seed=3)
  pattern = np.asarray(circuits.positional_attention(w), np.float64)
  T = pattern.shape[-1]
  got = positional.present_or_previous(scores.positional_offsets(w))
  for h in range(3):
    expect = np.mean([pattern[0, h, i, i] + pattern[0, h, i, i - 1] for i in range(1, T)])
    assert got[0, h] == pytest.approx(expect, rel=1e-5)


def test_positional_claim_counts_present_and_previous_together():
  """FW's head attends to "either" the present or the previous token: 0.3 + 0.3 holds, though
  neither offset alone reaches 0.5; 0.2 + 0.2 does not."""
  positional = figure_module("positional_heads")
  config = figure_config("positional_heads", "test")
  split = {"offset0": np.array([[0.3, 0.1]]), "offset1": np.array([[0.3, 0.1]])}
  assert positional.positional_claim(config, "m", split)["holds"]
  weak = {"offset0": np.array([[0.2, 0.1]]), "offset1": np.array([[0.2, 0.1]])}
  assert not positional.positional_claim(config, "m", weak)["holds"]


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
  cfg, w = random_model(n_layers=1)
  model = Model("m", cfg, w, {})
  stats = {"correlation": 0.55}
  holds = bigram._claims(config, "m", model, stats, 0.49, 0, 0,
                         {"gain": 0.06, "standard_error": 0.01})
  assert [c["id"] for c in holds] == ["bigram.direct_path_bigram_residual.m"] and holds[0]["holds"]
  assert '"residual"' in holds[0]["paper_says"]
  fails = bigram._claims(config, "m", model, stats, 0.54, 0, 0,
                         {"gain": 0.01, "standard_error": 0.01})
  assert not fails[0]["holds"]


def _profile_loop(offsets, window):
  mass, spread = [], []
  for p in offsets:
    m = sum(p[:window])
    entropy = -sum((q / m) * np.log(q / m) for q in p[:window] if q > 0)
    mass.append(m)
    spread.append(np.exp(entropy))
  return np.array(mass), np.array(spread)


def _averaging_inputs(offsets, k, init_max=0.1, induction=((1, 0),)):
  heads = figure_module("induction_heads")
  window = figure_config("induction_heads", "test").averaging_window
  mass, spread = heads.averaging_profile(np.asarray(offsets), window)
  return {"offsets": np.asarray(offsets), "mass": mass, "spread": spread,
          "k_layer0": np.asarray(k), "init_k_max": init_max, "induction": list(induction)}


def test_averaging_profile_against_a_loop():
  heads = figure_module("induction_heads")
  rng = np.random.default_rng(2)
  offsets = rng.random((3, 8)) / 8
  for window in (4, 8):
    mass, spread = heads.averaging_profile(offsets, window)
    ref_mass, ref_spread = _profile_loop(offsets, window)
    np.testing.assert_allclose(mass, ref_mass, rtol=1e-9)
    np.testing.assert_allclose(spread, ref_spread, rtol=1e-6)


def test_averaging_head_claim_reads_fw_last_several_tokens():
  """FW: a head "which attends to the last several tokens, rather than just the previous
  token", which induction heads rely on.  Within the last 8 tokens, spread over ≥ 3 of them, and
  K-composed into an induction head above random init."""
  heads = figure_module("induction_heads")
  config = figure_config("induction_heads", "test")
  claim = lambda *a, **kw: heads.averaging_head_claim(config, "m", _averaging_inputs(*a, **kw))
  six_back = [0, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 0]  # beyond the old 4-token window
  previous = [0, 1, 0, 0, 0, 0, 0, 0]
  two = [0.5, 0.5, 0, 0, 0, 0, 0, 0]
  assert claim([six_back, previous], [[0.3], [0.5]])["holds"]
  assert not claim([previous, two], [[0.3], [0.5]])["holds"]  # one or two tokens: not several
  assert not claim([six_back, previous], [[0.05], [0.5]])["holds"]  # no induction head uses it
  assert not claim([six_back, previous], [[0.3], [0.5]], induction=())["holds"]


def test_head_roles_take_the_one_prefix_matching_score_and_a_previous_token_loop():
  cfg, w = random_model(n_layers=2, n_heads=3, d_vocab=23, n_ctx=33, std=0.5, seed=7)
  model = Model("m", cfg, w, {})  # no tokenizer: roles from IH's probe
  roles = head_roles(model)
  pool = model.sampling_pool()
  np.testing.assert_allclose(roles.induction,
                             scores.prefix_matching_score(cfg, w, pool, model.bos_id), atol=1e-6)
  probe, length = scores.prefix_probe(cfg.n_ctx, pool, model.bos_id)
  assert length == (cfg.n_ctx - 1) // scores.PREFIX_REPEATS
  _, ex = forward(cfg, w, probe, return_patterns=True)
  A = np.asarray(ex["patterns"], np.float64)  # [L, B, H, T, T]
  T = probe.shape[1]
  for l in range(2):
    for h in range(3):
      expect = np.mean([[A[l, b, h, i, i - 1] for i in range(2, T)] for b in range(len(probe))])
      assert roles.previous_token[l, h] == pytest.approx(expect, rel=1e-4)


def test_group_ablation_takes_every_head_passing_the_induction_criterion():
  ablations = figure_module("head_ablations")
  roles = HeadRoles(previous_token=np.array([[0.2, 0.9, 0.1], [0.0, 0.0, 0.0]]),
                               induction=np.array([[0.9, 0.0, 0.0], [0.45, 0.05, 0.31]]),
                               threshold=0.3)
  heads, prev, fallback = ablations.roles_to_ablate(roles)
  assert heads == [(1, 0), (1, 2)] and prev == (0, 1) and not fallback  # layer 0 never counts
  none = HeadRoles(roles.previous_token, np.array([[0.9, 0, 0], [0.1, 0.2, 0.0]]), 0.3)
  heads, _, fallback = ablations.roles_to_ablate(none)
  assert heads == [(1, 1)] and fallback


def test_stripe_and_prefix_matching_agree_on_two_repeats_only():
  """The stripe score (most recent copy) is a variant of the prefix-matching score (every
  earlier copy): equal on two repeats, apart on four, hence their different names."""
  cfg, w = random_model(n_layers=2, n_heads=3, d_vocab=23, n_ctx=41, std=0.5, seed=7)
  pool = np.arange(1, cfg.d_vocab)
  for repeats, equal in ((2, True), (4, False)):
    tokens, length = scores.prefix_probe(cfg.n_ctx, pool, 0, length=10, repeats=repeats,
                                         samples=3)
    _, ex = forward(cfg, w, tokens, return_patterns=True)
    stripe = np.asarray(scores.stripe_score(ex["patterns"], length))
    prefix = np.asarray(scores.prefix_matching_score(cfg, w, pool, 0, length=10,
                                                     repeats=repeats, samples=3))
    assert np.allclose(stripe, prefix, atol=1e-5) == equal
