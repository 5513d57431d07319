"""reproduce.core.kernels: blocked and fused attention, mixed-precision products and the chunked
cross-entropy against the plain formulas (dense NumPy softmax and log-softmax, autodiff of the
full form), and the analysis chunking (budgets, padding, chunked unembedding losses)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reproduce.core import kernels
from reproduce.core.kernels import blocked_causal_attention, unembed_cross_entropy
from reproduce.core.model import forward, mean_loss, token_losses

from tests.support.helpers import (BF16_GRAD_COSINE, BF16_LOSS_RTOL, random_batch as _batch,
                                   random_model)


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


@pytest.mark.parametrize("block", [pytest.param(1, marks=pytest.mark.slow),  # 12 blocks
                                   pytest.param(3, marks=pytest.mark.slow), 5, 12])
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


@pytest.mark.parametrize("attention", [pytest.param("explicit", marks=pytest.mark.slow), "blocked",
                                       pytest.param("xla", marks=pytest.mark.slow)])
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


@pytest.mark.slow  # against NumPy in the default suite: test_bfloat16_cross_entropy_backward_...
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


@pytest.mark.slow  # three gradients of the model; the chunked loss: test_chunked_cross_entropy_...
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


def test_items_per_chunk_follows_the_budget():
  assert kernels.items_per_chunk(100, 50, budget=1000) == 10
  assert kernels.items_per_chunk(100, 5, budget=1000) == 5  # never more than there are
  assert kernels.items_per_chunk(10_000, 5, budget=1000) == 1  # never fewer than one


def test_windows_per_chunk_is_cache_sized_on_cpu_but_not_below_a_few_windows(monkeypatch):
  assert jax.default_backend() == "cpu"
  window = 4 << 20  # about one window of the cpu 2L model's ICL pass
  assert kernels.windows_per_chunk(window, 512) == kernels.CPU_WINDOW_BYTES // window
  assert kernels.windows_per_chunk(window, 512) < kernels.items_per_chunk(window, 512)
  assert kernels.windows_per_chunk(window, 3) == 3  # never more than there are
  large = 40 << 20  # no two fit the cache budget: CPU_MIN_WINDOWS, within the memory bound
  assert kernels.windows_per_chunk(large, 512) == kernels.CPU_MIN_WINDOWS
  huge = 112 << 20  # an attn-only-2l window: the memory bound's 2
  assert kernels.windows_per_chunk(huge, 512) == kernels.items_per_chunk(huge, 512) == 2
  monkeypatch.setattr(kernels, "CHUNK_BYTES", 1)  # the memory bound always wins
  assert kernels.windows_per_chunk(window, 512) == 1


def test_map_in_chunks_pads_and_drops_the_padding():
  x = jnp.arange(7.0)[:, None] * jnp.ones((7, 3))
  for chunk in (1, 2, 3, 7):
    got = kernels.map_in_chunks(lambda a: (a.sum(-1), a * 2), (x,), chunk)
    np.testing.assert_allclose(got[0], 3 * np.arange(7.0))
    np.testing.assert_allclose(got[1], 2 * np.asarray(x))


def test_unembed_losses_equal_the_full_logits_cross_entropy(budget):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, 8)), jnp.float32)
  W_U = jnp.asarray(rng.normal(size=(8, 31)), jnp.float32)
  b_U = jnp.asarray(rng.normal(size=31), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 31, (3, 5)))
  for bias in (None, b_U):
    logits = x @ W_U + (0 if bias is None else bias)
    got = kernels.unembed_losses(x, W_U, targets, bias)
    np.testing.assert_allclose(got, token_losses(logits, targets), rtol=1e-5, atol=1e-5)


def test_low_rank_update_losses_equal_each_updates_full_logits(budget):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 5, 8)), jnp.float32)
  W_U = jnp.asarray(rng.normal(size=(8, 31)), jnp.float32)
  b_U = jnp.asarray(rng.normal(size=31), jnp.float32)
  z = jnp.asarray(rng.normal(size=(4, 3, 5, 2)), jnp.float32)
  M = jnp.asarray(rng.normal(size=(4, 2, 31)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 31, (3, 5)))
  got = kernels.low_rank_update_losses(x, W_U, targets, z, M, b_U)
  assert got.shape == (4, 3, 5)
  for k in range(4):  # the update's logits written out in full, one at a time
    logits = np.asarray(x) @ np.asarray(W_U) + np.asarray(b_U) + np.asarray(z[k]) @ np.asarray(M[k])
    np.testing.assert_allclose(got[k], token_losses(logits, targets), rtol=1e-5, atol=1e-5)


def _numpy_causal_softmax(q, k, positions):
  """softmax(q kᵀ/√E) row by row in float64 NumPy, the query at ``positions[i]`` seeing keys
  0 … positions[i] (q [B, H, Q, E], k [B, H, S, E] → [B, H, Q, S])."""
  q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
  B, H, Q, E = q.shape
  out = np.zeros((B, H, Q, k.shape[2]))
  for b in range(B):
    for h in range(H):
      for i, t in enumerate(positions):
        s = np.array([q[b, h, i] @ k[b, h, j] / np.sqrt(E) for j in range(t + 1)])
        e = np.exp(s - s.max())
        out[b, h, i, :t + 1] = e / e.sum()
  return out


def test_attention_patterns_are_the_dense_causal_softmax():
  """``attention_pattern`` (queries 0 … T − 1), ``attention_pattern_at`` with an offset and with
  explicit rows: each row is the masked softmax of its query, computed in NumPy one row at a
  time; masked entries are exactly 0."""
  rng = np.random.default_rng(7)
  q, k = (jnp.asarray(2 * rng.normal(size=(2, 3, 9, 4)), jnp.float32) for _ in range(2))
  got = np.asarray(kernels.attention_pattern(q, k))
  np.testing.assert_allclose(got, _numpy_causal_softmax(q, k, range(9)), rtol=1e-5, atol=1e-7)
  assert np.all(got[..., np.triu(np.ones((9, 9), bool), 1)] == 0)
  block = np.asarray(kernels.attention_pattern_at(q[:, :, 3:6], k, 3))
  np.testing.assert_allclose(block, _numpy_causal_softmax(q[:, :, 3:6], k, [3, 4, 5]),
                             rtol=1e-5, atol=1e-7)
  rows = np.array([8, 0, 5])
  picked = np.asarray(kernels.attention_pattern_at(q[:, :, rows], k, rows=jnp.asarray(rows)))
  np.testing.assert_allclose(picked, _numpy_causal_softmax(q[:, :, rows], k, rows), rtol=1e-5,
                             atol=1e-7)


def test_chunked_cross_entropy_and_its_gradient_equal_numpy_log_softmax():
  """``unembed_cross_entropy`` in one chunk and, with a budget of 5 rows (which does not divide
  24), in 6 chunks of 4: losses −log softmax(x W_U)[t] and gradients
  dx = (p − onehot) W_Uᵀ, dW_U = xᵀ (p − onehot), all from float64 NumPy."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(4, 6, 8)), jnp.float32)
  W_U = jnp.asarray(rng.normal(size=(8, 19)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 19, (4, 6)))
  x64, W64 = np.asarray(x, np.float64).reshape(24, 8), np.asarray(W_U, np.float64)
  tt = np.asarray(t).reshape(24)
  logits = x64 @ W64
  log_p = logits - logits.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  want = -log_p[np.arange(24), tt]
  d = (np.exp(log_p) - np.eye(19)[tt]) / 24  # d mean loss / d logits
  for block in (1 << 20, 5 * 19):  # one chunk; 5 rows a chunk → 4 (divides 24): 6 chunks
    losses, vjp = jax.vjp(lambda x, W, block=block: kernels.unembed_cross_entropy(
        x, W, t, block), x, W_U)
    assert losses.shape == (4, 6)
    np.testing.assert_allclose(np.asarray(losses).reshape(24), want, rtol=1e-5, atol=1e-6)
    dx, dW = vjp(jnp.full((4, 6), 1 / 24, jnp.float32))
    np.testing.assert_allclose(np.asarray(dx).reshape(24, 8), d @ W64.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dW), x64.T @ d, rtol=1e-4, atol=1e-6)


def test_row_losses_and_divisors_against_plain_loops():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(5, 11)) * 10
  t = rng.integers(0, 11, 5)
  want = [np.log(np.exp(row - row.max()).sum()) + row.max() - row[j] for row, j in zip(logits, t)]
  np.testing.assert_allclose(kernels.row_losses(jnp.asarray(logits, jnp.float32), jnp.asarray(t)),
                             want, rtol=1e-5)
  for n in (1, 7, 12, 24, 64):
    for limit in (1, 5, 12, 100):
      expect = max(c for c in range(1, n + 1) if n % c == 0 and c <= max(1, limit))
      assert kernels.largest_divisor_at_most(n, limit) == expect, (n, limit)
