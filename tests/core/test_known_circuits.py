"""reproduce.core.known_circuits: the hand-built models' roles by construction are exactly what the
five role criteria give, head by head; heads that are exactly zero give no NaN anywhere
(composition against an explicit NumPy Frobenius loop, positivity, the K-composed QK term, the
copying score)."""

import dataclasses

import jax
import numpy as np
import pytest

from reproduce.core import circuits, known_circuits, scores
from reproduce.core.model import forward
from reproduce.core.weights import check_weights, init_weights

from tests.support.helpers import random_model

THRESHOLD = 0.3  # previous-token and prefix-matching scores (the figures' role threshold)
COPYING_FLOOR = 0.5  # full-OV positivity, at least (docs/METHODS.md, "Positivity")
POSITIONAL_TV = 0.1  # mean total-variation distance from the positional-only pattern
INACTIVE_RATIO = 1e-6  # ‖W_OV‖_F over the largest head's


def role_criteria(known):
  """The five criteria of every head, computed with the core functions: {(l, h): numbers},
  and the roles they give (an inactive head has no other role: its uniform attention is also
  its positional-only pattern)."""
  cfg, w = known.cfg, known.weights
  pool = np.array([t for t in range(cfg.d_vocab) if t != known.bos_id])
  probe, _ = scores.prefix_probe(cfg.n_ctx, pool, known.bos_id)
  ov_norm = np.asarray(circuits.ov_circuit(w, full=False).frobenius_norm())
  previous = np.asarray(scores.previous_token_on(cfg, w, probe))
  prefix = np.asarray(scores.prefix_matching_score(cfg, w, pool, known.bos_id))
  positivity = circuits.positivity(circuits.ov_eigenvalues(w))
  random_init = circuits.positivity(circuits.ov_eigenvalues(init_weights(cfg, jax.random.key(0))))
  copying_floor = max(COPYING_FLOOR, float(np.max(random_init)))
  _, extras = forward(cfg, w, probe, return_patterns=True)
  actual = np.asarray(extras["patterns"], np.float64)  # [L, B, H, T, T]
  positional = np.asarray(circuits.positional_attention(w, probe.shape[1]), np.float64)
  tv = 0.5 * np.abs(actual - positional[:, None]).sum(-1).mean(axis=(1, 3))  # [L, H]
  out = {}
  for l in range(cfg.n_layers):
    for h in range(cfg.n_heads):
      numbers = {"ov_norm": float(ov_norm[l, h]), "previous_token": float(previous[l, h]),
                 "prefix_matching": float(prefix[l, h]), "ov_positivity": float(positivity[l, h]),
                 "positional_tv": float(tv[l, h])}
      if ov_norm[l, h] <= INACTIVE_RATIO * ov_norm.max():
        roles = {"inactive"}
      else:
        roles = {r for r, holds in (
            ("previous_token", previous[l, h] >= THRESHOLD),
            ("induction", prefix[l, h] >= THRESHOLD and l >= 1),
            ("copying", positivity[l, h] >= copying_floor),
            ("positional", tv[l, h] <= POSITIONAL_TV)) if holds}
      out[(l, h)] = (numbers, frozenset(roles))
  return out


@pytest.fixture(scope="module", params=["simplest_induction", "head_zoo"])
def known(request):
  build = {"simplest_induction": known_circuits.simplest_induction_model,
           "head_zoo": known_circuits.head_zoo_model}[request.param]
  return build()


