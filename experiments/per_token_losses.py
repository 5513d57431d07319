"""The phase change seen in per-token losses and in the weights (IH, 'Argument 1''s other views).

Everything comes from ``induction_formation``'s shared pass over the snapshots (``formation``):
no other pass.

- Per-token-loss PCA: every snapshot's per-token held-out losses (K windows × T positions,
  flattened; the same tokens for every model) from every model, stacked as rows, centred on their
  common mean; one SVD gives one basis, and each model's trajectory is drawn in PC1–PC2.
- Loss(n_train, i_ctx): the per-token loss averaged over the K windows at each context index
  i_ctx = position + 1 (the tokens the prediction sees), averaged again within log-spaced bins of
  i_ctx, as a heatmap over training and log i_ctx; and ∂Loss/∂ln i_ctx between neighbouring bins.
- IH's previous-token K-composition QK trace of every later-layer head over training
  (``circuits.previous_token_k_composition_trace``).

Claims (2L, the model that forms induction heads; each verdict a pure function below):
- turn: the sharpest turn of the 2L trajectory in PC1–PC2 lies in the formation window.  The
  turn at snapshot t is the angle between the displacement from the last snapshot at ≤ tokens/r
  to t and the displacement from t to the first snapshot at ≥ r·tokens, r = the formation
  window's ratio (2): successive displacements over the window's own scale, so that
  snapshot-to-snapshot jitter late in training (small steps in noisy directions) does not count
  as a turn;
- no 1L turn: the 1L model's sharpest turn over the same span of tokens is below the 2L's
  (the measured baseline: the model that cannot form induction heads, on the same basis);
- trace: the induction head's trace gains ≥ ``majority`` of its total rise (initialisation →
  end) inside the formation window, the share ``induction_formation`` asks of prefix matching;
- late context: after the window the loss keeps falling with ln i_ctx beyond the ICL score's
  early position, more steeply than before the window.
"""

import numpy as np
from matplotlib.ticker import NullFormatter

from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure
from reproduce.figure.runner import figure_module
from reproduce.figure.sources import FigureError, has_snapshots

DESCRIPTION = ("Per-token-loss PCA trajectories, Loss(tokens, context index) and its log-index "
               "derivative, and the previous-token K-composition trace, 1L vs 2L")
ORDER = 102  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
SHARES = ("induction_formation",)  # reads its shared pass (``formation``)
IH_PHASE_CHANGE = "IH, 'Argument 1: … a “phase change” during training'"

TURN = ("IH, \"Argument 1\": projected on the principal components of the per-token losses, "
        "the training trajectory of a model that forms induction heads changes direction "
        "abruptly at the \"phase change\", a turn that the one-layer models do not show")
NO_TURN_1L = ("IH, \"Argument 1\": one-layer models have no \"phase change\": their per-token-loss "
              "trajectories show no comparable turn")
TRACE = ("IH, \"Argument 1\" (the phase change is when induction heads form, through K-composition "
         "with a previous-token head): the trace of the induction head's QK term K-composed with "
         "the previous-token heads grows during the \"phase change\"")
LATE_CONTEXT = ("IH, \"Argument 1\": the derivative of the loss with respect to the log of the "
                "token index shows the phase change: before it the loss \"largely stops "
                "improving around token 50\", after it the loss \"continues to improve past "
                "that point\"")


# ----------------------------------------------------------------------------------------------
# The maths (pure functions of small arrays)

def pca(rows):
  """(scores [n, k], components [k, d], explained [k]) of ``rows`` [n, d]: centred on their
  mean, SVD X = U S Vᵀ; scores = U S (the rows' coordinates), components = Vᵀ, explained =
  S² / Σ S² (each component's share of the total variance), k = min(n, d).  Each component's
  sign is fixed so that its largest-magnitude entry is positive."""
  X = np.asarray(rows, np.float64)
  X = X - X.mean(0)
  U, S, Vt = np.linalg.svd(X, full_matrices=False)
  signs = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), 1)])
  signs[signs == 0] = 1
  U, Vt = U * signs, Vt * signs[:, None]
  total = float(np.sum(S ** 2))
  return U * S, Vt, (S ** 2 / total if total > 0 else np.zeros_like(S))


