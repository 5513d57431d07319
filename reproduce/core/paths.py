"""Path expansion and term importance: the logits split by the paths they take (FW §4, §6, §8).

With attention patterns frozen, and every layer norm's per-token scale sqrt(var + eps) frozen at
its value in the normal run (docs/METHODS.md, "Layer norm and folding"), an attention-only
model is affine in its embeddings, so its logits are exactly the sum of path terms (row
vectors, ``R_l`` the linear part of layer l's norm: x ↦ (x − mean) / s_l · γ_l, the identity
without a norm):

    direct   R_L(x0 + Σ_l b_Oˡ) W_U + β_L W_U + b_U        x0 = W_E[t] (+ W_pos if "standard")
    head     R_L(h) W_U with h = A R_l(x0 + Σ_{l'<l} b_Oˡ') W_OV + (β_l W_V + b_V) W_O
    chain    R_L(Aᵏ R_{lk}( … A¹ R_{l1}(x0 + …) W_OV¹ … ) W_OVᵏ) W_U   heads in layers l1 < … < lk

(``A x`` mixes positions: (A x)_i = Σ_j A_ij x_j; the constant parts of a head, which the
patterns' rows summing to 1 make position-independent, belong to its path from the embeddings.)
Without biases or norm this is FW's expansion: direct x0 W_U, heads A x0 W_OV W_U, virtual heads
A² A¹ x0 W_OV¹ W_OV² W_U.
"""

from __future__ import annotations

import functools
import itertools
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core.kernels import items_per_chunk, low_rank_update_losses
from reproduce.core.model import (ModelConfig, forward, residual_stream, stream_losses,
                                  unembed_input, window_bytes)
from reproduce.core.weights import Weights


def _reader(cfg: ModelConfig, w: Weights, scales, l: int):
  """The linear part of layer l's norm (l = n_layers: the final norm), scales frozen."""
  if cfg.norm == "none":
    return lambda y: y
  gain = None
  if cfg.norm == "ln":
    gain = w.ln_final if l == cfg.n_layers else w.ln_gain[l]
  def read(y):
    y = (y - y.mean(-1, keepdims=True)) / scales[l]
    return y if gain is None else y * gain
  return read


def _norm_bias(cfg: ModelConfig, w: Weights, l: int):
  bias = w.ln_final_bias if l == cfg.n_layers else (None if w.ln_bias is None else w.ln_bias[l])
  return None if cfg.norm != "ln" else bias


def _heads_on(cfg, w, patterns, scales, l, y):
  """Every head of layer l applied (linear part) to streams y [..., B, T, D] → [..., H, B, T, D]."""
  r = _reader(cfg, w, scales, l)(y)
  v = jnp.einsum("...btd,hde->...hbte", r, w.W_V[l])
  z = jnp.einsum("bhts,...hbse->...hbte", patterns[l], v)
  return jnp.einsum("...hbte,hed->...hbtd", z, w.W_O[l])


def _head_constants(cfg, w, l):
  """(β_l W_V + b_V) W_O per head of layer l, [H, D] (zero without biases)."""
  H, dh = cfg.n_heads, cfg.d_head
  value_bias = jnp.zeros((H, dh)) if w.b_V is None else w.b_V[l]
  beta = _norm_bias(cfg, w, l)
  if beta is not None:
    value_bias = value_bias + jnp.einsum("d,hde->he", beta, w.W_V[l])
  return jnp.einsum("he,hed->hd", value_bias, w.W_O[l])


