"""reproduce.core.scores.ablations: zero-ablated heads against explicit loops, and the ablated
losses of one shared pass against rerunning with zero W_O."""

import numpy as np
import pytest

from reproduce.core import scores
from reproduce.core.model import forward, token_losses
from reproduce.core.weights import fold_for_analysis

from tests.support.helpers import random_model, with_biases as _with_biases


def numpy_logits(cfg, w, tokens, ablated=()):
  """One sequence's logits from explicit loops over layers, heads and positions, float64, with
  the heads in ``ablated`` contributing nothing to the residual stream."""
  g = lambda a: np.asarray(a, np.float64)
  T = len(tokens)
  x, pos = g(w.W_E)[tokens], g(w.W_pos)[:T]
  if cfg.pos == "standard":
    x = x + pos
  for l in range(cfg.n_layers):
    qk_in = x + pos if cfg.pos == "shortformer" else x
    write = np.zeros_like(x)
    for h in range(cfg.n_heads):
      if (l, h) in ablated:
        continue
      Q, K, V, O = g(w.W_Q[l, h]), g(w.W_K[l, h]), g(w.W_V[l, h]), g(w.W_O[l, h])
      for i in range(T):
        s = np.array([(qk_in[i] @ Q) @ (qk_in[j] @ K) for j in range(i + 1)]) / np.sqrt(cfg.d_head)
        a = np.exp(s - s.max())
        a /= a.sum()
        write[i] += sum(a[j] * (x[j] @ V) for j in range(i + 1)) @ O
    x = x + write
  return x @ g(w.W_U)


def test_zero_ablated_removes_the_head_and_later_layers_read_the_ablated_stream():
  cfg, w = random_model()
  tokens = np.array([0, 5, 7, 5, 7, 2, 9, 1])
  for heads in ([(0, 1)], [(1, 2)], [(0, 0), (1, 1)]):
    got = np.asarray(forward(cfg, scores.zero_ablated(w, heads), tokens)[0][0])
    np.testing.assert_allclose(got, numpy_logits(cfg, w, tokens, heads), rtol=1e-4, atol=1e-4)
  assert not np.allclose(numpy_logits(cfg, w, tokens, [(0, 1)]), numpy_logits(cfg, w, tokens))


@pytest.mark.parametrize("layers, norm, pos, fold", [
    (2, "none", "standard", False),
    pytest.param(3, "ln", "standard", False, marks=pytest.mark.slow),
    (3, "ln", "shortformer", True),  # LN + positions after the norm, folded: W_Q_pos, W_K_pos
    pytest.param(2, "none", "shortformer", False, marks=pytest.mark.slow)])
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