def test_models_are_well_formed(known):
  cfg = known.cfg
  check_weights(cfg, known.weights)
  assert cfg.pos == "shortformer" and cfg.norm == "none" and not known.weights.has_biases
  assert cfg.d_model == 2 * cfg.d_vocab + cfg.n_ctx + 1
  blocks = known_circuits.residual_blocks(cfg.d_vocab, cfg.n_ctx)
  W_E, W_pos = np.asarray(known.weights.W_E), np.asarray(known.weights.W_pos)
  np.testing.assert_array_equal(W_E[:, blocks["token"]], np.eye(cfg.d_vocab))
  np.testing.assert_array_equal(W_E[:, blocks["constant"]], 1)
  np.testing.assert_array_equal(W_pos[:, blocks["position"]], np.eye(cfg.n_ctx))
  for block in ("side", "position"):
    np.testing.assert_array_equal(W_E[:, blocks[block]], 0)
  np.testing.assert_array_equal(np.delete(W_pos, np.arange(cfg.d_model)[blocks["position"]], 1), 0)
  np.testing.assert_array_equal(np.asarray(known.weights.W_U)[blocks["token"]], np.eye(cfg.d_vocab))
  assert set(known.roles) == {(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)}
  for roles in known.roles.values():
    assert isinstance(roles, frozenset) and roles and roles <= set(known_circuits.ROLES)
    assert "inactive" not in roles or roles == {"inactive"}
  assert known.bos_id == known_circuits.BOS_ID and known.description
  assert dataclasses.is_dataclass(known) and known.name in ("simplest_induction", "head_zoo")


def test_roles_by_construction_are_exactly_what_the_criteria_give(known):
  measured = role_criteria(known)
  got = {head: roles for head, (_, roles) in measured.items()}
  assert got == known.roles, {head: numbers for head, (numbers, _) in measured.items()}
  for (l, h), (numbers, roles) in measured.items():  # and far from every threshold
    if "inactive" in roles:
      assert numbers["ov_norm"] == 0
      continue
    assert abs(numbers["previous_token"] - THRESHOLD) > 0.25
    assert l == 0 or abs(numbers["prefix_matching"] - THRESHOLD) > 0.25
    assert abs(numbers["ov_positivity"] - COPYING_FLOOR) > 0.45
    assert abs(numbers["positional_tv"] - POSITIONAL_TV) > 0.09


def test_the_simplest_model_has_one_previous_token_and_one_induction_head():
  known = known_circuits.simplest_induction_model()
  assert (known.cfg.n_layers, known.cfg.n_heads) == (2, 1)
  assert known.roles == {(0, 0): {"previous_token", "positional"},
                         (1, 0): {"induction", "copying"}}
  W_E, W_U = np.asarray(known.weights.W_E), np.asarray(known.weights.W_U)
  full_ov = W_E @ np.asarray(known.weights.W_V[1, 0] @ known.weights.W_O[1, 0]) @ W_U
  expect = known_circuits.COPY_GAIN * np.eye(known.cfg.d_vocab)
  expect[known.bos_id, known.bos_id] = 0  # BOS's value writes nothing
  np.testing.assert_allclose(full_ov, expect, atol=1e-5)
  prev_ov = W_E @ np.asarray(known.weights.W_V[0, 0] @ known.weights.W_O[0, 0]) @ W_U
  np.testing.assert_array_equal(prev_ov, 0)  # the previous token is written where W_U is blind


def test_other_sizes_build_and_tiny_ones_are_refused():
  small = known_circuits.simplest_induction_model(d_vocab=9, n_ctx=20)
  assert small.cfg.d_head == 19 and small.cfg.d_model == 2 * 9 + 20 + 1
  check_weights(small.cfg, small.weights)
  zoo = known_circuits.head_zoo_model(d_vocab=30, n_ctx=12)
  assert zoo.cfg.d_head == 30
  with pytest.raises(ValueError, match="d_vocab ≥ 2"):
    known_circuits.head_zoo_model(d_vocab=1)


# ----------------------------------------------------------------------------------------------
# Heads that are exactly zero


def _zeroed(w, layer, head, names):
  return w.replace(**{n: getattr(w, n).at[layer, head].set(0.0) for n in names})


