"""Attention-only transformer: a pure forward pass over the stacked weights, and a Flax NNX module.

The forward pass is the one place where the model's maths lives; the NNX module only owns the
parameters.  Per layer l and head h (row vectors, PAPER.md §1):

    q = x_qk W_Q,  k = x_qk W_K,  v = x W_V          x_qk = x + W_pos ("shortformer") or x
    A = softmax(causal(q kᵀ / sqrt(d_head)))          [dest, src]
    head output = A v W_O                             added to the residual stream x

and logits = x W_U after the last layer.  On request the forward also returns every layer's
attention patterns and every head's output, and it accepts overrides: patterns to use instead of
computing them, and per-head outputs to add to the residual stream instead of the computed ones
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


def layer_norm(x: jax.Array, gain: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(x − mean) / sqrt(var + eps) · gain over the last axis (no bias)."""
  x = x - x.mean(-1, keepdims=True)
  return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + eps) * gain


def attention_pattern(q: jax.Array, k: jax.Array, compute_dtype=None) -> jax.Array:
  """Causal softmax(q kᵀ / sqrt(d_head)) for q, k [B, H, T, d_head] → [B, H, T(dest), T(src)].

  The product q kᵀ may run in ``compute_dtype``; the scores and the softmax are float32."""
  T = q.shape[2]
  scores = _einsum("bhte,bhse->bhts", q, k, compute_dtype) / jnp.sqrt(jnp.float32(q.shape[-1]))
  causal = jnp.tril(jnp.ones((T, T), bool))
  return jax.nn.softmax(jnp.where(causal, scores, _MASKED), axis=-1)


ATTENTION_IMPLEMENTATIONS = ("explicit", "xla", "cudnn")


def _einsum(spec: str, a: jax.Array, b: jax.Array, compute_dtype) -> jax.Array:
  """``einsum`` with both operands cast to ``compute_dtype`` (None: as they are) and a float32
  result: the products run in the compute dtype, the accumulation and the output in float32."""
  if compute_dtype is None:
    return jnp.einsum(spec, a, b)
  return jnp.einsum(spec, a.astype(compute_dtype), b.astype(compute_dtype),
                    preferred_element_type=jnp.float32)


