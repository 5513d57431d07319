"""The stacked weight pytree that every circuit function takes, and the architecture it describes.

Convention (row vectors, head-major), as in docs/METHODS.md, "Conventions":

    W_E   [vocab, d_model]              x = W_E[tokens]
    W_pos [n_ctx, d_model]              added to the Q/K inputs ("shortformer") or the residual ("standard")
    W_Q, W_K, W_V [L, H, d_model, d_head]
    W_O   [L, H, d_head, d_model]
    W_U   [d_model, vocab]              logits = x @ W_U

Per head W_QK = W_Q W_Kᵀ and W_OV = W_V W_O (both d_model × d_model).  The paper's column-vector
W_OV is the transpose of ours; its W_QK = W_Qᵀ W_K is the same matrix as our W_Q W_Kᵀ (the
score of destination x_i and source x_j is x_i W_QK x_jᵀ here, x_iᵀ W_QK x_j there).

Optional parts (``None`` when absent, and then omitted from ``to_dict``):

    b_Q, b_K, b_V [L, H, d_head]    b_O [L, d_model]    b_U [vocab]        biases
    ln_gain, ln_bias [L, d_model]   ln_final, ln_final_bias [d_model]      layer norm (norm="ln")
    W_Q_pos, W_K_pos [L, H, d_model, d_head]    positional readers (folded LN(x) + W_pos models)
    smear [L, H]                    smeared-key logits α (``ModelConfig.smear_keys`` models)

Smeared keys (IH, "Argument 2"): each head's keys become k'_j = σ(α) k_j + (1 − σ(α)) k_{j−1}
(j ≥ 1, k'_0 = k_0) after its biases and positional terms (``model.smear_key_vectors``).  Only
models with ``ModelConfig.smear_keys`` carry ``smear``, and they must.  The circuit functions
that read W_Q and W_K describe unsmeared keys only, so they refuse such weights
(``require_unsmeared``).

Normalisation (``ModelConfig.norm``): "none"; "ln", (x − mean)/sqrt(var + eps) · gain (+ bias)
wherever the residual stream is read; "lnpre", the same without gain or bias (TransformerLens's
LNPre, and what a folded "ln" model becomes).  With shortformer positions and a norm,
``ModelConfig.pos_after_norm`` says where W_pos enters the Q/K input: False (our trained models)
LN(x + W_pos); True (TransformerLens) LN(x) + W_pos.

Positional readers: folding such an LN(x) + W_pos model (``fold_for_analysis``) moves the gain
into W_Q and W_K, while the positions must still meet the raw ones, so W_pos gets its own
readers: q = N(x) W_Q + b_Q + W_pos[p] W_Q_pos (k likewise with W_K_pos), N the gainless norm.
Only models with ``ModelConfig.positions_after_norm`` carry them, both or neither.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

POSITION_INITS = ("learned", "sinusoidal")
WEIGHT_NAMES = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")
BIAS_NAMES = ("b_Q", "b_K", "b_V", "b_O", "b_U")
NORM_NAMES = ("ln_gain", "ln_bias", "ln_final", "ln_final_bias")
POSITIONAL_READER_NAMES = ("W_Q_pos", "W_K_pos")
SMEAR_NAME = "smear"
# Initial α of a smeared-key model: 0, so σ(α) = 1/2 (each key starts as the mean of its own
# position's and the previous one's), where the logistic is steepest: neither the vanilla key
# (σ → 1) nor the pure previous-position key (σ → 0) is favoured, and the gradient moves α
# fastest.  A constant, so it draws no random numbers (the other weights are drawn as without it).
SMEAR_INIT = 0.0


class UnfoldedLayerNormError(ValueError):
  """Circuit maths asked of weights that still carry layer-norm gains or biases."""


class SmearedKeysError(ValueError):
  """Circuit maths on W_Q, W_K asked of a smeared-key model, whose keys they do not describe."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Weights:
  """All weights of an attention-only model, stacked once as [layer, head, ...] arrays."""

  W_E: Any
  W_pos: Any
  W_Q: Any
  W_K: Any
  W_V: Any
  W_O: Any
  W_U: Any
  ln_gain: Optional[Any] = None
  ln_final: Optional[Any] = None
  b_Q: Optional[Any] = None
  b_K: Optional[Any] = None
  b_V: Optional[Any] = None
  b_O: Optional[Any] = None
  b_U: Optional[Any] = None
  ln_bias: Optional[Any] = None
  ln_final_bias: Optional[Any] = None
  W_Q_pos: Optional[Any] = None
  W_K_pos: Optional[Any] = None
  smear: Optional[Any] = None

  @property
  def n_layers(self) -> int:
    return self.W_Q.shape[0]

  @property
  def n_heads(self) -> int:
    return self.W_Q.shape[1]

  @property
  def d_model(self) -> int:
    return self.W_E.shape[1]

  @property
  def d_head(self) -> int:
    return self.W_Q.shape[-1]

  @property
  def d_vocab(self) -> int:
    return self.W_E.shape[0]

  def to_dict(self) -> dict:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

  @classmethod
  def from_dict(cls, d: dict) -> "Weights":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown weight names {sorted(unknown)}; expected {sorted(known)}")
    missing = [k for k in WEIGHT_NAMES if k not in d]
    if missing:
      raise ValueError(f"missing weights {missing}")
    return cls(**d)

  def replace(self, **kw) -> "Weights":
    return dataclasses.replace(self, **kw)

  @property
  def has_biases(self) -> bool:
    return any(getattr(self, n) is not None for n in BIAS_NAMES)

  @property
  def has_norm_parameters(self) -> bool:
    """True while layer-norm gains or biases are still separate from the weights."""
    return any(getattr(self, n) is not None for n in NORM_NAMES)

  @property
  def positional_readers(self) -> tuple:
    """(W_Q_pos, W_K_pos) where present, else (W_Q, W_K): the weights that read W_pos in a
    shortformer model's queries and keys, [L, H, d_model, d_head] each."""
    if self.W_Q_pos is None:
      return self.W_Q, self.W_K
    return self.W_Q_pos, self.W_K_pos