def reference_composition(w, kind, permuted):
  """comp(X, Y) of every writer × later reader by a loop over explicit d_model × d_model matrices
  and np.linalg.norm, 0 where X or Y is zero (docs/METHODS.md, "Composition scores")."""
  f = lambda n, l, h: np.asarray(getattr(w, n)[l, h], np.float64)
  L, H = w.n_layers, w.n_heads
  out = np.zeros((L, H, L, H))
  for l1 in range(L):
    for h1 in range(H):
      for l2 in range(l1 + 1, L):
        for h2 in range(H):
          Ax, Bx = f("W_V", l1, h1), f("W_O", l1, h1)
          Ay, By = {"q": (f("W_Q", l2, h2), f("W_K", l2, h2).T),
                    "k": (f("W_K", l2, h2), f("W_Q", l2, h2).T),
                    "v": (f("W_V", l2, h2), f("W_O", l2, h2))}[kind]
          X, Y = Ax @ Bx, Ay @ By
          norms = np.linalg.norm(X) * np.linalg.norm(Y)
          if norms == 0:
            continue
          product = By @ Ax @ Bx @ Ay if permuted else X @ Y
          out[l1, h1, l2, h2] = np.linalg.norm(product) / norms
  return out


def model_with_zero_heads():
  """3 layers × 3 heads, random, with L0H1 all zero, L1H0 writing nothing (W_O zero: no V
  reader either) and L1H2 reading nothing through Q and K."""
  _, w = random_model(n_layers=3, n_heads=3, d_head=4, d_model=12, std=0.5, seed=5)
  w = _zeroed(w, 0, 1, ("W_Q", "W_K", "W_V", "W_O"))
  w = _zeroed(w, 1, 0, ("W_O",))
  return _zeroed(w, 1, 2, ("W_Q", "W_K"))


@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("permuted", [False, True])
def test_composition_of_a_zero_head_is_zero_not_nan(kind, permuted):
  for w in (model_with_zero_heads(), known_circuits.head_zoo_model(d_vocab=12, n_ctx=10).weights):
    got = np.asarray(circuits.composition_scores(w, kind, permuted=permuted))
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, reference_composition(w, kind, permuted), rtol=1e-4,
                               atol=1e-7)
  w = model_with_zero_heads()
  got = np.asarray(circuits.composition_scores(w, kind, permuted=permuted))
  assert np.all(got[0, 1] == 0) and np.all(got[1, 0] == 0)  # the writers of nothing
  zero_reader = (1, 2) if kind in ("q", "k") else (1, 0)  # zero W_Q, W_K; zero W_O
  assert np.all(got[:, :, zero_reader[0], zero_reader[1]] == 0)
  assert got[0, 0, 1, 1] > 0 and got[0, 2, 2, 1] > 0  # heads that write and read


def test_the_zero_heads_other_circuits_are_zero_and_their_copying_score_is_defined():
  w = model_with_zero_heads()
  ov = circuits.positivity(circuits.ov_eigenvalues(w))
  assert not np.isnan(ov).any() and ov[0, 1] == 0 and ov[1, 0] == 0
  from_zero = circuits.k_composition_qk_eigenvalues(w, 0, 1)  # the zero head as the writer
  assert np.all(np.isnan(from_zero[0]))  # layer 0 cannot read layer 0 (documented NaN)
  np.testing.assert_array_equal(from_zero[1:], 0)
  assert np.all(circuits.positivity(from_zero[1:]) == 0)
  into_zero = circuits.k_composition_qk_eigenvalues(w, 0, 0)  # L1H2 reads nothing with Q, K
  np.testing.assert_array_equal(into_zero[1, 2], 0)
  zoo = known_circuits.head_zoo_model()
  pool = np.arange(1, zoo.cfg.d_vocab)
  probe, _ = scores.prefix_probe(zoo.cfg.n_ctx, pool, zoo.bos_id)
  copying = scores.copying_score(zoo.cfg, zoo.weights, probe)
  # A zero head attends uniformly, so the score is defined everywhere; its output is zero, so
  # r = 0 and (a − m)/(a + m) is 0/ε = 0.  The head resting on BOS (L1H1) is undefined: NaN,
  # as documented; the copying head scores near +1.
  assert copying["score"][0, 2] == 0 and copying["score"][1, 0] == 0
  assert copying["defined"][0, 2] == 1 and copying["defined"][1, 0] == 1
  assert np.isnan(copying["score"][1, 1]) and copying["defined"][1, 1] == 0
  assert copying["score"][0, 0] > 0.8
