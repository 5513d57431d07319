"""The training step's options: fused attention and bfloat16 compute against the float32
explicit-attention step, the step plan's rules, and the ahead-of-time plan of the paper preset."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.config import load_config
from reproduce.core.kernels import blocked_causal_attention, unembed_cross_entropy
from reproduce.core.model import ModelConfig
from reproduce.core.model import mean_loss
from reproduce.train.loop import train
import reproduce.train.plan
from reproduce.train.plan import CPU_SLICE_TOKENS, plan_step
from reproduce.train.step import (TrainState, compile_train_step, data_mesh, initial_weights,
                                  make_optimizer, put_batch)
from helpers import random_model

ROOT = Path(__file__).resolve().parents[1]
# bfloat16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.002 per operand); over a handful
# of products and a float32 softmax/log-sum-exp the loss moves by far less than 1%.
BF16_LOSS_RTOL = 0.01
BF16_GRAD_COSINE = 0.99


def _batch(cfg, batch=4, seed=1):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, cfg.d_vocab, (batch, cfg.n_ctx)).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(np.roll(x, -1, axis=1))


def _reference_loss(cfg, w, x, y):
  """Plain NumPy float64 loss: explicit loops over layers and heads, row vectors."""
  w = {k: np.asarray(v, np.float64) for k, v in w.to_dict().items() if v is not None}
  x, y = np.asarray(x), np.asarray(y)
  B, T = x.shape
  total = 0.0
  for b in range(B):
    res = w["W_E"][x[b]]
    for l in range(cfg.n_layers):
      qk_in = res + w["W_pos"][:T] if cfg.pos == "shortformer" else res
      out = np.zeros_like(res)
      for h in range(cfg.n_heads):
        q, k, v = qk_in @ w["W_Q"][l, h], qk_in @ w["W_K"][l, h], res @ w["W_V"][l, h]
        s = q @ k.T / np.sqrt(cfg.d_head)
        s[np.triu_indices(T, 1)] = -np.inf
        a = np.exp(s - s.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        out += a @ v @ w["W_O"][l, h]
      res = res + out
    logits = res @ w["W_U"]
    m = logits.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(1))
    total += (lse - logits[np.arange(T), y[b]]).sum()
  return total / (B * T)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(tree)])


@pytest.mark.parametrize("attention", [
    pytest.param("xla", marks=pytest.mark.slow),  # the GPU path; its forward: bfloat16 test below
    "blocked"])
def test_fused_attention_loss_and_grads_equal_explicit(attention):
  cfg, w = random_model(n_layers=2, n_heads=3, d_head=8, d_model=16, d_vocab=37, n_ctx=12,
                        pos="shortformer", std=0.3)
  x, y = _batch(cfg)
  explicit = jax.jit(jax.value_and_grad(lambda w: mean_loss(cfg, w, x, y)))(w)
  fused = jax.jit(jax.value_and_grad(lambda w: mean_loss(cfg, w, x, y, attention=attention)))(w)
  np.testing.assert_allclose(float(explicit[0]), _reference_loss(cfg, w, x, y), rtol=1e-5)
  np.testing.assert_allclose(float(fused[0]), float(explicit[0]), rtol=1e-5)
  for name, g in explicit[1].to_dict().items():
    if g is not None:
      np.testing.assert_allclose(np.asarray(getattr(fused[1], name)), np.asarray(g),
                                 rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("block", [1, 3, 5, 12])
def test_blocked_attention_equals_full_pattern(block):
  """Query blocks (12 = one block; 5 does not divide 12, so 4 is used) against the full masked
  pattern of the paper's formula, values and all three gradients (autodiff of the full form)."""
  rng = np.random.default_rng(block)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 3, 12, 8)), jnp.float32) for _ in range(3))
  dz = jnp.asarray(rng.normal(size=(2, 3, 12, 8)), jnp.float32)

  def full(q, k, v):
    s = jnp.einsum("bhte,bhse->bhts", q, k) / np.sqrt(8)
    s = jnp.where(np.tril(np.ones((12, 12), bool)), s, -np.inf)
    return jnp.einsum("bhts,bhse->bhte", jax.nn.softmax(s, -1), v)

  blocked = jax.jit(lambda q, k, v: blocked_causal_attention(q, k, v, block=block))
  np.testing.assert_allclose(blocked(q, k, v), full(q, k, v), rtol=1e-5, atol=1e-6)
  g_full = jax.jit(lambda q, k, v, dz: jax.vjp(full, q, k, v)[1](dz))(q, k, v, dz)
  g_blocked = jax.vjp(blocked, q, k, v)[1](dz)
  for name, a, b in zip("qkv", g_blocked, g_full):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("block", [3, 12])