def turn_angles(tokens, points, ratio):
  """The trajectory's change of direction at each snapshot t, in degrees [n] (NaN where it is
  undefined): the angle between a = points[t] − points[b] and c = points[f] − points[t], b the
  last snapshot with tokens ≤ tokens[t] / ratio, f the first with tokens ≥ ratio · tokens[t]
  (undefined without both, at tokens 0, or where a displacement is zero)."""
  tokens, points = np.asarray(tokens, float), np.asarray(points, float)
  out = np.full(len(tokens), np.nan)
  for t in range(len(tokens)):
    if tokens[t] <= 0:
      continue
    before = np.flatnonzero(tokens <= tokens[t] / ratio)
    after = np.flatnonzero(tokens >= tokens[t] * ratio)
    if not len(before) or not len(after):
      continue
    a, c = points[t] - points[before[-1]], points[after[0]] - points[t]
    norms = np.linalg.norm(a) * np.linalg.norm(c)
    if norms > 0:
      out[t] = np.degrees(np.arccos(np.clip(a @ c / norms, -1.0, 1.0)))
  return out


def sharpest_turn(tokens, angles, lo=None, hi=None):
  """(index, angle) of the largest defined angle at the snapshots with lo ≤ tokens ≤ hi (None:
  no bound); None where no angle there is defined."""
  tokens, angles = np.asarray(tokens, float), np.asarray(angles, float)
  keep = np.isfinite(angles)
  if lo is not None:
    keep &= tokens >= lo
  if hi is not None:
    keep &= tokens <= hi
  if not keep.any():
    return None
  index = int(np.flatnonzero(keep)[np.argmax(angles[keep])])
  return index, float(angles[index])


def context_bins(T, n_bins):
  """Log-spaced bins of the context index i_ctx = 1 … T: (members, centres), members a list of
  0-based position arrays (i_ctx − 1), one per non-empty bin of the edges geomspace(1, T + 1,
  n_bins + 1); centres the geometric mean of each bin's i_ctx (so that a bin's mean of
  a + s·ln i_ctx is a + s·ln centre exactly)."""
  index = np.arange(1, T + 1)
  edges = np.geomspace(1, T + 1, n_bins + 1)
  which = np.clip(np.searchsorted(edges, index, side="right") - 1, 0, n_bins - 1)
  members = [index[which == b] - 1 for b in range(n_bins) if np.any(which == b)]
  centres = np.array([np.exp(np.mean(np.log(m + 1))) for m in members])
  return members, centres


def binned_context_loss(token_losses, members):
  """Loss(n_train, bin) [n, B]: ``token_losses`` [n, K, T] averaged over the K windows and over
  each bin's positions."""
  by_index = np.asarray(token_losses, np.float64).mean(1)  # [n, T]
  return np.stack([by_index[:, m].mean(1) for m in members], 1)


def log_index_derivative(binned, centres):
  """∂Loss/∂ln i_ctx between neighbouring bins: (binned[:, b+1] − binned[:, b]) /
  (ln centres[b+1] − ln centres[b]) [n, B − 1], at the points sqrt(centres[b] centres[b+1])."""
  binned, centres = np.asarray(binned, float), np.asarray(centres, float)
  step = np.diff(np.log(centres))
  return np.diff(binned, axis=1) / step, np.sqrt(centres[:-1] * centres[1:])


def rise_share(values, i, j):
  """(share, total): the rise values[j] − values[i] as a share of the total rise values[−1] −
  values[0] (initialisation → end); share NaN when the total is not a rise or a value is NaN."""
  values = np.asarray(values, float)
  total = float(values[-1] - values[0])
  share = float(values[j] - values[i]) / total if total > 0 else float("nan")
  return share, total


def late_context_slope(derivative, points, start):
  """Mean ∂Loss/∂ln i_ctx [n] over the derivative points at i_ctx > ``start`` (NaN without any)."""
  late = np.asarray(points) > start
  if not late.any():
    return np.full(len(derivative), np.nan)
  return np.asarray(derivative)[:, late].mean(1)


# ----------------------------------------------------------------------------------------------
# The verdicts

