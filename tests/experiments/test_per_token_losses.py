"""experiments/per_token_losses.py: the PCA against the covariance's eigendecomposition, the
log-index derivative and the turn angle on hand-computed cases, and every claim's verdict holding
and failing on hand-made curves."""

import numpy as np
import pytest

from reproduce.figure.runner import figure_config, figure_module

views = figure_module("per_token_losses")


def test_the_pca_matches_the_eigendecomposition_of_the_covariance():
  rng = np.random.default_rng(0)
  rows = rng.normal(size=(12, 7)) @ rng.normal(size=(7, 7)) + 3.0
  scores, components, explained = views.pca(rows)
  centred = rows - rows.mean(0)
  values, vectors = np.linalg.eigh(centred.T @ centred / (len(rows) - 1))
  values, vectors = values[::-1], vectors[:, ::-1]  # largest first
  np.testing.assert_allclose(explained, values / values.sum(), rtol=1e-9)
  for k in range(7):  # the same axes up to sign, and the scores are the projections on them
    assert abs(abs(components[k] @ vectors[:, k]) - 1) < 1e-8
    np.testing.assert_allclose(scores[:, k], centred @ components[k], atol=1e-9)
  np.testing.assert_allclose(np.var(scores, 0, ddof=1), values, rtol=1e-8)


def test_the_log_index_derivative_of_a_log_law_is_its_slope():
  """Loss = 4 − 0.3 ln i_ctx at every position: each bin's mean is 4 − 0.3 ln(its geometric
  centre), so every difference is −0.3 exactly; and by hand on two bins."""
  T = 64
  members, centres = views.context_bins(T, 8)
  assert np.array_equal(np.concatenate(members), np.arange(T))  # every position, once
  losses = np.broadcast_to(4 - 0.3 * np.log(np.arange(1, T + 1)), (3, 5, T))  # [n, K, T]
  derivative, points = views.log_index_derivative(views.binned_context_loss(losses, members),
                                                  centres)
  np.testing.assert_allclose(derivative, -0.3, atol=1e-12)
  # by hand: bins {1} and {2, 3} with losses 5, 4, 3: centres 1 and √6, means 5 and 3.5
  d, p = views.log_index_derivative(np.array([[5.0, 3.5]]), np.array([1.0, np.sqrt(6)]))
  assert np.isclose(d[0, 0], -1.5 / np.log(np.sqrt(6))) and np.isclose(p[0], 6 ** 0.25)
  assert np.isclose(views.context_bins(3, 2)[1][1], np.sqrt(6))  # edges 1, 2, 4


def test_turn_angles_over_the_window_scale():
  tokens = np.array([0, 1, 2, 4, 8, 16])
  # east to 4 tokens, then north: a right angle at 4 (4/2 → 4 east, 4 → 8 north)
  points = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [3, 1], [3, 2]], float)
  angles = views.turn_angles(tokens, points, 2.0)
  assert np.isnan(angles[0]) and np.isnan(angles[-1])  # tokens 0; nothing at ≥ 32
  np.testing.assert_allclose(angles[1:5], [0, 0, 90, 0], atol=1e-9)
  assert views.sharpest_turn(tokens, angles) == (3, pytest.approx(90))
  assert views.sharpest_turn(tokens, angles, 8, 16)[0] == 4
  assert views.sharpest_turn(tokens, angles, 32, 64) is None


def test_the_rise_share_and_the_late_context_slope():
  assert views.rise_share([0.0, 0.1, 0.8, 1.0], 1, 2) == (pytest.approx(0.7), pytest.approx(1.0))
  assert np.isnan(views.rise_share([1.0, 0.5, 0.0], 0, 1)[0])  # falls: no rise to share
  slopes = views.late_context_slope(np.array([[1.0, 2.0, 3.0]]), np.array([10, 60, 100]), 50)
  assert slopes[0] == 2.5


TOKENS = np.array([0, 1e5, 2e5, 4e5, 8e5, 16e5, 32e5, 64e5])


def _path(turn_at):
  """A PC1–PC2 path at ``TOKENS`` going east, turning north at snapshot ``turn_at``."""
  steps = np.array([[1.0, 0.0] if k < turn_at else [0.0, 1.0] for k in range(len(TOKENS))])
  return np.cumsum(steps, 0)


def test_the_turn_claims_hold_and_fail():
  window = (4e5, 8e5)
  turned = views.turn_angles(TOKENS, _path(4), 2.0)  # the turn at 4e5: in the window
  late = views.turn_angles(TOKENS, _path(6), 2.0)  # at 32e5: after it
  assert views.turn_claim("m", TOKENS, turned, window, 2.0)["holds"]
  assert not views.turn_claim("m", TOKENS, late, window, 2.0)["holds"]
  assert not views.turn_claim("m", TOKENS, turned, None, 2.0)["holds"]  # nothing formed
  # the constant-learning-rate phase is reported beside the verdict, never part of it
  reported = views.turn_claim("m", TOKENS, late, window, 2.0, clear=(1e5, 64e5))
  assert not reported["holds"] and reported["value"]["constant_learning_rate"]["tokens"] == 16e5
  straight = views.turn_angles(TOKENS, _path(99), 2.0)
  assert views.no_turn_1l_claim("m", TOKENS, straight, window, 90.0)["holds"]
  assert not views.no_turn_1l_claim("m", TOKENS, turned, window, 45.0)["holds"]
  assert not views.no_turn_1l_claim("m", TOKENS, straight, None, None)["holds"]


def test_the_trace_claim_holds_and_fails():
  majority = figure_config("per_token_losses", "test").formation.majority
  gain = (3, 4, 0.8)
  sudden = np.array([0.0, 0.01, 0.02, 0.05, 0.9, 0.95, 1.0, 1.0])  # 0.85 in the window
  gradual = np.linspace(0, 1, len(TOKENS))  # 1/7 per snapshot
  assert views.trace_claim("m", sudden, "L1H0", gain, majority)["holds"]
  assert not views.trace_claim("m", gradual, "L1H0", gain, majority)["holds"]
  assert not views.trace_claim("m", sudden[::-1], "L1H0", gain, majority)["holds"]  # falls
  assert not views.trace_claim("m", sudden, "L1H0", None, majority)["holds"]
  assert not views.trace_claim("m", np.full(8, np.nan), "L0H0", gain, majority)["holds"]


def test_the_late_context_claim_holds_and_fails():
  gain = (3, 4, 0.8)
  steeper = np.array([0, 0, 0, -0.02, -0.2, -0.2, -0.2, -0.2])
  assert views.late_context_claim("m", steeper, gain, 50)["holds"]
  assert not views.late_context_claim("m", -steeper, gain, 50)["holds"]
  assert not views.late_context_claim("m", steeper, None, 50)["holds"]
  assert not views.late_context_claim("m", np.full(8, np.nan), gain, 50)["holds"]


def test_it_shares_induction_formation_s_pass():
  config = figure_config("per_token_losses", "test")
  own = figure_config("induction_formation", "test")
  assert views.SHARES == ("induction_formation",)
  shared = figure_module("induction_formation").SHARED_SETTINGS
  assert all(config.formation[k] == own[k] for k in shared)


def test_a_model_without_snapshots_is_refused_before_any_pass(tmp_path, monkeypatch):
  from reproduce.figure.sources import FigureError, Model
  formation = figure_module("induction_formation")
  monkeypatch.setattr(formation, "formation", lambda *a: pytest.fail("a pass was made"))
  with pytest.raises(FigureError, match="no training snapshots"):
    views.run(figure_config("per_token_losses", "test"), {"m": Model("m", None, None, {})},
              tmp_path)
