"""The figures' chunked computations (windows, rows, layers in chunks sized from a memory budget)
against the plain, whole-batch formulas they replace, with a budget so small that every chunk
holds one item and the last chunk is padded."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import random_model
from reproduce.core import circuits, kernels, paths, scores
from reproduce.core.model import forward, token_losses


@pytest.fixture(params=[pytest.param("whole", marks=pytest.mark.slow), "one_item"])
def budget(request, monkeypatch):
  """Runs a test with the default budget (one chunk at these sizes: slow, as the references
  compute the whole batch anyway) and with a 1-byte budget (one window, row or head per chunk)."""
  if request.param == "one_item":
    monkeypatch.setattr(kernels, "CHUNK_BYTES", 1)
  return request.param


def _model(norm="ln", pos="standard"):
  cfg, w = random_model(n_layers=2, n_heads=3, d_vocab=29, n_ctx=12, seed=3, norm=norm, pos=pos)
  rng = np.random.default_rng(4)
  w = w.replace(b_U=jnp.asarray(rng.normal(size=cfg.d_vocab), jnp.float32))
  return cfg, w


def test_items_per_chunk_follows_the_budget():
  assert kernels.items_per_chunk(100, 50, budget=1000) == 10
  assert kernels.items_per_chunk(100, 5, budget=1000) == 5  # never more than there are
  assert kernels.items_per_chunk(10_000, 5, budget=1000) == 1  # never fewer than one


def test_map_in_chunks_pads_and_drops_the_padding():
  x = jnp.arange(7.0)[:, None] * jnp.ones((7, 3))
  for chunk in (1, 2, 3, 7):
    got = kernels.map_in_chunks(lambda a: (a.sum(-1), a * 2), (x,), chunk)
    np.testing.assert_allclose(got[0], 3 * np.arange(7.0))
    np.testing.assert_allclose(got[1], 2 * np.asarray(x))


def test_unembed_losses_equal_the_full_logits_cross_entropy(budget):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, 8)), jnp.float32)
  W_U = jnp.asarray(rng.normal(size=(8, 31)), jnp.float32)
  b_U = jnp.asarray(rng.normal(size=31), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 31, (3, 5)))
  for bias in (None, b_U):
    logits = x @ W_U + (0 if bias is None else bias)
    got = kernels.unembed_losses(x, W_U, targets, bias)
    np.testing.assert_allclose(got, token_losses(logits, targets), rtol=1e-5, atol=1e-5)


def test_low_rank_update_losses_equal_each_updates_full_logits(budget):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 5, 8)), jnp.float32)
  W_U = jnp.asarray(rng.normal(size=(8, 31)), jnp.float32)
  b_U = jnp.asarray(rng.normal(size=31), jnp.float32)
  z = jnp.asarray(rng.normal(size=(4, 3, 5, 2)), jnp.float32)
  M = jnp.asarray(rng.normal(size=(4, 2, 31)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 31, (3, 5)))
  got = kernels.low_rank_update_losses(x, W_U, targets, z, M, b_U)
  assert got.shape == (4, 3, 5)
  for k in range(4):  # the update's logits written out in full, one at a time
    logits = np.asarray(x) @ np.asarray(W_U) + np.asarray(b_U) + np.asarray(z[k]) @ np.asarray(M[k])
    np.testing.assert_allclose(got[k], token_losses(logits, targets), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm, pos", [("ln", "standard"), ("none", "shortformer")])
def test_sequence_losses_equal_the_forwards(budget, norm, pos):
  cfg, w = _model(norm, pos)
  rng = np.random.default_rng(1)
  inputs = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  expect = token_losses(forward(cfg, w, inputs)[0], targets)
  np.testing.assert_allclose(scores.sequence_losses(cfg, w, inputs, targets), expect,
                             rtol=1e-5, atol=1e-5)


def test_pattern_statistics_equal_the_full_pattern_formulas(budget):
  cfg, w = _model()
  rng = np.random.default_rng(2)
  tokens = rng.integers(1, 6, (5, cfg.n_ctx))  # few distinct tokens: many earlier copies
  tokens[:, 0] = 0
  patterns = np.asarray(forward(cfg, w, tokens, return_patterns=True)[1]["patterns"])
  first = scores.first_occurrences(tokens)
  stripe, offsets, bos, prefix = scores.pattern_statistics(
      cfg, w, tokens, (scores.Stripe(-1, 2), scores.Offsets(3), scores.MaskedBos(),
                       scores.PrefixMatching(4)), first)
  np.testing.assert_allclose(stripe.mean(1), scores.previous_token_score(patterns), rtol=1e-5)
  np.testing.assert_allclose(offsets.mean(1), scores.attention_by_offset(patterns, 3),
                             rtol=1e-5)
  np.testing.assert_allclose(bos.sum(1) / first.sum(), scores.bos_attention(patterns, first),
                             rtol=1e-5)
  # Prefix matching by loops: attention to every j ≥ 1 with tokens[j − 1] = tokens[i], j − 1 < i.
  expect = np.zeros(prefix.shape)
  for b in range(len(tokens)):
    for i in range(4, cfg.n_ctx):
      js = [j for j in range(1, i + 1) if tokens[b, j - 1] == tokens[b, i]]
      expect[:, b] += patterns[:, b, :, i][..., js].sum(-1) / (cfg.n_ctx - 4)
  np.testing.assert_allclose(prefix, expect, rtol=1e-5, atol=1e-6)


def test_role_scores_and_repeat_losses_in_chunks_equal_the_whole_batch(budget):
  cfg, w = _model()
  probe = scores.repeated_sequences(np.arange(1, cfg.d_vocab), 0, 5, 2, samples=3)
  text = np.random.default_rng(3).integers(0, cfg.d_vocab, (4, cfg.n_ctx))
  roles = scores.previous_token_and_induction(cfg, w, text, probe, 5)
  text_patterns = forward(cfg, w, text, return_patterns=True)[1]["patterns"]
  logits, ex = forward(cfg, w, probe, return_patterns=True)
  np.testing.assert_allclose(roles["previous_token"],
                             scores.previous_token_score(text_patterns), rtol=1e-5)
  np.testing.assert_allclose(roles["induction"], scores.stripe_score(ex["patterns"], 5),
                             rtol=1e-5)
  np.testing.assert_allclose(roles["probe_losses"],
                             token_losses(logits[:, :-1], jnp.asarray(probe)[:, 1:]), rtol=1e-5)
  icl_in, icl_out = text, np.roll(text, -1, 1)
  plain = token_losses(forward(cfg, w, icl_in)[0], icl_out)[:, [2, 9]]
  np.testing.assert_allclose(scores.position_losses(cfg, w, icl_in, icl_out, (2, 9)), plain,
                             rtol=1e-5)


def test_term_importance_is_the_same_in_chunks_of_one_window(monkeypatch):
  cfg, w = _model()
  rng = np.random.default_rng(5)
  inputs = rng.integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  whole = paths.term_importance(cfg, w, inputs, targets)
  monkeypatch.setattr(kernels, "CHUNK_BYTES", 1)
  chunked = paths.term_importance(cfg, w, inputs, targets)
  for key, value in whole.items():
    np.testing.assert_allclose(chunked[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_positional_attention_one_layer_at_a_time_and_only_the_first_positions():
  cfg, w = random_model(n_layers=3, n_heads=2, n_ctx=16, seed=6)
  every = np.asarray(circuits.positional_attention(w))
  for layer in range(3):
    np.testing.assert_allclose(circuits.positional_attention(w, layer=layer), every[layer],
                               rtol=1e-6)
  # The first T positions alone: causal, so the same as the full pattern's leading block.
  np.testing.assert_allclose(circuits.positional_attention(w, 5), every[..., :5, :5], rtol=1e-5,
                             atol=1e-7)
