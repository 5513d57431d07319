"""reproduce.core.model: the forward pass against a NumPy reference, the causal mask, and the
override semantics."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.core.model import forward
from reproduce.core.tl_format import to_state_dict

from tests.support.helpers import random_model, with_random_biases
from tests.support.reference import reference_logits


@pytest.mark.parametrize("n_layers, pos, pos_after_norm, norm", [
    (0, "standard", False, "ln"), (1, "shortformer", True, "lnpre"),
    (4, "shortformer", False, "ln"), (4, "shortformer", True, "ln"),
    (4, "standard", False, "ln"),
    pytest.param(1, "shortformer", False, "none", marks=pytest.mark.slow),
    pytest.param(2, "standard", False, "none", marks=pytest.mark.slow),
    pytest.param(4, "shortformer", False, "none", marks=pytest.mark.slow),
    pytest.param(4, "standard", False, "lnpre", marks=pytest.mark.slow)])
def test_forward_matches_numpy_reference(n_layers, pos, pos_after_norm, norm):
  cfg, w = random_model(n_layers=n_layers, pos=pos, norm=norm, seed=n_layers,
                        pos_after_norm=pos_after_norm, eps=1e-4)
  w = with_random_biases(w, seed=n_layers)
  tokens = np.random.default_rng(0).integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  logits, _ = forward(cfg, w, tokens)
  for b in range(2):
    ref = reference_logits(to_state_dict(cfg, w), tokens[b], n_layers, cfg.n_heads, pos=pos,
                           norm={"none": None, "ln": "LN", "lnpre": "LNPre"}[norm],
                           pos_after_norm=pos_after_norm, eps=1e-4)
    np.testing.assert_allclose(np.asarray(logits[b]), ref, rtol=1e-4,
                               atol=1e-5 * np.abs(ref).max())


def test_positions_before_and_after_the_norm_are_different_models():
  cfg, w = random_model(n_layers=1, norm="ln")
  tokens = np.arange(cfg.n_ctx)[None] % cfg.d_vocab
  after = dataclasses.replace(cfg, pos_after_norm=True)
  assert after != cfg and after.positions_after_norm and not cfg.positions_after_norm
  assert not np.allclose(forward(cfg, w, tokens)[0], forward(after, w, tokens)[0], atol=1e-3)


def test_frozen_norm_scales_reproduce_the_logits():
  cfg, w = random_model(n_layers=2, norm="ln", pos="standard")
  w = with_random_biases(w, 5)
  tokens = np.random.default_rng(5).integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  logits, ex = forward(cfg, w, tokens, return_norm_scales=True, return_residual=True)
  x = np.asarray(ex["residual"], np.float64)
  np.testing.assert_allclose(ex["norm_scales"][-1, ..., 0],
                             np.sqrt(x.var(-1) + cfg.eps), rtol=1e-5)
  again, _ = forward(cfg, w, tokens, norm_scales=ex["norm_scales"])
  np.testing.assert_allclose(again, logits, rtol=1e-5, atol=1e-5)
  doubled, _ = forward(cfg, w, tokens, norm_scales=2 * ex["norm_scales"])
  assert not np.allclose(doubled, logits, atol=1e-2)


def test_causal_mask():
  cfg, w = random_model()
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, cfg.d_vocab, (1, cfg.n_ctx))
  changed = tokens.copy()
  changed[0, 6:] = rng.integers(0, cfg.d_vocab, cfg.n_ctx - 6)
  (a, ea), (b, _) = forward(cfg, w, tokens, return_patterns=True), forward(cfg, w, changed)
  np.testing.assert_allclose(a[0, :6], b[0, :6], rtol=1e-6, atol=1e-6)
  assert not np.allclose(a[0, 6:], b[0, 6:])
  upper = np.triu(np.ones((cfg.n_ctx, cfg.n_ctx), bool), 1)
  assert np.all(np.asarray(ea["patterns"])[..., upper] == 0)
  np.testing.assert_allclose(np.asarray(ea["patterns"]).sum(-1), 1, rtol=1e-5)


def test_frozen_patterns_reproduce_logits():
  cfg, w = random_model()
  tokens = np.random.default_rng(2).integers(0, cfg.d_vocab, (3, cfg.n_ctx))
  logits, extras = forward(cfg, w, tokens, return_patterns=True, return_head_outputs=True)
  again, extras2 = forward(cfg, w, tokens, patterns=extras["patterns"], return_head_outputs=True)
  np.testing.assert_allclose(again, logits, rtol=1e-6, atol=1e-6)
  # Frozen patterns really are used: uniform patterns change the logits.
  T = cfg.n_ctx
  uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
  frozen = jnp.broadcast_to(uniform, extras["patterns"].shape)
  other, _ = forward(cfg, w, tokens, patterns=frozen)
  assert not np.allclose(other, logits, atol=1e-3)
  # The residual stream is the embedding plus every head's output.
  heads = extras2["head_outputs"]
  direct = np.asarray(w.W_E)[tokens] @ np.asarray(w.W_U)
  np.testing.assert_allclose(np.asarray(logits),
                             direct + np.asarray(heads.sum((0, 2))) @ np.asarray(w.W_U),
                             rtol=1e-4, atol=1e-4)


def test_zero_head_outputs_give_the_direct_path():
  cfg, w = random_model()
  tokens = np.random.default_rng(3).integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  zeros = jnp.zeros((cfg.n_layers, 2, cfg.n_heads, cfg.n_ctx, cfg.d_model))
  logits, extras = forward(cfg, w, tokens, head_outputs=zeros, return_head_outputs=True)
  np.testing.assert_allclose(logits, np.asarray(w.W_E)[tokens] @ np.asarray(w.W_U),
                             rtol=1e-5, atol=1e-6)
  # The computed outputs are still returned: layer 0 sees the plain embedding in both runs.
  _, normal = forward(cfg, w, tokens, return_head_outputs=True)
  np.testing.assert_allclose(extras["head_outputs"][0], normal["head_outputs"][0], atol=1e-6)
  assert not np.allclose(extras["head_outputs"][1], normal["head_outputs"][1], atol=1e-4)


def test_override_shapes_are_checked():
  cfg, w = random_model()
  tokens = np.zeros((1, 5), np.int32)
  with pytest.raises(ValueError, match="patterns must have shape"):
    forward(cfg, w, tokens, patterns=jnp.zeros((2, 1, 3, 4, 4)))
  with pytest.raises(ValueError, match="exceeds n_ctx"):
    forward(cfg, w, np.zeros((1, 11), np.int32))
