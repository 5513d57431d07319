"""Path expansion, term importance and head scores, against hand computations and a hand-built
induction circuit."""

import jax.numpy as jnp
import numpy as np
import pytest

import reproduce
from helpers import random_model
from reproduce.core import circuits, scores
from reproduce.core.model import ModelConfig, forward, token_losses
from reproduce.core.paths import path_expansion, sum_of_paths, term_importance
from reproduce.core.weights import Weights, fold_for_analysis


def induction_model(V=20, T=33, gain=8.0, copy=1.0):
  """2 layers × 1 head, d_head 32: a previous-token head, then an induction head that K-composes
  with it.  Residual blocks: token one-hot [0, V), previous-token one-hot [V, 2V), position
  one-hot [2V, 2V+T) (positions enter Q/K inputs only).  Token 0 is BOS."""
  D, dh = 2 * V + T, 32
  E = np.zeros((V, D)); E[np.arange(V), np.arange(V)] = 1
  P = np.zeros((T, D)); P[np.arange(T), 2 * V + np.arange(T)] = 1
  Q, K = np.zeros((2, 1, D, dh)), np.zeros((2, 1, D, dh))
  Vw, O = np.zeros((2, 1, D, dh)), np.zeros((2, 1, dh, D))
  scale = np.sqrt(gain * np.sqrt(dh))
  for p in range(T - 1):  # layer 0: query at position p+1 matches key at position p
    Q[0, 0, 2 * V + p + 1, p] = scale
    K[0, 0, 2 * V + p, p] = scale
  for t in range(V):
    Vw[0, 0, t, t] = 1; O[0, 0, t, V + t] = 1  # write "my previous token was t"
    Q[1, 0, t, t] = scale; K[1, 0, V + t, t] = scale  # current token = key's previous token
    Vw[1, 0, t, t] = 1; O[1, 0, t, t] = copy  # copy the attended token
  U = np.zeros((D, V)); U[np.arange(V), np.arange(V)] = 1
  cfg = ModelConfig(2, 1, dh, D, V, T)
  f = lambda a: jnp.asarray(a, jnp.float32)
  return cfg, Weights(W_E=f(E), W_pos=f(P), W_Q=f(Q), W_K=f(K), W_V=f(Vw), W_O=f(O), W_U=f(U))


def _with_biases(cfg, w, seed):
  """Random biases everywhere (and random LN gains/biases for norm="ln")."""
  rng = np.random.default_rng(seed)
  r = lambda shape, mean=0.0: jnp.asarray(mean + 0.3 * rng.normal(size=shape), jnp.float32)
  L, H, dh, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
  w = w.replace(b_Q=r((L, H, dh)), b_K=r((L, H, dh)), b_V=r((L, H, dh)), b_O=r((L, D)),
                b_U=r((cfg.d_vocab,)))
  if cfg.norm == "ln":
    w = w.replace(ln_gain=r((L, D), 1.0), ln_final=r((D,), 1.0), ln_bias=r((L, D)),
                  ln_final_bias=r((D,)))
  return w


@pytest.mark.parametrize("n_layers, pos, norm, biases", [
    (0, "shortformer", "none", False), (2, "standard", "none", True),
    (3, "shortformer", "none", True), pytest.param(4, "standard", "lnpre", True, marks=pytest.mark.slow),
    (4, "shortformer", "ln", True),
    pytest.param(1, "standard", "none", False, marks=pytest.mark.slow),
    pytest.param(2, "shortformer", "none", False, marks=pytest.mark.slow),
    pytest.param(3, "standard", "ln", True, marks=pytest.mark.slow),
    pytest.param(4, "shortformer", "none", False, marks=pytest.mark.slow)])
