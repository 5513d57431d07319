"""What the atlas measures of one model: every number of every head, on the trained weights and
again on the model's random init, each by the function and with the parameters a figure uses.

- circuits: full-OV and full-QK eigenvalues and positivity (``circuits.ov_eigenvalues``,
  ``qk_eigenvalues``, ``positivity``: ov_eigenvalues, eigen_hist); ‖W_V W_O‖_F; Q-, K- and
  V-composition minus the baseline (``circuits.composition_scores``, ``composition_baseline``:
  composition_scores); the K-composition QK positivity with the strongest earlier
  previous-token head (``ov_qk_scatter.scatter_coordinates``);
- behaviour: previous-token and prefix-matching scores (``roles.head_roles``), copying
  (``induction_heads.measure``: ``scores.copying_score`` on IH's probe), the induction stripe
  (``induction_attention.on_repeats``: ``scores.stripe_score``), attention on BOS from first
  occurrences (``induction_heads.bos_share``);
- position: for shortformer models, the distance of each head's pattern from its
  positional-only pattern (``circuits.positional_attention``) and how much of its attention
  score's variance the position–position, cross and content terms carry;
- the model: held-out loss and ICL score, and both with each head zero-ablated, from one shared
  pass (``scores.ablated_position_losses``, the pass ``scores.ablations_icl`` makes for
  head_ablations);
- token tables (trained weights only): ranked skip-trigrams with corpus counts and the top OV
  mappings, among the corpus's common tokens;
- the training trajectory of the two role scores over the model's snapshots.

Nothing here decides a role: ``records`` reads these arrays.  Arrays are [L, H] unless said.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from reproduce.atlas.plan import ablation_windows, scored_positions
from reproduce.config import project_module
from reproduce.core import circuits, scores
from reproduce.core.model import forward, norm_scale
from reproduce.core.weights import require_unsmeared
from reproduce.figure.roles import HeadRoles, head_roles
from reproduce.figure.sources import FigureError, Model, initial_weights

induction_attention = project_module("experiments", "induction_attention")
induction_heads = project_module("experiments", "induction_heads")
ov_qk_scatter = project_module("experiments", "ov_qk_scatter")
skip_trigrams = project_module("experiments", "skip_trigrams")

NO_TOKENIZER = ("no tokenizer: held-out text cannot be read (put the model's tokenizer.json "
                "beside it)")


def positional_terms(model: Model) -> Optional[str]:
  """None when positions reach the attention score apart from the tokens (shortformer models);
  else why the positional measures are undefined."""
  if model.cfg.pos != "shortformer":
    return (f"positions are added to the residual stream ({model.cfg.pos!r} positions), so no "
            "term of the attention score is positional alone")
  return None


def separable_qk(model: Model) -> Optional[str]:
  """None when a head's score splits exactly into content, cross and position–position terms
  (no norm, or positions added after it); else why it does not."""
  reason = positional_terms(model)
  if reason:
    return reason
  cfg, w = model.cfg, model.weights
  if cfg.norm == "none" or cfg.positions_after_norm or w.W_Q_pos is not None:
    return None
  return ("positions are normalised together with the tokens, N(x + W_pos), so the score has no "
          "separate positional term")


def at_weights(model: Model, weights, cfg=None) -> Model:
  """``model`` with other weights (its random init, a training snapshot): the same tokens,
  probes and windows, no snapshots of its own."""
  return dataclasses.replace(model, weights=weights, cfg=cfg or model.cfg, snapshots=None)


# ----------------------------------------------------------------------------------------------
# Position: how much of a head's attention position alone decides


def layer_inputs(model: Model, tokens, head_outputs) -> List[jnp.ndarray]:
  """Each layer's input stream x_l [B, T, d_model]: the embedding plus every earlier layer's
  head outputs and output bias (``residual_stream``'s sum, from the outputs it returned)."""
  w = model.weights
  x = jnp.asarray(w.W_E)[tokens]
  if model.cfg.pos == "standard":
    x = x + w.W_pos[: tokens.shape[1]]
  streams = []
  for l in range(model.cfg.n_layers):
    streams.append(x)
    x = x + head_outputs[l].sum(1) + (0.0 if w.b_O is None else w.b_O[l])
  return streams


def qk_term_shares(model: Model, tokens, head_outputs) -> Dict[str, np.ndarray]:
  """Per head, the share of the variance of its attention scores (within each destination's row,
  over the sources it can see, rows i ≥ 1, every window) carried by each term of
  q kᵀ = (q_c + q_p)(k_c + k_p)ᵀ: content q_c k_cᵀ (tokens and what earlier heads wrote),
  position–position q_p k_pᵀ (``circuits.positional_qk`` in layer 0) and the two cross terms.
  share(term) = Σ term·total / Σ total² over the row-centred entries, so the shares sum to 1
  (a term can take a negative share when it cancels the others); NaN where the scores do not
  vary (a zero QK).  Needs ``separable_qk``."""
  cfg, w = model.cfg, model.weights
  require_unsmeared(w, "the QK term shares")
  T = tokens.shape[1]
  pos = jnp.asarray(w.W_pos[:T])
  W_Q_pos, W_K_pos = w.positional_readers
  causal = jnp.tril(jnp.ones((T, T), bool)) & (jnp.arange(T)[:, None] >= 1)
  out = {k: np.zeros((cfg.n_layers, cfg.n_heads)) for k in ("content", "cross", "position")}
  for l, x in enumerate(layer_inputs(model, tokens, head_outputs)):
    if cfg.norm != "none":  # positions after the norm: the content is N(x) (folded: no gain)
      x = (x - x.mean(-1, keepdims=True)) / norm_scale(x, cfg.eps)
    bias = lambda b: 0.0 if b is None else b[l][None, None]
    q_c = jnp.einsum("btd,hde->bthe", x, w.W_Q[l]) + bias(w.b_Q)
    k_c = jnp.einsum("btd,hde->bthe", x, w.W_K[l]) + bias(w.b_K)
    q_p = jnp.einsum("td,hde->the", pos, W_Q_pos[l])[None]
    k_p = jnp.einsum("td,hde->the", pos, W_K_pos[l])[None]
    score = lambda q, k: jnp.einsum("bihe,bjhe->bhij", q, k) / jnp.sqrt(jnp.float32(cfg.d_head))
    terms = {"content": score(q_c, k_c),
             "cross": score(q_c, jnp.broadcast_to(k_p, k_c.shape))
             + score(jnp.broadcast_to(q_p, q_c.shape), k_c),
             "position": jnp.broadcast_to(score(q_p, k_p), (x.shape[0],) + (cfg.n_heads, T, T))}
    count = causal.sum(-1, keepdims=True)
    centred = {k: jnp.where(causal, v - jnp.where(causal, v, 0).sum(-1, keepdims=True) / count, 0)
               for k, v in terms.items()}
    total = sum(centred.values())
    variance = (total * total).sum(axis=(0, 2, 3))
    varies = np.asarray(variance) > 1e-12 * causal.sum() * x.shape[0]  # a zero QK: undefined
    for k, v in centred.items():
      share = np.asarray((v * total).sum(axis=(0, 2, 3)) / jnp.maximum(variance, 1e-30))
      out[k][l] = np.where(varies, share, np.nan)
  return out


def positional_distance(model: Model, patterns) -> np.ndarray:
  """Per head, the mean total-variation distance ½ Σ_j |A_ij − P_ij| between its pattern A on
  the windows and its positional-only pattern P (``circuits.positional_attention``) over rows
  i ≥ 1 and windows: 0 when position alone sets the pattern, up to 1."""
  T = patterns.shape[-1]
  out = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
  for l in range(model.cfg.n_layers):
    P = np.asarray(circuits.positional_attention(model.weights, T, layer=l))  # [H, T, T]
    A = np.asarray(patterns[l])  # [B, H, T, T]
    out[l] = 0.5 * np.abs(A[:, :, 1:] - P[None, :, 1:]).sum(-1).mean(axis=(0, 2))
  return out


# ----------------------------------------------------------------------------------------------
# The model with each head ablated


@dataclasses.dataclass(frozen=True)
class AblationPlan:
  """Where the shared ablation pass measures: the first ``windows`` of the ``icl_windows`` ICL
  windows (all of them when the pass fits the budget, ``plan.ablation_windows``), at the ICL
  score's two positions and the held-out loss's evenly spaced ones (``plan.scored_positions``)."""

  windows: int
  icl_windows: int
  early: int
  late: int
  spread: tuple
  positions: tuple
  note: str


def ablations(model: Model, plan: AblationPlan, inputs, targets) -> dict:
  """The ICL score and held-out loss of the model (group 0) and of each single head
  zero-ablated, from one shared pass (``scores.ablated_position_losses``, the pass
  ``scores.ablations_icl`` makes for head_ablations) on the first ``plan.windows`` ICL windows:
  the ICL score by ``scores.icl_of_losses``, the loss as the mean over windows and the spread
  positions (as ``scores.in_context_learning_score`` averages it)."""
  cfg = model.cfg
  L, H = cfg.n_layers, cfg.n_heads
  groups = [[]] + [[(l, h)] for l in range(L) for h in range(H)]
  positions = plan.positions
  losses = np.asarray(scores.ablated_position_losses(
      cfg, model.weights, inputs[:plan.windows], targets[:plan.windows], positions, groups))
  at = lambda g, p: losses[:, g, positions.index(int(p))]
  icl = [scores.icl_of_losses(at(g, plan.early), at(g, plan.late), plan.early, plan.late)
         for g in range(len(groups))]
  loss = np.array([np.mean([at(g, p).mean() for p in plan.spread]) for g in range(len(groups))])
  return {"icl": np.array([i["score"] for i in icl[1:]]).reshape(L, H),
          "loss": loss[1:].reshape(L, H), "base_icl": icl[0], "base_loss": float(loss[0]),
          "model_icl": icl[0]}


# ----------------------------------------------------------------------------------------------
# Token tables


def table_tokens(model: Model, config) -> np.ndarray:
  """The tokens the tables rank among: the ``table_tokens`` most frequent of the corpus seen at
  least ``min_count`` times, special tokens left out; without a tokenizer, the probes' pool."""
  if model.tokens is None:
    return model.sampling_pool()[: config.table_tokens]
  counts = np.array(model.tokens.counts[: model.cfg.d_vocab], np.int64)
  counts[[model.tokens.bos_id, model.tokens.eot_id]] = -1
  ranked = np.argsort(-counts, kind="stable")[: config.table_tokens]
  return np.sort(ranked[counts[ranked] >= config.min_count])


def token_tables(model: Model, config) -> dict:
  """Each head's ranked skip-trigrams (``scores.ranked_skip_trigrams``) with their corpus counts
  (``skip_trigrams.trigram_counts``), and its OV mappings: for the sources whose top gain is
  largest, the outputs it raises most (``scores.restricted``, ``scores.top_k_in_rows``), among
  ``table_tokens``; token strings for every id shown."""
  tokens = table_tokens(model, config)
  if len(tokens) < max(2, config.top_k, config.ov_outputs):
    return {"undefined": f"only {len(tokens)} tokens are seen ≥ {config.min_count} times"}
  w = model.weights
  L, H = model.cfg.n_layers, model.cfg.n_heads
  ranked = scores.ranked_skip_trigrams(w, tokens, min(config.destinations, len(tokens)),
                                       config.top_k)
  del ranked["dest_row"]
  counts = None
  if model.tokens is not None:
    counter = scores.SkipTrigramCounter(np.asarray(model.tokens.train[: config.corpus_tokens]),
                                        config.window)
    counts = skip_trigrams.trigram_counts(ranked, counter)
  _, ov = scores.restricted(w, tokens)
  chunk = max(1, (1 << 24) // (L * H * len(tokens)))
  gain, out = scores.top_k_in_rows(ov, config.ov_outputs, chunk)  # [L, H, n, k]
  pick = np.argsort(-gain[..., 0], axis=-1, kind="stable")[..., : config.ov_sources]
  ov_table = {"source": tokens[pick],
              "out": tokens[np.take_along_axis(out, pick[..., None], -2)],
              "gain": np.take_along_axis(gain, pick[..., None], -2)}
  on_text = None
  if model.tokens is not None:
    on_text = attended_pairs(model, config, tokens)
    position = np.searchsorted(tokens, on_text["source"])  # each pair's source among ``tokens``
    at = lambda a: np.take_along_axis(a, position[..., None], -2)
    on_text.update(out=tokens[at(out)], out_gain=at(gain))
    on_text["counts"] = np.zeros(on_text["out"].shape, np.int64)
    for index in np.ndindex(*on_text["out"].shape):
      l, h, r, _ = index
      on_text["counts"][index] = counter.count(on_text["source"][l, h, r],
                                               on_text["dest"][l, h, r], on_text["out"][index])
  names = skip_trigrams.token_names(
      model, ranked["dest"], ranked["source"], ranked["out"], ov_table["source"], ov_table["out"],
      *((on_text["source"], on_text["dest"], on_text["out"]) if on_text else ()))
  token_counts = (np.asarray(model.tokens.counts) if model.tokens is not None else None)
  return {"tokens": tokens, "skip": ranked, "counts": counts, "ov": ov_table, "names": names,
          "token_counts": token_counts, "on_text": on_text}


def attended_pairs(model: Model, config, tokens) -> dict:
  """Per head, the (source, destination) token pairs that take the most of its attention on
  text: over the first ``positional_tokens`` of ``positional_windows`` held-out windows, the
  attention A[i, j] from position i to each earlier position j ≥ 1 (not BOS, not itself) summed
  by (token j, token i), both among ``tokens``; the ``text_pairs`` largest, with their share of
  the head's attention to earlier non-BOS positions.  [L, H, n] ``source``, ``dest``, ``share``."""
  cfg = model.cfg
  text = np.asarray(model.heldout_windows(config.positional_windows)[0][
      :, : min(config.positional_tokens, cfg.n_ctx)])
  _, ex = forward(cfg, model.weights, text, return_patterns=True)
  A = np.asarray(ex["patterns"])  # [L, B, H, T, T]
  del ex
  T = text.shape[1]
  dest, src = np.tril_indices(T, -1)
  keep = src >= 1
  dest, src = dest[keep], src[keep]
  pair_src, pair_dest = text[:, src].ravel(), text[:, dest].ravel()  # [B · pairs]
  allowed = np.isin(pair_src, tokens) & np.isin(pair_dest, tokens)
  keys, inverse = np.unique(pair_src[allowed] * cfg.d_vocab + pair_dest[allowed],
                            return_inverse=True)
  n = min(config.text_pairs, len(keys))
  out = {k: np.zeros((cfg.n_layers, cfg.n_heads, n), np.int64) for k in ("source", "dest")}
  out["share"] = np.zeros((cfg.n_layers, cfg.n_heads, n))
  for l in range(cfg.n_layers):
    for h in range(cfg.n_heads):
      mass = A[l, :, h][:, dest, src].ravel()  # [B · pairs]
      summed = np.bincount(inverse, mass[allowed], minlength=len(keys))
      top = np.argsort(-summed, kind="stable")[:n]
      out["source"][l, h], out["dest"][l, h] = keys[top] // cfg.d_vocab, keys[top] % cfg.d_vocab
      out["share"][l, h] = summed[top] / max(float(mass.sum()), 1e-30)
  return out


# ----------------------------------------------------------------------------------------------
# One set of weights


def weight_scores(model: Model, config, prev_roles: Optional[HeadRoles], log) -> dict:
  """Every per-head number of ``model``'s weights, [L, H] each (NaN where undefined), plus the
  pieces the pages draw: eigenvalues, composition [L, H, L, H], the head roles and the
  attention probe.  ``prev_roles``: whose previous-token heads the K-composition QK term reads
  (the trained model's, also for its random init, as ov_qk_scatter does); None: its own."""
  w, cfg = model.weights, model.cfg
  L, H = cfg.n_layers, cfg.n_heads
  out, started = {}, time.time()

  def step(what):
    nonlocal started
    log(f"  {what} ({time.time() - started:.1f}s)")
    started = time.time()

  ov_eig, qk_eig = circuits.ov_eigenvalues(w), circuits.qk_eigenvalues(w)
  out.update(ov_eigenvalues=ov_eig, qk_eigenvalues=qk_eig,
             ov_positivity=circuits.positivity(ov_eig), qk_positivity=circuits.positivity(qk_eig),
             ov_norm=np.asarray(circuits.ov_circuit(w, full=False).frobenius_norm()))
  baseline = circuits.composition_baseline(w, jax.random.key(config.composition_seed),
                                           config.composition_samples)
  out["composition"] = {kind: np.asarray(circuits.composition_scores(w, kind)) - baseline
                        for kind in circuits.COMPOSITION_KINDS}
  out["composition_baseline"] = baseline
  step("circuits: eigenvalues, positivity, composition")
  roles = head_roles(model, config.role_threshold, config.text_windows)
  out.update(roles=roles, previous_token=roles.previous_token, prefix_matching=roles.induction)
  kcomp = np.full((L, H), np.nan)
  if L >= 2:
    _, qk, prev = ov_qk_scatter.scatter_coordinates(w, prev_roles or roles)
    kcomp[1:] = qk
    out["kcomp_previous_head"] = prev
  out["kcomp_qk_positivity"] = kcomp
  step("previous-token, prefix-matching, K-composition QK")
  probe, _, copying = induction_heads.measure(model, w, config)
  out.update(copying=copying["score"], copying_defined=copying["defined"])
  out["bos_probe"] = induction_heads.bos_share(model, probe, scores.first_occurrences(probe))
  if model.tokens is not None:
    text = model.heldout_windows(config.bos_text_windows)[0]
    out["bos_text"] = induction_heads.bos_share(model, text, scores.first_occurrences(text))
  else:
    out["bos_text"] = np.full((L, H), np.nan)
  attention = (induction_attention.repeats_and_text if model.tokens is not None
               else induction_attention.on_repeats)(config.attention, model)
  out.update(stripe=attention["stripe"], attention=attention)
  step("copying, attention on BOS, induction stripe")
  out["positional_tv"] = np.full((L, H), np.nan)
  out["qk_shares"] = None
  if positional_terms(model) is None:
    if model.tokens is not None:
      tokens = model.heldout_windows(config.positional_windows)[0][
          :, : min(config.positional_tokens, cfg.n_ctx)]
    else:
      tokens = scores.prefix_probe(cfg.n_ctx, model.sampling_pool(), model.bos_id)[0]
    _, ex = forward(cfg, w, tokens, return_patterns=True, return_head_outputs=True)
    out["positional_tv"] = positional_distance(model, ex["patterns"])
    if separable_qk(model) is None:
      out["qk_shares"] = qk_term_shares(model, jnp.asarray(tokens), ex["head_outputs"])
    del ex
    step("positional distance and QK terms")
  return out


# ----------------------------------------------------------------------------------------------
# The whole model


@dataclasses.dataclass
class Measured:
  """Everything the atlas measured of one model (``records.model_record`` reads it)."""

  model: Model
  config: object
  trained: dict  # ``weight_scores`` of the trained weights
  init: dict  # … of the random init
  init_source: str  # what the random init is (a step-0 snapshot, a fresh init)
  ablation_plan: Optional[AblationPlan]
  ablated: Optional[dict]  # ``ablations`` of the trained weights (None without text)
  init_ablated: Optional[dict]
  tables: dict  # ``token_tables`` of the trained weights
  trajectory: Optional[dict]  # x, axis, previous_token [n, L, H], prefix_matching [n, L, H]
  seconds: float = 0.0


def ablation_plan(cfg, config) -> AblationPlan:
  """Where the shared ablation pass measures (``AblationPlan``), with a note saying so."""
  early, late, spread, positions = scored_positions(cfg, config)
  windows = ablation_windows(cfg, config)
  note = (f"the model and every head zero-ablated on {windows} held-out windows of {cfg.n_ctx} "
          f"tokens, ICL score at positions {early} and {late}, held-out loss at "
          f"{len(spread)} evenly spaced positions 0…{late}"
          + ("" if windows == config.icl_windows else
             f" (the first {windows} of the {config.icl_windows} ICL windows: all of them would "
             f"exceed the {config.ablation_budget_tflop:g} TFLOP budget)"))
  return AblationPlan(windows, config.icl_windows, early, late, spread, positions, note)


def trajectory(model: Model, config, log) -> Optional[dict]:
  """Previous-token and prefix-matching scores (``roles.head_roles``) at up to
  ``config.trajectory_snapshots`` of the model's training snapshots, one in memory at a time."""
  snaps = model.snapshots
  if snaps is None or model.cfg.n_layers == 0:
    return None
  n = len(snaps)
  picked = (range(n) if n <= config.trajectory_snapshots else
            np.unique(np.linspace(0, n - 1, config.trajectory_snapshots).round().astype(int)))
  x, prev, prefix = [], [], []
  started = time.time()
  for index in picked:
    cfg, weights, meta = snaps.load(int(index))
    roles = head_roles(at_weights(model, weights, cfg), config.role_threshold,
                       config.text_windows)
    x.append(int(snaps.position(meta) or 0))
    prev.append(roles.previous_token)
    prefix.append(roles.induction)
    del cfg, weights, meta, roles
  log(f"  trajectory: {len(x)} of {n} {snaps.source} ({time.time() - started:.1f}s)")
  return {"x": np.array(x), "axis": snaps.axis, "source": snaps.source,
          "previous_token": np.stack(prev), "prefix_matching": np.stack(prefix)}


def measure_model(model: Model, config, log: Callable[[str], None] = print) -> Measured:
  """Everything the atlas shows of ``model`` (module docstring), with progress lines."""
  if model.cfg.n_layers == 0:
    raise FigureError(f"{model.label}: the atlas needs a model with attention layers")
  started = time.time()
  log(f"atlas {model.label}: trained weights")
  trained = weight_scores(model, config, None, log)
  init_weights, init_source = initial_weights(model)
  log(f"atlas {model.label}: random init ({init_source})")
  init_model = at_weights(model, init_weights)
  init = weight_scores(init_model, config, trained["roles"], log)
  plan, ablated, init_ablated = None, None, None
  if model.tokens is not None:
    plan = ablation_plan(model.cfg, config)
    inputs, targets = model.heldout_windows(config.icl_windows)
    t0 = time.time()
    ablated = ablations(model, plan, inputs, targets)
    init_ablated = ablations(init_model, plan, inputs, targets)
    log(f"  ablations: {plan.note} ({time.time() - t0:.1f}s)")
  t0 = time.time()
  tables = token_tables(model, config)
  log(f"  token tables ({time.time() - t0:.1f}s)")
  path = trajectory(model, config, log)
  return Measured(model, config, trained, init, init_source, plan, ablated, init_ablated, tables,
                  path, round(time.time() - started, 1))
