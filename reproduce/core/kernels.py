"""Compute kernels of the training step and the forward: explicit and blocked causal attention
(with a hand-written backward), mixed-precision products, and the chunked unembedding
cross-entropy.  Each computes the same numbers as the plain formula it names; they differ in
how much they hold at once and in which dtype their products run (the reasons are measured in
docs/SPEED.md).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

MASKED = -1e30  # finite, so a fully masked row would give a uniform pattern instead of NaN


QUERY_BLOCK = 64  # queries per block of ``blocked_causal_attention`` (docs/SPEED.md)


def attention_pattern(q: jax.Array, k: jax.Array, compute_dtype=None) -> jax.Array:
  """Causal softmax(q kᵀ / sqrt(d_head)) for q, k [B, H, T, d_head] → [B, H, T(dest), T(src)]
  (``attention_pattern_at`` with the queries at 0 … T − 1).

  The product q kᵀ may run in ``compute_dtype``; the scores and the softmax are float32."""
  return attention_pattern_at(q, k, compute_dtype=compute_dtype)


def attention_pattern_at(q: jax.Array, k: jax.Array, offset: int = 0, rows=None,
                         compute_dtype=None) -> jax.Array:
  """Causal softmax(q kᵀ / sqrt(d_head)) of queries at positions ``offset`` … ``offset`` + Q − 1,
  or at the positions ``rows`` [Q] when given (q [B, H, Q, d_head]), against keys 0 … S − 1
  (k [B, H, S, d_head]) → [B, H, Q, S]: the query at position t sees keys 0 … t."""
  Q, S = q.shape[2], k.shape[2]
  scores = mixed_einsum("bhte,bhse->bhts", q, k, compute_dtype) / jnp.sqrt(jnp.float32(q.shape[-1]))
  keys = jnp.arange(S)[None, :]
  visible = keys <= (jnp.arange(offset, offset + Q) if rows is None else rows)[:, None]
  return jax.nn.softmax(jnp.where(visible, scores, MASKED), axis=-1)


def _query_blocks(T: int, block: int):
  """[(start, end)] of equal query blocks of at most ``block`` rows covering 0 … T − 1."""
  b = largest_divisor_at_most(T, block)
  return [(i, i + b) for i in range(0, T, b)]


def _blocked_attention_fwd(q, k, v, block, dtype):
  """Block (i, j) of queries i … j − 1 meets the key prefix 0 … j − 1: z_ij = A_ij v_prefix."""
  patterns, zs = [], []
  for i, j in _query_blocks(q.shape[2], block):
    A = attention_pattern_at(q[:, :, i:j], k[:, :, :j], i, compute_dtype=dtype)
    patterns.append(A)
    zs.append(mixed_einsum("bhts,bhse->bhte", A, v[:, :, :j], dtype))
  z = jnp.concatenate(zs, axis=2)
  return z, (q, k, v, patterns, z)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _blocked_attention(q, k, v, block, dtype):
  return _blocked_attention_fwd(q, k, v, block, dtype)[0]


def _blocked_attention_bwd(block, dtype, residuals, dz):
  """Per query block, with S = q kᵀ/√E, A = softmax(S), z = A v:  dv = Aᵀ dz,  dA = dz vᵀ and
  dS = A ⊙ (dA − D) with D_t = Σ_s A_ts dA_ts = dz_t · z_t (one product per row instead of a
  pass over [T, S]);  dq = dS k/√E,  dk = dSᵀ q/√E.  Masked entries have A = 0, so dS = 0.

  dv and dk are formed transposed, dvᵀ = dzᵀ A and dkᵀ = qᵀ dS: written directly they contract
  both operands over their rows, a form XLA's CPU backend runs on a slow float32 path
  (docs/SPEED.md).  Each block's pieces cover its key prefix; key block m of dk (dv) is
  the sum of the pieces of the query blocks at or after m, written once (no zero padding)."""
  q, k, v, patterns, z = residuals
  scale = jnp.sqrt(jnp.float32(q.shape[-1]))
  blocks = _query_blocks(q.shape[2], block)
  dz_t, q_t = jnp.swapaxes(dz, 2, 3), jnp.swapaxes(q, 2, 3)  # [B, H, E, T]
  dqs, dk_ts, dv_ts = [], [], []
  for (i, j), A in zip(blocks, patterns):
    dz_i = dz[:, :, i:j]
    dv_ts.append(mixed_einsum("bhet,bhts->bhes", dz_t[..., i:j], A, dtype))
    dA = mixed_einsum("bhte,bhse->bhts", dz_i, v[:, :, :j], dtype)
    D = (dz_i * z[:, :, i:j]).sum(-1, keepdims=True)
    dS = A * (dA - D) / scale
    dqs.append(mixed_einsum("bhts,bhse->bhte", dS, k[:, :, :j], dtype))
    dk_ts.append(mixed_einsum("bhet,bhts->bhes", q_t[..., i:j], dS, dtype))
  key_blocks = lambda pieces: jnp.swapaxes(jnp.concatenate(
      [sum((p[..., i:j] for p in pieces[m + 1:]), pieces[m][..., i:j])
       for m, (i, j) in enumerate(blocks)], axis=3), 2, 3)
  return (jnp.concatenate(dqs, axis=2).astype(q.dtype), key_blocks(dk_ts).astype(k.dtype),
          key_blocks(dv_ts).astype(v.dtype))


_blocked_attention.defvjp(_blocked_attention_fwd, _blocked_attention_bwd)


def blocked_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, compute_dtype=None,
                             block: int = QUERY_BLOCK) -> jax.Array:
  """Causal attention z = softmax(q kᵀ/√E, masked) v for q, k, v [B, H, T, E] → [B, H, T, E],
  in blocks of ``block`` queries: block i (queries i·b … (i+1)·b − 1) only meets keys
  0 … (i+1)·b − 1, so the fully masked blocks above the diagonal are never computed (with 4
  blocks, 10 of 16).  Its backward is written by hand (``_blocked_attention_bwd``).  The same
  numbers as the explicit pattern, without returning patterns (training only)."""
  return _blocked_attention(q, k, v, block, compute_dtype)


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array, compute_dtype) -> jax.Array:
  """``einsum`` with both operands cast to ``compute_dtype`` (None: as they are) and a float32
  result: the products run in the compute dtype, the accumulation and the output in float32.
  So do the backward's two products (``_mixed_einsum``)."""
  if compute_dtype is None:
    return jnp.einsum(spec, a, b)
  return _mixed_einsum(spec, jnp.dtype(compute_dtype), a, b)


