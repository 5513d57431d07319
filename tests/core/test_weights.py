"""reproduce.core.weights: folding layer norm for analysis keeps the function, biases as weights
give the same logits."""

import numpy as np
import pytest

from reproduce.core import circuits

from tests.support.helpers import (dense_head_circuits as _dense, nonzero_eigs as _nonzero_eigs,
                                   random_model, same_multiset as _same_multiset)


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
