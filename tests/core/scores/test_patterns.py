"""reproduce.core.scores.patterns: attention-pattern scores against slow loops, a hand-built
induction circuit, and their chunked statistics against the full-pattern formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.core import circuits, scores
from reproduce.core.model import forward, token_losses

from tests.support.helpers import (bos_resting_model, chunk_test_model as _model, induction_model,
                                   random_model)


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


@pytest.mark.slow
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


def test_hand_built_induction_circuit_scores_high_and_random_low():
  cfg, w = induction_model()
  pool = np.arange(1, cfg.d_vocab)
  tokens = scores.repeated_sequences(pool, 0, 16, 2, samples=8)
  _, ex = forward(cfg, w, tokens, return_patterns=True)
  induction = np.asarray(scores.stripe_score(ex["patterns"], 16))
  prev = np.asarray(scores.previous_token_score(ex["patterns"]))
  assert induction[1, 0] > 0.95 and prev[0, 0] > 0.95
  assert induction[0, 0] < 0.1 and prev[1, 0] < 0.1
  roles = scores.previous_token_and_induction(cfg, w, tokens, tokens, 16)  # the shared entry
  np.testing.assert_allclose(roles["induction"], induction, rtol=1e-6)
  np.testing.assert_allclose(roles["previous_token"], prev, rtol=1e-6)
  assert roles["probe_losses"].shape == (8, tokens.shape[1] - 1)
  prefix = np.asarray(scores.prefix_matching_score(cfg, w, pool, 0, length=8, repeats=4))
  assert prefix[1, 0] > 0.95 and prefix[0, 0] < 0.1
  # Copying: ≈1 where the head attends selectively (the repeat), lower where it spreads over
  # every token seen so far (the first half), so the average is well above 0 but below 1.
  copying = scores.copying_score(cfg, w, tokens)["score"]
  assert copying[1, 0] > 0.5
  _, anti = induction_model(copy=-1.0)
  assert scores.copying_score(cfg, anti, tokens)["score"][1, 0] < -0.5
  offsets = scores.positional_offsets(w)
  assert offsets["offset1"][0, 0] > 0.95 and offsets["offset0"][0, 0] < 0.05
  icl = scores.in_context_learning_score(cfg, w, tokens, np.roll(tokens, -1, 1))
  assert (icl["early_index"], icl["late_index"]) == (2, 31) and icl["score"] < -0.5
  # The mechanism read off the weights: the induction head copies, and its K-composition term
  # with the previous-token head matches equal tokens (the upper-right of ov_qk_scatter).
  assert circuits.positivity(circuits.ov_eigenvalues(w))[1, 0] > 0.99
  kcomp = circuits.k_composition_qk_eigenvalues(w, 0, 0)
  assert circuits.positivity(kcomp)[1, 0] > 0.99
  # K-composition is 1/sqrt(20) here (a rank-20 permutation-like product); Q and V composition
  # are exactly 0, since the induction head's query and value read a block layer 0 never writes.
  assert np.asarray(circuits.composition_scores(w, "k"))[0, 0, 1, 0] == pytest.approx(20 ** -0.5)
  assert np.asarray(circuits.composition_scores(w, "q"))[0, 0, 1, 0] == 0
  assert np.asarray(circuits.composition_scores(w, "v"))[0, 0, 1, 0] == 0
  # A random model of the same size has no induction stripe.
  rcfg, rw = random_model(n_layers=2, n_heads=2, d_head=8, d_model=32, d_vocab=20, n_ctx=33)
  _, rex = forward(rcfg, rw, tokens, return_patterns=True)
  assert np.asarray(scores.stripe_score(rex["patterns"], 16)).max() < 0.2
  assert np.nanmax(np.abs(scores.copying_score(rcfg, rw, tokens)["score"])) < 0.35


def test_frequency_band_drops_extremes_and_specials():
  tokens = np.repeat(np.arange(10), np.arange(10, 0, -1) * 10)  # token 0 most frequent
  band = scores.frequency_band(tokens, 12, exclude=(0, 1), drop_top=0.2, drop_bottom=0.2)
  assert 0 not in band and 1 not in band and 2 not in band and 9 not in band
  assert 10 not in band and 11 not in band  # never seen
  # exactly: 8 tokens seen (2 … 9, most frequent first); drop int(0.2·8) = 1 from the top and
  # keep up to int(0.8·8) = 6, so ranks 1 … 5: tokens 3 … 7
  np.testing.assert_array_equal(band, [3, 4, 5, 6, 7])


def test_frequency_band_against_a_loop():
  """Token ids seen at least once, specials left out, ranked by count (ties by id), with the top
  int(drop_top·n) and the bottom n − int((1 − drop_bottom)·n) removed; returned sorted."""
  rng = np.random.default_rng(4)
  tokens = rng.integers(0, 40, 3000) % rng.integers(5, 40, 3000)  # skewed, with ties and gaps
  for drop_top, drop_bottom in ((0.05, 0.25), (0.0, 0.0), (0.3, 0.1)):
    counts = [int(np.sum(tokens == t)) for t in range(45)]
    seen = [t for t in range(45) if counts[t] > 0 and t not in (0, 3)]
    ranked = sorted(seen, key=lambda t: (-counts[t], t))
    n = len(ranked)
    expect = sorted(ranked[int(n * drop_top):int(n * (1 - drop_bottom))])
    band = scores.frequency_band(tokens, 45, exclude=(0, 3), drop_top=drop_top,
                                 drop_bottom=drop_bottom)
    assert len(expect) > 0
    np.testing.assert_array_equal(band, expect)
    again = scores.frequency_band(None, 45, exclude=(0, 3), drop_top=drop_top,
                                  drop_bottom=drop_bottom, counts=np.bincount(tokens, minlength=45))
    np.testing.assert_array_equal(again, expect)


def test_positional_offsets_equal_a_loop():
  cfg, w = random_model(n_layers=2, n_heads=3, std=0.8)
  offsets = scores.positional_offsets(w)
  pattern = np.asarray(circuits.positional_attention(w))
  for l in range(2):
    for h in range(3):
      T = pattern.shape[-1]
      assert offsets["offset0"][l, h] == pytest.approx(
          np.mean([pattern[l, h, i, i] for i in range(1, T)]), rel=1e-5)
      assert offsets["offset1"][l, h] == pytest.approx(
          np.mean([pattern[l, h, i, i - 1] for i in range(1, T)]), rel=1e-5)


def _score_model(which: str):
  """A random model (std 0.5: peaked, varied patterns) or the hand-built induction circuit."""
  if which == "random":
    return random_model(n_layers=2, n_heads=3, d_vocab=23, n_ctx=33, std=0.5, seed=7)
  return induction_model()


@pytest.mark.parametrize("which", ["random", "induction"])
def test_prefix_matching_score_equals_a_loop(which):
  """Against the docstring's definition, looped: for each destination i in the second and later
  repeats, the attention summed over positions k + 1 right after each earlier copy k < i of
  token i; averaged over destinations and samples.  The patterns come from ``forward``."""
  cfg, w = _score_model(which)
  pool, repeats, samples = np.arange(1, cfg.d_vocab), 4, 3
  got = np.asarray(scores.prefix_matching_score(cfg, w, pool, 0, length=25, repeats=repeats,
                                                samples=samples, seed=5))
  length = min(25, (cfg.n_ctx - 1) // repeats)  # cut to fit n_ctx, as documented
  tokens = scores.repeated_sequences(pool, 0, length, repeats, samples, seed=5)
  _, ex = forward(cfg, w, tokens, return_patterns=True)
  A = np.asarray(ex["patterns"], np.float64)  # [L, B, H, dest, src]
  T = tokens.shape[1]
  expected = np.zeros((cfg.n_layers, cfg.n_heads))
  for l in range(cfg.n_layers):
    for h in range(cfg.n_heads):
      per_dest = []
      for b in range(samples):
        for i in range(length + 1, T):  # destinations in repeats 2, 3, ...
          per_dest.append(sum(A[l, b, h, i, k + 1] for k in range(i)
                              if tokens[b, k] == tokens[b, i]))
      expected[l, h] = np.mean(per_dest)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  if which == "induction":
    assert got[1, 0] > 0.95  # the reference is not vacuous: the induction head prefix-matches


@pytest.mark.parametrize("which", ["random", "induction"])
def test_copying_score_equals_a_loop(which):
  """Against the docstring's definition, looped over sequences, heads and destinations t ≥ 1:
  the head's direct logit effect on each token present (positions ≥ 1), minus its mean over them,
  through ReLU → r; a = the attention-weighted mean of r over the attended positions s ≥ 1 (BOS
  left out); m = the plain mean of r; the score at t is (a − m)/(a + m), defined where the
  attention off BOS is ≥ 0.1·t/(t + 1); the head's score is the mean over the defined (sequence,
  destination) pairs, NaN when fewer than 10% are.  Patterns and head outputs from ``forward``."""
  cfg, w = _score_model(which)
  rng = np.random.default_rng(len(which))
  tokens = np.concatenate([np.zeros((3, 1), int), rng.integers(1, cfg.d_vocab, (3, 24))], 1)
  got = scores.copying_score(cfg, w, tokens)
  _, ex = forward(cfg, w, tokens, return_patterns=True, return_head_outputs=True)
  A = np.asarray(ex["patterns"], np.float64)  # [L, B, H, dest, src]
  out = np.asarray(ex["head_outputs"], np.float64)  # [L, B, H, T, D]
  W_U = np.asarray(w.W_U, np.float64)
  B, T = tokens.shape
  expected = np.zeros((cfg.n_layers, cfg.n_heads))
  share = np.zeros((cfg.n_layers, cfg.n_heads))
  for l in range(cfg.n_layers):
    for h in range(cfg.n_heads):
      per_dest = []
      for b in range(B):
        present = sorted(set(tokens[b, 1:].tolist()))
        for t in range(1, T):
          off_bos = sum(A[l, b, h, t, s] for s in range(1, t + 1))
          if off_bos < 0.1 * t / (t + 1):
            continue  # rests on BOS: undefined here
          effect = {p: float(out[l, b, h, t] @ W_U[:, p]) for p in present}
          mean_effect = sum(effect.values()) / len(present)
          r = {p: max(effect[p] - mean_effect, 0.0) for p in present}
          a = sum(A[l, b, h, t, s] * r[tokens[b, s]] for s in range(1, t + 1)) / off_bos
          m = sum(r.values()) / len(present)
          per_dest.append((a - m) / (a + m) if a + m > 0 else 0.0)
      share[l, h] = len(per_dest) / (B * (T - 1))
      expected[l, h] = np.mean(per_dest) if share[l, h] >= 0.1 else np.nan
  np.testing.assert_allclose(got["defined"], share, rtol=1e-6)
  np.testing.assert_allclose(got["score"], expected, rtol=1e-4, atol=1e-5)
  assert np.nanmax(np.abs(expected)) > 0.05  # not vacuously zero


def test_copying_score_is_undefined_for_a_head_resting_on_bos():
  """A head with (numerically) no attention off BOS has no copying score: NaN, not −1 (the
  attended mean a → 0 made it read as anti-copying); the uniform copying head beside it stays
  defined and positive."""
  cfg, w = bos_resting_model()
  tokens = scores.repeated_sequences(np.arange(1, 8), 0, 7, 4, samples=3)  # T = 29 ≤ n_ctx
  got = scores.copying_score(cfg, w, tokens)
  assert np.isnan(got["score"][0, 0]) and got["defined"][0, 0] == 0
  assert got["off_bos"][0, 0] < 1e-6
  assert got["score"][0, 1] > 0.05 and got["defined"][0, 1] == 1


def test_attention_by_offset_first_occurrences_and_bos_attention_against_loops():
  rng = np.random.default_rng(0)
  L, B, H, T = 2, 3, 2, 7
  patterns = rng.random((L, B, H, T, T))
  tokens = rng.integers(1, 4, (B, T))
  tokens[:, 0] = 0
  by_offset = scores.attention_by_offset(patterns, 3)
  for o in range(3):
    expect = np.mean([[patterns[:, b, :, i, i - o] for i in range(3, T)] for b in range(B)],
                     axis=(0, 1))
    np.testing.assert_allclose(by_offset[..., o], expect)
  first = scores.first_occurrences(tokens)
  for b in range(B):
    for i in range(T):
      assert first[b, i] == (i >= 1 and tokens[b, i] not in tokens[b, 1:i])
  picked = [(b, i) for b in range(B) for i in range(T) if first[b, i]]
  np.testing.assert_allclose(scores.bos_attention(patterns, first),
                             np.mean([patterns[:, b, :, i, 0] for b, i in picked], axis=0))


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


def test_masked_bos_and_its_strongest_rival_against_loops():
  """``MaskedBos`` sums A[i, 0] and ``MaskedTopOffBos`` the largest A[i, j], j ≥ 1, over the
  masked destinations, per window and head (through ``pattern_statistics``, on a real model)."""
  cfg, w = random_model(n_layers=2, n_heads=3, d_vocab=23, n_ctx=12, std=0.6, seed=9)
  tokens = np.random.default_rng(9).integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  mask = scores.first_occurrences(tokens)
  bos, rival = scores.pattern_statistics(cfg, w, tokens, (scores.MaskedBos(),
                                                          scores.MaskedTopOffBos()), mask)
  A = np.asarray(forward(cfg, w, tokens, return_patterns=True)[1]["patterns"], np.float64)
  for l in range(2):
    for b in range(3):
      for h in range(3):
        dests = [i for i in range(cfg.n_ctx) if mask[b, i]]
        assert bos[l, b, h] == pytest.approx(sum(A[l, b, h, i, 0] for i in dests), rel=1e-5)
        assert rival[l, b, h] == pytest.approx(
            sum(max(A[l, b, h, i, j] for j in range(1, i + 1)) for i in dests), rel=1e-5)
