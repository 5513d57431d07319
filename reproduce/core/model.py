"""Attention-only transformer: a pure forward pass over the stacked weights, and a Flax NNX module.

The forward pass is the one place where the model's maths lives; the NNX module only owns the
parameters.  Per layer l and head h (row vectors, docs/METHODS.md, "Conventions"):

    q = x_qk W_Q,  k = x_qk W_K,  v = x W_V          x_qk = x + W_pos ("shortformer") or x
    A = softmax(causal(q kᵀ / sqrt(d_head)))          [dest, src]
    head output = A v W_O                             added to the residual stream x

and logits = x W_U after the last layer.  With ``ModelConfig.smear_keys`` (IH's smeared keys)
each head's keys are mixed with the previous position's, k'_j = σ(α) k_j + (1 − σ(α)) k_{j−1}
(j ≥ 1; k'_0 = k_0), one trainable α per head (``Weights.smear``, ``smear_key_vectors``).
Biases (b_Q, b_K, b_V, b_O, b_U) are added where present, and with a norm every read of the
stream is normalised first (see ``residual_stream``).
On request the forward also returns every layer's attention patterns and every head's output,
and it accepts overrides: patterns to use instead of computing them, and per-head outputs to add
to the residual stream instead of the computed ones
(the computed ones are still returned).  Path expansion and term importance are built on these.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from reproduce.core.kernels import (attention_pattern, attention_pattern_at,
                                    blocked_causal_attention,
                                    mixed_einsum, unembed_cross_entropy, unembed_losses)
from reproduce.core.weights import Weights

POSITION_MODES = ("shortformer", "standard")
NORM_MODES = ("none", "ln", "lnpre")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of an attention-only transformer (hashable: a static argument of jitted code)."""

  n_layers: int
  n_heads: int
  d_head: int
  d_model: int
  d_vocab: int
  n_ctx: int
  pos: str = "shortformer"  # where W_pos enters: "shortformer" (Q/K inputs only) or "standard"
  norm: str = "none"  # "none", "ln" (gain, optional bias) or "lnpre" (no gain/bias); see above
  pos_after_norm: bool = False  # shortformer + norm: LN(x) + W_pos (True, TL) or LN(x + W_pos)
  eps: float = 1e-5  # added to the variance inside the norm
  smear_keys: bool = False  # IH's smeared keys: k'_j = σ(α) k_j + (1 − σ(α)) k_{j−1} per head

  def __post_init__(self):
    for name in ("n_heads", "d_head", "d_model", "d_vocab", "n_ctx"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"model.{name} must be a positive integer, got {getattr(self, name)!r}")
    if int(self.n_layers) < 0:
      raise ValueError(f"model.n_layers must be >= 0, got {self.n_layers!r}")
    if self.pos not in POSITION_MODES:
      raise ValueError(f"model.pos must be one of {POSITION_MODES}, got {self.pos!r}")
    if self.norm not in NORM_MODES:
      raise ValueError(f"model.norm must be one of {NORM_MODES}, got {self.norm!r}")
    if not isinstance(self.pos_after_norm, bool):
      raise ValueError(f"model.pos_after_norm must be True or False, got {self.pos_after_norm!r}")
    if not float(self.eps) > 0:
      raise ValueError(f"model.eps must be positive, got {self.eps!r}")
    if not isinstance(self.smear_keys, bool):
      raise ValueError(f"model.smear_keys must be True or False, got {self.smear_keys!r}")

  @property
  def positions_after_norm(self) -> bool:
    """True when W_pos is added to the already normalised Q/K input (TransformerLens's order)."""
    return self.pos == "shortformer" and self.norm != "none" and self.pos_after_norm

  @classmethod
  def from_any(cls, config: Any) -> "ModelConfig":
    """Accepts a ModelConfig, a full experiment config (with a ``model`` field) or a mapping."""
    if isinstance(config, cls):
      return config
    if hasattr(config, "model"):
      config = config.model
    if hasattr(config, "to_dict"):
      config = config.to_dict()
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(config).items() if k in names})

  def to_dict(self) -> dict:
    """The fields as a dict; ``smear_keys`` only when on, so a vanilla model's record is the one
    it had before the option existed."""
    d = dataclasses.asdict(self)
    if not self.smear_keys:
      del d["smear_keys"]
    return d


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


