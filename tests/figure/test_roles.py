"""reproduce.figure.roles: head roles in every layer, from the one prefix-matching score and a
previous-token loop, and from random tokens without a tokenizer."""

import numpy as np
import pytest

from reproduce.core import scores
from reproduce.core.model import forward
from reproduce.figure.roles import HeadRoles, head_roles
from reproduce.figure.sources import Model, model_from_run

from tests.support.folders import previous_token_head_folder as _previous_token_head_model
from tests.support.helpers import random_model


def test_head_roles_look_in_every_layer():
  roles = HeadRoles(previous_token=np.array([[0.1, 0.2], [0.9, 0.0], [0.0, 0.95]]),
                               induction=np.array([[0.0, 0.0], [0.0, 0.4], [0.5, 0.0]]),
                               threshold=0.3)
  assert roles.previous_token_head(1) == (0, 1)  # only layer 0 precedes layer 1
  assert roles.previous_token_head(2) == (1, 0)  # layer 1's head is readable by layer 2
  assert roles.previous_token_head() == (1, 0)  # default: every layer but the last
  assert roles.previous_token_heads() == [(1, 0), (2, 1)]
  assert roles.induction_heads() == [(1, 1), (2, 0)]


def test_head_roles_take_the_one_prefix_matching_score_and_a_previous_token_loop():
  cfg, w = random_model(n_layers=2, n_heads=3, d_vocab=23, n_ctx=33, std=0.5, seed=7)
  model = Model("m", cfg, w, {})  # no tokenizer: roles from IH's probe
  roles = head_roles(model)
  pool = model.sampling_pool()
  np.testing.assert_allclose(roles.induction,
                             scores.prefix_matching_score(cfg, w, pool, model.bos_id), atol=1e-6)
  probe, length = scores.prefix_probe(cfg.n_ctx, pool, model.bos_id)
  assert length == (cfg.n_ctx - 1) // scores.PREFIX_REPEATS
  _, ex = forward(cfg, w, probe, return_patterns=True)
  A = np.asarray(ex["patterns"], np.float64)  # [L, B, H, T, T]
  T = probe.shape[1]
  for l in range(2):
    for h in range(3):
      expect = np.mean([[A[l, b, h, i, i - 1] for i in range(2, T)] for b in range(len(probe))])
      assert roles.previous_token[l, h] == pytest.approx(expect, rel=1e-4)


def test_head_roles_without_a_tokenizer_come_from_random_tokens(tmp_path):
  model = model_from_run("m", _previous_token_head_model(tmp_path), log=lambda *_: 0)
  assert model.tokens is None and model.bos_id == 0
  assert np.array_equal(model.sampling_pool(), np.arange(1, 17))  # uniform, BOS left out
  roles = head_roles(model)
  assert roles.previous_token[0, 0] > 0.9, roles.previous_token  # the constructed head
  assert roles.previous_token_head(1) == (0, 0) and roles.previous_token[0, 1] < 0.9
  assert roles.probe.startswith("no tokenizer") and "BOS = token 0 (id 0 assumed" in roles.probe
  named = model_from_run("m", _previous_token_head_model(tmp_path / "b", 5),
                                    log=lambda *_: 0)
  assert named.bos_id == 5 and 5 not in named.sampling_pool() and len(named.sampling_pool()) == 16
  assert "BOS = token 5 (bos_token_id of its config)" in head_roles(named).probe
