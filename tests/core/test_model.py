"""reproduce.core.model: the forward pass against a NumPy reference, the causal mask, the
override semantics, and smeared keys (against a NumPy loop, on every attention path)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.core.model import ModelConfig, forward, head_values, mean_loss, token_losses
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


# ----------------------------------------------------------------------------------------------
# Smeared keys (IH, "Argument 2")

def _smeared(cfg, w, alpha):
  """``cfg``/``w`` as a smeared-key model with every head's α = ``alpha`` (scalar or [L, H])."""
  smear = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (cfg.n_layers, cfg.n_heads))
  return dataclasses.replace(cfg, smear_keys=True), w.replace(smear=smear)


def _slow_smeared_logits(w, tokens):
  """Logits [T, vocab] of a shortformer, norm-free model with smeared keys, in float64 with
  explicit loops: k_j = (x_j + p_j) W_K + b_K, then k'_j = σ k_j + (1 − σ) k_{j−1} (j ≥ 1),
  k'_0 = k_0, σ = 1 / (1 + exp(−α)); score(i, j) = q_i · k'_j / √d_head over j ≤ i."""
  W = {k: np.asarray(v, np.float64) for k, v in w.to_dict().items()}
  L, H, _, E = W["W_Q"].shape
  T = len(tokens)
  x = W["W_E"][tokens]
  p = W["W_pos"][:T]
  for l in range(L):
    write = np.zeros_like(x)
    for h in range(H):
      sigma = 1.0 / (1.0 + np.exp(-W["smear"][l, h]))
      q = [(x[i] + p[i]) @ W["W_Q"][l, h] + W["b_Q"][l, h] for i in range(T)]
      k = [(x[j] + p[j]) @ W["W_K"][l, h] + W["b_K"][l, h] for j in range(T)]
      smeared = [k[0]] + [sigma * k[j] + (1 - sigma) * k[j - 1] for j in range(1, T)]
      v = [x[j] @ W["W_V"][l, h] + W["b_V"][l, h] for j in range(T)]
      for i in range(T):
        scores = np.array([q[i] @ smeared[j] for j in range(i + 1)]) / np.sqrt(E)
        a = np.exp(scores - scores.max())
        a /= a.sum()
        write[i] += sum(a[j] * v[j] for j in range(i + 1)) @ W["W_O"][l, h]
    x = x + write + W["b_O"][l]
  return x @ W["W_U"] + W["b_U"]


@pytest.mark.parametrize("alpha", [0.0, -2.0, 1.5, "per head"])
def test_smeared_forward_matches_a_numpy_loop(alpha):
  cfg, w = random_model(n_layers=2, n_heads=2, d_head=4, d_model=8, d_vocab=13, n_ctx=7, seed=4)
  w = with_random_biases(w, seed=4)
  if alpha == "per head":
    alpha = np.array([[-3.0, 0.5], [2.0, -0.7]])
  cfg, w = _smeared(cfg, w, alpha)
  tokens = np.random.default_rng(4).integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  logits, _ = forward(cfg, w, tokens)
  for b in range(2):
    ref = _slow_smeared_logits(w, tokens[b])
    np.testing.assert_allclose(np.asarray(logits[b]), ref, rtol=1e-4,
                               atol=1e-5 * np.abs(ref).max())


def test_smeared_keys_with_sigma_one_are_the_vanilla_model():
  cfg, w = random_model(n_layers=2, seed=6)
  tokens = np.random.default_rng(6).integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  vanilla, _ = forward(cfg, w, tokens)
  near_one, _ = forward(*_smeared(cfg, w, 30.0), tokens)  # σ(30) = 1 in float32
  np.testing.assert_allclose(np.asarray(near_one), np.asarray(vanilla), rtol=1e-6, atol=1e-6)
  half, _ = forward(*_smeared(cfg, w, 0.0), tokens)
  assert not np.allclose(np.asarray(half), np.asarray(vanilla), atol=1e-3)


@pytest.mark.parametrize("attention", ["blocked", pytest.param("xla", marks=pytest.mark.slow)])
def test_smeared_training_attention_and_gradients_equal_explicit(attention):
  """The training paths (blocked attention on CPU, fused on GPU) take the same smeared keys as
  the explicit one, and the loss's gradient reaches every α (jitted)."""
  cfg, w = random_model(n_layers=2, n_heads=2, d_head=4, d_model=8, d_vocab=13, n_ctx=9, seed=8)
  cfg, w = _smeared(cfg, w, np.array([[-1.0, 0.3], [0.8, 2.0]]))
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.integers(0, cfg.d_vocab, (3, cfg.n_ctx)), jnp.int32)
  y = jnp.roll(x, -1, axis=1)
  loss = lambda attention: jax.jit(jax.value_and_grad(
      lambda w: mean_loss(cfg, w, x, y, attention=attention)))(w)
  (explicit, g_explicit), (blocked, g_blocked) = loss("explicit"), loss(attention)
  np.testing.assert_allclose(float(blocked), float(explicit), rtol=1e-5)
  for name, g in g_explicit.to_dict().items():
    np.testing.assert_allclose(np.asarray(getattr(g_blocked, name)), np.asarray(g), rtol=1e-4,
                               atol=1e-6, err_msg=name)
  assert np.all(np.abs(np.asarray(g_explicit.smear)) > 0)
  # And the explicit loss is the forward's: smeared keys in both.
  logits, _ = forward(cfg, w, x)
  np.testing.assert_allclose(float(explicit), float(token_losses(logits, y).mean()), rtol=1e-5)


def test_head_values_read_the_smeared_keys():
  """``head_values`` (the ablations' analysis path) equals A v with the forward's patterns."""
  cfg, w = random_model(n_layers=1, n_heads=2, seed=9)
  cfg, w = _smeared(cfg, w, np.array([[-1.5, 0.7]]))
  tokens = np.random.default_rng(9).integers(0, cfg.d_vocab, (2, cfg.n_ctx))
  _, ex = forward(cfg, w, tokens, return_patterns=True)
  x = jnp.asarray(w.W_E)[tokens]
  v = np.einsum("btd,hde->bhte", np.asarray(x), np.asarray(w.W_V[0]))
  expected = np.einsum("bhts,bhse->bthe", np.asarray(ex["patterns"][0]), v)
  np.testing.assert_allclose(np.asarray(head_values(cfg, w, 0, x)), expected, rtol=1e-4,
                             atol=1e-6)


def test_smeared_keys_config_flag_is_checked():
  with pytest.raises(ValueError, match="smear_keys"):
    ModelConfig(1, 2, 4, 8, 13, 7, smear_keys=1)
  plain = ModelConfig.from_any({"n_layers": 1, "n_heads": 2, "d_head": 4, "d_model": 8,
                                "d_vocab": 13, "n_ctx": 7})
  assert plain.smear_keys is False and "smear_keys" not in plain.to_dict()  # records unchanged
  smeared = dataclasses.replace(plain, smear_keys=True)
  assert ModelConfig.from_any(smeared.to_dict()) == smeared