def _transposed_specs(spec: str):
  """For ``"a,b->c"`` with every index in at least two of the three terms (no repeats, no index
  summed within one operand; batch indices are in all three): the specs of
  d a = einsum("c,b->a", g, b) and d b = einsum("a,c->b", a, g)."""
  inputs, out = spec.replace(" ", "").split("->")
  lhs, rhs = inputs.split(",")
  for term in (lhs, rhs, out):
    if len(set(term)) != len(term) or any((i in lhs) + (i in rhs) + (i in out) < 2 for i in term):
      raise ValueError(f"einsum {spec!r}: every index must appear in two or three terms")
  return f"{out},{rhs}->{lhs}", f"{lhs},{out}->{rhs}"


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _mixed_einsum(spec, dtype, a, b):
  return _mixed_einsum_fwd(spec, dtype, a, b)[0]


def _mixed_einsum_fwd(spec, dtype, a, b):
  a_c, b_c = a.astype(dtype), b.astype(dtype)
  out = jnp.einsum(spec, a_c, b_c, preferred_element_type=jnp.float32)
  return out, (a_c, b_c, jnp.zeros((), a.dtype), jnp.zeros((), b.dtype))  # + input dtypes


def _mixed_einsum_bwd(spec, dtype, residuals, g):
  # Autodiff would multiply the float32 cotangent by the compute-dtype operand, a mixed product
  # that XLA's CPU backend runs in float32; the cotangent is cast instead, as the forward's inputs.
  a_c, b_c, a_like, b_like = residuals
  spec_a, spec_b = _transposed_specs(spec)
  g_c = g.astype(dtype)
  return (jnp.einsum(spec_a, g_c, b_c, preferred_element_type=jnp.float32).astype(a_like.dtype),
          jnp.einsum(spec_b, a_c, g_c, preferred_element_type=jnp.float32).astype(b_like.dtype))


_mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)


