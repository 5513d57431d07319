"""The direct path W_E W_U read as a bigram model, against the corpus's empirical bigram table
(log p(next | current) per pair, in chunks: the vocab × vocab table never exists).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from reproduce.core.kernels import items_per_chunk
from reproduce.core.weights import Weights


def pair_logits(W_E: np.ndarray, W_U: np.ndarray, current: np.ndarray,
                following: np.ndarray) -> np.ndarray:
  """(W_E W_U)[current_p, following_p] for every pair p, in the dtype of W_E: W_E[c] · W_U[:, f]
  over chunks of pairs sized so that a chunk's two [pairs, d_model] gathers fit
  ``kernels.CHUNK_BYTES`` (millions of pairs would otherwise gather gigabytes)."""
  W_E, W_U_rows = np.asarray(W_E), np.ascontiguousarray(np.asarray(W_U).T)  # [V, D] both
  out = np.empty(len(current), W_E.dtype)
  chunk = items_per_chunk(2 * W_E.shape[1] * W_E.dtype.itemsize, len(current))
  for start in range(0, len(current), chunk):
    c, f = current[start:start + chunk], following[start:start + chunk]
    out[start:start + chunk] = np.einsum("pd,pd->p", W_E[c], W_U_rows[f])
  return out


def bigram_statistics(w: Weights, train_tokens: np.ndarray, min_count: int = 20,
                      chunk: Optional[int] = None) -> Dict[str, object]:
  """The direct path W_E W_U as a bigram model, against the corpus's empirical bigram table.

  Returns the Pearson correlation of model vs empirical log p(next | current) over pairs seen at
  least ``min_count`` times, the KL divergence Σ_c p(c) KL(p_emp(·|c) ‖ p_model(·|c)) in nats,
  the conditional entropy H(next | current) of the table (the best loss any bigram model can
  reach), and the pairs used (for plotting).  Source rows of W_E W_U go ``chunk`` at a time
  (default: sized from ``kernels.CHUNK_BYTES``): the vocab × vocab table never exists.
  """
  tokens = np.asarray(train_tokens, np.int64)
  V = w.d_vocab
  codes, counts = np.unique(tokens[:-1] * V + tokens[1:], return_counts=True)
  current, following = codes // V, codes % V
  source_counts = np.bincount(current, weights=counts, minlength=V)
  log_emp = np.log(counts / source_counts[current])
  sources = np.unique(current)
  lse = np.zeros(V)
  W_E, W_U = np.asarray(w.W_E), np.asarray(w.W_U)
  # Source rows per block: a block's logits and two temporaries of the same size fit the budget.
  chunk = chunk or items_per_chunk(3 * W_U.dtype.itemsize * V, len(sources))
  for start in range(0, len(sources), chunk):  # log-normaliser of each source's row
    rows = sources[start:start + chunk]
    logits = W_E[rows] @ W_U
    top = logits.max(-1, keepdims=True)
    lse[rows] = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[:, 0]
  log_model = pair_logits(W_E, W_U, current, following) - lse[current]
  weight = counts / counts.sum()
  frequent = counts >= min_count
  return {
      "correlation": float(np.corrcoef(log_model[frequent], log_emp[frequent])[0, 1]),
      "kl": float(np.sum(weight * (log_emp - log_model))),
      "conditional_entropy": float(-np.sum(weight * log_emp)),
      "model_cross_entropy": float(-np.sum(weight * log_model)),
      "n_pairs": int(frequent.sum()),
      "pairs": {"current": current[frequent], "next": following[frequent],
                "log_model": log_model[frequent], "log_empirical": log_emp[frequent],
                "count": counts[frequent]},
  }