def path_expansion(config, w: Weights, tokens, patterns=None, max_order: Optional[int] = None
                   ) -> Dict[str, object]:
  """The path terms of any model's logits; with every order they sum to the logits exactly.

  Returns ``logits`` (the model's own), ``direct`` [B, T, vocab], ``heads`` [L, H, B, T, vocab]
  (each head on the embeddings), ``chains`` {(l1, …, lk): [H, …, H, B, T, vocab]} for every
  increasing layer tuple with 2 ≤ k ≤ max_order (virtual heads: entry [h1, …, hk] is the path
  through head h1 of layer l1, then h2 of l2, …), ``orders`` [max_order + 1, B, T, vocab] (the
  sum of all paths through exactly k heads), and for 2 layers ``virtual`` = chains[(0, 1)]
  [H (layer 0), H (layer 1), B, T, vocab].  ``patterns`` [L, B, H, T, T] default to the model's
  own on ``tokens``; norm scales are frozen at the run with those patterns.  There are
  Σ_k C(L, k) Hᵏ chain terms, each the size of the logits: limit ``max_order`` for big models.
  """
  cfg = ModelConfig.from_any(config)
  L = cfg.n_layers
  max_order = L if max_order is None else min(int(max_order), L)
  tokens = jnp.atleast_2d(jnp.asarray(tokens))
  T = tokens.shape[1]
  logits, extras = forward(cfg, w, tokens, patterns=patterns, return_patterns=True,
                           return_norm_scales=True)
  patterns, scales = extras["patterns"], extras["norm_scales"]
  zero = jnp.zeros((cfg.d_model,))
  b_O = [zero if w.b_O is None else w.b_O[l] for l in range(L)]
  x0 = w.W_E[tokens]
  if cfg.pos == "standard":
    x0 = x0 + w.W_pos[:T]
  final = _reader(cfg, w, scales, L)

  def to_logits(y):
    return final(y) @ w.W_U

  constant_logits = jnp.zeros((cfg.d_vocab,))
  if _norm_bias(cfg, w, L) is not None:
    constant_logits = constant_logits + _norm_bias(cfg, w, L) @ w.W_U
  if w.b_U is not None:
    constant_logits = constant_logits + w.b_U
  terms = {"logits": logits,
           "direct": to_logits(x0 + sum(b_O, zero)) + constant_logits}
  if L == 0:
    terms["orders"] = terms["direct"][None]
    return terms
  writes = {}  # layer tuple → what its chains write into the stream, [H, …, H, B, T, D]
  for l in range(L):
    direct_in = x0 + sum(b_O[:l], zero)
    writes[(l,)] = (_heads_on(cfg, w, patterns, scales, l, direct_in)
                    + _head_constants(cfg, w, l)[:, None, None, :])
  for k in range(2, max_order + 1):
    for layers in itertools.combinations(range(L), k):
      writes[layers] = _heads_on(cfg, w, patterns, scales, layers[-1], writes[layers[:-1]])
  terms["heads"] = jnp.stack([to_logits(writes[(l,)]) for l in range(L)])
  terms["chains"] = {layers: to_logits(y) for layers, y in writes.items() if len(layers) > 1}
  orders = [terms["direct"], terms["heads"].sum((0, 1))]
  for k in range(2, max_order + 1):
    orders.append(sum(c.sum(tuple(range(k))) for layers, c in terms["chains"].items()
                      if len(layers) == k))
  terms["orders"] = jnp.stack(orders)
  if L == 2 and (0, 1) in terms["chains"]:
    terms["virtual"] = terms["chains"][(0, 1)]
  return terms


def sum_of_paths(terms: Dict[str, object]):
  """Direct + Σ heads + Σ every chain: equals ``terms["logits"]`` when no order was left out."""
  total = terms["direct"]
  if "heads" in terms:
    total = total + terms["heads"].sum((0, 1))
  for layers, chain in terms.get("chains", {}).items():
    total = total + chain.sum(tuple(range(len(layers))))
  return total


def _stacked(arrays, shape):
  """``jnp.stack(arrays)``, or zeros of ``shape`` when there are none (a model with no layers)."""
  return jnp.stack(arrays) if arrays else jnp.zeros(shape, jnp.float32)


@functools.partial(jax.jit, static_argnames="cfg")
def _frozen_run(cfg: ModelConfig, w: Weights, inputs, targets):
  """The normal run of a chunk of windows → (loss sum per window [b], patterns [L, b, H, T, T],
  norm scales [L + 1, b, T, 1] (ones without a norm))."""
  (B, T), L = inputs.shape, cfg.n_layers
  x, patterns, _, scales = residual_stream(cfg, w, inputs, keep_patterns=True,
                                           keep_norm_scales=True)
  scales = _stacked(scales, (L + 1, B, T, 1)) if cfg.norm != "none" else jnp.ones((L + 1, B, T, 1))
  patterns = _stacked(patterns, (L, B, cfg.n_heads, T, T))
  return stream_losses(cfg, w, x, targets, scales[L]).sum(-1), patterns, scales


