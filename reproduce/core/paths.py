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

import itertools
from typing import Dict, Optional

import jax.numpy as jnp
import numpy as np

from reproduce.core.model import ModelConfig, forward, token_losses
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
  """
  cfg = ModelConfig.from_any(config)
  inputs, targets = jnp.atleast_2d(jnp.asarray(inputs)), jnp.atleast_2d(jnp.asarray(targets))
  loss = lambda logits: float(token_losses(logits, targets).mean())
  logits, extras = forward(cfg, w, inputs, return_patterns=True, return_norm_scales=True)
  frozen = dict(patterns=extras["patterns"], norm_scales=extras["norm_scales"])
  L, H = cfg.n_layers, cfg.n_heads
  B, T = inputs.shape
  outputs = jnp.zeros((L, B, H, T, cfg.d_model), jnp.float32)
  losses, first_order = [], None
  for k in range(L + 1):
    logits_k, ex = forward(cfg, w, inputs, head_outputs=outputs, return_head_outputs=True,
                           **frozen)
    losses.append(loss(logits_k))
    outputs = ex["head_outputs"]
    if k == 0:
      first_order = outputs
  by_layer, by_head = np.zeros(L), np.zeros((L, H))
  for l in range(L):
    only_layer = jnp.zeros_like(first_order).at[l].set(first_order[l])
    by_layer[l] = loss(forward(cfg, w, inputs, head_outputs=only_layer, **frozen)[0])
    for h in range(H):
      only_head = jnp.zeros_like(first_order).at[l, :, h].set(first_order[l, :, h])
      by_head[l, h] = loss(forward(cfg, w, inputs, head_outputs=only_head, **frozen)[0])
  losses = np.asarray(losses)
  return {"losses": losses, "loss_full": np.asarray(loss(logits)),
          "marginal": losses[:-1] - losses[1:], "first_order_by_layer": by_layer,
          "first_order_by_head": by_head}