def test_bfloat16_blocked_attention_gradients_match_float32(block):
  """bf16 products in the blocked attention, the transposed backward products dvᵀ = dzᵀ A and
  dkᵀ = qᵀ dS included, run (one block and four) and stay within bf16 rounding of the float32
  full form's gradients (relative Frobenius error)."""
  rng = np.random.default_rng(block)
  q, k, v, dz = (jnp.asarray(rng.normal(size=(2, 3, 12, 8)), jnp.float32) for _ in range(4))
  full = lambda q, k, v: blocked_causal_attention(q, k, v, block=12)
  bf16 = lambda q, k, v: blocked_causal_attention(q, k, v, jnp.bfloat16, block=block)
  grads = lambda f: jax.jit(lambda q, k, v, dz: jax.vjp(f, q, k, v)[1](dz))(q, k, v, dz)
  for name, a, b in zip("qkv", grads(bf16), grads(full)):
    assert a.dtype == jnp.float32
    error = np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))
    assert 0 < error < 0.02, (name, error)  # > 0: it really ran in bf16


@pytest.mark.parametrize("attention", ["explicit", "blocked", "xla"])
def test_bfloat16_loss_matches_float32(attention):
  cfg, w = random_model(n_layers=2, n_heads=3, d_head=8, d_model=16, d_vocab=37, n_ctx=12,
                        std=0.3)
  x, y = _batch(cfg)
  f32 = jax.jit(jax.value_and_grad(lambda w: mean_loss(cfg, w, x, y)))(w)
  bf16 = jax.jit(jax.value_and_grad(
      lambda w: mean_loss(cfg, w, x, y, compute_dtype=jnp.bfloat16, attention=attention)))(w)
  assert bf16[0].dtype == jnp.float32
  np.testing.assert_allclose(float(bf16[0]), float(f32[0]), rtol=BF16_LOSS_RTOL)
  assert not np.allclose(float(bf16[0]), float(f32[0]), rtol=1e-7)  # it really ran in bf16
  for g in jax.tree.leaves(bf16[1]):
    assert g.dtype == jnp.float32
  a, b = _flat(f32[1]), _flat(bf16[1])
  assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > BF16_GRAD_COSINE