def _frozen_stream(cfg: ModelConfig, w: Weights, inputs, patterns, scales, layer_outputs):
  """The final stream with patterns and norm scales frozen and what each layer's heads write
  replaced by ``layer_outputs`` [L, b, T, D] → (stream, computed head outputs [L, b, H, T, D])."""
  L, (B, T) = cfg.n_layers, inputs.shape
  x, _, outputs = residual_stream(cfg, w, inputs, patterns, layer_outputs[:, :, None],
                                  keep_head_outputs=True,
                                  norm_scales=None if cfg.norm == "none" else scales)
  return x, _stacked(outputs, (L, B, cfg.n_heads, T, cfg.d_model))


@functools.partial(jax.jit, static_argnames="cfg")
def _recursion_step(cfg: ModelConfig, w: Weights, inputs, targets, patterns, scales,
                    layer_outputs):
  """Run k + 2 of the recursion on a chunk: loss sum per window [b] with the saved outputs
  Oᵏ (summed over each layer's heads, [L, b, T, D]) and the outputs Oᵏ⁺¹ it computes."""
  x, outputs = _frozen_stream(cfg, w, inputs, patterns, scales, layer_outputs)
  return stream_losses(cfg, w, x, targets, scales[cfg.n_layers]).sum(-1), outputs.sum(2)


def _first_order_values(cfg: ModelConfig, w: Weights, inputs, patterns, scales):
  """What each head mixes in its first-order term, before W_O: z = A (N_l(x_d) W_V + b_V)
  [L, b, H, T, d_head], with x_d the direct stream entering layer l (embeddings and the earlier
  layers' b_O) and N_l its norm at the frozen scales; z W_O^h is the head's first-order output."""
  x = w.W_E[inputs]
  if cfg.pos == "standard":
    x = x + w.W_pos[:inputs.shape[1]]
  values = []
  for l in range(cfg.n_layers):
    read = _reader(cfg, w, scales, l)(x)
    if _norm_bias(cfg, w, l) is not None:
      read = read + _norm_bias(cfg, w, l)
    v = jnp.einsum("btd,hde->bhte", read, w.W_V[l])
    if w.b_V is not None:
      v = v + w.b_V[l][None, :, None, :]
    values.append(jnp.einsum("bhts,bhse->bhte", patterns[l], v))
    if w.b_O is not None:
      x = x + w.b_O[l]
  return jnp.stack(values)


@functools.partial(jax.jit, static_argnames="cfg")
def _head_unembeds(cfg: ModelConfig, w: Weights):
  """R(W_O^h) W_U per head [L · H, d_head, vocab], R the linear part of the final norm at unit
  scale: what one unit of z_h adds to the logits (divided by the token's frozen final scale)."""
  unit = jnp.ones((cfg.n_layers + 1, 1, 1))
  read = _reader(cfg, w, unit, cfg.n_layers)(w.W_O)  # [L, H, d_head, D]
  return (read @ w.W_U).reshape((-1,) + read.shape[2:3] + (w.W_U.shape[1],))


@functools.partial(jax.jit, static_argnames="cfg")
def _first_order_losses(cfg: ModelConfig, w: Weights, inputs, targets, patterns, scales,
                        head_unembeds):
  """Loss sums per window of the direct path plus one layer's first-order terms ([L, b]) and
  plus one head's ([L, H, b]): the stream with every head output replaced by zeros is the
  direct path x_d, and only head (l, h) gives x_d + O¹[l, h].  A layer's terms run one layer at
  a time; a head's term z_h W_O^h has rank d_head, so its logits are the direct path's plus
  (z_h / s) ``head_unembeds``[l, h] (s the frozen final scale), the direct logits computed once
  for all heads (``kernels.low_rank_update_losses``)."""
  L, H, (B, T) = cfg.n_layers, cfg.n_heads, inputs.shape
  direct, first = _frozen_stream(cfg, w, inputs, patterns, scales,
                                 jnp.zeros((L, B, T, cfg.d_model), jnp.float32))
  final = scales[L]
  loss = lambda x: stream_losses(cfg, w, x, targets, final).sum(-1)
  by_layer = jax.lax.map(lambda l: loss(direct + first[l].sum(1)), jnp.arange(L))
  z = _first_order_values(cfg, w, inputs, patterns, scales)  # [L, B, H, T, dh]
  z = jnp.moveaxis(z, 2, 1).reshape((L * H, B, T, cfg.d_head)) / final
  by_head = low_rank_update_losses(unembed_input(cfg, w, direct, final), w.W_U, targets, z,
                                   head_unembeds, w.b_U)
  return by_layer, by_head.sum(-1).reshape(L, H, B)


