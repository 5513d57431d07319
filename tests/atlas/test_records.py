"""reproduce.atlas.records: numbers never NaN, the roles' criteria (inactive excludes the rest,
copying against random init, induction from layer 1), the consistency checks' verdicts, on
hand-made scores."""

import math
import types

import numpy as np

from reproduce.atlas import default_config, records
from reproduce.core.model import ModelConfig


def _measured(n_layers=2, n_heads=3):
  cfg = ModelConfig(n_layers=n_layers, n_heads=n_heads, d_head=4, d_model=12, d_vocab=23,
                    n_ctx=10)
  model = types.SimpleNamespace(cfg=cfg, tokens=None)
  return types.SimpleNamespace(config=default_config("test"), model=model)


def test_a_number_is_null_with_a_reason_where_it_is_not_finite():
  assert records.number(0.25, -0.5) == {"value": 0.25, "baseline": -0.5}
  n = records.number(float("nan"), float("inf"), "rests on BOS", "no snapshot")
  assert n == {"value": None, "baseline": None, "undefined": "rests on BOS",
               "baseline_undefined": "no snapshot"}
  assert records.number(np.float32(2), None, "x")["baseline_undefined"] == "x"
  assert records.finite(np.nan) is None and math.isfinite(records.finite(np.float64(1.5)))


def _values(**given):
  base = {k: np.zeros((2, 3)) for k in ("ov_norm_ratio", "previous_token", "prefix_matching",
                                        "ov_positivity")}
  base["ov_norm_ratio"] = np.ones((2, 3))
  base["positional_tv"] = np.full((2, 3), np.nan)
  base.update({k: np.asarray(v, float) for k, v in given.items()})
  return base


def test_roles_follow_their_criteria():
  m = _measured()
  values = _values(ov_norm_ratio=[[1, 0, 0.5], [0.3, 0.2, 1e-7]],
                   previous_token=[[0.9, 0.9, 0.1], [0.1, 0.1, 0.9]],
                   prefix_matching=[[0, 0, 0.8], [0.5, 0.1, 0.9]],
                   ov_positivity=[[0.2, 0.9, 0.1], [0.95, 0.55, 0.9]],
                   positional_tv=[[np.nan, 0.0, 0.05], [0.5, np.nan, 0.0]])
  init = _values(ov_positivity=[[0.6, 0.1, 0.0], [0.0, -0.3, 0.2]])
  roles = records.decide_roles(m, values, init)
  names = {k: [r["role"] for r in v] for k, v in roles.items()}
  assert names == {(0, 0): ["previous_token"], (0, 1): ["inactive"],  # writes nothing: only that
                   (0, 2): ["positional"],  # prefix matching in layer 0 is not induction
                   (1, 0): ["induction", "copying"],
                   (1, 1): ["unlabelled"],  # OV 0.55 > 0.5 but below random init's 0.6
                   (1, 2): ["inactive"]}  # 1e-7 of the largest head's ‖W_OV‖
  copying = roles[(1, 0)][1]
  assert copying["threshold"] == 0.6 and copying["value"] == 0.95 and "0.6" in copying["criterion"]
  assert roles[(1, 1)][0]["value"] is None and roles[(0, 2)][0]["threshold"] == 0.1


def test_checks_compare_the_weights_with_the_behaviour():
  m = _measured()
  values = _values(ov_positivity=[[0, 0, 0], [0.99, 0.95, 0.2]],
                   kcomp_qk_positivity=[[np.nan] * 3, [1.0, 0.95, 0.9]],
                   prefix_matching=[[0, 0, 0], [0.07, 0.6, 0.7]],
                   previous_token=[[0.95, 0.1, 0.5], [0, 0, 0]])
  roles = {(l, h): [{"role": r} for r in rs] for (l, h), rs in {
      (0, 0): ["previous_token"], (0, 1): ["copying"], (0, 2): ["previous_token"],
      (1, 0): ["copying"], (1, 1): ["induction"], (1, 2): ["induction"]}.items()}
  partner = lambda name, value: {"partner": name, "value": value, "baseline": 0.0}
  found = {(0, 0): {"in": {}, "out": {"k": partner("L1H1", 0.3)}},
           (0, 1): {"in": {}, "out": {"k": partner("L1H0", 0.0)}},
           (0, 2): {"in": {}, "out": {"k": partner("L1H2", 0.01)}},
           (1, 0): {"in": {"k": partner("L0H1", 0.1)}, "out": {}},
           (1, 1): {"in": {"k": partner("L0H0", 0.3)}, "out": {}},
           (1, 2): {"in": {"k": partner("L0H1", 0.2)}, "out": {}}}
  checks = records.checks(m, values, roles, found, {"k": 0.05})
  verdict = {k: {c["id"]: c["status"] for c in v} for k, v in checks.items()}
  corner, reads, read = ("induction_weights_vs_behaviour", "induction_reads_previous_token",
                         "previous_token_is_read")
  assert verdict[(1, 0)][corner] == "disagrees"  # (0.99, 1.00) but prefix matching 0.07
  assert "the weights say induction" in checks[(1, 0)][0]["detail"]
  assert verdict[(1, 1)][corner] == "agrees" and verdict[(1, 1)][reads] == "agrees"
  assert verdict[(1, 2)][corner] == "disagrees"  # an induction head with OV positivity 0.2
  assert verdict[(1, 2)][reads] == "disagrees"  # its K partner L0H1 is no previous-token head
  assert verdict[(0, 0)][read] == "agrees" and verdict[(0, 2)][read] == "disagrees"
  assert verdict[(0, 0)][corner] == "n/a" and verdict[(0, 1)][read] == "n/a"
  assert set(records.CHECKS) == {corner, reads, read}
