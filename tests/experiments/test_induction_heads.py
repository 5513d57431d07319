"""experiments/induction_heads.py: the averaging profile against a loop, and the averaging-head
claim reading FW's "last several tokens"."""

import numpy as np

from reproduce.figure.runner import figure_config, figure_module


def _profile_loop(offsets, window):
  mass, spread = [], []
  for p in offsets:
    m = sum(p[:window])
    entropy = -sum((q / m) * np.log(q / m) for q in p[:window] if q > 0)
    mass.append(m)
    spread.append(np.exp(entropy))
  return np.array(mass), np.array(spread)


def _averaging_inputs(offsets, k, init_max=0.1, induction=((1, 0),)):
  heads = figure_module("induction_heads")
  window = figure_config("induction_heads", "test").averaging_window
  mass, spread = heads.averaging_profile(np.asarray(offsets), window)
  return {"offsets": np.asarray(offsets), "mass": mass, "spread": spread,
          "k_layer0": np.asarray(k), "init_k_max": init_max, "induction": list(induction)}


def test_averaging_profile_against_a_loop():
  heads = figure_module("induction_heads")
  rng = np.random.default_rng(2)
  offsets = rng.random((3, 8)) / 8
  for window in (4, 8):
    mass, spread = heads.averaging_profile(offsets, window)
    ref_mass, ref_spread = _profile_loop(offsets, window)
    np.testing.assert_allclose(mass, ref_mass, rtol=1e-9)
    np.testing.assert_allclose(spread, ref_spread, rtol=1e-6)


def test_averaging_head_claim_reads_fw_last_several_tokens():
  """FW: a head "which attends to the last several tokens, rather than just the previous
  token", which induction heads rely on.  Within the last 8 tokens, spread over ≥ 3 of them, and
  K-composed into an induction head above random init."""
  heads = figure_module("induction_heads")
  config = figure_config("induction_heads", "test")
  claim = lambda *a, **kw: heads.averaging_head_claim(config, "m", _averaging_inputs(*a, **kw))
  six_back = [0, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 0]  # beyond the old 4-token window
  previous = [0, 1, 0, 0, 0, 0, 0, 0]
  two = [0.5, 0.5, 0, 0, 0, 0, 0, 0]
  assert claim([six_back, previous], [[0.3], [0.5]])["holds"]
  assert not claim([previous, two], [[0.3], [0.5]])["holds"]  # one or two tokens: not several
  assert not claim([six_back, previous], [[0.05], [0.5]])["holds"]  # no induction head uses it
  assert not claim([six_back, previous], [[0.3], [0.5]], induction=())["holds"]
