"""Attention-only transformer: a pure forward pass over the stacked weights, and a Flax NNX module.

The forward pass is the one place where the model's maths lives; the NNX module only owns the
parameters.  Per layer l and head h (row vectors, PAPER.md §1):

    q = x_qk W_Q,  k = x_qk W_K,  v = x W_V          x_qk = x + W_pos ("shortformer") or x
    A = softmax(causal(q kᵀ / sqrt(d_head)))          [dest, src]
    head output = A v W_O                             added to the residual stream x

and logits = x W_U after the last layer.  Biases (b_Q, b_K, b_V, b_O, b_U) are added where
present, and with a norm every read of the stream is normalised first (see ``residual_stream``).
On request the forward also returns every layer's attention patterns and every head's output,
and it accepts overrides: patterns to use instead of computing them, and per-head outputs to add
to the residual stream instead of the computed ones
(the computed ones are still returned).  Path expansion and term importance are built on these.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from reproduce.weights import ModelConfig, Weights, init_weights

_MASKED = -1e30  # finite, so a fully masked row would give a uniform pattern instead of NaN


def layer_norm(x: jax.Array, gain: jax.Array, eps: float = 1e-5, bias=None) -> jax.Array:
  """(x − mean) / sqrt(var + eps) · gain (+ bias) over the last axis."""
  x = x - x.mean(-1, keepdims=True)
  y = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + eps) * gain
  return y if bias is None else y + bias


def norm_scale(x: jax.Array, eps: float) -> jax.Array:
  """The per-token scale sqrt(var(x) + eps) that a layer norm divides by, [..., 1]."""
  x = x - x.mean(-1, keepdims=True)
  return jnp.sqrt((x * x).mean(-1, keepdims=True) + eps)


def _normalise(cfg: ModelConfig, x, gain, bias, scale=None):
  """The model's norm of ``x`` ("none": x itself); ``scale`` [..., 1] replaces sqrt(var + eps)."""
  if cfg.norm == "none":
    return x
  centred = x - x.mean(-1, keepdims=True)
  y = centred / (norm_scale(x, cfg.eps) if scale is None else scale)
  if cfg.norm == "ln":
    y = y * gain
    if bias is not None:
      y = y + bias
  return y


def attention_pattern(q: jax.Array, k: jax.Array, compute_dtype=None) -> jax.Array:
  """Causal softmax(q kᵀ / sqrt(d_head)) for q, k [B, H, T, d_head] → [B, H, T(dest), T(src)].

  The product q kᵀ may run in ``compute_dtype``; the scores and the softmax are float32."""
  T = q.shape[2]
  scores = _einsum("bhte,bhse->bhts", q, k, compute_dtype) / jnp.sqrt(jnp.float32(q.shape[-1]))
  causal = jnp.tril(jnp.ones((T, T), bool))
  return jax.nn.softmax(jnp.where(causal, scores, _MASKED), axis=-1)


ATTENTION_IMPLEMENTATIONS = ("explicit", "blocked", "xla", "cudnn")
QUERY_BLOCK = 64  # queries per block of ``blocked_causal_attention`` (experiments/SPEED.md)


def _block_pattern(q, k, offset, dtype):
  """Causal softmax of queries ``offset … offset + len(q) − 1`` against keys
  ``0 … len(k) − 1`` (the prefix they may see)."""
  T, S = q.shape[2], k.shape[2]
  scores = _einsum("bhte,bhse->bhts", q, k, dtype) / jnp.sqrt(jnp.float32(q.shape[-1]))
  visible = jnp.arange(S)[None, :] <= jnp.arange(offset, offset + T)[:, None]
  return jax.nn.softmax(jnp.where(visible, scores, _MASKED), axis=-1)


def _query_blocks(T: int, block: int):
  """[(start, end)] of equal query blocks of at most ``block`` rows covering 0 … T − 1."""
  b = largest_divisor_at_most(T, block)
  return [(i, i + b) for i in range(0, T, b)]


