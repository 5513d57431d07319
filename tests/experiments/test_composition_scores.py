"""experiments/composition_scores.py: each claim holds and fails on hand-made scores; the
previous-token head must pass the role threshold."""

import numpy as np

from reproduce.figure.roles import HeadRoles
from reproduce.figure.runner import figure_config, figure_module


def _verdicts(prev=(0.9, 0.1, 0.0), k=None, q=0.05, v=0.05, induction=(0.6, 0.0, 0.1)):
  """2 layers × 3 heads: L0H0 the previous-token head (score ``prev[0]``), L1H0 the induction
  head; K-composition L0H0 → L1H0 0.2 (``k`` sets other entries), Q and V of that pair ``q``,
  ``v``; every random-init maximum 0.1."""
  composition = figure_module("composition_scores")
  roles = HeadRoles(previous_token=np.array([prev, (0.0, 0.0, 0.0)]),
                    induction=np.array([(0.0, 0.0, 0.0), induction]), threshold=0.3)
  scores = {kind: np.zeros((2, 3, 2, 3)) for kind in "qkv"}
  scores["k"][0, 0, 1, 0] = 0.2
  for (l1, h1, l2, h2), value in (k or {}).items():
    scores["k"][l1, h1, l2, h2] = value
  scores["q"][0, 0, 1, 0], scores["v"][0, 0, 1, 0] = q, v
  claims = composition.claims_of(figure_config("composition_scores", "test"), "m", roles,
                                 {"baseline": 0.05, **scores}, {"k": 0.1, "q": 0.1, "v": 0.1},
                                 "hand-made")
  return {c["id"].split(".")[1]: c["holds"] for c in claims}, claims


def test_every_claim_holds_on_a_previous_token_head_composing_into_an_induction_head():
  assert _verdicts()[0] == {"k_prev_to_induction": True, "k_above_random_init": True,
                            "q_v_near_baseline": True}


def test_each_claim_fails_where_it_looks():
  # the strongest K-composition into L1H0 comes from L0H1, not a previous-token head
  assert _verdicts(k={(0, 1, 1, 0): 0.3})[0]["k_prev_to_induction"] is False
  assert _verdicts(k={(0, 0, 1, 0): 0.08})[0]["k_above_random_init"] is False  # within chance
  assert _verdicts(q=0.2)[0]["q_v_near_baseline"] is False
  assert _verdicts(v=0.2)[0]["q_v_near_baseline"] is False
  verdicts, claims = _verdicts(induction=(0.2, 0.0, 0.1))  # no induction head
  assert verdicts == {"k_prev_to_induction": False}


def test_an_argmax_below_the_role_threshold_is_no_previous_token_head():
  """The strongest layer-0 head at previous-token score 0.2 (< 0.3) is not "the previous-token
  head": the claims about its pair fail, saying so, however strong its K-composition."""
  verdicts, claims = _verdicts(prev=(0.2, 0.1, 0.0), k={(0, 0, 1, 0): 0.5})
  assert verdicts == {"k_prev_to_induction": False, "k_above_random_init": False,
                      "q_v_near_baseline": False}
  assert "no previous-token head (score ≥ 0.3)" in claims[1]["measured"]
