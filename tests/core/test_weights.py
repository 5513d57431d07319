"""reproduce.core.weights: folding layer norm and value biases for analysis keeps the function
(against running the unfolded model), biases as weights give the same logits, initial weights and
sinusoidal positions against their formulas, and the shape checks."""

import dataclasses

import jax
import numpy as np
import pytest

from reproduce.core import circuits
from reproduce.core.model import ModelConfig, forward
from reproduce.core.weights import (SMEAR_INIT, SmearedKeysError, Weights, biases_as_weights,
                                    check_weights, fold_for_analysis, init_weights,
                                    require_unsmeared, sinusoidal_positions)

from tests.support.helpers import (dense_head_circuits as _dense, nonzero_eigs as _nonzero_eigs,
                                   random_model, same_multiset as _same_multiset,
                                   with_random_biases)


@pytest.mark.slow  # every circuit function on a 3-layer model
def test_biases_as_weights_gives_identical_logits_and_every_circuit_runs():
  from reproduce.core.model import forward  # pylint: disable=import-outside-toplevel
  from reproduce.core.weights import biases_as_weights  # pylint: disable=import-outside-toplevel
  for pos in ("shortformer", "standard"):
    cfg, w = random_model(n_layers=3, n_heads=2, pos=pos, seed=11)
    rng = np.random.default_rng(11)
    r = lambda *shape: np.asarray(0.5 * rng.normal(size=shape), np.float32)
    w = w.replace(b_Q=r(3, 2, 4), b_K=r(3, 2, 4), b_V=r(3, 2, 4), b_O=r(3, 12), b_U=r(23))
    cfg1, w1 = biases_as_weights(cfg, w)
    assert cfg1.d_model == 13 and not w1.has_biases
    tokens = rng.integers(0, cfg.d_vocab, (2, cfg.n_ctx))
    run = lambda c, x: forward(c, x, tokens, return_patterns=True, return_residual=True)
    (logits, ex), (logits1, ex1) = run(cfg, w), run(cfg1, w1)
    np.testing.assert_allclose(logits1, logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())
    np.testing.assert_allclose(ex1["patterns"], ex["patterns"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ex1["residual"][..., -1], 1.0)  # the constant dimension
  # Every circuit function runs on it; spot-check one against the dense matrices.
  ov = circuits.ov_eigenvalues(w1)
  d = _dense(w1, 2, 1)
  _same_multiset(ov[2, 1], _nonzero_eigs(d["ov_full"], 4), tol=1e-4)
  circuits.qk_eigenvalues(w1)
  circuits.ov_eigenvalues(w1, full=False)
  circuits.qk_eigenvalues(w1, full=False)
  circuits.positional_qk(w1)
  circuits.token_position_qk(w1)
  circuits.positional_attention(w1)
  for kind in circuits.COMPOSITION_KINDS:
    assert circuits.composition_scores(w1, kind).shape == (3, 2, 3, 2)
  circuits.k_composition_qk_eigenvalues(w1, 0, 1)
  got = circuits.skip_trigrams(w1, [3], k=2)
  np.testing.assert_array_equal(got["out_tokens"][2, 1, 0], np.argsort(-d["ov_full"][3])[:2])


def test_folding_our_layer_norm_model_keeps_its_function():
  """Our own "ln" models (positions inside the norm) fold exactly, biases and LN biases too."""
  from reproduce.core.model import forward  # pylint: disable=import-outside-toplevel
  from reproduce.core.weights import fold_for_analysis  # pylint: disable=import-outside-toplevel
  for pos in ("shortformer", "standard"):
    cfg, w = random_model(n_layers=2, norm="ln", pos=pos, seed=2)
    rng = np.random.default_rng(2)
    r = lambda *shape, mean=0.0: np.asarray(mean + 0.3 * rng.normal(size=shape), np.float32)
    w = w.replace(ln_gain=r(2, 12, mean=1.0), ln_final=r(12, mean=1.0), ln_bias=r(2, 12),
                  ln_final_bias=r(12), b_V=r(2, 3, 4), b_O=r(2, 12), b_Q=r(2, 3, 4))
    cfg_f, w_f = fold_for_analysis(cfg, w)
    assert cfg_f.norm == "lnpre" and not w_f.has_norm_parameters and w_f.b_V is None
    tokens = rng.integers(0, cfg.d_vocab, (2, cfg.n_ctx))
    logits, f_logits = forward(cfg, w, tokens)[0], forward(cfg_f, w_f, tokens)[0]
    shift = np.asarray(f_logits - logits)
    np.testing.assert_allclose(shift, np.broadcast_to(shift.mean(-1, keepdims=True), shift.shape),
                               atol=1e-4 * np.abs(logits).max())
    # Folded reading weights are (I − 11ᵀ/d) diag(γ) W: the explicit matrices, per layer.
    D = 12
    centre = np.eye(D) - np.ones((D, D)) / D
    for l in range(2):
      expected = centre @ np.diag(np.asarray(w.ln_gain[l])) @ np.asarray(w.W_V[l, 1])
      np.testing.assert_allclose(w_f.W_V[l, 1], expected, rtol=1e-5, atol=1e-6)


def test_init_weights_lays_out_every_matrix_at_its_scale():
  """Shapes as ``check_weights`` wants them, each matrix's sample std at its configured std
  (W_Q, W_K at qk_init_std), unit norm gains; sinusoidal positions are the fixed table times
  pos_scale; an unknown pos_init is refused naming the field."""
  cfg = ModelConfig(2, 3, 8, 24, 200, 16, norm="ln")
  small = ModelConfig(1, 2, 4, 8, 10, 6)
  # One compilation, not one per eager sampler call; the "rbg" generator compiles several times
  # faster than the default threefry on CPU (the draws' distribution is the same).
  w, fixed = jax.jit(lambda key: (
      init_weights(cfg, key, init_std=0.05, qk_init_std=0.2),
      init_weights(small, key, pos_init="sinusoidal", pos_scale=0.5)))(
          jax.random.key(1, impl="rbg"))
  check_weights(cfg, w)
  for name, std in (("W_E", 0.05), ("W_pos", 0.05), ("W_V", 0.05), ("W_O", 0.05), ("W_U", 0.05),
                    ("W_Q", 0.2), ("W_K", 0.2)):
    a = np.asarray(getattr(w, name), np.float64)
    assert abs(a.mean()) < 0.2 * std and abs(a.std() / std - 1) < 0.1, (name, a.std())
  np.testing.assert_array_equal(w.ln_gain, np.ones((2, 24)))
  np.testing.assert_array_equal(w.ln_final, np.ones(24))
  assert not w.has_biases and w.ln_bias is None
  np.testing.assert_array_equal(fixed.W_pos, 0.5 * sinusoidal_positions(6, 8))
  assert fixed.ln_gain is None
  with pytest.raises(ValueError, match="model.pos_init"):
    init_weights(cfg, jax.random.key(0, impl="rbg"), pos_init="rotary")


@pytest.mark.parametrize("d_model", [8, 7])
def test_sinusoidal_positions_follow_the_formula(d_model):
  """Entry (p, 2i) is sin(p / 10000^(2i/d)), entry (p, 2i + 1) is cos(p / 10000^(2i/d))."""
  table = sinusoidal_positions(5, d_model)
  assert table.shape == (5, d_model) and table.dtype == np.float32
  for p in range(5):
    for j in range(d_model):
      angle = p / 10000 ** (2 * (j // 2) / d_model)
      assert table[p, j] == pytest.approx(np.sin(angle) if j % 2 == 0 else np.cos(angle),
                                          abs=1e-6)


def test_weights_round_trip_through_a_dict_and_name_a_wrong_shape():
  cfg, w = random_model(n_layers=2, norm="ln")
  d = w.to_dict()
  assert "b_Q" not in d and "W_Q_pos" not in d and "ln_gain" in d  # absent parts are left out
  again = Weights.from_dict(d)
  assert again.b_Q is None and again.W_Q_pos is None
  for name, a in d.items():
    assert getattr(again, name) is a
  assert w.replace(b_U=np.zeros(23, np.float32)).has_biases and not w.has_biases
  assert w.has_norm_parameters and (w.n_layers, w.n_heads, w.d_model, w.d_head, w.d_vocab) == (
      2, 3, 12, 4, 23)
  with pytest.raises(ValueError,
                     match=r"weight W_O has shape \(2, 3, 5, 12\), expected \(2, 3, 4, 12\)"):
    check_weights(cfg, w.replace(W_O=np.zeros((2, 3, 5, 12), np.float32)))
  with pytest.raises(ValueError, match="weight ln_gain has shape None"):
    check_weights(cfg, w.replace(ln_gain=None))
  plain = dataclasses.replace(cfg, norm="none")
  with pytest.raises(ValueError, match="ln_bias is present but model.norm is 'none'"):
    check_weights(plain, w.replace(ln_gain=None, ln_final=None, ln_bias=np.zeros((2, 12))))
  with pytest.raises(ValueError, match=r"weight b_O has shape \(12,\), expected \(2, 12\)"):
    check_weights(cfg, w.replace(b_O=np.zeros(12, np.float32)))


def test_folding_the_value_biases_of_a_model_without_norm_keeps_its_log_probabilities():
  """No norm, standard positions: b_V moves into b_O (patterns sum to 1) and W_U, b_U are centred
  over the vocabulary; log-probabilities and patterns are unchanged."""
  cfg, w = random_model(n_layers=2, pos="standard", seed=6)
  rng = np.random.default_rng(6)
  r = lambda *shape: np.asarray(0.5 * rng.normal(size=shape), np.float32)
  w = w.replace(b_V=r(2, 3, 4), b_O=r(2, 12), b_U=r(23), b_Q=r(2, 3, 4))
  cfg_f, w_f = fold_for_analysis(cfg, w)
  assert cfg_f == cfg and w_f.b_V is None
  np.testing.assert_allclose(np.asarray(w_f.W_U).mean(-1), 0, atol=1e-6)
  b_O = np.asarray(w.b_O, np.float64) + np.einsum("lhe,lhed->ld", np.asarray(w.b_V, np.float64),
                                                  np.asarray(w.W_O, np.float64))
  np.testing.assert_allclose(w_f.b_O, b_O, rtol=1e-5, atol=1e-6)
  tokens = rng.integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  (logits, ex), (f_logits, f_ex) = (forward(c, x, tokens, return_patterns=True)
                                    for c, x in ((cfg, w), (cfg_f, w_f)))
  log_softmax = lambda a: np.asarray(a, np.float64) - np.log(np.exp(np.asarray(
      a, np.float64)).sum(-1, keepdims=True))
  np.testing.assert_allclose(log_softmax(f_logits), log_softmax(logits), atol=1e-4)
  np.testing.assert_allclose(f_ex["patterns"], ex["patterns"], atol=1e-6)
  with pytest.raises(ValueError, match="biases_as_weights needs a model without layer norm"):
    biases_as_weights(dataclasses.replace(cfg, norm="ln"), w)


def _unembed_reference(cfg, w):
  """(W_U, b_U) after ``fold_for_analysis``, by TransformerLens's rules written out in float64
  NumPy: with "ln", W_U ← (I − 11ᵀ/d) diag(γ_final) W_U and b_U ← b_U + β_final W_U; then, unless
  the model is a shortformer one that TransformerLens leaves alone (every shortformer model but
  "ln" with positions after the norm), W_U and b_U minus their mean over the vocabulary."""
  g = lambda a: None if a is None else np.asarray(a, np.float64)
  W_U, b_U = g(w.W_U), g(w.b_U)
  b_U = np.zeros(cfg.d_vocab) if b_U is None else b_U
  if cfg.norm == "ln":
    D = cfg.d_model
    beta = g(w.ln_final_bias) if w.ln_final_bias is not None else np.zeros(D)
    b_U = b_U + beta @ W_U
    W_U = (np.eye(D) - np.ones((D, D)) / D) @ np.diag(g(w.ln_final)) @ W_U
  centred = cfg.pos != "shortformer" or (cfg.norm == "ln" and cfg.pos_after_norm)
  if centred:
    W_U = W_U - W_U.mean(axis=1, keepdims=True)
    b_U = b_U - b_U.mean()
  return W_U, b_U


@pytest.mark.parametrize("norm, pos, after", [("ln", "standard", False), ("ln", "shortformer", True),
                                              ("ln", "shortformer", False),
                                              ("lnpre", "standard", False),
                                              ("none", "shortformer", False)])
def test_fold_for_analysis_unembedding_against_a_dense_reference(norm, pos, after):
  """W_U and b_U of the folded model equal the rules written out (centring over the vocabulary
  where TransformerLens centres the unembedding); a per-position logit shift is all it costs."""
  from reproduce.core.weights import fold_for_analysis  # pylint: disable=import-outside-toplevel
  cfg, w = random_model(n_layers=1, norm=norm, pos=pos, pos_after_norm=after, seed=5)
  rng = np.random.default_rng(5)
  r = lambda *shape, mean=0.0: np.asarray(mean + 0.3 * rng.normal(size=shape), np.float32)
  w = w.replace(b_U=r(cfg.d_vocab), W_U=r(cfg.d_model, cfg.d_vocab, mean=0.2))
  if norm == "ln":
    w = w.replace(ln_final=r(cfg.d_model, mean=1.0), ln_final_bias=r(cfg.d_model))
  W_U, b_U = _unembed_reference(cfg, w)
  _, folded = fold_for_analysis(cfg, w)
  np.testing.assert_allclose(folded.W_U, W_U, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(folded.b_U, b_U, rtol=1e-5, atol=1e-6)


def test_smeared_key_logits_are_made_checked_and_kept_by_the_transforms():
  """``init_weights`` gives ``smear`` = SMEAR_INIT [L, H] only to smear_keys models and draws the
  other weights as without it; ``check_weights`` wants it exactly there; folding and
  ``biases_as_weights`` keep it (and the function)."""
  cfg = ModelConfig(2, 3, 4, 12, 23, 10)
  smeared = dataclasses.replace(cfg, smear_keys=True)
  plain_w = init_weights(cfg, jax.random.key(1))
  w = init_weights(smeared, jax.random.key(1))
  assert plain_w.smear is None and w.smear.shape == (2, 3)
  np.testing.assert_array_equal(np.asarray(w.smear), SMEAR_INIT)
  for name, a in plain_w.to_dict().items():
    np.testing.assert_array_equal(np.asarray(getattr(w, name)), np.asarray(a))
  check_weights(smeared, w)
  with pytest.raises(ValueError, match="smear is present but model.smear_keys is False"):
    check_weights(cfg, w)
  with pytest.raises(ValueError, match="model.smear_keys is True but the weights have no smear"):
    check_weights(smeared, plain_w)
  with pytest.raises(ValueError, match=r"weight smear has shape \(2, 2\), expected \(2, 3\)"):
    check_weights(smeared, w.replace(smear=w.smear[:, :2]))
  _, w = random_model(n_layers=2, seed=3)
  w = with_random_biases(w.replace(smear=np.array([[0.4, -1.0, 2.0], [1.0, 0.0, -0.5]],
                                                  np.float32)), seed=3)
  tokens = np.random.default_rng(3).integers(0, 23, (2, 10))
  logits, _ = forward(smeared, w, tokens)
  for transform in (fold_for_analysis, biases_as_weights):
    cfg2, w2 = transform(smeared, w)
    np.testing.assert_allclose(np.asarray(w2.smear), np.asarray(w.smear), rtol=1e-6)
    again, _ = forward(cfg2, w2, tokens)
    np.testing.assert_allclose(jax.nn.log_softmax(again), jax.nn.log_softmax(logits),
                               rtol=1e-4, atol=1e-4)
  with pytest.raises(SmearedKeysError, match="smeared-key model"):
    require_unsmeared(w, "a test")