def test_bfloat16_cross_entropy_gradient_matches_autodiff():
  """The chunked loss's hand-written backward in bf16 equals autodiff of the plain bf16 loss."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 16)), jnp.float32)
  W_U = jnp.asarray(rng.normal(size=(16, 29)) * 0.3, jnp.float32)
  t = jnp.asarray(rng.integers(0, 29, (2, 8)))

  def plain(x, W_U):
    logits = jnp.einsum("btd,dv->btv", x.astype(jnp.bfloat16), W_U.astype(jnp.bfloat16),
                        preferred_element_type=jnp.float32)
    return (jax.nn.logsumexp(logits, -1)
            - jnp.take_along_axis(logits, t[..., None], -1)[..., 0]).mean()

  chunked = lambda x, W_U: unembed_cross_entropy(x, W_U, t, 4 * 29,
                                                 compute_dtype=jnp.bfloat16).mean()
  (la, ga), (lb, gb) = (jax.value_and_grad(f, argnums=(0, 1))(x, W_U) for f in (plain, chunked))
  np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
  for a, b in zip(ga, gb):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0.02, atol=2e-3)


def test_bfloat16_step_keeps_float32_state_and_close_loss(make_config):
  losses = {}
  for dtype in ("float32", "bfloat16"):
    c = make_config("attn2l", train=dict(compute_dtype=dtype, attention="explicit"))
    mesh = data_mesh()
    tx = make_optimizer(c)
    w = initial_weights(c)
    state = TrainState(jnp.zeros((), jnp.int32), w, tx.init(w))
    x, y = _batch(ModelConfig.from_any(c), batch=c.train.batch_size)
    state, out = compile_train_step(c, tx, mesh)(state, *put_batch(mesh, x, y))
    losses[dtype] = float(out["loss"])
    assert {a.dtype for a in jax.tree.leaves(state.weights)} == {jnp.dtype(jnp.float32)}
    assert all(a.dtype in (jnp.float32, jnp.int32) for a in jax.tree.leaves(state.opt_state))
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=BF16_LOSS_RTOL)


def test_test_preset_trains_in_bfloat16(make_config, tmp_path):
  lines = []
  c = make_config("attn2l", train=dict(compute_dtype="bfloat16"))
  result = train(c, tmp_path / "bf16", log=lines.append)
  records = [json.loads(l) for l in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in records if "loss" in r]
  assert losses[-1] < losses[0] - 0.1, losses
  assert any("compute bfloat16" in l for l in lines), lines  # the choice is logged
  assert result.weights.W_Q.dtype == np.float32


def test_plan_rules(make_config, monkeypatch):
  c = make_config("attn2l", train=dict(batch_size=8))
  for amx, dtype in ((True, "bfloat16"), (False, "float32")):  # bf16 products only with AMX
    monkeypatch.setattr(reproduce.train.plan, "cpu_has_amx", lambda amx=amx: amx)
    plan = plan_step(c, 1, "cpu")
    assert plan.compute_dtype == dtype and any(f"auto → {dtype}" in r for r in plan.reasons)
  cpu = plan_step(c, 1, "cpu")
  assert (cpu.compute_dtype, cpu.attention) == ("float32", "blocked")
  assert cpu.n_micro == 8 // min(8, CPU_SLICE_TOKENS // c.model.n_ctx)
  assert any("auto" in r for r in cpu.reasons)
  gpu = plan_step(c, 2, "gpu", check_cudnn=False)  # no patterns: one slice per device
  assert (gpu.compute_dtype, gpu.attention, gpu.n_micro) == ("bfloat16", "cudnn", 1)
  fallback = plan_step(make_config("attn2l", train=dict(attention="cudnn")), 1, "cpu")
  assert fallback.attention == "xla" and any("cuDNN" in r for r in fallback.reasons)
  paper = load_config("attn2l:paper")  # materialised patterns: each slice's under 2²⁹ floats
  xla = plan_step(paper, 1, "gpu", check_cudnn=False)
  paper.unlock()
  paper.train.attention = "xla"
  sliced = plan_step(paper, 1, "gpu")
  m = paper.model
  per_slice = paper.train.batch_size // sliced.n_micro
  assert per_slice * m.n_heads * m.n_ctx ** 2 <= 1 << 29 < 2 * per_slice * m.n_heads * m.n_ctx ** 2
  assert xla.n_micro == 1
  with pytest.raises(ValueError, match="micro_batch_size=3 must divide"):
    plan_step(make_config("attn2l", train=dict(micro_batch_size=3)), 1, "cpu")


# Per-device budget the paper preset's step must fit (GPU rules, XLA attention, one device):
# well inside a 40 GB A100 and an 80 GB H100.
PAPER_STEP_BUDGET_GIB = 24


def test_plan_compiles_paper_step_within_budget():
  proc = subprocess.run(
      [sys.executable, "-m", "reproduce.bench", "plan", "--config=configs/attn2l.py:paper",
       "--platform=gpu"], cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  plan = json.loads(proc.stdout)
  paper = load_config("attn2l:paper")
  assert plan["shape"]["n_ctx"] == paper.model.n_ctx  # reads whatever the preset says
  assert plan["shape"]["tokens_per_step"] == paper.train.batch_size * paper.model.n_ctx
  memory = plan["memory_per_device"]
  assert 0 < memory["peak_estimate_gib"] <= PAPER_STEP_BUDGET_GIB, memory
  params = sum(np.prod(a.shape) for a in jax.tree.leaves(
      jax.eval_shape(lambda: initial_weights(paper))))
  assert memory["arguments_gib"] >= 3 * params * 4 / 2 ** 30  # weights + Adam's two moments
  assert plan["xla_flops_per_device"] > 0 and plan["step_time_floor_s"] > 0


def _round_to_bfloat16(a) -> np.ndarray:
  return np.asarray(jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32),
                    np.float64)


@pytest.mark.parametrize("spec,shapes", [
    ("btd,hde->bthe", ((2, 5, 6), (3, 6, 4))),       # Q/K/V projections
    ("bhte,bhse->bhts", ((2, 3, 5, 4), (2, 3, 7, 4))),  # scores: batch indices in all three
    ("bthe,hed->btd", ((2, 5, 3, 4), (3, 4, 6))),     # output projection
])
def test_mixed_einsum_backward_takes_bfloat16_operands(spec, shapes):
  """Forward and both gradients of the bf16 product equal float64 NumPy einsums of the
  bf16-rounded operands and cotangent (the backward's products take bf16 operands too)."""
  from reproduce.core.kernels import mixed_einsum  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)
  out, vjp = jax.vjp(lambda a, b: mixed_einsum(spec, a, b, jnp.bfloat16), a, b)
  g = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
  da, db = vjp(g)
  (lhs, rhs), res = spec.split("->")[0].split(","), spec.split("->")[1]
  a64, b64, g64 = (_round_to_bfloat16(v) for v in (a, b, g))
  for got, want in ((out, np.einsum(spec, a64, b64)),
                    (da, np.einsum(f"{res},{rhs}->{lhs}", g64, b64)),
                    (db, np.einsum(f"{lhs},{res}->{rhs}", a64, g64))):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  # float32 cotangents would give visibly different gradients: the test can tell them apart
  assert not np.allclose(np.asarray(da), np.einsum(f"{res},{rhs}->{lhs}", np.asarray(g, np.float64),
                                                   b64), rtol=1e-5, atol=1e-5)


