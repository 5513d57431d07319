"""reproduce.core.scores.losses: next-token losses in chunks of windows against the forward."""

import numpy as np
import pytest

from reproduce.core import scores
from reproduce.core.model import forward, token_losses

from tests.support.helpers import chunk_test_model as _model


@pytest.mark.parametrize("norm, pos", [("ln", "standard"), ("none", "shortformer")])
def test_sequence_losses_equal_the_forwards(budget, norm, pos):
  cfg, w = _model(norm, pos)
  rng = np.random.default_rng(1)
  inputs = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  targets = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx))
  expect = token_losses(forward(cfg, w, inputs)[0], targets)
  np.testing.assert_allclose(scores.sequence_losses(cfg, w, inputs, targets), expect,
                             rtol=1e-5, atol=1e-5)


def _loop_losses(cfg, w, tokens):
  """Next-token loss of every target position, one sequence and one position at a time from the
  forward's logits: [B, T − 1], entry t the loss predicting tokens[:, t + 1]."""
  logits = np.asarray(forward(cfg, w, tokens[:, :-1])[0], np.float64)
  out = np.zeros((tokens.shape[0], tokens.shape[1] - 1))
  for b in range(tokens.shape[0]):
    for t in range(tokens.shape[1] - 1):
      row = logits[b, t]
      top = row.max()
      out[b, t] = top + np.log(np.exp(row - top).sum()) - row[tokens[b, t + 1]]
  return out


def test_repeat_loss_drop_against_a_loop():
  """BOS + n tokens + the same n: the first occurrence is predicted at targets 1 … n (n losses,
  BOS itself never a target), the repeat at targets n + 1 … 2n (n losses)."""
  cfg, w = _model("none", "shortformer")
  n = 5
  tokens = scores.repeated_sequences(np.arange(1, cfg.d_vocab), 0, n, 2, samples=3, seed=2)
  assert tokens.shape[1] == 2 * n + 1
  losses = _loop_losses(cfg, w, tokens)  # [B, 2n]
  first = np.mean([losses[b, t] for b in range(3) for t in range(0, n)])  # targets 1 … n
  repeat = np.mean([losses[b, t] for b in range(3) for t in range(n, 2 * n)])  # n + 1 … 2n
  got = scores.repeat_loss_drop(cfg, w, tokens, n)
  assert got["first"] == pytest.approx(first, rel=1e-5)
  assert got["repeat"] == pytest.approx(repeat, rel=1e-5)
  assert got["drop"] == pytest.approx(first - repeat, rel=1e-4, abs=1e-5)


def test_icl_score_and_its_standard_error_against_a_loop():
  """Score = mean loss at the late position − at the early one; standard error = the sample
  standard deviation (n − 1 in the denominator) of the per-window differences over √n."""
  cfg, w = _model("none", "shortformer")
  rng = np.random.default_rng(7)
  windows = rng.integers(0, cfg.d_vocab, (6, cfg.n_ctx + 1))
  early, late = scores.icl_positions(cfg.n_ctx)
  losses = _loop_losses(cfg, w, windows)
  diffs = [losses[b, late] - losses[b, early] for b in range(6)]
  mean = sum(diffs) / 6
  sample_sd = np.sqrt(sum((d - mean) ** 2 for d in diffs) / 5)
  got = scores.in_context_learning_score(cfg, w, windows[:, :-1], windows[:, 1:])
  assert got["score"] == pytest.approx(mean, rel=1e-4, abs=1e-5)
  assert got["standard_error"] == pytest.approx(sample_sd / np.sqrt(6), rel=1e-4)
  assert (got["early_index"], got["late_index"]) == (early, late) and got["windows"] == 6
  by_hand = scores.icl_of_losses([1.0, 2.0, 4.0], [0.0, 0.0, 1.0], 3, 9)
  assert by_hand["score"] == pytest.approx(-2.0)
  per_window = [-1.0, -2.0, -3.0]  # late − early; their mean −2, sample variance 1
  assert by_hand["standard_error"] == pytest.approx(
      np.sqrt(sum((d + 2) ** 2 for d in per_window) / 2) / np.sqrt(3))


def test_icl_positions_are_ihs_tokens_50_and_500_or_their_fractions():
  """IH's tokens 50 and 500 (1-indexed) are positions 49 and 499; shorter contexts take the same
  fractions of n_ctx, 50/512 and 500/512, minus one."""
  assert scores.icl_positions(512) == (49, 499) and scores.icl_positions(2048) == (49, 499)
  assert scores.icl_positions(256) == (24, 249)
  assert scores.icl_positions(100) == (9, 97)


def test_pattern_preserving_repeat_drops_and_icl_against_the_forward_with_overrides():
  """Each group's repeat-loss drop and ICL score with the patterns preserved, against the losses
  of ``pattern_preserving_logits`` averaged with loops; the empty group is the model itself."""
  cfg, w = _model("none", "shortformer")
  n = 4
  tokens = scores.repeated_sequences(np.arange(1, cfg.d_vocab), 0, n, 2, samples=3, seed=2)
  groups = [[], [(0, 1)], [(1, 0), (0, 0)]]
  got = scores.pattern_preserving_repeat_drops(cfg, w, tokens, n, groups)
  assert got[0] == pytest.approx(scores.repeat_loss_drop(cfg, w, tokens, n), rel=1e-4, abs=1e-5)
  rng = np.random.default_rng(3)
  windows = rng.integers(0, cfg.d_vocab, (5, cfg.n_ctx + 1))
  icl = scores.ablations_icl(cfg, w, windows[:, :-1], windows[:, 1:], groups,
                             preserve_patterns=True)
  early, late = scores.icl_positions(cfg.n_ctx)
  for g, group in enumerate(groups):
    losses = np.asarray(token_losses(
        scores.pattern_preserving_logits(cfg, w, tokens[:, :-1], group), tokens[:, 1:]))
    first = np.mean([losses[b, t] for b in range(3) for t in range(0, n)])
    repeat = np.mean([losses[b, t] for b in range(3) for t in range(n, 2 * n)])
    assert got[g]["drop"] == pytest.approx(first - repeat, rel=1e-4, abs=1e-5)
    losses = np.asarray(token_losses(
        scores.pattern_preserving_logits(cfg, w, windows[:, :-1], group), windows[:, 1:]))
    score = np.mean([losses[b, late] - losses[b, early] for b in range(5)])
    assert icl[g]["score"] == pytest.approx(score, rel=1e-4, abs=1e-5)