def test_path_expansion_sums_to_the_logits(n_layers, pos, norm, biases):
  cfg, w = random_model(n_layers=n_layers, pos=pos, norm=norm, seed=n_layers, n_heads=2,
                        pos_after_norm=norm != "none")
  if biases:
    w = _with_biases(cfg, w, n_layers)
  tokens = np.random.default_rng(0).integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  terms = path_expansion(cfg, w, tokens)
  scale = float(np.abs(terms["logits"]).max())
  np.testing.assert_allclose(sum_of_paths(terms), terms["logits"], rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(terms["orders"].sum(0), terms["logits"], rtol=0, atol=1e-5 * scale)
  n_chains = {0: 0, 1: 0, 2: 1, 3: 4, 4: 11}[n_layers]  # increasing layer tuples of length ≥ 2
  assert len(terms.get("chains", {})) == n_chains
  for layers, chain in terms.get("chains", {}).items():
    assert chain.shape == (2,) * len(layers) + (2, cfg.n_ctx, cfg.d_vocab)
  assert terms["orders"].shape[0] == n_layers + 1
  if n_layers == 4:  # a lower max_order leaves exactly the higher orders out
    partial = path_expansion(cfg, w, tokens, max_order=2)
    np.testing.assert_allclose(sum_of_paths(partial), terms["orders"][:3].sum(0), rtol=0,
                               atol=1e-5 * scale)


def test_three_layer_chain_and_constants_match_a_hand_computation():
  """Plain NumPy (row vectors): the chain (0, 1) → (1, 1) → (2, 0) and the direct path, biases
  included."""
  cfg, w = random_model(n_layers=3, n_heads=2, pos="standard", seed=4)
  w = _with_biases(cfg, w, 4)
  tokens = np.random.default_rng(4).integers(0, cfg.d_vocab, (1, cfg.n_ctx))
  terms = path_expansion(cfg, w, tokens)
  _, ex = forward(cfg, w, tokens, return_patterns=True)
  A = np.asarray(ex["patterns"], np.float64)[:, 0]
  f = lambda n: np.asarray(getattr(w, n), np.float64)
  x0 = f("W_E")[tokens[0]] + f("W_pos")[:cfg.n_ctx]
  ov = lambda l, h: f("W_V")[l, h] @ f("W_O")[l, h]
  b_O = f("b_O")
  direct = (x0 + b_O.sum(0)) @ f("W_U") + f("b_U")
  np.testing.assert_allclose(terms["direct"][0], direct, rtol=1e-4, atol=1e-4)
  head_1_0 = (A[1, 0] @ (x0 + b_O[0]) @ ov(1, 0) + f("b_V")[1, 0] @ f("W_O")[1, 0]) @ f("W_U")
  np.testing.assert_allclose(terms["heads"][1, 0, 0], head_1_0, rtol=1e-4, atol=1e-4)
  first = A[0, 1] @ x0 @ ov(0, 1) + f("b_V")[0, 1] @ f("W_O")[0, 1]
  chain = A[2, 0] @ A[1, 1] @ first @ ov(1, 1) @ ov(2, 0) @ f("W_U")
  np.testing.assert_allclose(terms["chains"][(0, 1, 2)][1, 1, 0, 0], chain, rtol=1e-4,
                             atol=1e-4)


def test_path_terms_match_a_hand_computation():
  cfg, w = random_model(n_layers=2)
  tokens = np.random.default_rng(1).integers(0, cfg.d_vocab, (1, cfg.n_ctx))
  terms = path_expansion(cfg, w, tokens)
  _, ex = forward(cfg, w, tokens, return_patterns=True)
  A = np.asarray(ex["patterns"], np.float64)[:, 0]  # [L, H, T, T]
  f = lambda n: np.asarray(getattr(w, n), np.float64)
  x0 = f("W_E")[tokens[0]]
  ov = lambda l, h: f("W_V")[l, h] @ f("W_O")[l, h]
  np.testing.assert_allclose(terms["heads"][1, 2, 0], A[1, 2] @ x0 @ ov(1, 2) @ f("W_U"),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(terms["virtual"][0, 2, 0],
                             A[1, 2] @ A[0, 0] @ x0 @ ov(0, 0) @ ov(1, 2) @ f("W_U"),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_layers, norm, pos", [
    (2, "none", "standard"), (3, "ln", "standard"), (2, "ln", "shortformer"),
    pytest.param(4, "none", "standard", marks=pytest.mark.slow),
    pytest.param(1, "none", "standard", marks=pytest.mark.slow)])
def test_term_importance_equals_the_losses_of_path_sums(n_layers, norm, pos):
  cfg, w = random_model(n_layers=n_layers, n_heads=2, seed=5, norm=norm, pos=pos,
                        pos_after_norm=pos == "shortformer")
  if norm == "ln":
    w = _with_biases(cfg, w, 5)
  rng = np.random.default_rng(2)
  inputs = rng.integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  out = term_importance(cfg, w, inputs, targets)
  terms = path_expansion(cfg, w, inputs)
  loss = lambda logits: float(token_losses(logits, targets).mean())
  assert len(out["losses"]) == n_layers + 1
  assert out["losses"][-1] == pytest.approx(float(out["loss_full"]), abs=1e-5)
  cumulative = np.cumsum(np.asarray(terms["orders"], np.float64), axis=0)
  for k in range(n_layers + 1):  # losses[k]: every path through at most k heads
    assert out["losses"][k] == pytest.approx(loss(cumulative[k]), abs=1e-4)
  np.testing.assert_allclose(out["marginal"], out["losses"][:-1] - out["losses"][1:])
  for l in range(n_layers):
    only_layer = terms["direct"] + terms["heads"][l].sum(0)
    assert out["first_order_by_layer"][l] == pytest.approx(loss(only_layer), abs=1e-4)
    for h in range(2):
      only_head = terms["direct"] + terms["heads"][l, h]
      assert out["first_order_by_head"][l, h] == pytest.approx(loss(only_head), abs=1e-4)
  if n_layers > 1:  # higher orders matter: the losses are not all equal
    assert not np.isclose(out["losses"][1], out["losses"][-1], atol=1e-4)


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


def test_transformer_lens_weights_give_the_same_scores(tmp_path):
  cfg, w = random_model(n_layers=2, seed=9)
  cfg2, w2 = reproduce.load(reproduce.save_transformer_lens(tmp_path / "m.safetensors", cfg, w))
  np.testing.assert_array_equal(circuits.ov_eigenvalues(w), circuits.ov_eigenvalues(w2))
  for kind in ("q", "k", "v"):
    np.testing.assert_array_equal(circuits.composition_scores(w, kind),
                                  circuits.composition_scores(w2, kind))
  pool = np.arange(1, cfg.d_vocab)
  np.testing.assert_array_equal(scores.prefix_matching_score(cfg, w, pool, 0, length=4),
                                scores.prefix_matching_score(cfg2, w2, pool, 0, length=4))


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


def test_frequency_band_drops_extremes_and_specials():
  tokens = np.repeat(np.arange(10), np.arange(10, 0, -1) * 10)  # token 0 most frequent
  band = scores.frequency_band(tokens, 12, exclude=(0, 1), drop_top=0.2, drop_bottom=0.2)
  assert 0 not in band and 1 not in band and 2 not in band and 9 not in band
  assert 10 not in band and 11 not in band  # never seen


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


def bos_resting_model(V=20, T=33, dh=8):
  """1 layer × 2 heads on one-hot tokens (token 0 is BOS) and positions: head 0 puts all its
  attention on BOS (attention logit 60 there, 0 elsewhere) and BOS's value raises the logits of
  tokens 1 … 5; head 1 attends uniformly and copies the tokens it attends to."""
  D = V + T
  E = np.zeros((V, D)); E[np.arange(V), np.arange(V)] = 1
  P = np.zeros((T, D)); P[np.arange(T), V + np.arange(T)] = 1
  Q, K = np.zeros((1, 2, D, dh)), np.zeros((1, 2, D, dh))
  Vw, O = np.zeros((1, 2, D, dh)), np.zeros((1, 2, dh, D))
  Q[0, 0, :V, 0] = np.sqrt(60 * np.sqrt(dh)); K[0, 0, 0, 0] = np.sqrt(60 * np.sqrt(dh))
  Vw[0, 0, 0, 0] = 1; O[0, 0, 0, 1:6] = 1
  for t in range(min(V, dh)):
    Vw[0, 1, t, t] = 1; O[0, 1, t, t] = 1
  U = np.zeros((D, V)); U[np.arange(V), np.arange(V)] = 1
  f = lambda a: jnp.asarray(a, jnp.float32)
  return ModelConfig(1, 2, dh, D, V, T), Weights(W_E=f(E), W_pos=f(P), W_Q=f(Q), W_K=f(K),
                                                 W_V=f(Vw), W_O=f(O), W_U=f(U))


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


@pytest.mark.parametrize("layers, norm, pos, fold", [
    (2, "none", "standard", False),
    pytest.param(3, "ln", "standard", False, marks=pytest.mark.slow),
    (3, "ln", "shortformer", True),  # LN + positions after the norm, folded: W_Q_pos, W_K_pos
    (2, "none", "shortformer", False)])
def test_ablations_from_one_shared_pass_equal_rerunning_with_zero_W_O(layers, norm, pos, fold):
  """``ablated_position_losses`` (shared unablated pass, last layer at the asked positions only)
  against a full forward of ``zero_ablated`` weights, every position's logits, read at the
  positions: groups starting in every layer, across layers, and the empty group."""
  extra = {"pos_after_norm": True} if fold else {}
  cfg, w = random_model(n_layers=layers, n_heads=3, n_ctx=24, seed=3, norm=norm, pos=pos,
                        **extra)
  w = _with_biases(cfg, w, 5)
  if fold:
    cfg, w = fold_for_analysis(cfg, w)
    assert w.W_Q_pos is not None
  rng = np.random.default_rng(4)
  inputs = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  positions = (2, 9, 17)
  groups = [[], [(0, 1)], [(layers - 1, 2)], [(0, 0), (layers - 1, 1)], [(1, 0), (1, 2)],
            [(l, h) for l in range(layers) for h in range(3)]]
  got = np.asarray(scores.ablated_position_losses(cfg, w, inputs, targets, positions, groups,
                                                  chunk=2))
  assert got.shape == (5, len(groups), 3)
  for g, group in enumerate(groups):
    logits = forward(cfg, scores.zero_ablated(w, group), inputs)[0]
    full = np.asarray(token_losses(logits, targets))[:, list(positions)]
    np.testing.assert_allclose(got[:, g], full, rtol=1e-4, atol=1e-4, err_msg=str(group))
  assert np.abs(got[:, 1] - got[:, 0]).max() > 1e-3  # a layer-0 ablation changes the losses
  icl = scores.ablations_icl(cfg, w, inputs, targets, groups[:2])
  for group, g in zip(groups[:2], icl):
    rerun = scores.in_context_learning_score(cfg, scores.zero_ablated(w, group), inputs, targets)
    for key in ("score", "loss_early", "loss_late", "standard_error"):
      assert g[key] == pytest.approx(rerun[key], abs=1e-5), (group, key)
