"""experiments/simplest_induction_head.py: the figure made through the runner with no trained
model (every claim holds), a given model ignored, and each claim failing on a construction broken
where that claim looks."""

import dataclasses
import json

import numpy as np
import pytest

from reproduce.core import known_circuits
from reproduce.figure.runner import figure_config, figure_module, make_figure
from reproduce.figure.sources import ModelSource

FIGURE = "simplest_induction_head"


@pytest.fixture(scope="module")
def figure():
  return figure_module(FIGURE), figure_config(FIGURE, "test")


def test_the_figure_needs_no_trained_model_and_its_claims_hold(tmp_path):
  summary = make_figure(FIGURE, ModelSource("test"), tmp_path, log=lambda *_: None)
  out = tmp_path / FIGURE
  assert summary["models"] == {} and not (tmp_path / "models").exists()  # nothing trained
  assert (out / f"{FIGURE}.png").stat().st_size > 5000 and (out / f"{FIGURE}.svg").is_file()
  numbers = json.loads((out / f"{FIGURE}.json").read_text())
  assert numbers["roles_by_construction"] == {"L0H0": ["positional", "previous_token"],
                                              "L1H0": ["copying", "induction"]}
  claims = json.loads((out / "claims.json").read_text())["claims"]
  assert [c["id"].split(".", 1)[1] for c in claims] == [
      "second_copy_predicted", "previous_token_head", "induction_stripe", "k_composition",
      "only_k_composition", "ov_qk_corner", "rests_on_bos"]
  assert all(c["holds"] for c in claims), [c["measured"] for c in claims if not c["holds"]]
  for c in claims:
    assert c["id"].count(".") == 1  # about the figure's model, which no label names
    if c["kind"] == "paper":
      assert c["paper_says"].startswith("FW, ") and c["source"].startswith("FW")
  assert numbers["second_copy_loss"] < 0.01 and numbers["stripe_score"] > 0.99


def test_a_given_model_is_ignored_and_said_so(figure, tmp_path, capsys):
  module, config = figure
  claims = module.run(config, {"attn2l": object()}, tmp_path)
  assert all(c["holds"] for c in claims)
  assert "ignoring attn2l" in capsys.readouterr().out
  assert json.loads((tmp_path / f"{FIGURE}.json").read_text())["ignored_models"] == ["attn2l"]


def _broken(change):
  """The simplest induction model with ``change(arrays, V)`` applied to copies of its weights
  (a dict of NumPy arrays; residual blocks as in ``known_circuits.residual_blocks``)."""
  known = known_circuits.simplest_induction_model()
  arrays = {k: np.array(v) for k, v in known.weights.to_dict().items()}
  change(arrays, known.cfg.d_vocab)
  return dataclasses.replace(known, weights=known.weights.replace(**arrays))


def _key_reads_tokens(a, V):
  """The induction head's key reads the token block instead of the previous-token block."""
  a["W_K"][1, 0, 1:V] = a["W_K"][1, 0, V + 1:2 * V]
  a["W_K"][1, 0, V:2 * V] = 0


def _no_previous_token_head(a, V):
  for name in ("W_Q", "W_K", "W_V", "W_O"):
    a[name][0, 0] = 0


def _value_reads_previous_token(a, V):
  """The induction head's value also reads the previous-token block (V-composition)."""
  a["W_V"][1, 0, V + 1:2 * V] = a["W_V"][1, 0, 1:V]


def _anti_copying(a, V):
  a["W_O"][1, 0] = -a["W_O"][1, 0]


def _no_bos_key(a, V):
  a["W_K"][1, 0, 0] = 0  # BOS's one-hot no longer meets the queries' constant


BROKEN = {  # construction → the claims it must make fail
    "key_reads_tokens": (_key_reads_tokens, ("second_copy_predicted", "induction_stripe",
                                             "k_composition", "ov_qk_corner", "rests_on_bos")),
    "no_previous_token_head": (_no_previous_token_head, (
        "second_copy_predicted", "previous_token_head", "induction_stripe", "k_composition",
        "ov_qk_corner")),
    "value_reads_previous_token": (_value_reads_previous_token, ("second_copy_predicted",
                                                                 "only_k_composition")),
    "anti_copying": (_anti_copying, ("second_copy_predicted", "ov_qk_corner")),
    "no_bos_key": (_no_bos_key, ("second_copy_predicted", "rests_on_bos")),  # first copy copies
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_claim_fails_on_a_construction_broken_where_it_looks(figure, name):
  module, config = figure
  change, failing = BROKEN[name]
  claims = module.verdicts(module.measure(_broken(change), config), config)
  held = {c["id"].split(".", 1)[1]: c["holds"] for c in claims}
  assert not any(held[what] for what in failing), held
  assert all(held[what] for what in held if what not in failing), held  # and only those


def test_every_claim_can_fail():
  assert set().union(*(failing for _, failing in BROKEN.values())) == {
      "second_copy_predicted", "previous_token_head", "induction_stripe", "k_composition",
      "only_k_composition", "ov_qk_corner", "rests_on_bos"}


GOOD = {"length": 30, "log_vocab": float(np.log(64)), "second_copy_loss": 0.01,
        "first_copy_loss": 4.19, "unpredictable_loss": 4.2, "previous_token_score": 0.99,
        "stripe_score": 0.99, "composition": {"q": 0.001, "k": 0.12, "v": 0.001},
        "composition_baseline": 0.072, "ov_positivity": 1.0, "k_composition_qk_positivity": 1.0,
        "bos_attention_first_occurrences": 0.98}
SPOILED = {  # one hand-made number out of place → the one claim that reads it
    "second_copy_loss": ({"second_copy_loss": 1.5}, "second_copy_predicted"),
    "first_copy_loss": ({"first_copy_loss": 2.0}, "second_copy_predicted"),
    "previous_token_score": ({"previous_token_score": 0.5}, "previous_token_head"),
    "stripe_score": ({"stripe_score": 0.5}, "induction_stripe"),
    "k": ({"composition": {"q": 0.001, "k": 0.08, "v": 0.001}}, "k_composition"),
    "q": ({"composition": {"q": 0.05, "k": 0.12, "v": 0.001}}, "only_k_composition"),
    "ov": ({"ov_positivity": 0.5}, "ov_qk_corner"),
    "k_qk": ({"k_composition_qk_positivity": -0.2}, "ov_qk_corner"),
    "bos": ({"bos_attention_first_occurrences": 0.4}, "rests_on_bos"),
}


@pytest.mark.parametrize("spoiled", sorted(SPOILED))
def test_each_verdict_holds_and_fails_on_hand_made_numbers(figure, spoiled):
  module, config = figure
  held = lambda m: {c["id"].split(".", 1)[1]: c["holds"] for c in module.verdicts(m, config)}
  assert all(held(GOOD).values()), held(GOOD)
  change, failing = SPOILED[spoiled]
  assert held({**GOOD, **change}) == {what: what != failing for what in held(GOOD)}
