"""Per-head circuits: each written once for one head, lifted over [layer, head] with vmap.

Convention: row vectors (docs/METHODS.md, 'Circuits').  For one head, with W_Q, W_K, W_V
[d_model, d_head] and W_O [d_head, d_model],

    W_QK = W_Q W_Kᵀ   [d_model, d_model]   score(dest i, src j) = x_i W_QK x_jᵀ / sqrt(d_head)
    W_OV = W_V W_O    [d_model, d_model]   a head adds Σ_j A_ij x_j W_OV to position i
    QK circuit  W_E W_QK W_Eᵀ   [vocab, vocab]   entry [dest token, src token] = attention score
    OV circuit  W_E W_OV W_U    [vocab, vocab]   entry [src token, out token]  = logit change

The paper's column-vector W_OV is the transpose of ours (same Frobenius norm and eigenvalues);
its W_QK = W_Qᵀ W_K is the same matrix as our W_Q W_Kᵀ.  Each quantity is a function of one
head's matrices (``head_*``, ``pair_score``); ``over_heads`` lifts it to the stacked [L, H, ...]
weights with two ``jax.vmap``s, heads inside and layers outside, broadcasting W_E, W_pos, W_U.
vmap leaves work on unmapped inputs unbatched, so shared products are computed once.

Biases are left out, as in TransformerLens (``weights.biases_as_weights`` folds a no-norm
model's biases into the weights).  Layer norm must be folded first (``reproduce.load``,
``weights.fold_for_analysis``; the circuits are then exact up to the per-token 1/σ): every
function here raises ``weights.UnfoldedLayerNormError`` on weights with layer-norm gains, and
each that reads W_Q, W_K (QK circuits, positional terms, Q/K-composition, skip-trigrams)
``weights.SmearedKeysError`` on a smeared-key model, whose keys W_K alone does not give.
Positional terms read W_pos through ``Weights.positional_readers``: W_Q_pos, W_K_pos where a
folded LN(x) + W_pos model has them (the raw W_Q, W_K, which positions meet unscaled by γ and
outside the norm, so those terms carry no 1/σ), else W_Q, W_K.

Low-rank matrices stay factored (``Factored(left, right)`` stands for ``left @ right``): rows,
columns, top-k entries, norms and eigenvalues are all computed at the narrow side, so no
vocab × vocab matrix is ever built.  Eigensolves of the small non-symmetric matrices run on the
host in float64 NumPy (JAX has no TPU kernel for them, and its GPU path is fragile).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core.kernels import MASKED
from reproduce.core.weights import Weights, require_folded, require_unsmeared


class Factored(NamedTuple):
  """``left @ right`` kept as its factors: left [..., m, r], right [..., r, n] (r small)."""

  left: jax.Array
  right: jax.Array

  @property
  def shape(self) -> Tuple[int, ...]:
    return tuple(self.left.shape[:-1]) + (self.right.shape[-1],)

  def rows(self, index) -> jax.Array:
    """Rows ``index`` of the product: [..., len(index), n]."""
    return self.left[..., jnp.asarray(index), :] @ self.right

  def columns(self, index) -> jax.Array:
    """Columns ``index`` of the product: [..., m, len(index)]."""
    return self.left @ self.right[..., :, jnp.asarray(index)]

  def top_k_in_rows(self, index, k: int):
    """(values, column indices) of the k largest entries of rows ``index``: [..., len, k]."""
    return jax.lax.top_k(self.rows(index), k)

  def top_k_in_columns(self, index, k: int):
    """(values, row indices) of the k largest entries of columns ``index``: [..., len, k]."""
    return jax.lax.top_k(jnp.swapaxes(self.columns(index), -1, -2), k)

  def frobenius_norm(self) -> jax.Array:
    """‖left @ right‖_F = sqrt(tr((leftᵀ left)(right rightᵀ))), never forming the product."""
    gram_l = jnp.einsum("...mr,...ms->...rs", self.left, self.left)
    gram_r = jnp.einsum("...rn,...sn->...rs", self.right, self.right)
    return jnp.sqrt(jnp.maximum(jnp.einsum("...rs,...rs->...", gram_l, gram_r), 0.0))

  def eigenvalues(self) -> np.ndarray:
    """Eigenvalues of the square product through the low-rank trick: eig(right @ left), r × r,
    whose eigenvalues are the nonzero ones of left @ right (the other m − r are zero).
    Complex128 [..., r], computed on the host."""
    return host_eigenvalues(self.right @ self.left)


def over_heads(fn: Callable, in_axes: Sequence) -> Callable:
  """Lifts ``fn`` from one head to every head: vmap over the head axis, then the layer axis.
  ``in_axes``, one per positional argument: 0 for a per-head weight stacked [L, H, ...] (``fn``
  sees one head's [...]), None for one shared by all heads (W_E, W_pos, W_U, their products,
  or None).  Every output gains leading [L, H] axes."""
  in_axes = tuple(in_axes)
  return jax.vmap(jax.vmap(fn, in_axes=in_axes), in_axes=in_axes)


def host_eigenvalues(matrices) -> np.ndarray:
  """Eigenvalues of a batch of small square matrices [..., r, r], on the host CPU in float64.
  Host NumPy, so no vmap (eigvals batches over the leading axes itself); the matrices come from
  per-head functions lifted with ``over_heads``."""
  return np.linalg.eigvals(np.asarray(jax.device_get(matrices), np.float64))


def positivity(eigenvalues) -> np.ndarray:
  """Re(Σλ) / Σ|λ| of one head's eigenvalues (the last axis), in [−1, 1] (IH appendix).

  +1: all eigenvalues positive real (the circuit copies: a mix of tokens raises its own logits);
  about 0 for random matrices; −1: anti-copying.  Zero eigenvalues add nothing to either sum.
  Host NumPy, so no vmap: leading axes ([L, H]) broadcast.
  """
  lam = np.asarray(eigenvalues)
  total = np.abs(lam).sum(-1)
  with np.errstate(invalid="ignore", divide="ignore"):  # NaN eigenvalues stay NaN
    return np.where(total != 0, lam.real.sum(-1) / total, 0.0)


# ----------------------------------------------------------------------------------------------
# One head's circuits

def head_qk(W_Q, W_K, W_E=None) -> Factored:
  """One head's QK circuit.  W_E None: W_QK = W_Q W_Kᵀ [d_model, d_model] = Factored(W_Q, W_Kᵀ),
  score(dest x_i, src x_j) = x_i W_QK x_jᵀ / sqrt(d_head) (the paper's W_Qᵀ W_K, same matrix).
  Full: W_E W_QK W_Eᵀ [vocab, vocab] = Factored(W_E W_Q, (W_E W_K)ᵀ), entry [dest token, src
  token] = the unscaled token-token term of the score."""
  if W_E is None:
    return Factored(W_Q, W_K.T)
  return Factored(W_E @ W_Q, (W_E @ W_K).T)


def head_ov(W_V, W_O, W_E=None, W_U=None) -> Factored:
  """One head's OV circuit.  W_E None: W_OV = W_V W_O [d_model, d_model] = Factored(W_V, W_O),
  a source row x_j contributes x_j W_OV (the paper's column-vector W_OV is its transpose).
  Full: W_E W_OV W_U [vocab, vocab] = Factored(W_E W_V, W_O W_U), entry [src token, out token]
  = the logit change of ``out`` per unit of attention to ``src``."""
  if W_E is None:
    return Factored(W_V, W_O)
  return Factored(W_E @ W_V, W_O @ W_U)


def head_positional_qk(W_Q, W_K, W_pos) -> jax.Array:
  """One head's position–position scores (W_pos W_Q)(W_pos W_K)ᵀ / sqrt(d_head) [n_ctx, n_ctx],
  entry [dest position, src position]; W_Q, W_K the weights that read positions."""
  d_head = W_Q.shape[-1]
  return (W_pos @ W_Q) @ (W_pos @ W_K).T / jnp.sqrt(jnp.float32(d_head))


def head_token_position_qk(W_Q, W_K, W_Q_pos, W_K_pos, W_E, W_pos) -> Tuple[Factored, Factored]:
  """One head's shortformer cross terms, unscaled, with W_Q_pos, W_K_pos the weights that read
  positions (W_Q, W_K themselves unless the model has separate ones): (W_E W_Q (W_pos W_K_pos)ᵀ
  [vocab, n_ctx], dest token × src position; W_pos W_Q_pos (W_E W_K)ᵀ [n_ctx, vocab], dest
  position × src token)."""
  return (Factored(W_E @ W_Q, (W_pos @ W_K_pos).T), Factored(W_pos @ W_Q_pos, (W_E @ W_K).T))


def head_ov_eigen_matrix(W_V, W_O, unembed_embed=None) -> jax.Array:
  """[d_head, d_head] with all the nonzero eigenvalues of one head's OV circuit, by the swap
  nonzero eig(AB) = eig(BA): ``unembed_embed`` = W_U W_E gives W_O (W_U W_E) W_V for the full
  (W_E W_V)(W_O W_U); None gives W_O W_V for W_V W_O."""
  if unembed_embed is None:
    return W_O @ W_V
  return (W_O @ unembed_embed) @ W_V


def head_qk_eigen_matrix(W_Q, W_K, middle=None) -> jax.Array:
  """[d_head, d_head] W_Kᵀ M W_Q, with the nonzero eigenvalues of W_Q W_Kᵀ M (the swap as
  above): ``middle`` M = W_Eᵀ W_E for the full (W_E W_Q)(W_Kᵀ W_Eᵀ); None (M = I) for W_QK."""
  if middle is None:
    return W_K.T @ W_Q
  return (W_K.T @ middle) @ W_Q


def head_k_composition_qk_matrix(W_Q, W_K, W_V_prev, W_O_prev, embed_gram) -> jax.Array:
  """The swap matrix of one reading head's K-composition term with an earlier head p.

  The term (docs/METHODS.md, 'Composition'; row form) is W_E W_Q W_Kᵀ (W_E W_OV^p)ᵀ [vocab,
  vocab], W_OV^p = W_V^p W_O^p: entry [dest token, token at the source's previous position]
  when p is a previous-token head.  Its nonzero eigenvalues are those of the [d_head, d_head]
  W_Kᵀ (W_OV^pᵀ W_Eᵀ W_E) W_Q (``embed_gram`` = W_Eᵀ W_E)."""
  return head_qk_eigen_matrix(W_Q, W_K, (W_V_prev @ W_O_prev).T @ embed_gram)


def head_k_composition_trace(W_Q, W_K, W_V_prev, W_O_prev, embed_gram) -> jax.Array:
  """The trace of one reading head's K-composition term with an earlier head p: a scalar.

  tr(W_E W_Q W_Kᵀ (W_E W_V^p W_O^p)ᵀ) over the vocabulary, IH's column-vector tr(W_Eᵀ W_Qᵀ W_K
  W_O^p W_V^p W_E): the summed score of every destination token with a source whose earlier
  token (read through p's OV) is the same token.  By the cyclic property it is the trace of the
  [d_head, d_head] ``head_k_composition_qk_matrix``, W_Kᵀ W_O^pᵀ W_V^pᵀ (W_Eᵀ W_E) W_Q,
  computed as Σ_ij (W_O^p W_K)_ij (W_V^pᵀ G W_Q)_ij (``embed_gram`` G = W_Eᵀ W_E): W_V^pᵀ G does
  not depend on the reader, so lifted over readers it is formed once per writer, and each pair
  costs d_head² · d_model.  Unscaled by 1/sqrt(d_head)."""
  return jnp.sum((W_O_prev @ W_K) * ((W_V_prev.T @ embed_gram) @ W_Q))


_qk = jax.jit(over_heads(head_qk, (0, 0, None)))
_ov = jax.jit(over_heads(head_ov, (0, 0, None, None)))
_token_position_qk = jax.jit(over_heads(head_token_position_qk, (0, 0, 0, 0, None, None)))
_ov_eigen = jax.jit(over_heads(head_ov_eigen_matrix, (0, 0, None)))
_qk_eigen = jax.jit(over_heads(head_qk_eigen_matrix, (0, 0, None)))
_k_composition = jax.jit(over_heads(head_k_composition_qk_matrix, (0, 0, None, None, None)))


# ----------------------------------------------------------------------------------------------
# Every head: the per-head functions lifted over [L, H]

def qk_circuit(w: Weights, full: bool = True) -> Factored:
  """Every head's QK circuit [L, H, ·, ·]: ``head_qk`` lifted.

  full=False: W_QK = W_Q W_Kᵀ [d_model, d_model].  full=True: W_E W_QK W_Eᵀ [vocab, vocab],
  entry [dest token, src token] (the token-token term; positions add separate terms, below).
  """
  require_folded(w)
  require_unsmeared(w, "the QK circuit")
  return _qk(w.W_Q, w.W_K, w.W_E if full else None)


def ov_circuit(w: Weights, full: bool = True) -> Factored:
  """Every head's OV circuit [L, H, ·, ·]: ``head_ov`` lifted.

  full=False: W_OV = W_V W_O [d_model, d_model].  full=True: W_E W_OV W_U [vocab, vocab], entry
  [src token, out token] = the logit change of ``out`` per unit of attention to ``src``.
  """
  require_folded(w)
  return _ov(w.W_V, w.W_O, *((w.W_E, w.W_U) if full else (None, None)))


@jax.jit
def positional_qk(w: Weights) -> jax.Array:
  """``head_positional_qk`` of every head with its positional readers (W_Q_pos, W_K_pos, else
  W_Q, W_K): (W_pos W_Q_pos)(W_pos W_K_pos)ᵀ / sqrt(d_head), [L, H, n_ctx, n_ctx].  With
  "shortformer" positions the whole positional part of a layer-0 score (plus the cross terms,
  ``token_position_qk``)."""
  require_folded(w)
  require_unsmeared(w, "the positional QK circuit")
  return over_heads(head_positional_qk, (0, 0, None))(*w.positional_readers, w.W_pos)


def token_position_qk(w: Weights) -> Tuple[Factored, Factored]:
  """``head_token_position_qk`` of every head: W_E W_Q (W_pos W_K_pos)ᵀ [L, H, vocab, n_ctx]
  and W_pos W_Q_pos (W_E W_K)ᵀ [L, H, n_ctx, vocab], unscaled (W_Q_pos, W_K_pos: the
  positional readers, W_Q, W_K where the model has none apart)."""
  require_folded(w)
  require_unsmeared(w, "the token-position QK terms")
  return _token_position_qk(w.W_Q, w.W_K, *w.positional_readers, w.W_E, w.W_pos)


def positional_attention(w: Weights, n_ctx: int = 0, layer: Optional[int] = None) -> jax.Array:
  """Causal softmax of ``head_positional_qk`` alone, with the positional readers as
  ``positional_qk`` (W_Q_pos, W_K_pos where a folded LN(x) + W_pos model has them, else W_Q,
  W_K): the pattern a head would have if only positions mattered, [L, H, T, T] (T = n_ctx or
  the model's context), or [H, T, T] of one ``layer``.  Only the first T positions are
  computed."""
  require_folded(w)
  require_unsmeared(w, "positional attention")
  return _positional_attention(w, n_ctx or w.W_pos.shape[0], layer)


@functools.partial(jax.jit, static_argnames=("T", "layer"))
def _positional_attention(w: Weights, T: int, layer: Optional[int]) -> jax.Array:
  picked = slice(None) if layer is None else slice(layer, layer + 1)
  W_Q_pos, W_K_pos = w.positional_readers
  scores = over_heads(head_positional_qk, (0, 0, None))(W_Q_pos[picked], W_K_pos[picked],
                                                         w.W_pos[:T])
  causal = jnp.tril(jnp.ones((T, T), bool))
  pattern = jax.nn.softmax(jnp.where(causal, scores, MASKED), axis=-1)
  return pattern if layer is None else pattern[0]


@jax.jit
def unembed_embed(w: Weights) -> jax.Array:
  """W_U W_E [d_model, d_model]: the one contraction over the vocabulary that the full OV
  eigenvalues need, shared by every head.  Jitted alone: fused with the per-head products, XLA
  lays it out for them and transposes a vocab-sized operand."""
  require_folded(w)
  return w.W_U @ w.W_E


@jax.jit
def embed_gram(w: Weights) -> jax.Array:
  """W_Eᵀ W_E [d_model, d_model], shared by the full QK and K-composition eigenvalues."""
  require_folded(w)
  return w.W_E.T @ w.W_E


def ov_eigen_matrices(w: Weights, full: bool = True) -> jax.Array:
  """``head_ov_eigen_matrix`` of every head, [L, H, d_head, d_head]: full W_O (W_U W_E) W_V
  (W_U W_E computed once for all heads) or plain W_O W_V."""
  require_folded(w)
  return _ov_eigen(w.W_V, w.W_O, unembed_embed(w) if full else None)


def qk_eigen_matrices(w: Weights, full: bool = True) -> jax.Array:
  """``head_qk_eigen_matrix`` of every head, [L, H, d_head, d_head]: full W_Kᵀ (W_Eᵀ W_E) W_Q
  (W_Eᵀ W_E computed once) or plain W_Kᵀ W_Q."""
  require_folded(w)
  require_unsmeared(w, "the QK eigenvalues")
  return _qk_eigen(w.W_Q, w.W_K, embed_gram(w) if full else None)


def ov_eigenvalues(w: Weights, full: bool = True) -> np.ndarray:
  """Eigenvalues of every head's OV circuit (full: W_E W_OV W_U), complex128 [L, H, d_head]:
  all the nonzero eigenvalues of the vocab × vocab (or d_model × d_model) matrix."""
  return host_eigenvalues(ov_eigen_matrices(w, full=full))


def qk_eigenvalues(w: Weights, full: bool = True) -> np.ndarray:
  """Eigenvalues of every head's QK circuit (full: W_E W_QK W_Eᵀ), complex128 [L, H, d_head]."""
  return host_eigenvalues(qk_eigen_matrices(w, full=full))


# ----------------------------------------------------------------------------------------------
# Composition (docs/METHODS.md, 'Composition')

COMPOSITION_KINDS = ("q", "k", "v")


def reader_factors(W_Q, W_K, W_V, W_O, kind: str):
  """(A_y, B_y) of one reading head, Y = A_y B_y the matrix that a writer's W_OV meets (row
  vectors): Q, Y = W_QK = W_Q W_Kᵀ; K, Y = W_QKᵀ = W_K W_Qᵀ; V, Y = W_OV = W_V W_O."""
  if kind == "q":
    return W_Q, W_K.T
  if kind == "k":
    return W_K, W_Q.T
  if kind == "v":
    return W_V, W_O
  raise ValueError(f"composition kind must be one of {COMPOSITION_KINDS}, got {kind!r}")


def pair_score(Ax, Bx, Ay, By, permuted: bool = False) -> jax.Array:
  """comp(X, Y) = ‖XY‖_F / (‖X‖_F ‖Y‖_F) of one writer X = Ax Bx and one reader Y = Ay By.

  Ax, Ay [d_model, r], Bx, By [r, d_model].  Row vectors: the writer's output x W_OV is what
  the reader's Y reads, so the product is X Y (the paper's column-vector Yᵀ Xᵀ, same norm).
  ‖XY‖² = tr((AxᵀAx)(Bx Ay)(By Byᵀ)(Bx Ay)ᵀ): r × r products only, no SVD.  ``permuted``
  gives the erratum's cyclically permuted norm ‖By Ax Bx Ay‖_F instead of ‖Ax Bx Ay By‖_F.
  A writer or reader that is exactly zero (a head that writes or reads nothing) composes with
  nothing: its score is 0, not 0/0.
  """
  gram_ax, gram_ay = (jnp.einsum("dr,ds->rs", a, a) for a in (Ax, Ay))  # Aᵀ A
  gram_bx, gram_by = (jnp.einsum("rd,sd->rs", b, b) for b in (Bx, By))  # B Bᵀ
  norm_x = jnp.sqrt(jnp.maximum(jnp.einsum("rs,sr->", gram_ax, gram_bx), 0.0))
  norm_y = jnp.sqrt(jnp.maximum(jnp.einsum("rs,sr->", gram_ay, gram_by), 0.0))
  middle = Bx @ Ay
  if permuted:
    product = (By @ Ax) @ middle
    squared = jnp.sum(product * product)
  else:
    squared = jnp.einsum("rt,rt->", gram_ax @ middle, middle @ gram_by)
  norms = norm_x * norm_y
  nonzero = norms > 0
  score = jnp.sqrt(jnp.maximum(squared, 0.0)) / jnp.where(nonzero, norms, 1.0)
  return jnp.where(nonzero, score, 0.0)


def head_composition_score(W_V1, W_O1, W_Q2, W_K2, W_V2, W_O2, kind: str,
                           permuted: bool = False) -> jax.Array:
  """comp(W_OV¹, Y²) of an earlier (writing) head 1 and a later head 2 that reads with its
  ``kind`` ∈ {q, k, v} (Y² from ``reader_factors``): a scalar."""
  return pair_score(W_V1, W_O1, *reader_factors(W_Q2, W_K2, W_V2, W_O2, kind), permuted)


def _over_head_pairs(fn: Callable, n_writer: int, n_reader: int) -> Callable:
  """Lifts fn(*writer_args, *reader_args) to every writer head × reader head → [Hx, Hy]."""
  readers = jax.vmap(fn, in_axes=(None,) * n_writer + (0,) * n_reader)
  return jax.vmap(readers, in_axes=(0,) * n_writer + (None,) * n_reader)


def _pair_scores(Ax, Bx, Ay, By, permuted: bool):
  """``pair_score`` of every writer × reader: factors [Hx, ...] and [Hy, ...] → [Hx, Hy]."""
  return _over_head_pairs(functools.partial(pair_score, permuted=permuted), 2, 2)(Ax, Bx, Ay, By)


@functools.partial(jax.jit, static_argnames=("kind", "permuted"))
def composition_scores(w: Weights, kind: str, permuted: bool = False) -> jax.Array:
  """Composition scores of every (earlier head, later head) pair → [L, H, L, H]: entry
  [l1, h1, l2, h2] = ``head_composition_score`` of writer (l1, h1) and reader (l2, h2), lifted
  with vmap over both heads and the layer pairs l1 < l2; zero unless l1 < l2 (a head reads only
  what earlier layers wrote).  ``permuted=True``: the erratum variant (FW's original fig. 19)."""
  require_folded(w)
  if kind not in COMPOSITION_KINDS:  # as reader_factors would, even with no layer pair
    raise ValueError(f"composition kind must be one of {COMPOSITION_KINDS}, got {kind!r}")
  if kind != "v":  # V-composition reads W_V W_O only, which smeared keys leave alone
    require_unsmeared(w, f"{kind.upper()}-composition scores")
  L, H = w.n_layers, w.n_heads
  out = jnp.zeros((L, H, L, H), jnp.float32)
  pairs = [(l1, l2) for l2 in range(L) for l1 in range(l2)]
  if not pairs:
    return out
  stack = lambda a, side: jnp.stack([a[pair[side]] for pair in pairs])  # [pair, H, ...]
  one = functools.partial(head_composition_score, kind=kind, permuted=permuted)
  scores = jax.vmap(_over_head_pairs(one, 2, 4))(  # [pair, Hx, Hy]
      stack(w.W_V, 0), stack(w.W_O, 0), stack(w.W_Q, 1), stack(w.W_K, 1), stack(w.W_V, 1),
      stack(w.W_O, 1))
  for p, (l1, l2) in enumerate(pairs):
    out = out.at[l1, :, l2, :].set(scores[p])
  return out


def composition_baseline(w: Weights, key: jax.Array, n_samples: int = 256,
                         permuted: bool = False) -> float:
  """Mean ``pair_score`` (lifted over samples with vmap) of random factors with the model's
  shapes: every factor of X = Ax Bx and Y = Ay By [d_model, d_head] / [d_head, d_model] of
  i.i.d. Gaussians (the score does not depend on the scale).  Q, K and V composition all have
  these shapes, so one baseline serves all three.  About 1/sqrt(d_model) when d_head ≪ d_model.
  """
  D, r = w.d_model, w.d_head
  k1, k2, k3, k4 = jax.random.split(key, 4)
  draw = lambda k, s: jax.random.normal(k, (n_samples,) + s, jnp.float32)
  factors = draw(k1, (D, r)), draw(k2, (r, D)), draw(k3, (D, r)), draw(k4, (r, D))
  return float(jax.vmap(functools.partial(pair_score, permuted=permuted))(*factors).mean())


def k_composition_qk_matrices(w: Weights, prev_layer: int, prev_head: int) -> jax.Array:
  """``head_k_composition_qk_matrix`` of every later head with head p = (prev_layer,
  prev_head), [L, H, d_head, d_head]; layers ≤ prev_layer are NaN."""
  require_folded(w)
  require_unsmeared(w, "the K-composition QK term")
  mats = _k_composition(w.W_Q, w.W_K, w.W_V[prev_layer, prev_head],
                        w.W_O[prev_layer, prev_head], embed_gram(w))
  later = jnp.arange(w.n_layers) > prev_layer
  return jnp.where(later[:, None, None, None], mats, jnp.nan)


def k_composition_qk_eigenvalues(w: Weights, prev_layer: int, prev_head: int) -> np.ndarray:
  """Eigenvalues of the K-composition QK term of every later head with head (prev_layer,
  prev_head): complex128 [L, H, d_head] (NaN for layers that cannot read it)."""
  mats = np.asarray(jax.device_get(k_composition_qk_matrices(w, prev_layer, prev_head)))
  out = np.full(mats.shape[:-1], np.nan, np.complex128)
  out[prev_layer + 1:] = host_eigenvalues(mats[prev_layer + 1:])
  return out


@jax.jit
def k_composition_traces(w: Weights) -> jax.Array:
  """``head_k_composition_trace`` of every (earlier head p, later head h) pair → [L, H, L, H],
  entry [lp, p, l, h]: each writer in turn (vmap) against every reader (``over_heads``); NaN
  unless lp < l."""
  require_folded(w)
  require_unsmeared(w, "the K-composition traces")
  L, H = w.n_layers, w.n_heads
  readers = over_heads(head_k_composition_trace, (0, 0, None, None, None))
  writers = jax.vmap(readers, in_axes=(None, None, 0, 0, None))
  flat = lambda a: a.reshape((L * H,) + a.shape[2:])
  traces = writers(w.W_Q, w.W_K, flat(w.W_V), flat(w.W_O), embed_gram(w)).reshape(L, H, L, H)
  earlier = jnp.arange(L)[:, None, None, None] < jnp.arange(L)[None, None, :, None]
  return jnp.where(earlier, traces, jnp.nan)


def previous_token_k_composition_trace(w: Weights, previous_token) -> np.ndarray:
  """IH's previous-token K-composition QK trace of every head, [L, H]: Σ over the heads p of
  earlier layers of previous_token[p] · ``head_k_composition_trace``(h, p), the traces weighted
  by each writer's previous-token score ``previous_token`` [L, H]; NaN in layer 0 (no earlier
  head)."""
  traces = np.asarray(k_composition_traces(w), np.float64)
  weights = np.asarray(previous_token, np.float64)[:, :, None, None]
  earlier = np.isfinite(traces)
  out = np.where(earlier, traces * weights, 0.0).sum((0, 1))
  return np.where(earlier.any((0, 1)), out, np.nan)


# ----------------------------------------------------------------------------------------------
# Skip-trigrams

def skip_trigrams(w: Weights, source_tokens, k: int = 10):
  """For each source token and head: the top-k destination and output tokens (FW §4).

  "src … dest → out": the QK column of ``src`` (W_E W_QK W_Eᵀ[:, src]) ranks which destination
  tokens attend to it; the OV row of ``src`` (W_E[src] W_OV W_U) ranks which outputs attending to
  it raises.  Returns dict of arrays [L, H, n_src, k]: dest_tokens, dest_scores, out_tokens,
  out_logits.  Only the rows/columns asked for are computed.
  """
  require_folded(w)
  require_unsmeared(w, "skip-trigrams")
  src = jnp.asarray(source_tokens)
  dest_scores, dest_tokens = qk_circuit(w, full=True).top_k_in_columns(src, k)
  dest_scores = dest_scores / jnp.sqrt(jnp.float32(w.d_head))
  out_logits, out_tokens = ov_circuit(w, full=True).top_k_in_rows(src, k)
  return {"dest_tokens": dest_tokens, "dest_scores": dest_scores, "out_tokens": out_tokens,
          "out_logits": out_logits}