def _blocked_attention_fwd(q, k, v, block, dtype):
  """Block (i, j) of queries i … j − 1 meets the key prefix 0 … j − 1: z_ij = A_ij v_prefix."""
  patterns, zs = [], []
  for i, j in _query_blocks(q.shape[2], block):
    A = _block_pattern(q[:, :, i:j], k[:, :, :j], i, dtype)
    patterns.append(A)
    zs.append(_einsum("bhts,bhse->bhte", A, v[:, :, :j], dtype))
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
  (experiments/SPEED.md).  Each block's pieces cover its key prefix; key block m of dk (dv) is
  the sum of the pieces of the query blocks at or after m, written once (no zero padding)."""
  q, k, v, patterns, z = residuals
  scale = jnp.sqrt(jnp.float32(q.shape[-1]))
  blocks = _query_blocks(q.shape[2], block)
  dz_t, q_t = jnp.swapaxes(dz, 2, 3), jnp.swapaxes(q, 2, 3)  # [B, H, E, T]
  dqs, dk_ts, dv_ts = [], [], []
  for (i, j), A in zip(blocks, patterns):
    dz_i = dz[:, :, i:j]
    dv_ts.append(_einsum("bhet,bhts->bhes", dz_t[..., i:j], A, dtype))
    dA = _einsum("bhte,bhse->bhts", dz_i, v[:, :, :j], dtype)
    D = (dz_i * z[:, :, i:j]).sum(-1, keepdims=True)
    dS = A * (dA - D) / scale
    dqs.append(_einsum("bhts,bhse->bhte", dS, k[:, :, :j], dtype))
    dk_ts.append(_einsum("bhet,bhts->bhes", q_t[..., i:j], dS, dtype))
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


def _einsum(spec: str, a: jax.Array, b: jax.Array, compute_dtype) -> jax.Array:
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


def _layer(a, index):
  return None if a is None else a[index]


def residual_stream(cfg: ModelConfig, w: Weights, tokens: jax.Array, patterns=None,
                    head_outputs=None, keep_patterns: bool = False, keep_head_outputs: bool = False,
                    *, norm_scales=None, keep_norm_scales: bool = False, compute_dtype=None,
                    attention: str = "explicit"):
  """Runs every layer; returns (final stream [B, T, D] before any final norm, patterns, outputs),
  plus the list of norm scales as a fourth item when ``keep_norm_scales``.

  ``patterns`` / ``outputs`` are per-layer lists, filled only when asked for (or overridden).
  Per layer l (row vectors, ``N`` the model's norm, b_* zero when absent):

      x_qk = N(x + W_pos) (shortformer, pos_after_norm=False) | N(x) + W_pos (shortformer,
             pos_after_norm=True) | N(x) (standard);   x_v = N(x)
      q = x_qk W_Q + b_Q,  k = x_qk W_K + b_K,  v = x_v W_V + b_V
      x ← x + Σ_h A_h v_h W_O^h + b_O        (b_O is not part of any head's output)

  ``norm_scales`` (per-layer list or [L, B, T, 1]) replaces the per-token sqrt(var + eps) by
  which N divides the residual stream x (frozen scales, as for term importance); the scale of
  N(x + W_pos) is never frozen.  ``keep_norm_scales`` returns the scales used ([B, T, 1] each).

  Training options (analysis keeps the defaults: float32, explicit patterns):
    compute_dtype: None (float32 throughout) or e.g. ``jnp.bfloat16``: every matmul and the
      attention take that dtype's operands, while the residual stream, the softmax and every
      accumulation stay float32.
    attention: "explicit" builds each pattern as above; "blocked" computes the same numbers in
      causal query blocks with a hand-written backward (``blocked_causal_attention``); "xla" /
      "cudnn" call ``jax.nn.dot_product_attention`` with that implementation (same maths,
      patterns never returned; cuDNN's flash kernel never materialises them).
  """
  if attention not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
  if attention != "explicit" and (patterns is not None or keep_patterns or keep_head_outputs
                                  or head_outputs is not None):
    raise ValueError("pattern/head-output overrides and returns need attention='explicit'")
  dt = compute_dtype
  B, T = tokens.shape
  x = w.W_E[tokens]  # [B, T, D]
  pos = w.W_pos[:T]
  if cfg.pos == "standard":
    x = x + pos
  per_head = keep_head_outputs or head_outputs is not None
  all_patterns, all_outputs, all_scales = [], [], []
  add_bias = lambda a, b, l: a if b is None else a + b[l][None, :, None, :]  # a [B, H, T, E]
  for l in range(cfg.n_layers):
    gain, bias = _layer(w.ln_gain, l), _layer(w.ln_bias, l)
    scale = None
    if cfg.norm != "none":
      scale = norm_scale(x, cfg.eps) if norm_scales is None else norm_scales[l]
      all_scales.append(scale)
    v_in = _normalise(cfg, x, gain, bias, scale)
    if cfg.pos != "shortformer":
      qk_in = v_in
    elif cfg.positions_after_norm:
      qk_in = v_in + pos
    else:
      qk_in = _normalise(cfg, x + pos, gain, bias)
    if attention in ("xla", "cudnn"):
      q, k, v = (_einsum("btd,hde->bthe", a, W[l], dt) + (0.0 if b is None else b[l])
                 for a, W, b in ((qk_in, w.W_Q, w.b_Q), (qk_in, w.W_K, w.b_K),
                                 (v_in, w.W_V, w.b_V)))
      cast = (lambda a: a.astype(dt)) if dt is not None else (lambda a: a)
      z = jax.nn.dot_product_attention(cast(q), cast(k), cast(v), is_causal=True,
                                       implementation=attention)  # [B, T, H, E]
      x = x + _einsum("bthe,hed->btd", z, w.W_O[l], dt)
      if w.b_O is not None:
        x = x + w.b_O[l]
      continue
    if patterns is None:
      q = add_bias(_einsum("btd,hde->bhte", qk_in, w.W_Q[l], dt), w.b_Q, l)
      k = add_bias(_einsum("btd,hde->bhte", qk_in, w.W_K[l], dt), w.b_K, l)
    v = add_bias(_einsum("btd,hde->bhte", v_in, w.W_V[l], dt), w.b_V, l)
    if attention == "blocked":
      z = blocked_causal_attention(q, k, v, dt)
    else:
      A = attention_pattern(q, k, dt) if patterns is None else patterns[l]
      z = _einsum("bhts,bhse->bhte", A, v, dt)
    if per_head:
      out = jnp.einsum("bhte,hed->bhtd", z, w.W_O[l])  # each head's write, [B, H, T, D]
      x = x + (out if head_outputs is None else head_outputs[l]).sum(1)
      if keep_head_outputs:
        all_outputs.append(out)
    else:
      x = x + _einsum("bhte,hed->btd", z, w.W_O[l], dt)
    if w.b_O is not None:
      x = x + w.b_O[l]
    if keep_patterns:
      all_patterns.append(A)
  if keep_norm_scales:
    if cfg.norm != "none":
      all_scales.append(norm_scale(x, cfg.eps) if norm_scales is None
                        else norm_scales[cfg.n_layers])
    return x, all_patterns, all_outputs, all_scales
  return x, all_patterns, all_outputs


def unembed_input(cfg: ModelConfig, w: Weights, x: jax.Array, scale=None) -> jax.Array:
  """What W_U reads: the final stream, after the final norm when there is one (``scale``
  replaces its sqrt(var + eps))."""
  return _normalise(cfg, x, w.ln_final, w.ln_final_bias, scale)


def unembed(cfg: ModelConfig, w: Weights, x: jax.Array, scale=None) -> jax.Array:
  """Logits N(x) W_U + b_U of the final stream x."""
  logits = unembed_input(cfg, w, x, scale) @ w.W_U
  return logits if w.b_U is None else logits + w.b_U


@functools.partial(jax.jit, static_argnames=("cfg", "return_patterns", "return_head_outputs",
                                             "return_residual", "return_norm_scales"))
def _forward(cfg: ModelConfig, w: Weights, tokens: jax.Array, patterns: Optional[jax.Array],
             head_outputs: Optional[jax.Array], norm_scales: Optional[jax.Array],
             return_patterns: bool, return_head_outputs: bool, return_residual: bool,
             return_norm_scales: bool):
  B, T = tokens.shape
  x, all_patterns, all_outputs, scales = residual_stream(
      cfg, w, tokens, patterns, head_outputs, return_patterns, return_head_outputs,
      norm_scales=norm_scales, keep_norm_scales=True)
  logits = unembed(cfg, w, x, None if norm_scales is None else norm_scales[cfg.n_layers])
  extras = {}
  if return_norm_scales:
    extras["norm_scales"] = (jnp.stack(scales) if scales
                             else jnp.ones((cfg.n_layers + 1, B, T, 1), jnp.float32))
  H, D = cfg.n_heads, cfg.d_model
  if return_patterns:
    extras["patterns"] = (jnp.stack(all_patterns) if all_patterns
                          else jnp.zeros((0, B, H, T, T), jnp.float32))
  if return_head_outputs:
    extras["head_outputs"] = (jnp.stack(all_outputs) if all_outputs
                              else jnp.zeros((0, B, H, T, D), jnp.float32))
  if return_residual:
    extras["residual"] = x
  return logits, extras


def forward(config, weights: Weights, tokens, *, patterns=None, head_outputs=None,
            norm_scales=None, return_patterns: bool = False, return_head_outputs: bool = False,
            return_residual: bool = False, return_norm_scales: bool = False):
  """Runs the model; returns ``(logits [B, T, vocab], extras)``.

  Args:
    config: a ModelConfig, or an experiment config with a ``model`` field.
    weights: the stacked weights (see ``reproduce.weights``).
    tokens: int [B, T] (or [T], treated as a batch of one), T ≤ n_ctx.
    patterns: optional [L, B, H, T, T]; used instead of computing the attention patterns.
    head_outputs: optional [L, B, H, T, d_model]; added to the residual stream instead of the
      computed head outputs (which are still what ``extras["head_outputs"]`` returns).
    norm_scales: optional [L + 1, B, T, 1]; replaces the per-token sqrt(var + eps) of every
      norm of the residual stream (entry L: the final norm), freezing it.  Ignored by
      ``norm="none"`` models.
    return_patterns / return_head_outputs / return_residual / return_norm_scales: what
      ``extras`` holds (``"patterns"`` [L, B, H, T, T], ``"head_outputs"`` [L, B, H, T, D]
      (without b_O), ``"residual"`` [B, T, D], the final residual stream before any final
      norm, ``"norm_scales"`` [L + 1, B, T, 1], all ones for ``norm="none"``).
  """
  cfg = ModelConfig.from_any(config)
  tokens = jnp.asarray(tokens)
  if tokens.ndim == 1:
    tokens = tokens[None]
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [batch, time], got shape {tokens.shape}")
  if tokens.shape[1] > cfg.n_ctx:
    raise ValueError(f"sequence length {tokens.shape[1]} exceeds n_ctx={cfg.n_ctx}")
  L, (B, T), H = cfg.n_layers, tokens.shape, cfg.n_heads
  if patterns is not None and tuple(patterns.shape) != (L, B, H, T, T):
    raise ValueError(f"patterns must have shape {(L, B, H, T, T)}, got {tuple(patterns.shape)}")
  if head_outputs is not None and tuple(head_outputs.shape) != (L, B, H, T, cfg.d_model):
    raise ValueError(f"head_outputs must have shape {(L, B, H, T, cfg.d_model)}, "
                     f"got {tuple(head_outputs.shape)}")
  if norm_scales is not None:
    norm_scales = jnp.asarray(norm_scales)
    if tuple(norm_scales.shape) != (L + 1, B, T, 1):
      raise ValueError(f"norm_scales must have shape {(L + 1, B, T, 1)}, "
                       f"got {tuple(norm_scales.shape)}")
    if cfg.norm == "none":
      norm_scales = None
  return _forward(cfg, weights, tokens, patterns, head_outputs, norm_scales, return_patterns,
                  return_head_outputs, return_residual, return_norm_scales)


def token_losses(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Cross-entropy −log softmax(logits)[target] per position, [B, T]."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def largest_divisor_at_most(n: int, limit: int) -> int:
  """The largest divisor of ``n`` that is ≤ ``limit`` (at least 1): how to cut n rows into equal
  chunks no bigger than a budget."""
  return max(c for c in range(1, max(1, min(n, limit)) + 1) if n % c == 0)


def _cast(a: jax.Array, dtype) -> jax.Array:
  return a if dtype is None else a.astype(dtype)


def _contract(a: jax.Array, b: jax.Array, a_axis: int, b_axis: int) -> jax.Array:
  """Σ_k a[…k…] b[…k…] over one axis of each 2-D operand, float32 result, written as one
  ``dot_general`` with no transpose op: XLA's CPU backend runs a bf16 product in bf16 only when
  no transpose is folded into it (``d · W_Uᵀ`` through ``W.T`` ran 6× slower, upcast to
  float32; experiments/SPEED.md)."""
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
    # on its float32 path, so there xᵀ is formed first (1.3× the anchor step, SPEED.md).
    if dtype is not None and jax.default_backend() == "cpu":
      dW = _contract(_transposed(xc, dtype), d, 1, 0)
    else:
      dW = _contract(_cast(xc, dtype), d, 0, 0)
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
  backward instead (1.05× the anchor step, experiments/SPEED.md).  With a
  ``compute_dtype`` the products x W_U (and the backward's two products) take operands of that
  dtype; logits, log-sum-exp, softmax, the loss and the gradient sums are float32.
  """
  shape = targets.shape
  x = x.reshape(-1, x.shape[-1])
  chunk = largest_divisor_at_most(x.shape[0], max_block_elements // W_U.shape[1])
  dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
  return _chunked_ce(x, W_U, targets.reshape(-1), chunk, dtype).reshape(shape)


def mean_loss(cfg: ModelConfig, w: Weights, inputs: jax.Array, targets: jax.Array,
              max_block_elements: int = 1 << 20, *, compute_dtype=None,
              attention: str = "explicit") -> jax.Array:
  """Mean next-token cross-entropy of the model on a batch (the training objective), float32;
  ``compute_dtype`` and ``attention`` as in ``residual_stream``."""
  dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
  x, _, _ = residual_stream(cfg, w, inputs, compute_dtype=dtype, attention=attention)
  return unembed_cross_entropy(unembed_input(cfg, w, x), w.W_U, targets, max_block_elements,
                               compute_dtype=dtype).mean()


class FrozenPositions(nnx.Variable):
  """Fixed (sinusoidal) positional embedding: a model variable that the optimiser never updates."""


class AttentionOnlyTransformer(nnx.Module):
  """Flax NNX module owning the stacked weights; calling it runs ``forward``."""

  def __init__(self, config, *, rngs: nnx.Rngs, init_std: float = 0.02,
               qk_init_std: Optional[float] = None, pos_init: str = "learned",
               pos_scale: float = 1.0):
    self.config = ModelConfig.from_any(config)
    w = init_weights(self.config, rngs.params(), init_std=init_std, qk_init_std=qk_init_std,
                     pos_init=pos_init, pos_scale=pos_scale)
    self.W_E, self.W_Q, self.W_K = nnx.Param(w.W_E), nnx.Param(w.W_Q), nnx.Param(w.W_K)
    self.W_V, self.W_O, self.W_U = nnx.Param(w.W_V), nnx.Param(w.W_O), nnx.Param(w.W_U)
    self.W_pos = FrozenPositions(w.W_pos) if pos_init == "sinusoidal" else nnx.Param(w.W_pos)
    if self.config.norm == "ln":
      self.ln_gain, self.ln_final = nnx.Param(w.ln_gain), nnx.Param(w.ln_final)

  def weights(self) -> Weights:
    """The stacked weight pytree (the one view all circuit maths takes)."""
    get = lambda name: getattr(self, name)[...] if hasattr(self, name) else None
    return Weights(W_E=get("W_E"), W_pos=get("W_pos"), W_Q=get("W_Q"), W_K=get("W_K"),
                   W_V=get("W_V"), W_O=get("W_O"), W_U=get("W_U"), ln_gain=get("ln_gain"),
                   ln_final=get("ln_final"))

  def __call__(self, tokens, **kwargs):
    return forward(self.config, self.weights(), tokens, **kwargs)