def test_mixed_einsum_refuses_a_sum_inside_one_operand():
  from reproduce.core.kernels import _transposed_specs  # pylint: disable=import-outside-toplevel
  assert _transposed_specs("bhts,bhse->bhte") == ("bhte,bhse->bhts", "bhts,bhte->bhse")
  with pytest.raises(ValueError, match="two or three terms"):
    _transposed_specs("btd,de->be")  # t is summed within the first operand


def test_transposed_is_an_exact_row_major_transpose():
  from reproduce.core.kernels import _transposed  # pylint: disable=import-outside-toplevel
  a = jnp.asarray(np.random.default_rng(0).normal(size=(12, 5)) * 100, jnp.float32)
  got = _transposed(a, jnp.bfloat16)
  assert got.shape == (5, 12) and got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got, np.float32),
                                np.asarray(a.astype(jnp.bfloat16), np.float32).T)


def test_bfloat16_cross_entropy_backward_matches_numpy():
  """One-chunk loss (a CPU training slice): dx = d W_Uᵀ and dW_U = xᵀ d with x, W_U and
  d = (softmax − onehot)·g rounded to bf16, summed in float64 by NumPy."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(24, 16)), jnp.float32)
  W_U = jnp.asarray(rng.normal(size=(16, 40)) * 0.3, jnp.float32)
  t = jnp.asarray(rng.integers(0, 40, (24,)))
  losses, vjp = jax.vjp(
      lambda x, W: unembed_cross_entropy(x, W, t, compute_dtype=jnp.bfloat16), x, W_U)
  g = jnp.asarray(rng.uniform(0.5, 1.5, size=(24,)), jnp.float32)
  dx, dW = vjp(g)
  x64, W64 = _round_to_bfloat16(x), _round_to_bfloat16(W_U)
  logits = x64 @ W64
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  d = _round_to_bfloat16((p - np.eye(40)[np.asarray(t)]) * np.asarray(g)[:, None])
  np.testing.assert_allclose(np.asarray(losses), -np.log(p[np.arange(24), np.asarray(t)]),
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(dW), x64.T @ d, rtol=1e-3, atol=2e-3)
  np.testing.assert_allclose(np.asarray(dx), d @ W64.T, rtol=1e-3, atol=2e-3)
