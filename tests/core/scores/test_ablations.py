"""reproduce.core.scores.ablations: zero-ablated heads against explicit loops, the ablated
losses of one shared pass against rerunning with zero W_O, and the pattern-preserving ablation
against the path expansion (every path term through the head removed) computed with loops."""

import itertools

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


def numpy_patterns(cfg, w, tokens):
  """Every head's attention pattern of one sequence, [L][H] arrays [T, T], from explicit loops
  (float64; no norm, no biases): the unablated run's patterns, which the ablation keeps."""
  g = lambda a: np.asarray(a, np.float64)
  T = len(tokens)
  x = g(w.W_E)[tokens] + (g(w.W_pos)[:T] if cfg.pos == "standard" else 0)
  pos = g(w.W_pos)[:T]
  patterns = []
  for l in range(cfg.n_layers):
    qk_in = x + pos if cfg.pos == "shortformer" else x
    layer, write = [], np.zeros_like(x)
    for h in range(cfg.n_heads):
      Q, K, V, O = (g(m[l, h]) for m in (w.W_Q, w.W_K, w.W_V, w.W_O))
      A = np.zeros((T, T))
      for i in range(T):
        s = np.array([(qk_in[i] @ Q) @ (qk_in[j] @ K) for j in range(i + 1)]) / np.sqrt(cfg.d_head)
        A[i, :i + 1] = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        write[i] += sum(A[i, j] * (x[j] @ V) for j in range(i + 1)) @ O
      layer.append(A)
    patterns.append(layer)
    x = x + write
  return patterns


def path_terms(cfg, w, tokens):
  """{path: its logits [T, V]} for every path of the expansion with the recorded patterns: the
  empty path (direct, X₀ W_U) and every chain of heads (l₁, h₁), …, (l_k, h_k) with
  l₁ < … < l_k, whose term is A_k ⋯ A_1 X₀ W_V¹ W_O¹ ⋯ W_V^k W_O^k W_U, each product taken row by
  row in loops (X₀ = the token embeddings, plus positions for "standard")."""
  g = lambda a: np.asarray(a, np.float64)
  T = len(tokens)
  A = numpy_patterns(cfg, w, tokens)
  x0 = g(w.W_E)[tokens] + (g(w.W_pos)[:T] if cfg.pos == "standard" else 0)
  heads = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
  terms = {}
  for k in range(cfg.n_layers + 1):
    for path in itertools.combinations(heads, k):
      if any(a[0] >= b[0] for a, b in zip(path, path[1:])):
        continue  # one head per layer, in layer order
      x = x0
      for l, h in path:
        ov = g(w.W_V[l, h]) @ g(w.W_O[l, h])
        x = np.array([sum(A[l][h][i, j] * x[j] for j in range(i + 1)) @ ov for i in range(T)])
      terms[path] = x @ g(w.W_U)
  return terms


def log_softmax_loss(logits, targets):
  logits = np.asarray(logits, np.float64)
  top = logits.max(-1, keepdims=True)
  lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
  return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


@pytest.mark.parametrize("layers", [2, 3])
def test_pattern_preserving_ablation_removes_every_path_term_through_the_heads(layers):
  """On a random attention-only model without norm: the path terms add up to the logits, and the
  pattern-preserving ablation of a head (or a group) leaves exactly the terms of the paths that
  avoid it; the forward with overrides and the shared-pass losses both agree."""
  cfg, w = random_model(n_layers=layers, n_heads=2, d_head=3, d_model=8, d_vocab=11, n_ctx=7,
                        seed=5, pos="standard", std=0.6)
  rng = np.random.default_rng(6)
  tokens = rng.integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  groups = [[], [(0, 1)], [(1, 0)], [(layers - 1, 1)], [(0, 0), (layers - 1, 1)]]
  fast = scores.pattern_preserving_losses(cfg, w, tokens, targets, groups, chunk=1)
  picked = scores.pattern_preserving_losses(cfg, w, tokens, targets, groups, positions=(1, 5))
  for b in range(2):
    terms = path_terms(cfg, w, tokens[b])
    full = sum(terms.values())
    np.testing.assert_allclose(full, numpy_logits(cfg, w, tokens[b]), rtol=1e-6, atol=1e-6)
    for g, group in enumerate(groups):
      kept = sum(t for path, t in terms.items() if not set(path) & set(group))
      got = np.asarray(scores.pattern_preserving_logits(cfg, w, tokens[b:b + 1], group))[0]
      np.testing.assert_allclose(got, kept, rtol=1e-4, atol=1e-4, err_msg=str(group))
      want = log_softmax_loss(kept, targets[b])
      np.testing.assert_allclose(fast[b, g], want, rtol=1e-4, atol=1e-4, err_msg=str(group))
      np.testing.assert_allclose(picked[b, g], want[[1, 5]], rtol=1e-4, atol=1e-4)


def test_pattern_preserving_and_full_ablation_differ_below_the_last_layer():
  """A layer-0 head writes into what layer 1's queries and keys read: the full ablation moves
  layer 1's patterns and the pattern-preserving one does not, so their losses differ; for a
  last-layer head nothing reads its output but W_U, and the two coincide."""
  cfg, w = random_model(n_layers=2, n_heads=3, n_ctx=9, seed=2, pos="standard", std=0.6)
  rng = np.random.default_rng(3)
  inputs = rng.integers(0, cfg.d_vocab, (4, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (4, cfg.n_ctx))
  groups = [[(0, 1)], [(1, 2)]]
  kept = scores.pattern_preserving_losses(cfg, w, inputs, targets, groups)
  full = scores.ablated_position_losses(cfg, w, inputs, targets, range(cfg.n_ctx), groups)
  assert np.abs(kept[:, 0] - full[:, 0]).max() > 1e-2
  np.testing.assert_allclose(kept[:, 1], full[:, 1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm, pos, fold", [
    pytest.param("ln", "standard", False, marks=pytest.mark.slow),
    ("ln", "shortformer", True),  # LN + positions after the norm, folded: W_Q_pos, W_K_pos
    pytest.param("lnpre", "shortformer", False, marks=pytest.mark.slow)])
def test_pattern_preserving_losses_with_a_norm_equal_the_forward_with_frozen_scales(norm, pos,
                                                                                      fold):
  """With a norm (random gains and biases, every bias of the model random), the shared-pass
  losses against the forward with the recorded patterns and norm scales and zero W_O."""
  extra = {"pos_after_norm": True} if fold else {}
  cfg, w = random_model(n_layers=3, n_heads=2, n_ctx=8, seed=7, norm=norm, pos=pos, **extra)
  w = _with_biases(cfg, w, 8)
  if fold:
    cfg, w = fold_for_analysis(cfg, w)
  rng = np.random.default_rng(9)
  inputs = rng.integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  groups = [[], [(0, 0)], [(1, 1)], [(0, 1), (2, 0)]]
  got = scores.pattern_preserving_losses(cfg, w, inputs, targets, groups, chunk=2)
  for g, group in enumerate(groups):
    want = token_losses(scores.pattern_preserving_logits(cfg, w, inputs, group), targets)
    np.testing.assert_allclose(got[:, g], np.asarray(want), rtol=1e-4, atol=1e-4)
  clean = np.asarray(token_losses(forward(cfg, w, inputs)[0], targets))
  np.testing.assert_allclose(got[:, 0], clean, rtol=1e-4, atol=1e-4)
  assert np.abs(got[:, 1] - clean).max() > 1e-3