def turn_claim(label, tokens, angles, window, ratio, clear=None):
  """The 2L trajectory's sharpest turn lies in the formation window ``window`` (lo, hi) tokens;
  fails where nothing formed (``window`` None) or no turn is defined.  ``clear``, the run's
  constant-learning-rate phase (``induction_formation.constant_phase``), is reported beside the
  verdict, not part of it: the sharpest turn whose displacements both lie inside it."""
  criterion = (f"the largest change of direction of the PC1–PC2 trajectory (the angle between "
               f"successive displacements over a factor {ratio:g} in tokens each, at every "
               "snapshot where both are defined) is at a snapshot inside the formation window "
               "(induction_formation's, ends included)")
  best = sharpest_turn(tokens, angles)
  if window is None or best is None:
    measured = ("no formation window: no head formed" if window is None
                else "no turn defined: too few snapshots")
    return claim(figure="per_token_losses", what="turn_in_window", model=label,
                 paper_says=TURN, statement=f"{label}: its per-token-loss trajectory turns "
                 "sharpest in the formation window", source=IH_PHASE_CHANGE,
                 criterion=criterion, measured=measured, value=None, holds=False)
  index, angle = best
  inside = bool(window[0] <= tokens[index] <= window[1])
  in_window = sharpest_turn(tokens, angles, *window)
  steady = None if clear is None else sharpest_turn(tokens, angles, clear[0] * ratio,
                                                    clear[1] / ratio)
  return claim(
      figure="per_token_losses", what="turn_in_window", model=label, paper_says=TURN,
      statement=f"{label}: its per-token-loss trajectory turns sharpest in the formation window",
      source=IH_PHASE_CHANGE, criterion=criterion,
      measured=f"sharpest turn {angle:.0f}° at {tokens[index]:,.0f} tokens; window "
      f"{window[0]:,.0f} → {window[1]:,.0f}" + ("" if in_window is None else
                                                 f" (its sharpest {in_window[1]:.0f}°)")
      + ("" if steady is None else f"; not tested: within the constant-learning-rate phase "
         f"the sharpest is {steady[1]:.0f}° at {tokens[steady[0]]:,.0f} tokens"),
      value={"angle": angle, "tokens": float(tokens[index]), "window": list(window),
             "in_window": None if in_window is None else in_window[1],
             "constant_learning_rate": None if steady is None else
             {"angle": steady[1], "tokens": float(tokens[steady[0]])}},
      holds=inside)


def no_turn_1l_claim(label, tokens, angles, window, reference):
  """The 1L trajectory's sharpest turn over the 2L window's span of tokens stays below the 2L
  model's sharpest turn in its window (``reference``, degrees; None: nothing formed)."""
  criterion = ("the sharpest turn of the 1L trajectory (same basis, same angle) at its snapshots "
               "inside the 2L model's formation window is smaller than the 2L model's sharpest "
               "turn there (the baseline: the model that cannot form induction heads)")
  turn = None if window is None else sharpest_turn(tokens, angles, *window)
  if window is None or reference is None or turn is None:
    why = ("no 2L formation window to compare in" if window is None or reference is None
           else f"no 1L turn defined in the 2L window {window[0]:,.0f} → {window[1]:,.0f} tokens "
           f"(the 1L snapshots reach {np.max(tokens):,.0f} tokens; a turn needs one at twice "
           "its own)")
    return claim(figure="per_token_losses", what="no_turn_1l", model=label,
                 paper_says=NO_TURN_1L, statement=f"{label}: no comparable turn",
                 source=IH_PHASE_CHANGE, criterion=criterion,
                 measured=f"cannot be tested: {why}", value=None, holds=False)
  return claim(
      figure="per_token_losses", what="no_turn_1l", model=label, paper_says=NO_TURN_1L,
      statement=f"{label}: no comparable turn", source=IH_PHASE_CHANGE, criterion=criterion,
      measured=f"1L sharpest turn in {window[0]:,.0f} → {window[1]:,.0f} tokens: {turn[1]:.0f}° "
      f"(at {tokens[turn[0]]:,.0f}); 2L: {reference:.0f}°",
      value={"angle": turn[1], "reference": reference}, holds=turn[1] < reference)


def trace_claim(label, trace, head, gain, majority):
  """The induction head's K-composition trace gains ≥ ``majority`` of its total rise between the
  formation window's snapshots ``gain`` (i, j, …); fails with no window, a layer-0 head (no
  trace) or a trace that never rises."""
  criterion = (f"the induction head's previous-token K-composition QK trace rises by ≥ "
               f"{majority} of its total rise (first snapshot, the model at initialisation, → "
               "final) between the formation window's snapshots (induction_formation's "
               "\"abrupt\" share)")
  statement = f"{label}: the induction head's K-composition trace rises mostly in the window"
  if gain is None or trace is None or not np.all(np.isfinite(trace)):
    why = "no formation window" if gain is None else "the induction head is in layer 0"
    return claim(figure="per_token_losses", what="trace_in_window", model=label,
                 paper_says=TRACE, statement=statement, source=IH_PHASE_CHANGE,
                 criterion=criterion, measured=f"cannot be tested: {why}", value=None,
                 holds=False)
  i, j = gain[0], gain[1]
  share, total = rise_share(trace, i, j)
  return claim(
      figure="per_token_losses", what="trace_in_window", model=label, paper_says=TRACE,
      statement=statement, source=IH_PHASE_CHANGE, criterion=criterion,
      measured=f"{head}: trace {trace[0]:+.2f} → {trace[-1]:+.2f} over training (rise "
      f"{total:+.2f}); {trace[i]:+.2f} → {trace[j]:+.2f} in the window: share "
      + (f"{share:.2f}" if np.isfinite(share) else "undefined (the trace does not rise)"),
      value={"share": share, "total": total, "window": [float(trace[i]), float(trace[j])]},
      holds=bool(np.isfinite(share) and share >= majority))