def term_importance(config, w: Weights, inputs, targets) -> Dict[str, np.ndarray]:
  """Loss of the model restricted to paths through at most k heads, k = 0 … n_layers (FW §8).

  1. A normal run gives the patterns and the norm scales (both frozen from then on) and
     ``loss_full``.
  2. A run whose head outputs are computed but replaced by zeros gives ``losses[0]`` (the
     direct path, with the output biases b_O, which belong to no head) and the first-order
     outputs O¹ (each head applied to that direct stream).
  3. Run k + 2 adds the outputs Oᵏ saved by the previous run: ``losses[k]`` includes every path
     through at most k heads, and it saves Oᵏ⁺¹.
  With n_layers layers, ``losses[n_layers] == loss_full``.  Also returned: ``marginal`` [L] =
  losses[k−1] − losses[k]; ``first_order_by_layer`` [L], the loss with the direct path and only
  layer l's first-order terms; ``first_order_by_head`` [L, H], with one head's first-order term.
  Freezing the scales makes each head's output affine in the stream, so these are exactly the
  losses of the corresponding sums of ``path_expansion`` terms, with or without layer norm.

  Every loss is a mean over all tokens, summed per window over chunks of windows sized from
  ``kernels.CHUNK_BYTES`` (a window holds its frozen patterns, its head outputs and one layer's
  attention, ``_window_bytes``); only each layer's sum of head outputs is carried between runs,
  and logits exist one row chunk at a time (``model.stream_losses``).
  """
  cfg = ModelConfig.from_any(config)
  inputs = jnp.atleast_2d(jnp.asarray(inputs, jnp.int32))
  targets = jnp.atleast_2d(jnp.asarray(targets, jnp.int32))
  L, H, (B, T) = cfg.n_layers, cfg.n_heads, inputs.shape
  chunk = items_per_chunk(_window_bytes(cfg, T), B)
  full, losses = 0.0, np.zeros(L + 1)
  by_layer, by_head = np.zeros(L), np.zeros((L, H))
  head_unembeds = _head_unembeds(cfg, w) if L else None
  for start in range(0, B, chunk):
    x, y = inputs[start:start + chunk], targets[start:start + chunk]
    loss_sum, patterns, scales = _frozen_run(cfg, w, x, y)
    full += float(loss_sum.sum())
    outputs = jnp.zeros((L, len(x), T, cfg.d_model), jnp.float32)
    for k in range(L + 1):
      loss_sum, outputs = _recursion_step(cfg, w, x, y, patterns, scales, outputs)
      losses[k] += float(loss_sum.sum())
    if L:
      layer_sums, head_sums = _first_order_losses(cfg, w, x, y, patterns, scales,
                                                  head_unembeds)
      by_layer += np.asarray(layer_sums, np.float64).sum(-1)
      by_head += np.asarray(head_sums, np.float64).sum(-1)
  n = B * T
  losses = losses / n
  return {"losses": losses, "loss_full": np.asarray(full / n),
          "marginal": losses[:-1] - losses[1:], "first_order_by_layer": by_layer / n,
          "first_order_by_head": by_head / n}


def _window_bytes(cfg: ModelConfig, T: int) -> int:
  """What one window holds in ``term_importance``: its frozen patterns (L · H · T²) and
  first-order head outputs (L · H · T · D) beside one layer's attention
  (``model.window_bytes``), float32."""
  L, H = cfg.n_layers, cfg.n_heads
  return 4 * (L * H * T * T + L * H * T * cfg.d_model) + window_bytes(cfg, T)
