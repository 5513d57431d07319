"""Per-head circuits as pure functions of the stacked weights, batched over [layer, head].

Convention: row vectors (PAPER.md §1).  Per head

    W_QK = W_Q W_Kᵀ   [d_model, d_model]   score(dest i, src j) = x_i W_QK x_jᵀ / sqrt(d_head)
    W_OV = W_V W_O    [d_model, d_model]   a head adds Σ_j A_ij x_j W_OV to position i

The paper's column-vector W_OV is the transpose of ours (same Frobenius norm and eigenvalues);
its W_QK = W_Qᵀ W_K is the same matrix as our W_Q W_Kᵀ.  Full circuits go through the embedding
and unembedding:

    QK circuit  W_E W_QK W_Eᵀ   [vocab, vocab]   entry [dest token, src token] = attention score
    OV circuit  W_E W_OV W_U    [vocab, vocab]   entry [src token, out token]  = logit change

Biases are left out, as TransformerLens's circuits leave them out: b_Q, b_K add terms to the
scores, b_O and b_U constant vectors (``weights.biases_as_weights`` turns a no-norm model with
biases into an equivalent bias-free one whose circuits include them).  A model with layer norm
must be folded first (``reproduce.load`` does it; ``weights.fold_for_analysis``): the circuits
are then exact up to the per-token 1/σ, and every function here raises
``weights.UnfoldedLayerNormError`` on weights that still carry layer-norm gains.

Low-rank matrices stay factored (``Factored(left, right)`` stands for ``left @ right``): rows,
columns, top-k entries, norms and eigenvalues are all computed at the narrow side, so no
vocab × vocab matrix is ever built.  Eigensolves of the small non-symmetric matrices run on the
host in float64 (JAX has no TPU kernel for them, and its GPU path is fragile).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.core.weights import Weights, require_folded


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
    """Eigenvalues of the square product through the low-rank trick: eig(right @ left), r × r.

    Its nonzero eigenvalues are exactly the nonzero eigenvalues of left @ right (the other
    m − r are zero).  Complex128 [..., r], computed on the host.
    """
    return host_eigenvalues(self.right @ self.left)


def host_eigenvalues(matrices) -> np.ndarray:
  """Eigenvalues of a batch of small square matrices [..., r, r], on the host CPU in float64."""
  return np.linalg.eigvals(np.asarray(jax.device_get(matrices), np.float64))


def positivity(eigenvalues) -> np.ndarray:
  """Re(Σλ) / Σ|λ| over the last axis, in [−1, 1] (IH appendix).

  +1: all eigenvalues positive real (the circuit copies: a mix of tokens raises its own logits);
  about 0 for random matrices; −1: anti-copying.  Zero eigenvalues add nothing to either sum.
  """
  lam = np.asarray(eigenvalues)
  total = np.abs(lam).sum(-1)
  with np.errstate(invalid="ignore", divide="ignore"):  # NaN eigenvalues stay NaN
    return np.where(total != 0, lam.real.sum(-1) / total, 0.0)


def qk_circuit(w: Weights, full: bool = True) -> Factored:
  """Every head's QK circuit [L, H, ·, ·].

  full=False: W_QK = W_Q W_Kᵀ [d_model, d_model].  full=True: W_E W_QK W_Eᵀ [vocab, vocab],
  entry [dest token, src token] (the token-token term; positions add separate terms, below).
  """
  require_folded(w)
  if not full:
    return Factored(w.W_Q, jnp.swapaxes(w.W_K, -1, -2))
  return Factored(jnp.einsum("vd,lhde->lhve", w.W_E, w.W_Q),
                  jnp.einsum("lhde,vd->lhev", w.W_K, w.W_E))


def ov_circuit(w: Weights, full: bool = True) -> Factored:
  """Every head's OV circuit [L, H, ·, ·].

  full=False: W_OV = W_V W_O [d_model, d_model].  full=True: W_E W_OV W_U [vocab, vocab], entry
  [src token, out token] = the logit change of ``out`` per unit of attention to ``src``.
  """
  require_folded(w)
  if not full:
    return Factored(w.W_V, w.W_O)
  return Factored(jnp.einsum("vd,lhde->lhve", w.W_E, w.W_V),
                  jnp.einsum("lhed,du->lheu", w.W_O, w.W_U))


@jax.jit
def positional_qk(w: Weights) -> jax.Array:
  """Position–position attention scores W_pos W_QK W_posᵀ / sqrt(d_head): [L, H, n_ctx, n_ctx].

  Entry [dest position, src position]; with "shortformer" positions this is the whole positional
  part of a layer-0 score (plus the two token–position cross terms, ``token_position_qk``).
  """
  require_folded(w)
  q = jnp.einsum("td,lhde->lhte", w.W_pos, w.W_Q)
  k = jnp.einsum("sd,lhde->lhse", w.W_pos, w.W_K)
  return jnp.einsum("lhte,lhse->lhts", q, k) / jnp.sqrt(jnp.float32(w.d_head))


def token_position_qk(w: Weights) -> Tuple[Factored, Factored]:
  """The cross terms of a shortformer score: (dest token × src position, dest position × src token).

  W_E W_QK W_posᵀ [L, H, vocab, n_ctx] and W_pos W_QK W_Eᵀ [L, H, n_ctx, vocab], unscaled.
  """
  require_folded(w)
  tok_q = jnp.einsum("vd,lhde->lhve", w.W_E, w.W_Q)
  pos_q = jnp.einsum("td,lhde->lhte", w.W_pos, w.W_Q)
  return (Factored(tok_q, jnp.einsum("lhde,td->lhet", w.W_K, w.W_pos)),
          Factored(pos_q, jnp.einsum("lhde,vd->lhev", w.W_K, w.W_E)))


def positional_attention(w: Weights, n_ctx: int = 0) -> jax.Array:
  """Causal softmax of ``positional_qk`` alone: the pattern a head would have if only positions
  mattered, [L, H, T, T] (T = n_ctx or the model's context)."""
  require_folded(w)
  scores = positional_qk(w)
  T = n_ctx or scores.shape[-1]
  scores = scores[..., :T, :T]
  causal = jnp.tril(jnp.ones((T, T), bool))
  return jax.nn.softmax(jnp.where(causal, scores, -1e30), axis=-1)


@jax.jit
def unembed_embed(w: Weights) -> jax.Array:
  """W_U W_E [d_model, d_model]: the one contraction over the vocabulary that the full OV
  eigenvalues need, shared by every head.  Jitted alone: fused with the per-head products, XLA
  lays it out for them and transposes a vocab-sized operand (about 1.5× slower on CPU)."""
  require_folded(w)
  return w.W_U @ w.W_E


@jax.jit
def _sandwich(outer_left, middle, outer_right):
  return (outer_left @ middle) @ outer_right  # [L, H, r, D] @ [D, D] @ [L, H, D, r]


def ov_eigen_matrices(w: Weights, full: bool = True) -> jax.Array:
  """The d_head × d_head matrices whose eigenvalues are every head's OV eigenvalues.

  full: W_O (W_U W_E) W_V, the low-rank swap of (W_E W_V)(W_O W_U), with W_U W_E computed once
  for all heads.  plain: W_O W_V, the swap of W_V W_O.  Shape [L, H, d_head, d_head].
  """
  require_folded(w)
  if not full:
    return w.W_O @ w.W_V
  return _sandwich(w.W_O, unembed_embed(w), w.W_V)


def qk_eigen_matrices(w: Weights, full: bool = True) -> jax.Array:
  """The d_head × d_head matrices whose eigenvalues are every head's QK eigenvalues.

  full: W_Kᵀ (W_Eᵀ W_E) W_Q, the swap of (W_E W_Q)(W_Kᵀ W_Eᵀ); plain: W_Kᵀ W_Q.
  """
  require_folded(w)
  keys = jnp.swapaxes(w.W_K, -1, -2)
  if not full:
    return keys @ w.W_Q
  return _sandwich(keys, embed_gram(w), w.W_Q)


@jax.jit
def embed_gram(w: Weights) -> jax.Array:
  """W_Eᵀ W_E [d_model, d_model], shared by the full QK and K-composition eigenvalues."""
  require_folded(w)
  return w.W_E.T @ w.W_E


def ov_eigenvalues(w: Weights, full: bool = True) -> np.ndarray:
  """Eigenvalues of every head's OV circuit (full: W_E W_OV W_U), complex128 [L, H, d_head].

  These are all the nonzero eigenvalues of the vocab × vocab (or d_model × d_model) matrix.
  """
  return host_eigenvalues(ov_eigen_matrices(w, full=full))


def qk_eigenvalues(w: Weights, full: bool = True) -> np.ndarray:
  """Eigenvalues of every head's QK circuit (full: W_E W_QK W_Eᵀ), complex128 [L, H, d_head]."""
  return host_eigenvalues(qk_eigen_matrices(w, full=full))


# ----------------------------------------------------------------------------------------------
# Composition


COMPOSITION_KINDS = ("q", "k", "v")


def _reader_factors(w: Weights, kind: str):
  """(A_y, B_y) with Y = A_y B_y the matrix of the reading head that a writer's W_OV meets.

  Q: Y = W_QK = W_Q W_Kᵀ; K: Y = W_QKᵀ = W_K W_Qᵀ; V: Y = W_OV = W_V W_O.
  """
  if kind == "q":
    return w.W_Q, jnp.swapaxes(w.W_K, -1, -2)
  if kind == "k":
    return w.W_K, jnp.swapaxes(w.W_Q, -1, -2)
  if kind == "v":
    return w.W_V, w.W_O
  raise ValueError(f"composition kind must be one of {COMPOSITION_KINDS}, got {kind!r}")


def _pair_scores(Ax, Bx, Ay, By, permuted: bool):
  """comp(X, Y) = ‖XY‖_F / (‖X‖_F ‖Y‖_F) for all writer × reader pairs, X = Ax Bx, Y = Ay By.

  Writers [Hx, d_model, r] / [Hx, r, d_model], readers likewise → [Hx, Hy].  Uses
  ‖XY‖² = tr((AxᵀAx)(Bx Ay)(By Byᵀ)(Bx Ay)ᵀ): only r × r products, no SVD.  ``permuted`` gives
  the erratum's cyclically permuted norm ‖By Ax Bx Ay‖_F instead of ‖Ax Bx Ay By‖_F.
  """
  gram_ax = jnp.einsum("hdr,hds->hrs", Ax, Ax)
  gram_bx = jnp.einsum("hrd,hsd->hrs", Bx, Bx)
  gram_ay = jnp.einsum("gdr,gds->grs", Ay, Ay)
  gram_by = jnp.einsum("grd,gsd->grs", By, By)
  norm_x = jnp.sqrt(jnp.einsum("hrs,hsr->h", gram_ax, gram_bx))
  norm_y = jnp.sqrt(jnp.einsum("grs,gsr->g", gram_ay, gram_by))
  middle = jnp.einsum("hrd,gds->hgrs", Bx, Ay)  # Bx Ay for every pair
  if permuted:
    inner = jnp.einsum("grd,hds->hgrs", By, Ax)  # By Ax
    product = jnp.einsum("hgrs,hgst->hgrt", inner, middle)
    squared = jnp.sum(product * product, axis=(-2, -1))
  else:
    left = jnp.einsum("hrs,hgst->hgrt", gram_ax, middle)
    right = jnp.einsum("hgrs,gst->hgrt", middle, gram_by)
    squared = jnp.einsum("hgrt,hgrt->hg", left, right)
  return jnp.sqrt(jnp.maximum(squared, 0.0)) / (norm_x[:, None] * norm_y[None, :])


@functools.partial(jax.jit, static_argnames=("kind", "permuted"))
def composition_scores(w: Weights, kind: str, permuted: bool = False) -> jax.Array:
  """Composition scores of every (earlier head, later head) pair → [L, H, L, H].

  Entry [l1, h1, l2, h2] = comp(W_OV^{l1,h1}, Y^{l2,h2}) with Y as in ``_reader_factors``;
  zero unless l1 < l2 (a head reads only what earlier layers wrote).  ``permuted=True`` gives
  the erratum variant (FW's original figure 19).
  """
  require_folded(w)
  L, H = w.n_layers, w.n_heads
  Ay, By = _reader_factors(w, kind)
  out = jnp.zeros((L, H, L, H), jnp.float32)
  for l2 in range(1, L):
    for l1 in range(l2):
      scores = _pair_scores(w.W_V[l1], w.W_O[l1], Ay[l2], By[l2], permuted)
      out = out.at[l1, :, l2, :].set(scores)
  return out


def composition_baseline(w: Weights, key: jax.Array, n_samples: int = 256,
                         permuted: bool = False) -> float:
  """Mean composition score of random factors with the model's shapes.

  X = Ax Bx and Y = Ay By with every factor [d_model, d_head] / [d_head, d_model] of i.i.d.
  Gaussians (a random init; the score does not depend on the scale).  Q, K and V composition
  all have these shapes, so one baseline serves all three.  About 1/sqrt(d_model) when
  d_head ≪ d_model.
  """
  D, r = w.d_model, w.d_head
  k1, k2, k3, k4 = jax.random.split(key, 4)
  draw = lambda k, s: jax.random.normal(k, (n_samples,) + s, jnp.float32)
  factors = draw(k1, (D, r)), draw(k2, (r, D)), draw(k3, (D, r)), draw(k4, (r, D))
  one = lambda a, b, c, d: _pair_scores(a[None], b[None], c[None], d[None], permuted)[0, 0]
  return float(jax.vmap(one)(*factors).mean())


def k_composition_qk_matrices(w: Weights, prev_layer: int, prev_head: int) -> jax.Array:
  """d_head × d_head matrices for the K-composition term of every later head with one head p.

  The term (PAPER.md §6, row form) is W_E W_Q W_Kᵀ (W_E W_OV^p)ᵀ [vocab, vocab]: entry [dest
  token, token at the source's previous position] when p is a previous-token head.  Its nonzero
  eigenvalues are those of W_Kᵀ W_Oᵖᵀ W_Vᵖᵀ (W_Eᵀ W_E) W_Q.  Returns [L, H, d_head, d_head];
  layers ≤ prev_layer are NaN.
  """
  require_folded(w)
  written = w.W_V[prev_layer, prev_head] @ w.W_O[prev_layer, prev_head]  # W_OV^p [D, D]
  mats = _sandwich(jnp.swapaxes(w.W_K, -1, -2), written.T @ embed_gram(w), w.W_Q)
  later = jnp.arange(w.n_layers) > prev_layer
  return jnp.where(later[:, None, None, None], mats, jnp.nan)


def k_composition_qk_eigenvalues(w: Weights, prev_layer: int, prev_head: int) -> np.ndarray:
  """Eigenvalues of the K-composition QK term of every later head with head (prev_layer,
  prev_head): complex128 [L, H, d_head] (NaN for layers that cannot read it)."""
  mats = np.asarray(jax.device_get(k_composition_qk_matrices(w, prev_layer, prev_head)))
  out = np.full(mats.shape[:-1], np.nan, np.complex128)
  later = slice(prev_layer + 1, None)
  out[later] = host_eigenvalues(mats[later])
  return out


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
  src = jnp.asarray(source_tokens)
  dest_scores, dest_tokens = qk_circuit(w, full=True).top_k_in_columns(src, k)
  dest_scores = dest_scores / jnp.sqrt(jnp.float32(w.d_head))
  out_logits, out_tokens = ov_circuit(w, full=True).top_k_in_rows(src, k)
  return {"dest_tokens": dest_tokens, "dest_scores": dest_scores, "out_tokens": out_tokens,
          "out_logits": out_logits}