def residual_stream(cfg: ModelConfig, w: Weights, tokens: jax.Array, patterns=None,
                    head_outputs=None, keep_patterns: bool = False, keep_head_outputs: bool = False,
                    *, compute_dtype=None, attention: str = "explicit"):
  """Runs every layer; returns (final stream [B, T, D] before any final norm, patterns, outputs).

  ``patterns`` / ``outputs`` are per-layer lists, filled only when asked for (or overridden).

  Training options (analysis keeps the defaults: float32, explicit patterns):
    compute_dtype: None (float32 throughout) or e.g. ``jnp.bfloat16``: every matmul and the
      attention take that dtype's operands, while the residual stream, the softmax and every
      accumulation stay float32.
    attention: "explicit" builds each pattern as above; "xla" / "cudnn" call
      ``jax.nn.dot_product_attention`` with that implementation (same maths, patterns never
      returned; cuDNN's flash kernel never materialises them).
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
  all_patterns, all_outputs = [], []
  for l in range(cfg.n_layers):
    qk_in = x + pos if cfg.pos == "shortformer" else x
    v_in = x
    if cfg.norm == "ln":
      qk_in, v_in = layer_norm(qk_in, w.ln_gain[l]), layer_norm(v_in, w.ln_gain[l])
    if attention != "explicit":
      q, k, v = (_einsum("btd,hde->bthe", a, W[l], dt)
                 for a, W in ((qk_in, w.W_Q), (qk_in, w.W_K), (v_in, w.W_V)))
      cast = (lambda a: a.astype(dt)) if dt is not None else (lambda a: a)
      z = jax.nn.dot_product_attention(cast(q), cast(k), cast(v), is_causal=True,
                                       implementation=attention)  # [B, T, H, E]
      x = x + _einsum("bthe,hed->btd", z, w.W_O[l], dt)
      continue
    if patterns is None:
      q = _einsum("btd,hde->bhte", qk_in, w.W_Q[l], dt)
      k = _einsum("btd,hde->bhte", qk_in, w.W_K[l], dt)
      A = attention_pattern(q, k, dt)
    else:
      A = patterns[l]
    v = _einsum("btd,hde->bhte", v_in, w.W_V[l], dt)
    z = _einsum("bhts,bhse->bhte", A, v, dt)
    if per_head:
      out = jnp.einsum("bhte,hed->bhtd", z, w.W_O[l])  # each head's write, [B, H, T, D]
      x = x + (out if head_outputs is None else head_outputs[l]).sum(1)
      if keep_head_outputs:
        all_outputs.append(out)
    else:
      x = x + _einsum("bhte,hed->btd", z, w.W_O[l], dt)
    if keep_patterns:
      all_patterns.append(A)
  return x, all_patterns, all_outputs


def unembed_input(cfg: ModelConfig, w: Weights, x: jax.Array) -> jax.Array:
  """What W_U reads: the final stream, after the final layer norm when there is one."""
  return layer_norm(x, w.ln_final) if cfg.norm == "ln" else x


@functools.partial(jax.jit, static_argnames=("cfg", "return_patterns", "return_head_outputs",
                                             "return_residual"))
def _forward(cfg: ModelConfig, w: Weights, tokens: jax.Array, patterns: Optional[jax.Array],
             head_outputs: Optional[jax.Array], return_patterns: bool, return_head_outputs: bool,
             return_residual: bool):
  B, T = tokens.shape
  x, all_patterns, all_outputs = residual_stream(cfg, w, tokens, patterns, head_outputs,
                                                 return_patterns, return_head_outputs)
  logits = unembed_input(cfg, w, x) @ w.W_U
  extras = {}
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
            return_patterns: bool = False, return_head_outputs: bool = False,
            return_residual: bool = False):
  """Runs the model; returns ``(logits [B, T, vocab], extras)``.

  Args:
    config: a ModelConfig, or an experiment config with a ``model`` field.
    weights: the stacked weights (see ``reproduce.weights``).
    tokens: int [B, T] (or [T], treated as a batch of one), T ≤ n_ctx.
    patterns: optional [L, B, H, T, T]; used instead of computing the attention patterns.
    head_outputs: optional [L, B, H, T, d_model]; added to the residual stream instead of the
      computed head outputs (which are still what ``extras["head_outputs"]`` returns).
    return_patterns / return_head_outputs / return_residual: what ``extras`` holds
      (``"patterns"`` [L, B, H, T, T], ``"head_outputs"`` [L, B, H, T, D], ``"residual"``
      [B, T, D], the final residual stream before any final norm).
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
  return _forward(cfg, weights, tokens, patterns, head_outputs, return_patterns,
                  return_head_outputs, return_residual)


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


def _logits(xc: jax.Array, W_U: jax.Array, dtype) -> jax.Array:
  """One chunk's logits in float32 (products in ``dtype`` when given, W_U already cast)."""
  return jnp.dot(_cast(xc, dtype), W_U, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _chunked_ce(x, W_U, targets, chunk, dtype):
  return _chunked_ce_fwd(x, W_U, targets, chunk, dtype)[0]


def _chunked_ce_fwd(x, W_U, targets, chunk, dtype):
  W = _cast(W_U, dtype)

  def body(_, xt):
    xc, tc = xt
    logits = _logits(xc, W, dtype)
    return None, jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tc[:, None], -1)[:, 0]
  _, losses = jax.lax.scan(body, None, (x.reshape(-1, chunk, x.shape[-1]),
                                        targets.reshape(-1, chunk)))
  return losses.reshape(-1), (x, W_U, targets)


def _chunked_ce_bwd(chunk, dtype, residuals, g):
  x, W_U, targets = residuals
  W = _cast(W_U, dtype)

  def body(dW, xtg):  # recompute the chunk's logits; d loss/d logits = softmax − onehot
    xc, tc, gc = xtg
    logits = _logits(xc, W, dtype)
    d = (jax.nn.softmax(logits, -1) - jax.nn.one_hot(tc, W_U.shape[1], dtype=logits.dtype))
    d = _cast(d * gc[:, None], dtype)
    dW = dW + jnp.dot(_cast(xc, dtype).T, d, preferred_element_type=jnp.float32)
    return dW, jnp.dot(d, W.T, preferred_element_type=jnp.float32).astype(x.dtype)
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
  at paper scale, and on CPU cache-sized blocks are several times faster).  With a
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