def largest_divisor_at_most(n: int, limit: int) -> int:
  """The largest divisor of ``n`` that is ≤ ``limit`` (at least 1): how to cut n rows into equal
  chunks no bigger than a budget."""
  return max(c for c in range(1, max(1, min(n, limit)) + 1) if n % c == 0)


def _cast(a: jax.Array, dtype) -> jax.Array:
  return a if dtype is None else a.astype(dtype)


def _contract(a: jax.Array, b: jax.Array, a_axis: int, b_axis: int) -> jax.Array:
  """Σ_k a[…k…] b[…k…] over one axis of each 2-D operand, float32 result, written as one
  ``dot_general`` with no transpose op: XLA's CPU backend runs a bf16 product in bf16 only when
  no transpose is folded into it (``d · W_Uᵀ`` through ``W.T`` is upcast to float32 and runs
  several times slower; docs/SPEED.md)."""
  return jax.lax.dot_general(a, b, (((a_axis,), (b_axis,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _transposed(a: jax.Array, dtype) -> jax.Array:
  """aᵀ [E, T] of a 2-D ``a`` [T, E] in ``dtype``, stored row-major, computed as the product
  eye[E, E] · aᵀ (exact: one 1 per sum).  A transpose op would not do: XLA folds it into the
  product that consumes it, which then contracts an operand over its rows, a form XLA's CPU
  backend runs only in float32."""
  eye = jnp.eye(a.shape[1], dtype=dtype)
  return _contract(eye, a.astype(dtype), 1, 1).astype(dtype)


def _logits(xc: jax.Array, W_U: jax.Array, dtype) -> jax.Array:
  """One chunk's logits in float32 (products in ``dtype`` when given, W_U already cast)."""
  return jnp.dot(_cast(xc, dtype), W_U, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _chunked_ce(x, W_U, targets, chunk, dtype):
  return _chunked_ce_fwd(x, W_U, targets, chunk, dtype)[0]


def _chunked_ce_fwd(x, W_U, targets, chunk, dtype):
  W = _cast(W_U, dtype)
  if chunk == x.shape[0]:  # one chunk: keep exp(logits − max) and its row sums for the backward
    logits = _logits(x, W, dtype)
    top = logits.max(-1, keepdims=True)
    e = jnp.exp(logits - top)
    total = e.sum(-1)
    picked = jnp.take_along_axis(logits, targets[:, None], -1)[:, 0]
    return jnp.log(total) + top[:, 0] - picked, (x, W_U, targets, e, total)

  def body(_, xt):
    xc, tc = xt
    logits = _logits(xc, W, dtype)
    return None, jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tc[:, None], -1)[:, 0]
  _, losses = jax.lax.scan(body, None, (x.reshape(-1, chunk, x.shape[-1]),
                                        targets.reshape(-1, chunk)))
  return losses.reshape(-1), (x, W_U, targets, None, None)


def _chunked_ce_bwd(chunk, dtype, residuals, g):
  """d loss/d logits = softmax − onehot (times the incoming g per row); then dx = d W_Uᵀ and
  dW_U = xᵀ d.  Several chunks: each chunk's logits are recomputed."""
  x, W_U, targets, e, total = residuals
  W = _cast(W_U, dtype)

  def grads(xc, tc, gc, p, row_scale=1.0):  # softmax = p · row_scale
    d = _cast(p * (gc * row_scale)[:, None]
              - jax.nn.one_hot(tc, W_U.shape[1], dtype=p.dtype) * gc[:, None], dtype)
    # dW_U = xᵀ d contracts over rows; XLA's CPU backend runs that form with bf16 operands only
    # on its float32 path, so there xᵀ is formed first (docs/SPEED.md).  The
    # branch follows the platform lowered for (not the host's), so a step exported for an
    # accelerator from a CPU host holds the accelerator's form.
    rows = lambda xc, d: _contract(_cast(xc, dtype), d, 0, 0)
    if dtype is not None:
      dW = jax.lax.platform_dependent(
          xc, d, cpu=lambda xc, d: _contract(_transposed(xc, dtype), d, 1, 0), default=rows)
    else:
      dW = rows(xc, d)
    return dW, _contract(d, W, 1, 1).astype(x.dtype)

  if e is not None:
    dW, dx = grads(x, targets, g, e, 1.0 / total)
    return dx, dW.astype(W_U.dtype), None

  def body(dW, xtg):
    xc, tc, gc = xtg
    dWc, dxc = grads(xc, tc, gc, jax.nn.softmax(_logits(xc, W, dtype), -1))
    return dW + dWc, dxc
  dW, dx = jax.lax.scan(body, jnp.zeros(W_U.shape, jnp.float32),
                        (x.reshape(-1, chunk, x.shape[-1]), targets.reshape(-1, chunk),
                         g.reshape(-1, chunk)))
  return dx.reshape(x.shape), dW.astype(W_U.dtype), None


_chunked_ce.defvjp(_chunked_ce_fwd, _chunked_ce_bwd)


def unembed_cross_entropy(x: jax.Array, W_U: jax.Array, targets: jax.Array,
                          max_block_elements: int = 1 << 20, *, compute_dtype=None) -> jax.Array:
  """Per-position −log softmax(x W_U)[target] without ever holding all logits: [B, T].

  Rows go through in chunks of at most ``max_block_elements`` logits and the backward pass
  recomputes each chunk's logits, so the [tokens, vocab] matrix never exists (it would not fit
  at paper scale, and on CPU cache-sized blocks are several times faster).  When all rows fit in
  one chunk (a CPU training slice), the forward keeps exp(logits − max) and its row sums for the
  backward instead, which then is one fused pass with no recomputation (docs/SPEED.md).
  With a ``compute_dtype`` the products x W_U (and the backward's two products) take operands of
  that dtype; logits, log-sum-exp, softmax, the loss and the gradient sums are float32.
  """
  shape = targets.shape
  x = x.reshape(-1, x.shape[-1])
  chunk = largest_divisor_at_most(x.shape[0], max_block_elements // W_U.shape[1])
  dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
  return _chunked_ce(x, W_U, targets.reshape(-1), chunk, dtype).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Analysis in bounded memory (forward only)

# The most bytes that the largest array of one chunk of an analysis may hold: chunks of windows,
# heads or vocabulary rows are sized from it, so every figure stays within a few of these at any
# model shape (docs/SPEED.md, "Figures in bounded memory").
CHUNK_BYTES = 1 << 28  # 256 MiB


def items_per_chunk(bytes_per_item: int, total: int, budget: Optional[int] = None) -> int:
  """How many items (windows, heads, rows) one chunk takes: ⌊budget / bytes per item⌋, at least
  1 and at most ``total``; ``budget`` defaults to ``CHUNK_BYTES`` as it is at the call."""
  budget = CHUNK_BYTES if budget is None else budget
  return int(max(1, min(int(total), int(budget) // max(1, int(bytes_per_item)))))


# On CPU, one step of a pass over windows works on about this many bytes, so that it stays in the
# caches (2-core AMD EPYC, Zen 4, cpu 2L model: the 512-window ICL pass 1.42 s at 57 windows per
# step, 0.58 s at 4, 0.73 s at 5), but on no fewer than CPU_MIN_WINDOWS windows where memory
# allows: large windows want company (attn-only-2l shape, 8 windows: 1.70 s one at a time,
# 1.14 s two, 0.73 s four; docs/SPEED.md, "Cache-sized window steps on CPU").
CPU_WINDOW_BYTES = 20 << 20  # 20 MiB: 4 windows of that ICL pass
CPU_MIN_WINDOWS = 4


def windows_per_chunk(bytes_per_window: int, total: int) -> int:
  """Windows per step of a pass over ``total`` windows: as many as fit ``CHUNK_BYTES``
  (``items_per_chunk``, the memory bound) and, on CPU, no more than fit ``CPU_WINDOW_BYTES`` or
  ``CPU_MIN_WINDOWS``, whichever is more."""
  most = items_per_chunk(bytes_per_window, total)
  if jax.default_backend() != "cpu":
    return most
  cached = items_per_chunk(bytes_per_window, total, CPU_WINDOW_BYTES)
  return min(most, max(cached, CPU_MIN_WINDOWS))


def map_in_chunks(fn, xs, chunk: int):
  """``fn(*batch)`` over the leading axis of the arrays ``xs`` (a tuple), ``chunk`` items per
  call: ``jax.lax.map`` over [n / chunk, chunk, ...], so only one chunk's intermediates exist at
  once (``fn`` sees a batch, unlike ``lax.map``'s ``batch_size``, which vmaps it).  The axis is
  padded to a multiple of ``chunk`` with copies of the first item, and the padding dropped from
  every output (outputs keep the items on their leading axis)."""
  n = xs[0].shape[0]
  pad = (-n) % chunk
  if pad:
    xs = tuple(jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,) + x.shape[1:])]) for x in xs)
  split = lambda x: x.reshape((-1, chunk) + x.shape[1:])
  out = jax.lax.map(lambda args: fn(*args), tuple(split(x) for x in xs))
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)


# Rows of logits that one step of the analysis unembeddings takes at most: more rows only push
# the exponentials out of cache (2-core Xeon, vocab 48,262: 256 rows 3.5× faster than 4,096 for
# the log-sum-exp; docs/SPEED.md, "Figures in bounded memory").
ROWS_PER_STEP = 256


def row_losses(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """−log softmax(logits)[target] for logits [rows, vocab], targets [rows] (forward only).

  log Σ_v exp(l_v) = m + log Σ_v exp(l_v − m), m the row's maximum; the sum over the vocabulary
  is a product with a vector of ones, which XLA on CPU vectorises where it does not vectorise an
  exp-and-add reduction (3.5× faster there; the same float32 sum in another order)."""
  m = logits.max(-1)
  picked = jnp.take_along_axis(logits, targets[:, None], -1)[:, 0]
  ones = jnp.ones((logits.shape[-1],), logits.dtype)
  return m + jnp.log(jnp.exp(logits - m[:, None]) @ ones) - picked


def _analysis_rows(bytes_per_row: int, rows: int, budget: Optional[int]) -> int:
  return min(ROWS_PER_STEP, items_per_chunk(bytes_per_row, rows, budget))


def unembed_losses(x: jax.Array, W_U: jax.Array, targets: jax.Array, b_U=None,
                   budget: Optional[int] = None) -> jax.Array:
  """−log softmax(x W_U + b_U)[target] per row of x [..., d_model] → [...] (forward only).

  Rows go through in chunks (at most ``ROWS_PER_STEP``) sized so that a chunk's logits and
  their exponentials (2 · vocab float32 per row) fit ``budget`` (default ``CHUNK_BYTES``): the
  [rows, vocab] logits never exist at once.  Chunks of many rows: per-row loops run the product
  far slower on CPU (docs/SPEED.md)."""
  shape = targets.shape
  x, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)

  def chunk_losses(xr, t):
    logits = xr @ W_U if b_U is None else xr @ W_U + b_U
    return row_losses(logits, t)

  chunk = _analysis_rows(2 * 4 * W_U.shape[1], x.shape[0], budget)
  return map_in_chunks(chunk_losses, (x, targets), chunk).reshape(shape)


def low_rank_update_losses(x: jax.Array, W_U: jax.Array, targets: jax.Array, z: jax.Array,
                           M: jax.Array, b_U=None, budget: Optional[int] = None) -> jax.Array:
  """−log softmax(x W_U + b_U + z_k M_k)[target] per row of x [..., d_model], for each of K
  low-rank updates (z [K, ..., r], M [K, r, vocab]) → [K, ...] (forward only).

  The shared logits x W_U + b_U are computed once per row and each update adds only its rank-r
  product, so K losses cost (d_model + K·r)·vocab multiply-adds per row instead of K·d_model·vocab
  (``paths.term_importance``: one head's output is rank d_head).  Rows go in chunks (at most
  ``ROWS_PER_STEP``) whose shared logits, one update's logits and their exponentials
  (3 · vocab float32 per row) fit ``budget``; the updates go one at a time.
  """
  shape, K = targets.shape, z.shape[0]
  x, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
  z = jnp.moveaxis(z.reshape(K, -1, z.shape[-1]), 0, 1)  # [rows, K, r]

  def chunk_losses(xr, t, zr):
    shared = xr @ W_U if b_U is None else xr @ W_U + b_U
    update = lambda zk_Mk: row_losses(shared + zk_Mk[0] @ zk_Mk[1], t)
    return jax.lax.map(update, (jnp.moveaxis(zr, 1, 0), M)).T  # [chunk, K]

  chunk = _analysis_rows(3 * 4 * W_U.shape[1], x.shape[0], budget)
  out = map_in_chunks(chunk_losses, (x, targets, z), chunk)  # [rows, K]
  return out.T.reshape((K,) + shape)