def late_context_claim(label, slopes, gain, start):
  """After the window (snapshot j) the mean ∂Loss/∂ln i_ctx beyond i_ctx ``start`` is below
  (more negative than) before it (snapshot i)."""
  criterion = (f"mean ∂Loss/∂ln i_ctx over the context indices beyond the ICL score's early "
               f"position (i_ctx > {start}) at the window's last snapshot < at its first")
  statement = f"{label}: after the window the loss keeps improving further into the context"
  if gain is None or not np.isfinite(slopes[gain[0]]) or not np.isfinite(slopes[gain[1]]):
    why = "no formation window" if gain is None else f"no context index beyond {start}"
    return claim(figure="per_token_losses", what="late_context", model=label,
                 paper_says=LATE_CONTEXT, statement=statement, source=IH_PHASE_CHANGE,
                 criterion=criterion, measured=f"cannot be tested: {why}", value=None,
                 holds=False)
  before, after = float(slopes[gain[0]]), float(slopes[gain[1]])
  return claim(
      figure="per_token_losses", what="late_context", model=label, paper_says=LATE_CONTEXT,
      statement=statement, source=IH_PHASE_CHANGE, criterion=criterion,
      measured=f"{before:+.3f} nats per unit ln i_ctx before the window, {after:+.3f} after",
      value={"before": before, "after": after}, holds=after < before)


# ----------------------------------------------------------------------------------------------
# The figure

def same_windows(models, formation_config) -> bool:
  """Whether every model's per-token losses are on the same held-out tokens (the first K of the
  same ``icl_windows`` windows)."""
  K, n = formation_config.token_loss_windows, formation_config.icl_windows
  windows = [tuple(np.asarray(a)[:K] for a in m.heldout_windows(n)) for m in models.values()]
  return all(w[0].shape == windows[0][0].shape and np.array_equal(w[0], windows[0][0])
             and np.array_equal(w[1], windows[0][1]) for w in windows[1:])


def _x_edges(x):
  """Cell edges on a log axis around positions ``x`` (> 0): geometric midpoints."""
  x = np.asarray(x, float)
  if len(x) == 1:
    return np.array([x[0] / 1.2, x[0] * 1.2])
  mid = np.sqrt(x[:-1] * x[1:])
  return np.concatenate([[x[0] ** 2 / mid[0]], mid, [x[-1] ** 2 / mid[-1]]])


