"""reproduce.core.paths: path expansion and term importance against hand computations and the
losses of path sums, whole and in chunks of one window."""

import numpy as np
import pytest

from reproduce.core import kernels, paths
from reproduce.core.model import forward, token_losses
from reproduce.core.paths import path_expansion, sum_of_paths, term_importance

from tests.support.helpers import (chunk_test_model as _model, random_model,
                                   with_biases as _with_biases)


@pytest.mark.parametrize("n_layers, pos, norm, biases", [
    (0, "shortformer", "none", False), (2, "standard", "none", True),
    (3, "shortformer", "none", True),
    pytest.param(4, "standard", "lnpre", True, marks=pytest.mark.slow),
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
    (2, "none", "standard"), pytest.param(3, "ln", "standard", marks=pytest.mark.slow),
    pytest.param(2, "ln", "shortformer", marks=pytest.mark.slow),
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


@pytest.mark.slow
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