def require_folded(w: Weights, what: str = "circuit analysis") -> None:
  """Raises UnfoldedLayerNormError if ``w`` still has layer-norm gains or biases."""
  if w.has_norm_parameters:
    raise UnfoldedLayerNormError(
        f"{what} needs weights with the layer norm folded in, but these still carry its gain"
        " (ln_gain/ln_final): load with reproduce.load(path) (fold=True, the default) or call "
        "reproduce.core.weights.fold_for_analysis(config, weights)")


def require_unsmeared(w: Weights, what: str = "this circuit analysis") -> None:
  """Raises SmearedKeysError if ``w`` has smeared keys (``Weights.smear``): W_Q W_Kᵀ then
  scores a key mixed with the previous position's, which no QK circuit here accounts for."""
  if w.smear is not None:
    raise SmearedKeysError(
        f"{what} reads W_Q/W_K as the keys, but this is a smeared-key model (k'_j = σ(α) k_j + "
        "(1 − σ(α)) k_{j−1}): its QK circuits are not W_Q W_Kᵀ; use forward-pass measures "
        "(patterns, prefix matching, ICL) instead")


def check_weights(cfg: ModelConfig, w: Weights) -> None:
  """Raises ValueError naming the first weight whose shape does not match ``cfg``."""
  L, H, D, dh, V, T = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab, cfg.n_ctx
  expected = {
      "W_E": (V, D), "W_pos": (T, D), "W_Q": (L, H, D, dh), "W_K": (L, H, D, dh),
      "W_V": (L, H, D, dh), "W_O": (L, H, dh, D), "W_U": (D, V),
  }
  if cfg.norm == "ln":
    expected.update(ln_gain=(L, D), ln_final=(D,))
  optional = {"b_Q": (L, H, dh), "b_K": (L, H, dh), "b_V": (L, H, dh), "b_O": (L, D), "b_U": (V,)}
  if cfg.norm == "ln":
    optional.update(ln_bias=(L, D), ln_final_bias=(D,))
  for name, shape in expected.items():
    got = getattr(w, name)
    if got is None or tuple(got.shape) != shape:
      raise ValueError(f"weight {name} has shape {None if got is None else tuple(got.shape)}, "
                       f"expected {shape} for {cfg}")
  for name in NORM_NAMES + BIAS_NAMES:
    got = getattr(w, name)
    if got is None or name in expected:
      continue
    if name not in optional:
      raise ValueError(f"weight {name} is present but model.norm is {cfg.norm!r}")
    if tuple(got.shape) != optional[name]:
      raise ValueError(f"weight {name} has shape {tuple(got.shape)}, expected {optional[name]}")
  _check_positional_readers(cfg, w)
  _check_smear(cfg, w)


