"""experiments/induction_formation.py: the phase-change claims' criteria on synthetic curves: the
loss-bump test (loss_bump) must not extrapolate and must say when it cannot be tested; the ICL
share is of the fall from initialisation."""

import numpy as np

from reproduce.figure.runner import figure_config, figure_module


formation = figure_module("induction_formation")


def curve(end, bump=0.0, lo=4e6, hi=8e6, seed=0):
  """(tokens, loss) every 200k tokens up to ``end``: a smooth power law, plus (``bump`` > 0) an
  extra fall of ``bump`` nats spread evenly over [lo, hi], plus small noise."""
  tokens = np.arange(2e5, end + 1, 2e5)
  extra = bump * np.clip(np.log(tokens / lo) / np.log(hi / lo), 0, 1)
  noise = np.random.default_rng(seed).normal(0, 0.005, len(tokens))
  return np.stack([tokens, 2.5 + 8 * (tokens / 1e5) ** -0.5 - extra + noise], 1)


def claim(train_loss, lo=4e6, hi=8e6):
  return formation._loss_bump_claim(figure_config("induction_formation", "test"), "m", lo, hi,
                                    formation.loss_bump(train_loss, lo, hi))


def test_a_window_at_the_end_of_training_cannot_be_tested():
  """With no logged loss after the window the old cubic was extrapolated into it; now the claim
  says it cannot be tested (and does not hold)."""
  c = claim(curve(8e6, bump=0.3))
  assert c["measured"].startswith("cannot be tested: no usable after neighbour")
  assert c["value"]["testable"] is False and c["holds"] is False


def test_a_bump_holds_and_a_smooth_decay_does_not():
  bumped, smooth = claim(curve(16e6, bump=0.3)), claim(curve(16e6))
  assert bumped["value"]["testable"] and bumped["holds"], bumped["measured"]
  assert smooth["value"]["testable"] and not smooth["holds"], smooth["measured"]


def test_slopes_are_least_squares_per_decade():
  tokens = np.array([1e6, 2e6, 4e6, 8e6])
  slope, error, n = formation.interval_slope(tokens, 3 - 0.5 * np.log10(tokens), 1e6, 8e6)
  assert n == 4 and abs(slope + 0.5) < 1e-9 and error < 1e-9


def test_the_icl_share_is_of_the_fall_from_initialisation_not_from_an_early_spike():
  icl = np.array([0.0, 0.3, -0.1, -0.5, -0.9, -1.0])  # a brief rise at the 2nd snapshot
  share, total = formation.icl_share(icl, 2, 4)
  assert np.isclose(total, 1.0) and np.isclose(share, 0.8)
