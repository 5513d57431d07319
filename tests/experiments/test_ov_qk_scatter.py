"""experiments/ov_qk_scatter.py: each claim holds and fails on hand-made positivities; the bars
are anchored to the random-init spread; the K-composed axis needs a previous-token head."""

import numpy as np

from reproduce.figure.roles import HeadRoles
from reproduce.figure.runner import figure_config, figure_module


def _verdicts(ov=(0.95, 0.1), qk=(0.9, 0.2), init=0.2, prev_score=0.9):
  """2 layers × 2 heads: L1H0 the induction head, L1H1 another head, positivities ``ov``, ``qk``
  (L1H0, L1H1); every random-init head at most ``init`` on both axes; L0H0 the previous-token
  head of the y axis, previous-token score ``prev_score``."""
  scatter = figure_module("ov_qk_scatter")
  roles = HeadRoles(previous_token=np.array([[prev_score, 0.1], [0.0, 0.0]]),
                    induction=np.array([[0.0, 0.0], [0.6, 0.05]]), threshold=0.3)
  claims = scatter.claims_of(figure_config("ov_qk_scatter", "test"), "m", roles,
                             np.array([ov]), np.array([qk]), [(0, 0)],
                             np.array([[init, -init]]), np.array([[init, -init]]))
  return {c["id"].split(".")[1]: c["holds"] for c in claims}, claims


def test_every_claim_holds_with_the_induction_head_alone_in_the_corner():
  assert _verdicts()[0] == {"induction_ov_copying": True, "induction_k_composed_qk_positive": True,
                            "only_induction_upper_right": True}


def test_each_claim_fails_where_it_looks():
  assert not _verdicts(ov=(0.6, 0.1))[0]["induction_ov_copying"]
  assert not _verdicts(qk=(0.6, 0.2))[0]["induction_k_composed_qk_positive"]
  assert not _verdicts(ov=(0.95, 0.7), qk=(0.9, 0.7))[0]["only_induction_upper_right"]


def test_the_bars_rise_to_the_random_init_spread():
  """With random-init heads reaching 0.97 on both axes, (0.95, 0.9) is no longer near (1, 1)
  beyond chance, and a head at (0.7, 0.7) no longer counts as upper right."""
  verdicts, claims = _verdicts(ov=(0.95, 0.7), qk=(0.9, 0.7), init=0.97)
  assert verdicts == {"induction_ov_copying": False, "induction_k_composed_qk_positive": False,
                      "only_induction_upper_right": True}
  assert "0.97" in claims[0]["criterion"]


def test_without_a_previous_token_head_the_k_composed_axis_fails():
  verdicts, claims = _verdicts(prev_score=0.2)
  assert not verdicts["induction_k_composed_qk_positive"] and verdicts["induction_ov_copying"]
  assert "no previous-token head (score ≥ 0.3)" in claims[1]["measured"]