def _check_smear(cfg: ModelConfig, w: Weights) -> None:
  """``smear`` [L, H] present exactly when ``cfg.smear_keys``."""
  smeared = bool(getattr(cfg, "smear_keys", False))
  if w.smear is None:
    if smeared:
      raise ValueError("model.smear_keys is True but the weights have no smear logits "
                       f"(weight {SMEAR_NAME}, [n_layers, n_heads])")
    return
  if not smeared:
    raise ValueError(f"weight {SMEAR_NAME} is present but model.smear_keys is False")
  if tuple(w.smear.shape) != (cfg.n_layers, cfg.n_heads):
    raise ValueError(f"weight {SMEAR_NAME} has shape {tuple(w.smear.shape)}, expected "
                     f"{(cfg.n_layers, cfg.n_heads)}")


def _check_positional_readers(cfg: ModelConfig, w: Weights) -> None:
  """W_Q_pos and W_K_pos: both or neither, [L, H, d_model, d_head], and only where positions
  are added after the norm (elsewhere W_Q and W_K read them)."""
  present = [n for n in POSITIONAL_READER_NAMES if getattr(w, n) is not None]
  if not present:
    return
  if len(present) == 1:
    raise ValueError(f"weight {present[0]} needs its partner: W_Q_pos and W_K_pos come together")
  if not cfg.positions_after_norm:
    raise ValueError("W_Q_pos/W_K_pos are present but the model does not add shortformer "
                     f"positions after a norm (pos={cfg.pos!r}, norm={cfg.norm!r}, "
                     f"pos_after_norm={cfg.pos_after_norm})")
  shape = (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head)
  for name in present:
    if tuple(getattr(w, name).shape) != shape:
      raise ValueError(f"weight {name} has shape {tuple(getattr(w, name).shape)}, "
                       f"expected {shape}")


