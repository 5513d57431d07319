"""experiments/head_ablations.py: the ablated group is every head passing the induction
criterion; one layer is refused; the paper claims read the pattern-preserving ablation and the
control the full one."""

import numpy as np
import pytest

from reproduce.figure.roles import HeadRoles
from reproduce.figure.runner import figure_config, figure_module
from reproduce.figure.sources import FigureError, Model

from tests.support.helpers import random_model


def test_group_ablation_takes_every_head_passing_the_induction_criterion():
  ablations = figure_module("head_ablations")
  roles = HeadRoles(previous_token=np.array([[0.2, 0.9, 0.1], [0.0, 0.0, 0.0]]),
                               induction=np.array([[0.9, 0.0, 0.0], [0.45, 0.05, 0.31]]),
                               threshold=0.3)
  heads, prev, fallback = ablations.roles_to_ablate(roles)
  assert heads == [(1, 0), (1, 2)] and prev == (0, 1) and not fallback  # layer 0 never counts
  none = HeadRoles(roles.previous_token, np.array([[0.9, 0, 0], [0.1, 0.2, 0.0]]), 0.3)
  heads, _, fallback = ablations.roles_to_ablate(none)
  assert heads == [(1, 1)] and fallback


def test_head_ablations_needs_two_layers(tmp_path):
  cfg, w = random_model(n_layers=1)
  one_layer = Model("one", cfg, w, meta={})
  with pytest.raises(FigureError, match="at least 2 layer"):
    figure_module("head_ablations").run(figure_config("head_ablations", "test"),
                                        {"one": one_layer}, tmp_path)


def _ablations(prefix=(0.6, 0.05, 0.0), prev_score=0.9, removed_induction=0.95,
               removed_prev=0.8, removed_other=0.0, icl=-0.8, removed_prev_kept=0.05,
               removed_other_full=None):
  """``Ablations`` of a 2-layer × 3-head model made by hand: L0H0 the previous-token head
  (score ``prev_score``), layer 1's prefix-matching scores ``prefix``; the share of both the
  repeat-loss drop (4 nats unablated) and the ICL score (``icl`` unablated) that ablating the
  induction heads together and each other head removes, patterns preserved (``single``) and
  fully (``full_single``, the same unless ``removed_other_full``); the previous-token head
  removes ``removed_prev`` fully and ``removed_prev_kept`` with the patterns preserved (which
  keep the induction heads' patterns)."""
  ablations = figure_module("head_ablations")
  roles = HeadRoles(previous_token=np.array([[prev_score, 0.1, 0.0], [0.0, 0.0, 0.0]]),
                    induction=np.array([[0.0, 0.0, 0.0], prefix]), threshold=0.3)
  induction, prev, fallback = ablations.roles_to_ablate(roles)
  base = {"repeat_drop": 4.0, "icl": icl, "icl_standard_error": 0.1}
  left = lambda share: {"repeat_drop": 4.0 * (1 - share), "icl": icl * (1 - share),
                        "icl_standard_error": 0.1}
  single = {(l, h): left(removed_other) for l in range(2) for h in range(3)}
  full_single = {(l, h): left(removed_other if removed_other_full is None
                              else removed_other_full) for l in range(2) for h in range(3)}
  single[prev], full_single[prev] = left(removed_prev_kept), left(removed_prev)
  for x in induction:
    single[x] = full_single[x] = left(removed_induction)
  others = {layer: [(l, h) for l, h in single if l == layer and (l, h) not in set(induction) | {prev}]
            for layer in sorted({l for l, _ in induction} | {prev[0]})}
  return ablations.Ablations(roles, induction, prev, base, single, left(removed_induction), others,
                             fallback, {"windows": 512, "positions": [24, 249]}, full_single,
                             left(removed_induction))


def _verdicts(**kw):
  claims = figure_module("head_ablations").claims_of(figure_config("head_ablations", "test"),
                                                      "m", _ablations(**kw))
  return {c["id"].split(".")[1]: c["holds"] for c in claims}, claims


def test_every_claim_holds_when_the_roles_carry_the_in_context_learning():
  verdicts, claims = _verdicts()
  assert verdicts == {"induction_heads": True, "previous_token_head": True, "other_heads": True}
  kinds = {c["id"].split(".")[1]: c["kind"] for c in claims}
  # IH ablates with patterns preserved: the full ablation of a layer-0 head is our control
  assert kinds == {"induction_heads": "paper", "previous_token_head": "control",
                   "other_heads": "paper"}
  assert '"almost all"' in claims[0]["paper_says"]
  assert "pattern-preserving" in claims[0]["criterion"]


def test_each_claim_fails_where_it_looks():
  assert not _verdicts(removed_induction=0.7)[0]["induction_heads"]  # most, not almost all
  assert not _verdicts(removed_prev=0.2)[0]["previous_token_head"]
  assert not _verdicts(removed_other=0.3)[0]["other_heads"]  # each removes more than a tenth
  assert not _verdicts(icl=0.2)[0]["induction_heads"]  # no in-context learning to remove


def test_the_paper_claims_read_the_pattern_preserving_ablation_and_the_control_the_full_one():
  """The previous-token head's control holds on the full ablation although, with the patterns
  preserved, it removes little; the other heads' claim holds on the pattern-preserving numbers
  although the full ablation of each removes a third, and fails the other way round."""
  verdicts, claims = _verdicts(removed_prev=0.8, removed_prev_kept=0.0)
  assert verdicts["previous_token_head"]
  assert not _verdicts(removed_prev=0.2, removed_prev_kept=0.9)[0]["previous_token_head"]
  assert _verdicts(removed_other=0.0, removed_other_full=0.3)[0]["other_heads"]
  assert not _verdicts(removed_other=0.3, removed_other_full=0.0)[0]["other_heads"]
  assert "full ablation" in claims[0]["measured"]


def test_without_an_induction_head_every_claim_fails():
  """A model with no induction head (prefix matching 0.1 at best, a previous-token score of 0.05)
  once made all three claims hold.  The strongest head stands in for the ablation, and every
  claim fails, saying so."""
  verdicts, claims = _verdicts(prefix=(0.1, 0.05, 0.0), prev_score=0.05)
  assert verdicts == {"induction_heads": False, "previous_token_head": False,
                      "other_heads": False}
  assert all("no head of a layer ≥ 1 passes the induction criterion" in c["measured"]
             for c in claims)


def test_the_previous_token_head_must_pass_the_role_threshold():
  verdicts, claims = _verdicts(prev_score=0.2)
  assert not verdicts["previous_token_head"] and verdicts["induction_heads"]
  assert "no previous-token head" in claims[1]["measured"]