def run(config, models, outdir):
  formation = figure_module("induction_formation")
  fc = config.formation
  if len(models) > 1 and not same_windows(models, fc):
    raise FigureError("per_token_losses: the models' per-token losses are not on the same "
                      "held-out tokens (different corpora, tokenizers or contexts): no shared "
                      "PCA basis")
  labels = list(models)
  for label in labels:  # before the pass over the snapshots, not after it
    if not has_snapshots(models[label]):
      raise FigureError(f"per_token_losses: {label} has no training snapshots (a weight file): "
                        "these views need the trajectory")
  plt = pyplot()
  fs = {label: formation.formation(fc, models[label]) for label in labels}
  windows = {label: formation.formed_window(fc, fs[label]) for label in labels}
  rows = np.concatenate([fs[l]["token_losses"].reshape(len(fs[l]["tokens"]), -1) for l in labels])
  scores, _, explained = pca(rows)
  starts = np.cumsum([0] + [len(fs[l]["tokens"]) for l in labels])
  coords = {l: scores[starts[k]:starts[k + 1], :2] for k, l in enumerate(labels)}
  angles = {l: turn_angles(fs[l]["tokens"], coords[l], fc.window_ratio) for l in labels}

  n_rows = 1 + len(labels)
  fig, axes = plt.subplots(n_rows, 3, figsize=(16, 4.2 * n_rows), squeeze=False,
                           layout="constrained")
  numbers = {"explained_variance": explained[:10], "models": {}}
  # Row 0: the PCA trajectories, their turn angles, the K-composition trace.
  ax = axes[0, 0]
  every = np.concatenate([np.maximum(fs[l]["tokens"], 1) for l in labels])
  norm = plt.Normalize(np.log10(every[every > 1].min()) if (every > 1).any() else 0,
                       np.log10(every.max()))
  markers = dict(zip(labels, ("o", "s", "^", "D")))
  for label in labels:
    f, xy, window = fs[label], coords[label], windows[label]
    ax.plot(xy[:, 0], xy[:, 1], "-", color="#bbb", lw=0.8, zorder=1)
    points = ax.scatter(xy[:, 0], xy[:, 1], c=np.log10(np.maximum(f["tokens"], 1)), cmap="viridis",
                        norm=norm, marker=markers[label], s=18, zorder=2, label=label)
    if window is not None:
      inside = (f["tokens"] >= window[0]) & (f["tokens"] <= window[1])
      ax.plot(xy[inside, 0], xy[inside, 1], "-", color="#e67e22", lw=3, zorder=1.5,
              label=f"{label}: formation window")
  ax.annotate("initialisation", coords[labels[0]][0], fontsize=7)
  late = next((windows[l][0] / 4 for l in labels if windows[l] is not None), None)
  if late is not None:  # the trajectories' last stretch, where the window lies, enlarged
    inset = ax.inset_axes([0.07, 0.55, 0.4, 0.4])
    for label in labels:
      f, xy, window = fs[label], coords[label], windows[label]
      keep = f["tokens"] >= late
      inset.plot(xy[keep, 0], xy[keep, 1], "-", color="#bbb", lw=0.8)
      inset.scatter(xy[keep, 0], xy[keep, 1], c=np.log10(f["tokens"][keep]), cmap="viridis",
                    norm=norm, marker=markers[label], s=12)
      if window is not None:
        inside = (f["tokens"] >= window[0]) & (f["tokens"] <= window[1])
        inset.plot(xy[inside, 0], xy[inside, 1], "-", color="#e67e22", lw=2.5, zorder=0)
    inset.text(0.02, 0.02, f"from {late:,.0f} tokens", transform=inset.transAxes, fontsize=7)
    inset.tick_params(labelsize=6)
  fig.colorbar(points, ax=ax, label="log10 tokens seen")
  ax.set_xlabel(f"PC1 ({explained[0]:.0%} of the variance)")
  ax.set_ylabel(f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2")
  ax.set_title("per-token losses: one PCA over every snapshot of both models", fontsize=9)
  ax.legend(fontsize=7, loc="lower left")
  ax = axes[0, 1]
  for label in labels:
    f = fs[label]
    shown = np.isfinite(angles[label])
    ax.plot(f["tokens"][shown], angles[label][shown], marker=markers[label], ms=3, label=label)
  window_2l = next((windows[l] for l in labels if models[l].cfg.n_layers >= 2), None)
  formation.shade_window(ax, window_2l, "formation window")
  ax.set_ylabel("change of direction in PC1–PC2 (degrees)")
  ax.set_title(f"turn at each snapshot: displacements over ×{fc.window_ratio:g} tokens before "
               "and after", fontsize=9)
  ax.legend(fontsize=7)
  ax = axes[0, 2]
  two = [l for l in labels if models[l].cfg.n_layers >= 2]
  for label in two:
    f, H = fs[label], models[label].cfg.n_heads
    shown = f["tokens"] > 0
    for l in range(1, models[label].cfg.n_layers):
      for h in range(H):
        best = f["best_head"] == l * H + h
        ax.plot(f["tokens"][shown], f["k_composition_trace"][shown, l, h],
                lw=1.8 if best else 0.8, color="#c0392b" if best else None,
                label=f"{label} L{l}H{h}" + (" (induction head)" if best else ""))
    formation.shade_window(ax, windows[label], "formation window")
  ax.axhline(0, color="#bbb", lw=0.8)
  ax.set_ylabel("trace, summed over layer-0 heads k × prev-token score of k")
  ax.set_title("previous-token K-composition QK trace, each later-layer head" if two else
               "K-composition trace: no model with two layers", fontsize=9)
  if two:
    ax.legend(fontsize=7)
  for ax in axes[0, 1:]:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("tokens seen")

  claims = []
  # One row per model: Loss(n_train, i_ctx), its log-index derivative, the loss by context index.
  for row, label in enumerate(labels, start=1):
    f, window, model = fs[label], windows[label], models[label]
    T = f["token_losses"].shape[-1]
    members, centres = context_bins(T, config.context_bins)
    binned = binned_context_loss(f["token_losses"], members)
    derivative, points = log_index_derivative(binned, centres)
    shown = f["tokens"] > 0
    x = _x_edges(f["tokens"][shown])
    y = np.concatenate([[members[0][0] + 0.5], [m[-1] + 1.5 for m in members]])  # i_ctx ± ½
    mesh = axes[row, 0].pcolormesh(x, y, binned[shown].T, cmap="magma_r", shading="flat")
    fig.colorbar(mesh, ax=axes[row, 0], label="loss (nats)")
    axes[row, 0].set_title(f"{label}: Loss(tokens seen, context index), mean of "
                           f"{f['token_losses'].shape[1]} windows", fontsize=9)
    # Each difference spans its two bins' centres; colours clipped at the 95th percentile of
    # |∂|, else the first bins' steep fall washes out the rest of the context.
    limit = float(np.nanpercentile(np.abs(derivative[shown]), 95)) if derivative.size else 1.0
    mesh = axes[row, 1].pcolormesh(x, centres, derivative[shown].T, cmap="RdBu_r",
                                   shading="flat", vmin=-limit, vmax=limit)
    fig.colorbar(mesh, ax=axes[row, 1], label="∂Loss/∂ln i_ctx (nats; clipped)", extend="both")
    axes[row, 1].set_title(f"{label}: ∂Loss/∂ln i_ctx between neighbouring log bins "
                           "(blue: later tokens predicted better)", fontsize=9)
    early = f["positions"][0] + 1  # the ICL score's early position as an i_ctx
    for ax in axes[row, :2]:
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("tokens seen")
      ax.set_ylabel("context index i_ctx")
      ax.axhline(early, color="#2e86c1", lw=0.8, ls="--")
      if window is not None:
        for edge in window:
          ax.axvline(edge, color="#e67e22", lw=1.2)
    ax = axes[row, 2]
    picks = sorted({0, len(f["tokens"]) - 1} | (set() if f["gain"] is None or window is None
                                                  else {f["gain"][0], f["gain"][1]}))
    for k in picks:
      ax.plot(centres, binned[k], "o-", ms=3, label=f"{f['tokens'][k]:,.0f} tokens")
    ax.set_xscale("log")
    ax.set_xlabel("context index i_ctx")
    ax.set_ylabel("loss (nats)")
    ax.set_title(f"{label}: loss by context index" + (" (window's first and last snapshots)"
                                                     if window is not None else ""), fontsize=9)
    ax.legend(fontsize=7)
    slopes = late_context_slope(derivative, points, early)
    numbers["models"][label] = {
        "tokens": f["tokens"], "pc": coords[label], "turn_degrees": angles[label],
        "window": window, "context_centres": centres, "loss_by_context": binned,
        "log_index_derivative": derivative, "derivative_points": points,
        "late_context_slope": slopes, "previous_token": f["previous_token"],
        "k_composition_trace": f["k_composition_trace"]}
    gain = f["gain"] if window is not None else None
    if model.cfg.n_layers >= 2:
      best = sharpest_turn(f["tokens"], angles[label], *window) if window is not None else None
      claims.append(turn_claim(label, f["tokens"], angles[label], window, fc.window_ratio,
                               formation.constant_phase(model)))
      H = model.cfg.n_heads
      head = f["best_head"]
      trace = f["k_composition_trace"].reshape(len(f["tokens"]), -1)[:, head]
      claims.append(trace_claim(label, trace, f"L{head // H}H{head % H}", gain, fc.majority))
      claims.append(late_context_claim(label, slopes, gain, early))
      numbers["models"][label]["sharpest_turn_in_window"] = best
  reference = next(((l, windows[l]) for l in two), None)
  for label in labels:
    if models[label].cfg.n_layers == 1 and reference is not None:
      ref_label, ref_window = reference
      best = (None if ref_window is None else
              sharpest_turn(fs[ref_label]["tokens"], angles[ref_label], *ref_window))
      claims.append(no_turn_1l_claim(label, fs[label]["tokens"], angles[label], ref_window,
                                     None if best is None else best[1]))
  save_figure(fig, outdir, "per_token_losses")
  write_json(outdir / "per_token_losses.json", numbers)
  return claims
