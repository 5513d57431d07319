"""The forward pass against a NumPy reference, the causal mask, and the override semantics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import random_model
from reference import reference_logits
from reproduce.core.model import ModelConfig, forward, mean_loss, token_losses
from reproduce.core.module import AttentionOnlyTransformer
from reproduce.core.tl_format import to_state_dict


def with_random_biases(w, seed, norm_bias=True):
  """``w`` with every bias (and, for "ln", non-trivial gains and LN biases) random."""
  rng = np.random.default_rng(seed)
  r = lambda shape, mean=0.0: jnp.asarray(mean + 0.3 * rng.normal(size=shape), jnp.float32)
  L, H, dh, D = w.W_Q.shape[0], w.W_Q.shape[1], w.d_head, w.d_model
  w = w.replace(b_Q=r((L, H, dh)), b_K=r((L, H, dh)), b_V=r((L, H, dh)), b_O=r((L, D)),
                b_U=r((w.d_vocab,)))
  if w.ln_gain is not None:
    w = w.replace(ln_gain=r((L, D), 1.0), ln_final=r((D,), 1.0))
    if norm_bias:
      w = w.replace(ln_bias=r((L, D)), ln_final_bias=r((D,)))
  return w


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


def test_training_loss_matches_plain_cross_entropy():
  cfg, w = random_model(d_vocab=37)
  tokens = np.random.default_rng(4).integers(0, cfg.d_vocab, (4, cfg.n_ctx))
  targets = np.roll(tokens, -1, 1)
  plain = lambda w: token_losses(forward(cfg, w, tokens)[0], targets).mean()
  loss, grads = jax.jit(jax.value_and_grad(plain))(w)
  for block in (37, 37 * 8, 1 << 20):  # several chunkings of the fused loss
    fused = lambda w, block=block: mean_loss(cfg, w, tokens, targets, block)
    fused_loss, fused_grads = jax.jit(jax.value_and_grad(fused))(w)
    np.testing.assert_allclose(fused_loss, loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_nnx_module_holds_the_same_weights():
  cfg = ModelConfig(2, 2, 4, 8, 20, 6)
  model = AttentionOnlyTransformer(cfg, rngs=nnx.Rngs(0), pos_init="sinusoidal")
  params = nnx.state(model, nnx.Param)
  assert "W_pos" not in params and "W_Q" in params  # fixed positions are not parameters
  tokens = np.arange(6)[None] % 20
  np.testing.assert_allclose(model(tokens)[0], forward(cfg, model.weights(), tokens)[0])
  import reproduce  # pylint: disable=import-outside-toplevel
  np.testing.assert_array_equal(reproduce.weights_of(model).W_Q, model.weights().W_Q)




@pytest.mark.parametrize("pos, pos_after_norm, norm", [
    ("shortformer", False, "ln"), ("shortformer", True, "ln"), ("standard", False, "ln"),
    ("shortformer", False, "none")])
def test_nnx_module_with_norms_and_biases_matches_the_numpy_reference(pos, pos_after_norm, norm):
  """The module carries every parameter (norm gains and biases, q/k/v/output/unembedding
  biases) and its call is the float64 reference's function."""
  cfg, w = random_model(n_layers=2, pos=pos, norm=norm, pos_after_norm=pos_after_norm, eps=1e-4)
  w = with_random_biases(w, seed=3)
  model = AttentionOnlyTransformer(cfg, w)
  state = nnx.to_pure_dict(nnx.state(model))
  assert set(state) == set(w.to_dict())  # nothing dropped: every weight is module state
  for name, value in w.to_dict().items():
    np.testing.assert_array_equal(state[name], value)
  tokens = np.random.default_rng(1).integers(0, cfg.d_vocab, (1, cfg.n_ctx))
  ref = reference_logits(to_state_dict(cfg, w), tokens[0], 2, cfg.n_heads, pos=pos,
                         norm={"none": None, "ln": "LN"}[norm], pos_after_norm=pos_after_norm,
                         eps=1e-4)
  np.testing.assert_allclose(np.asarray(model(tokens)[0][0]), ref, rtol=1e-4,
                             atol=1e-5 * np.abs(ref).max())


def test_training_starts_from_the_module_and_load_model_returns_it(trained_2l):
  """Step 0 of a run is ``AttentionOnlyTransformer.from_config``'s state, and the final
  checkpoint read back as a module holds the trained weights bit for bit."""
  import reproduce  # pylint: disable=import-outside-toplevel
  config = trained_2l.config
  initial = AttentionOnlyTransformer.from_config(config).weights()
  step0 = reproduce.load(trained_2l.workdir / "snapshots" / "0", fold=False)[1]
  for name, value in initial.to_dict().items():
    np.testing.assert_array_equal(getattr(step0, name), value)
  model = reproduce.load_model(trained_2l.workdir, fold=False)
  assert isinstance(model, AttentionOnlyTransformer)
  for name, value in trained_2l.weights.to_dict().items():
    np.testing.assert_array_equal(nnx.to_pure_dict(nnx.state(model))[name], value)