def sinusoidal_positions(n_ctx: int, d_model: int) -> np.ndarray:
  """Fixed sinusoidal position vectors [n_ctx, d_model]: sin on even dims, cos on odd dims."""
  pos = np.arange(n_ctx)[:, None]
  freq = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
  table = np.zeros((n_ctx, d_model), np.float32)
  table[:, 0::2] = np.sin(pos * freq)
  table[:, 1::2] = np.cos(pos * freq)[:, : d_model // 2]
  return table


def init_weights(cfg: ModelConfig, key: jax.Array, *, init_std: float = 0.02,
                 qk_init_std: Optional[float] = None, pos_init: str = "learned",
                 pos_scale: float = 1.0) -> Weights:
  """Random initial weights: every matrix ~ N(0, init_std²); W_Q and W_K ~ N(0, qk_init_std²).

  ``pos_init="sinusoidal"`` gives fixed sinusoidal positions times ``pos_scale`` (the trainer keeps
  them frozen); ``"learned"`` gives N(0, (init_std·pos_scale)²).  A ``smear_keys`` model also
  gets ``smear`` [L, H] = ``SMEAR_INIT`` (σ(α) = 1/2), drawing nothing: its other weights are
  those of the same config without smeared keys.
  """
  if pos_init not in POSITION_INITS:
    raise ValueError(f"model.pos_init must be one of {POSITION_INITS}, got {pos_init!r}")
  L, H, D, dh, V, T = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab, cfg.n_ctx
  qk_std = init_std if qk_init_std is None else qk_init_std
  k = jax.random.split(key, 7)
  normal = lambda kk, shape, std: std * jax.random.normal(kk, shape, jnp.float32)
  if pos_init == "sinusoidal":
    W_pos = jnp.asarray(sinusoidal_positions(T, D)) * pos_scale
  else:
    W_pos = normal(k[1], (T, D), init_std * pos_scale)
  return Weights(
      W_E=normal(k[0], (V, D), init_std), W_pos=W_pos,
      W_Q=normal(k[2], (L, H, D, dh), qk_std), W_K=normal(k[3], (L, H, D, dh), qk_std),
      W_V=normal(k[4], (L, H, D, dh), init_std), W_O=normal(k[5], (L, H, dh, D), init_std),
      W_U=normal(k[6], (D, V), init_std),
      ln_gain=jnp.ones((L, D), jnp.float32) if cfg.norm == "ln" else None,
      ln_final=jnp.ones((D,), jnp.float32) if cfg.norm == "ln" else None,
      smear=(jnp.full((L, H), SMEAR_INIT, jnp.float32) if getattr(cfg, "smear_keys", False)
             else None),
  )


def _f64(a):
  return None if a is None else np.asarray(jax.device_get(a), np.float64)


def fold_for_analysis(cfg: ModelConfig, w: Weights) -> tuple:
  """(config, weights) processed as TransformerLens's default loading does; same function.

  TransformerLens's ``from_pretrained`` defaults (fold_ln, center_writing_weights,
  center_unembed, fold_value_biases), in its order and under its rules (row vectors):

  1. fold the layer norm ("ln" only): for every reader W (W_Q, W_K, W_V of layer l; W_U) with
     bias b, b ← b + β W, then W ← (I − 11ᵀ/d) diag(γ) W (gain, then centring over d_model).
     The norm becomes "lnpre" (normalisation without gain or bias).
  2. centre the writing weights ("ln"/"lnpre"): W_E, W_pos, W_O and b_O minus their mean over
     d_model (the norm removes that mean anyway).
  3. centre the unembedding: W_U and b_U minus their mean over the vocabulary (every logit at a
     position moves by the same amount; softmax is unchanged).
  4. fold the value biases: b_O ← b_O + Σ_h b_Vʰ W_Oʰ (patterns sum to 1), b_V ← 0 (dropped).

  Shortformer models: TransformerLens skips steps 1-3 for them, and so do we for "none" and
  "lnpre".  "ln" models fold too:
    positions inside the norm, LN(x + W_pos) (our trained models): steps 1, 2 and 4.
    positions after it, LN(x) + W_pos (TransformerLens's order): all four steps, except that
      W_pos stays raw and gets its own readers, the raw W_Q and W_K (row vectors, n(x) the
      gainless norm, W_Q' the folded W_Q):
        q = (γ ⊙ n(x) + β + W_pos[p]) W_Q + b_Q = n(x) W_Q' + b_Q' + W_pos[p] W_Q_pos,
      W_Q_pos = W_Q (unscaled by γ, not centred), and k likewise.  The token path is then
      exactly TransformerLens's processing of the same weights as a standard model with
      W_pos = 0.
  Logits are unchanged except for a per-position constant from step 3.
  """
  W = {k: _f64(v) for k, v in w.to_dict().items()}
  shortformer, fold_norm = cfg.pos == "shortformer", cfg.norm == "ln"
  centre_writers = cfg.norm in ("ln", "lnpre") and (not shortformer or fold_norm)
  centre_positions = centre_writers and not cfg.positions_after_norm
  centre_unembed = not shortformer or (fold_norm and cfg.positions_after_norm)
  centre = lambda a, axis: a - a.mean(axis, keepdims=True)
  if fold_norm:
    if cfg.positions_after_norm:
      W.setdefault("W_Q_pos", W["W_Q"])
      W.setdefault("W_K_pos", W["W_K"])
    _fold_layer_norm(cfg, W)
    cfg = dataclasses.replace(cfg, norm="lnpre")
  if centre_writers:
    for name in ("W_E", "W_O", "b_O") + (("W_pos",) if centre_positions else ()):
      if name in W:
        W[name] = centre(W[name], -1)
  if centre_unembed:
    W["W_U"] = centre(W["W_U"], -1)
    if "b_U" in W:
      W["b_U"] = centre(W["b_U"], -1)
  if "b_V" in W:
    L, D = cfg.n_layers, cfg.d_model
    b_V = W.pop("b_V")
    W["b_O"] = W.get("b_O", np.zeros((L, D))) + np.einsum("lhe,lhed->ld", b_V, W["W_O"])
    if centre_writers:
      W["b_O"] = centre(W["b_O"], -1)
  return cfg, Weights.from_dict({k: jnp.asarray(v, jnp.float32) for k, v in W.items()})


def _fold_layer_norm(cfg: ModelConfig, W: dict) -> None:
  """Step 1 of ``fold_for_analysis``, in place on the float64 dict ``W``: for each reader W with
  bias b, b ← b + β W and W ← (I − 11ᵀ/d_model) diag(γ) W; the gains and biases are removed."""
  D, L, H, dh = cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_head
  centre_rows = lambda a: a - a.mean(-2, keepdims=True)  # over d_model, the readers' input axis
  gain, beta = W.pop("ln_gain"), W.pop("ln_bias", np.zeros((L, D)))
  for name, bias in (("W_Q", "b_Q"), ("W_K", "b_K"), ("W_V", "b_V")):
    W[bias] = W.get(bias, np.zeros((L, H, dh))) + np.einsum("ld,lhde->lhe", beta, W[name])
    W[name] = centre_rows(gain[:, None, :, None] * W[name])
  gain_f, beta_f = W.pop("ln_final"), W.pop("ln_final_bias", np.zeros(D))
  W["b_U"] = W.get("b_U", np.zeros(cfg.d_vocab)) + beta_f @ W["W_U"]
  W["W_U"] = centre_rows(gain_f[:, None] * W["W_U"])


def biases_as_weights(cfg: ModelConfig, w: Weights) -> tuple:
  """An exactly equivalent bias-free model whose residual stream has one more dimension, always 1.

  Only for ``norm="none"`` (a norm would rescale the constant).  Row vectors: x̃ = [x − c_l, 1]
  where c_l = Σ_{l' < l} b_Oˡ' is the constant the earlier layers' output biases have added by
  layer l.  Then every affine reader becomes linear:

      x W + b = [x − c_l, 1] [[W], [b + c_l W]]   for W_Q, W_K, W_V of layer l (c_L for W_U)

  W_E gains a last column of ones, W_pos and W_O a last column of zeros (nothing writes the
  constant, and W_pos never reaches it), so the constant dimension stays exactly 1.  Logits and
  patterns are identical; every circuit function runs on the result (d_model + 1 dimensions).
  """
  if cfg.norm != "none":
    raise ValueError(f"biases_as_weights needs a model without layer norm (model.norm is "
                     f"{cfg.norm!r}): normalisation would rescale the constant dimension")
  W = {k: _f64(v) for k, v in w.to_dict().items()}
  L, H, D, dh, V = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab
  b_O = W.pop("b_O", np.zeros((L, D)))
  offsets = np.concatenate([np.zeros((1, D)), np.cumsum(b_O, 0)])  # c_0 … c_L
  pad_column = lambda a, value: np.concatenate(
      [a, np.full(a.shape[:-1] + (1,), value)], axis=-1)
  out = {"W_E": pad_column(W["W_E"], 1.0), "W_pos": pad_column(W["W_pos"], 0.0),
         "W_O": pad_column(W["W_O"], 0.0)}
  for name, bias in (("W_Q", "b_Q"), ("W_K", "b_K"), ("W_V", "b_V")):
    b = W.pop(bias, np.zeros((L, H, dh))) + np.einsum("ld,lhde->lhe", offsets[:L], W[name])
    out[name] = np.concatenate([W[name], b[:, :, None, :]], axis=2)
  b_U = W.pop("b_U", np.zeros(V)) + offsets[L] @ W["W_U"]
  out["W_U"] = np.concatenate([W["W_U"], b_U[None]], axis=0)
  if SMEAR_NAME in W:  # keys are smeared after the (now linear) bias: unchanged
    out[SMEAR_NAME] = W[SMEAR_NAME]
  cfg = dataclasses.replace(cfg, d_model=D + 1)
  return cfg, Weights.from_dict({k: jnp.asarray(v, jnp.float32) for k, v in out.items()})