ATTENTION_IMPLEMENTATIONS = ("explicit", "blocked", "xla", "cudnn")


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

  With positional readers (``Weights.W_Q_pos``, ``W_K_pos``: a folded LN(x) + W_pos model) the
  positions meet those instead: q = N(x) W_Q + b_Q + W_pos W_Q_pos, k = N(x) W_K + b_K +
  W_pos W_K_pos.

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
  x = w.W_E[tokens]  # [B, T, D]
  pos = w.W_pos[:tokens.shape[1]]
  if cfg.pos == "standard":
    x = x + pos
  all_patterns, all_outputs, all_scales = [], [], []
  for l in range(cfg.n_layers):
    scale = None
    if cfg.norm != "none":
      scale = norm_scale(x, cfg.eps) if norm_scales is None else norm_scales[l]
      all_scales.append(scale)
    qk_in, v_in = _layer_inputs(cfg, w, l, x, pos, scale)
    pos_qk = _positional_query_key(w, l, pos, compute_dtype)
    if attention in ("xla", "cudnn"):
      x = x + _fused_attention(w, l, qk_in, v_in, pos_qk, compute_dtype, attention)
    else:
      write, A, out = _attention(w, l, qk_in, v_in, pos_qk, compute_dtype, attention,
                                 _layer(patterns, l), _layer(head_outputs, l),
                                 keep_head_outputs or head_outputs is not None)
      x = x + write
      if keep_head_outputs:
        all_outputs.append(out)
      if keep_patterns:
        all_patterns.append(A)
    if w.b_O is not None:
      x = x + w.b_O[l]
  if keep_norm_scales:
    if cfg.norm != "none":
      all_scales.append(norm_scale(x, cfg.eps) if norm_scales is None
                        else norm_scales[cfg.n_layers])
    return x, all_patterns, all_outputs, all_scales
  return x, all_patterns, all_outputs


def _layer_inputs(cfg: ModelConfig, w: Weights, l: int, x, pos, scale):
  """(x_qk, x_v) of layer ``l``: what W_Q, W_K read and what W_V reads (see ``residual_stream``)."""
  gain, bias = _layer(w.ln_gain, l), _layer(w.ln_bias, l)
  v_in = _normalise(cfg, x, gain, bias, scale)
  if cfg.pos != "shortformer":
    return v_in, v_in
  if w.W_Q_pos is not None:  # positions meet their own readers (_positional_query_key)
    return v_in, v_in
  if cfg.positions_after_norm:
    return v_in + pos, v_in
  return _normalise(cfg, x + pos, gain, bias), v_in


def _positional_query_key(w: Weights, l: int, pos, dt):
  """(W_pos W_Q_pos, W_pos W_K_pos) of layer ``l``, [T, H, d_head] each, added to the queries
  and keys; None without positional readers (then W_pos is part of x_qk, if anywhere)."""
  if w.W_Q_pos is None:
    return None
  return tuple(mixed_einsum("td,hde->the", pos, W[l], dt) for W in (w.W_Q_pos, w.W_K_pos))


def _fused_attention(w: Weights, l: int, qk_in, v_in, pos_qk, dt, attention: str):
  """Layer ``l``'s heads through ``jax.nn.dot_product_attention`` ("xla" or "cudnn"), [B, T, D]
  without b_O: the same maths (q, k, v from ``_head_projections``), patterns never materialised
  by cuDNN's flash kernel."""
  q, k, v = _head_projections(w, l, qk_in, v_in, pos_qk, dt, heads_first=False)
  cast = (lambda a: a.astype(dt)) if dt is not None else (lambda a: a)
  z = jax.nn.dot_product_attention(cast(q), cast(k), cast(v), is_causal=True,
                                   implementation=attention)  # [B, T, H, E]
  return mixed_einsum("bthe,hed->btd", z, w.W_O[l], dt)


