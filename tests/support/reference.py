"""A slow, obviously correct NumPy forward pass over TransformerLens-named weights (float64).

Written from docs/METHODS.md, "Conventions" to "The forward pass" (and TransformerLens's block: biases on
q, k, v and the layer output, ln1 before attention, positions added after ln1 for shortformer)
with explicit loops over layers, heads and positions, independent of the JAX model code.
"""

import numpy as np


def _norm(x, sd, prefix, norm, eps):
  if norm is None:
    return x
  x = x - x.mean(-1, keepdims=True)
  x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
  if norm == "LN":
    x = x * sd[f"{prefix}.w"] + sd.get(f"{prefix}.b", 0.0)
  return x


def reference_logits(state, tokens, n_layers, n_heads, pos="shortformer", norm=None,
                     pos_after_norm=False, eps=1e-5):
  """Logits [T, vocab] for one sequence, from a TransformerLens-style state dict.

  ``norm``: None, "LN" (ln1.w/b, ln_final.w/b; b optional) or "LNPre".  Shortformer positions
  enter the Q/K input as LN(x) + W_pos when ``pos_after_norm`` (TransformerLens), else as
  LN(x + W_pos) (our trained models).  Missing biases count as zero.
  """
  return reference_run(state, tokens, n_layers, n_heads, pos, norm, pos_after_norm, eps)[0]


def reference_run(state, tokens, n_layers, n_heads, pos="shortformer", norm=None,
                  pos_after_norm=False, eps=1e-5):
  """(logits [T, vocab], patterns [L, H, T, T]) for one sequence; as ``reference_logits``."""
  sd = {k: np.asarray(v, np.float64) for k, v in state.items()}
  zero = lambda shape: np.zeros(shape)
  T = len(tokens)
  x = sd["embed.W_E"][tokens]
  p = sd["pos_embed.W_pos"][:T]
  if pos == "standard":
    x = x + p
  patterns = np.zeros((n_layers, n_heads, T, T))
  for l in range(n_layers):
    write = np.zeros_like(x)
    ln = f"blocks.{l}.ln1"
    v_in = _norm(x, sd, ln, norm, eps)
    if pos == "standard":
      qk_in = v_in
    elif norm is None:
      qk_in = x + p
    elif pos_after_norm:
      qk_in = v_in + p
    else:
      qk_in = _norm(x + p, sd, ln, norm, eps)
    for h in range(n_heads):
      a_ = f"blocks.{l}.attn."
      W_Q, W_K = sd[a_ + "W_Q"][h], sd[a_ + "W_K"][h]
      W_V, W_O = sd[a_ + "W_V"][h], sd[a_ + "W_O"][h]
      d_head = W_Q.shape[1]
      b_Q = sd.get(a_ + "b_Q", zero((n_heads, d_head)))[h]
      b_K = sd.get(a_ + "b_K", zero((n_heads, d_head)))[h]
      b_V = sd.get(a_ + "b_V", zero((n_heads, d_head)))[h]
      for i in range(T):
        q = qk_in[i] @ W_Q + b_Q
        scores = np.array([q @ (qk_in[j] @ W_K + b_K) for j in range(i + 1)]) / np.sqrt(d_head)
        a = np.exp(scores - scores.max())
        a /= a.sum()
        patterns[l, h, i, :i + 1] = a
        z = sum(a[j] * (v_in[j] @ W_V + b_V) for j in range(i + 1))
        write[i] += z @ W_O
    x = x + write + sd.get(f"blocks.{l}.attn.b_O", 0.0)
  x = _norm(x, sd, "ln_final", norm, eps)
  return x @ sd["unembed.W_U"] + sd.get("unembed.b_U", 0.0), patterns