def smear_key_vectors(k: jax.Array, alpha: jax.Array, time_axis: int) -> jax.Array:
  """IH's smeared keys: k'_j = σ(α_h) k_j + (1 − σ(α_h)) k_{j−1} for j ≥ 1 and k'_0 = k_0, with
  σ the logistic function and ``alpha`` [H] one logit per head; ``k`` [B, H, T, E]
  (``time_axis`` 2) or [B, T, H, E] (``time_axis`` 1), float32."""
  s = jax.nn.sigmoid(alpha.astype(jnp.float32))
  s = s[:, None, None] if time_axis == 2 else s[:, None]  # broadcast over (T, E) or over E
  first = jax.lax.slice_in_dim(k, 0, 1, axis=time_axis)
  previous = jnp.concatenate([first, jax.lax.slice_in_dim(k, 0, k.shape[time_axis] - 1,
                                                          axis=time_axis)], axis=time_axis)
  smeared = s * k + (1 - s) * previous
  is_first = (jnp.arange(k.shape[time_axis]) == 0).reshape(
      (-1,) + (1,) * (k.ndim - time_axis - 1))
  return jnp.where(is_first, k, smeared)


def _head_projections(w: Weights, l: int, qk_in, v_in, pos_qk, dt, rows=None, need_qk=True,
                      heads_first: bool = True):
  """Layer ``l``'s (q, k, v), [B, H, T, d_head] each ([B, T, H, d_head] with ``heads_first``
  False): x W + b, with the positional terms ``pos_qk`` (``_positional_query_key``) added to q
  and k, and then, in a smeared-key model (``Weights.smear`` present), k smeared over
  positions (``smear_key_vectors``): the one place every attention path (explicit, blocked,
  fused; ``head_values``) takes its keys from.  ``rows``: the query positions to compute q at
  (all T when None); ``need_qk=False`` returns (None, None, v).  Training takes heads first;
  analysis, which keeps no gradient, the stream's own order (cheaper on CPU: no transposed
  copies)."""
  spec = "btd,hde->bhte" if heads_first else "btd,hde->bthe"
  add_bias = lambda a, b: a if b is None else a + (b[l][None, :, None, :] if heads_first else b[l])
  v_of = lambda: add_bias(mixed_einsum(spec, v_in, w.W_V[l], dt), w.b_V)
  if not need_qk:
    return None, None, v_of()
  pos_q, pos_k = (None, None) if pos_qk is None else pos_qk
  if rows is not None:
    qk_rows = qk_in[:, rows]
    pos_q = None if pos_q is None else pos_q[rows]
  else:
    qk_rows = qk_in
  add_positions = lambda a, p: a if p is None else a + (jnp.swapaxes(p, 0, 1) if heads_first else p)
  q = add_positions(add_bias(mixed_einsum(spec, qk_rows, w.W_Q[l], dt), w.b_Q), pos_q)
  k = add_positions(add_bias(mixed_einsum(spec, qk_in, w.W_K[l], dt), w.b_K), pos_k)
  if w.smear is not None:
    k = smear_key_vectors(k, w.smear[l], 2 if heads_first else 1)
  return q, k, v_of()


def _attention(w: Weights, l: int, qk_in, v_in, pos_qk, dt, attention: str, pattern,
               head_output, per_head: bool):
  """Layer ``l``'s heads with explicit or blocked patterns → (write to the stream [B, T, D]
  without b_O, the pattern A [B, H, T, T] or None, each head's output [B, H, T, D] or None).

  ``pos_qk``: None or the positional (query, key) terms [T, H, E] (``_positional_query_key``).
  ``pattern`` replaces the computed A; ``head_output`` replaces what the heads write (the computed
  outputs are still returned); ``per_head`` keeps each head's output apart."""
  q, k, v = _head_projections(w, l, qk_in, v_in, pos_qk, dt, need_qk=pattern is None)
  A = None
  if attention == "blocked":
    z = blocked_causal_attention(q, k, v, dt)
  else:
    A = attention_pattern(q, k, dt) if pattern is None else pattern
    z = mixed_einsum("bhts,bhse->bhte", A, v, dt)
  if not per_head:
    return mixed_einsum("bhte,hed->btd", z, w.W_O[l], dt), A, None
  out = jnp.einsum("bhte,hed->bhtd", z, w.W_O[l])  # each head's write, [B, H, T, D]
  return (out if head_output is None else head_output).sum(1), A, out


def head_values(cfg: ModelConfig, w: Weights, l: int, x: jax.Array, queries=None) -> jax.Array:
  """Layer ``l``'s per-head mixed values z_h = A_h v_h, [B, Q, H, d_head], from the stream x
  [B, T, D] entering it (float32, the norm's scale computed, as in ``residual_stream``), at the
  query positions ``queries`` (a tuple of positions; all T when None).  The layer writes
  Σ_h z_h W_O^h + b_O.  Keys and values are read at every position, queries only where asked:
  the causal softmax of a query at position t sees keys 0 … t."""
  T = x.shape[1]
  pos = w.W_pos[:T]
  scale = norm_scale(x, cfg.eps) if cfg.norm != "none" else None
  qk_in, v_in = _layer_inputs(cfg, w, l, x, pos, scale)
  rows = None if queries is None else jnp.asarray(queries)
  q, k, v = _head_projections(w, l, qk_in, v_in, _positional_query_key(w, l, pos, None), None,
                              rows, heads_first=False)
  A = attention_pattern_at(jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2), rows=rows)
  return jnp.einsum("bhqk,bkhe->bqhe", A, v)


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
    weights: the stacked weights (see ``reproduce.core.weights``).
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


def mean_loss(cfg: ModelConfig, w: Weights, inputs: jax.Array, targets: jax.Array,
              max_block_elements: int = 1 << 20, *, compute_dtype=None,
              attention: str = "explicit") -> jax.Array:
  """Mean next-token cross-entropy of the model on a batch (the training objective), float32;
  ``compute_dtype`` and ``attention`` as in ``residual_stream``."""
  dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
  x, _, _ = residual_stream(cfg, w, inputs, compute_dtype=dtype, attention=attention)
  return unembed_cross_entropy(unembed_input(cfg, w, x), w.W_U, targets, max_block_elements,
                               compute_dtype=dtype).mean()


def stream_losses(cfg: ModelConfig, w: Weights, x: jax.Array, targets: jax.Array,
                  scale=None) -> jax.Array:
  """Next-token losses [B, T] of the final stream x [B, T, D] (before any final norm; ``scale``
  replaces its sqrt(var + eps)), unembedded in row chunks (``kernels.unembed_losses``): the
  [B, T, vocab] logits never exist at once.  Forward only (analysis)."""
  return unembed_losses(unembed_input(cfg, w, x, scale), w.W_U, targets, w.b_U)


def window_bytes(cfg: ModelConfig, T: int) -> int:
  """Bytes that one window of T tokens holds at the peak of an explicit-attention forward
  without the unembedding: one layer's scores, masked scores and pattern (3 · H · T² float32)
  and its stream, q, k, v and head outputs (≈ 8 · T · max(d_model, H · d_head)).  Analyses
  size their chunks of windows from it."""
  return 4 * (3 * cfg.n_heads * T * T + 8 * T * max(cfg.d_model, cfg.n_heads * cfg.d_head))
