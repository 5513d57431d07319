"""Each head ablated with every attention pattern preserved, across training (IH, 'Argument 3').

At training snapshots of each model (an evenly spaced subset of the run's log-spaced snapshots,
``choose_snapshots``; the formation window's two ends always among them), every head is ablated
in turn with the patterns and norm scales of the unablated run held fixed
(``scores.pattern_preserving_losses``: only the value paths downstream of the head change), on
the held-out windows of the shared pass of ``induction_formation`` (``formation``).  Per head
and snapshot:

- ΔICL = ICL(ablated) − ICL(clean), ICL = loss at the late position − at the early one
  (``scores.icl_positions``), with its paired standard error over windows (per window: Δ loss
  late − Δ loss early), on all the shared pass's ICL windows (512 on the cpu preset: K = 64
  windows' two tokens each would leave an induction head's ΔICL uncertain by ~0.2 nats).
  ΔICL > 0: the ablation removes in-context learning; −ΔICL / ICL is the share removed;
- the projection Δℓ · u of the per-token loss change Δℓ = ℓ(ablated) − ℓ(clean) (flattened over
  the K × T tokens of the first K windows, whose clean per-token losses the shared pass holds,
  ``token_losses`` [n, K, T]) on the unit before-and-after vector u = (ℓ_end − ℓ_start) / ‖ℓ_end − ℓ_start‖,
  ℓ_start and ℓ_end the clean per-token losses of the 2L model at the start and the end of its
  formation window (its best head's steepest gain, ``formation()["gain"]``).  The same u for
  every model with the same held-out tokens.  A negative projection: ablating the head undoes
  the phase change's per-token loss change.

Beside them, IH's comparison: ΔICL of the full (total) ablation, every later pattern recomputed
(``scores.ablated_position_losses``).  In a 2L model the two coincide for the layer-1 heads (no
later layer reads them).  The induction heads of the final model (prefix matching ≥ ``formed``,
layers ≥ 1) are ablated one at a time and together.  The claims use the pattern-preserving
measurement, which is IH's.
"""

import numpy as np
from matplotlib.ticker import NullFormatter

from reproduce.core import scores
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure
from reproduce.figure.runner import figure_module
from reproduce.figure.sources import has_snapshots, require_tokens

DESCRIPTION = ("Each head's pattern-preserving ablation over training: its ΔICL, beside the full "
               "ablation's, and its loss change along the before-and-after vector")
ORDER = 112  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
SHARES = ("induction_formation",)  # reads its shared pass (clean per-token losses, window)
# Where the paper says what the claims test: section names, which every copy carries.
IH_KNOCK_OUT = "IH, 'Argument 3: … “knock out” induction heads'"


def choose_snapshots(n: int, most: int, keep=()) -> np.ndarray:
  """Indices of at most ``most`` (all when ``most`` ≤ 0 or ≥ n) of n snapshots, evenly spaced
  in index (the runs' snapshots are log-spaced in tokens, so these are too), the first and last
  included, plus the indices ``keep``."""
  if most <= 0 or most >= n:
    return np.arange(n)
  picked = np.round(np.linspace(0, n - 1, most)).astype(int)
  return np.unique(np.concatenate([picked, np.asarray(keep, int)]))


def before_and_after(token_losses, gain):
  """The unit vector (ℓ[j] − ℓ[i]) / ‖ℓ[j] − ℓ[i]‖ over the flattened K × T tokens, from the
  per-token losses [n, K, T] and the window's snapshot indices ``gain`` = (i, j, …); None when
  there is no window or the two are equal."""
  if gain is None:
    return None
  v = (np.asarray(token_losses[gain[1]], np.float64)
       - np.asarray(token_losses[gain[0]], np.float64)).ravel()
  norm = np.linalg.norm(v)
  return v / norm if norm > 0 else None


def icl_change(delta_early, delta_late):
  """(mean, paired standard error) over windows of Δ loss late − Δ loss early ([K, …] each):
  the change of the ICL score an ablation makes."""
  d = np.asarray(delta_late, np.float64) - np.asarray(delta_early, np.float64)
  error = d.std(axis=0, ddof=1) / np.sqrt(d.shape[0]) if d.shape[0] > 1 else np.nan * d[0]
  return d.mean(axis=0), error


def ablate_snapshot(cfg, w, windows, token_windows, clean_tokens, groups, early: int,
                    late: int, u):
  """One snapshot's ablations of ``groups``, [G] each: ΔICL with the patterns preserved and
  fully, with their paired standard errors, on ``windows`` (inputs, targets: all the shared
  pass's ICL windows, losses at ``early`` and ``late`` only, the clean ones from the same pass:
  an empty group); the clean ICL score there; and the projection on u of the per-token loss
  change on ``token_windows`` (the K windows) against their clean per-token losses
  ``clean_tokens`` [K, T] (NaN without u, and that pass skipped).  In a 1-layer model every
  head is in the last layer, where the two ablations coincide: one pass serves both."""
  inputs, targets = windows
  both = [[]] + list(groups)
  full = np.asarray(scores.ablated_position_losses(cfg, w, inputs, targets, (early, late),
                                                   both))  # [N, 1 + G, 2]
  pp = full if cfg.n_layers == 1 else scores.pattern_preserving_losses(
      cfg, w, inputs, targets, both, positions=(early, late))
  out = {}
  for key, losses in (("pp", pp), ("full", full)):
    d = losses[:, 1:] - losses[:, :1]
    out[key], out[f"{key}_error"] = icl_change(d[:, :, 0], d[:, :, 1])
  out["icl"], out["icl_error"] = icl_change(pp[:, 0, 0], pp[:, 0, 1])
  if u is None:
    out["projection"] = np.full(len(groups), np.nan)
    return out
  x, y = token_windows
  d = scores.pattern_preserving_losses(cfg, w, x, y, groups) - np.asarray(clean_tokens)[:, None]
  out["projection"] = np.einsum("kgt,kt->g", d, u.reshape(d.shape[0], d.shape[2]))
  return out


def induction_heads(prefix_final, formed: float):
  """The final model's induction heads: (layer, head) in layers ≥ 1 with prefix matching
  ≥ ``formed`` (a layer-0 head has no earlier head to compose with)."""
  return [(l, h) for l in range(1, prefix_final.shape[0]) for h in range(prefix_final.shape[1])
          if prefix_final[l, h] >= formed]


def measure_model(config, model, f, u, reference_inputs):
  """The numbers of one model at its chosen snapshots (``choose_snapshots``), one snapshot in
  memory at a time.  Groups: every head alone, then the induction heads together (if any).
  ΔICL on all the shared pass's ICL windows (512 on the cpu preset: two single-token losses per
  window leave the score on K = 64 windows uncertain by ~0.5 nats, and an induction head's ΔICL
  by ~0.2); the projection on its K windows, whose clean per-token losses it holds."""
  fc = config.formation
  L, H = model.cfg.n_layers, model.cfg.n_heads
  inputs, targets = (np.asarray(a) for a in model.heldout_windows(fc.icl_windows))
  K = f["token_losses"].shape[1]
  same = reference_inputs is not None and np.array_equal(inputs[:K], reference_inputs)
  u_here = u if same else None
  early, late = (int(p) for p in f["positions"])
  heads = [(l, h) for l in range(L) for h in range(H)]
  induction = induction_heads(f["prefix"][-1], fc.formed)
  groups = [[x] for x in heads] + ([induction] if len(induction) > 1 else [])
  gain = f["gain"]
  index = choose_snapshots(len(f["tokens"]), config.snapshots,
                           () if gain is None else gain[:2])
  rows = []
  for i in index:
    cfg, w, _ = model.snapshots.load(int(i))
    rows.append(ablate_snapshot(cfg, w, (inputs, targets), (inputs[:K], targets[:K]),
                                f["token_losses"][i], groups, early, late, u_here))
    del cfg, w

  def stack(key):  # [S, G], the induction heads together last (one head: its own column)
    a = np.stack([r[key] for r in rows])
    return np.concatenate([a, a[:, [heads.index(induction[0])]]], 1) if len(induction) == 1 \
        else a
  return {"index": index, "tokens": np.asarray(f["tokens"])[index], "heads": heads,
          "induction": induction, "icl": np.array([r["icl"] for r in rows]),
          "icl_standard_error": np.array([r["icl_error"] for r in rows]),
          "icl_windows": int(inputs.shape[0]),
          "pp": stack("pp"), "pp_error": stack("pp_error"), "full": stack("full"),
          "full_error": stack("full_error"), "projection": stack("projection"),
          "gain": None if gain is None else (int(gain[0]), int(gain[1])),
          "formed": figure_module("induction_formation").formed_window(fc, f) is not None,
          "windows": K, "positions": [early, late], "same_tokens": bool(same),
          "axis": f["axis"], "layers": L,
          "no_vector": ("" if u_here is not None else "no 2L model with a formation window"
                        if u is None else "other held-out tokens than the 2L model's")}


# ---------------------------------------------------------------------------------------------
# Verdicts: pure functions of small arrays.

def share_removed(dicl, icl) -> float:
  """Pooled share of the ICL an ablation removes over some snapshots: −Σ ΔICL / Σ ICL (ICL < 0
  where the context helps; 1 = all of it removed, < 0 = the ablation increases it); NaN when
  Σ ICL ≥ 0 (no in-context learning to remove)."""
  total = float(np.sum(icl))
  return -float(np.sum(dicl)) / total if total < 0 else float("nan")


def removes_almost_all(dicl_after, icl_after, almost_all: float):
  """(holds, share): the pooled share after the window is ≥ ``almost_all``."""
  share = share_removed(dicl_after, icl_after)
  return bool(np.isfinite(share) and share >= almost_all), share


def far_less_before(dicl_start: float, dicl_after, fraction: float):
  """(holds, after): ΔICL at the window's start ≤ ``fraction`` × the mean ΔICL after the window,
  which must be > 0 (the ablation removes some ICL there)."""
  after = float(np.mean(dicl_after))
  return bool(after > 0 and dicl_start <= fraction * after), after


def others_remove_little(shares, little: float):
  """(holds, names removing < little): more than half of the heads in ``shares`` (name →
  pooled share removed) each remove less than ``little``."""
  small = [k for k, v in shares.items() if np.isfinite(v) and v < little]
  return bool(shares) and 2 * len(small) > len(shares), small


def points_back(projection_after, is_induction):
  """(holds, argmin): the head with the most negative mean projection after the window ([G]
  over heads) is an induction head, and its projection is negative."""
  p = np.asarray(projection_after, np.float64)
  if not np.isfinite(p).any():
    return False, None
  k = int(np.nanargmin(p))
  return bool(is_induction[k] and p[k] < 0), k


# ---------------------------------------------------------------------------------------------

def head_name(lh) -> str:
  return f"L{lh[0]}H{lh[1]}"


KNOCK_OUT = ("IH, \"Argument 3\" (ablations): in small attention-only models, ablating the "
             "induction heads at test time, with the attention patterns preserved, removes "
             "\"almost all\" of the in-context learning once they have formed; before the phase "
             "change they account for little of it")
KNOCK_OUT_OTHERS = ("IH, \"Argument 3\": in the same models, ablating most of the other heads "
                    "\"slightly increases\" the in-context learning")
BEFORE_AFTER = ("IH, \"Argument 3\": projected on the before-and-after vector (the per-token "
                "losses at the phase change's end minus at its start), the loss change from "
                "ablating an induction head points back along it: the ablation undoes the phase "
                "change")


def claims_of(config, label, m) -> list:
  """IH, 'Argument 3', from the pattern-preserving measurement ``m`` (``measure_model``; can be
  made by hand): after the formation window the induction heads together remove almost all of
  the ICL, at its start far less; most other heads remove little; the most negative projection
  on the before-and-after vector is an induction head's.  "After the window": the chosen
  snapshots from the window's end on, pooled.  Without a formation window or an induction head
  every claim fails and says so."""
  claim_on = lambda what, **kw: claim(figure="ablations_over_training", what=what, model=label,
                                      source=IH_KNOCK_OUT, **kw)
  index, heads, induction = np.asarray(m["index"]), m["heads"], m["induction"]
  missing = ("no formation window (no head reaches prefix matching "
             f"{config.formation.formed:g}): nothing to compare before and after; "
             if not m["formed"] or m["gain"] is None else
             "no induction head in the final model; " if not induction else "")
  G = len(heads)
  if missing:
    after = np.zeros(len(index), bool)
    start = None
  else:
    i, j = m["gain"]
    after = index >= j
    start = int(np.flatnonzero(index == i)[0])
  tokens = np.asarray(m["tokens"])
  where = (f"over the {int(after.sum())} chosen snapshots from the window's end "
           f"({tokens[after][0]:,.0f} tokens) on" if after.any() else "")
  names = "+".join(head_name(x) for x in induction) or "none"
  out = []
  # 1. the induction heads together, after the window
  if missing:
    holds, share = False, float("nan")
  else:
    holds, share = removes_almost_all(m["pp"][after, G], m["icl"][after], config.almost_all)
  out.append(claim_on(
      "induction_heads", paper_says=KNOCK_OUT,
      statement=f"{label}: after the formation window, ablating the induction heads with the "
      "patterns preserved removes almost all of the in-context learning",
      criterion=f"the final model's induction heads (prefix matching ≥ "
      f"{config.formation.formed:g}, layers ≥ 1) ablated together, patterns and norm scales "
      f"held at the unablated run's; pooled over the snapshots from the window's end on, "
      f"−Σ ΔICL / Σ ICL ≥ {config.almost_all} (IH's \"almost all\": at most a tenth left), "
      f"on {m['icl_windows']} held-out windows",
      measured=missing + (f"{names} {where}: share removed {share:.2f} (mean ΔICL "
                          f"{np.mean(m['pp'][after, G]):+.3f} nats against a mean ICL score of "
                          f"{np.mean(m['icl'][after]):+.3f})" if not missing else ""),
      value={"share_removed": share, "heads": names}, holds=holds))
  # 2. before the window, far less
  if missing:
    holds, mean_after, at_start = False, float("nan"), float("nan")
  else:
    at_start = float(m["pp"][start, G])
    holds, mean_after = far_less_before(at_start, m["pp"][after, G], config.before_fraction)
  out.append(claim_on(
      "induction_heads_before", paper_says=KNOCK_OUT,
      statement=f"{label}: at the start of the formation window, ablating the same heads "
      "(patterns preserved) removes far less in-context learning than after it",
      criterion=f"ΔICL of the final model's induction heads together at the window's first "
      f"snapshot ≤ {config.before_fraction} × its mean over the snapshots from the window's end "
      f"on, which must be > 0 ({config.before_fraction} = 1 − IH's \"more than 75% of the "
      "final ICL forms inside the window\")",
      measured=missing + (f"{names}: ΔICL {at_start:+.3f} nats at {tokens[start]:,.0f} tokens, "
                          f"{mean_after:+.3f} after the window" if not missing else ""),
      value={"at_start": at_start, "after": mean_after}, holds=holds))
  # 3. the other heads
  others = [g for g, x in enumerate(heads) if x not in induction]
  shares = ({head_name(heads[g]): share_removed(m["pp"][after, g], m["icl"][after])
             for g in others} if not missing else {})
  holds, small = others_remove_little(shares, config.little) if not missing else (False, [])
  increase = [k for k, v in shares.items() if v < 0]
  out.append(claim_on(
      "other_heads", paper_says=KNOCK_OUT_OTHERS,
      statement=f"{label}: after the formation window, ablating most of the other heads (patterns "
      "preserved) removes little of the in-context learning",
      criterion=f"more than half of the heads that are not induction heads each remove < "
      f"{config.little:g} (1 − {config.almost_all}: what \"almost all\" leaves) of the ICL, "
      "pooled over the snapshots from the window's end on; IH finds most of them increase it "
      "slightly (a negative share)",
      measured=missing + (f"{len(small)} of {len(shares)} remove < {config.little:g}; "
                          f"{len(increase)} increase the ICL; per head: " + "; ".join(
                              f"{k} {v:+.2f}" for k, v in shares.items()) if not missing else ""),
      value={"shares": shares, "removing_little": small, "increasing": increase}, holds=holds))
  # 4. the before-and-after projection
  projection = (np.nanmean(m["projection"][after, :G], axis=0) if not missing
                else np.full(G, np.nan))
  is_induction = [x in induction for x in heads]
  holds, k = points_back(projection, is_induction) if not missing else (False, None)
  no_vector = not np.isfinite(projection).any()
  out.append(claim_on(
      "before_and_after", paper_says=BEFORE_AFTER,
      statement=f"{label}: after the formation window, the head whose ablation (patterns "
      "preserved) moves the per-token losses furthest back along the before-and-after vector is "
      "an induction head",
      criterion="per head, Δℓ · u (Δℓ: the per-token loss change over the K × T tokens; u: the "
      "unit vector of the 2L model's per-token losses at the window's end minus its start), "
      "averaged over the snapshots from the window's end on; the most negative is an "
      "induction head's and is < 0",
      measured=missing + (f"no before-and-after vector ({m['no_vector']})"
                          if not missing and no_vector else "") + (
          f"most negative: {head_name(heads[k])} {projection[k]:+.3f}; per head: " + "; ".join(
              f"{head_name(x)} {p:+.3f}" for x, p in zip(heads, projection))
          if k is not None else ""),
      value={head_name(x): float(p) for x, p in zip(heads, projection)}, holds=holds))
  return out


# ---------------------------------------------------------------------------------------------

def head_colours(heads, induction):
  """Red shades for the induction heads, blue for layer 0, grey for the rest."""
  reds = ["#c0392b", "#e67e22", "#8e44ad", "#d35400", "#a93226"]
  out, r = {}, 0
  for x in heads:
    if x in induction:
      out[x] = reds[r % len(reds)]
      r += 1
    else:
      out[x] = "#5dade2" if x[0] == 0 else "#95a5a6"
  return out


def plot(config, results, windows, outdir) -> None:
  """Per model a row: pattern-preserving ΔICL per head, the full ablation's, and the projection
  on the before-and-after vector, against tokens seen."""
  plt = pyplot()
  fig, axes = plt.subplots(len(results), 3, figsize=(16, 3.8 * len(results)), squeeze=False,
                           layout="constrained")
  for row, (label, m) in enumerate(results.items()):
    heads, induction = m["heads"], m["induction"]
    G, colours = len(heads), head_colours(heads, induction)
    shown = m["tokens"] > 0  # log axis: the step-0 snapshot is left out of the drawing
    x = m["tokens"][shown]
    axes[row, 1].sharey(axes[row, 0])
    for col, key, title in ((0, "pp", "pattern-preserving ablation (IH)"),
                            (1, "full", "full ablation (later patterns recomputed)")):
      ax = axes[row, col]
      ax.plot(x, -m["icl"][shown], ":", color="#1c2833", lw=1.2,
              label=f"− ICL ({m['icl_windows']} windows): all of it removed")
      ax.fill_between(x, -m["icl"][shown] - m["icl_standard_error"][shown],
                      -m["icl"][shown] + m["icl_standard_error"][shown], color="#1c2833",
                      alpha=0.08, lw=0)
      for g, lh in enumerate(heads):
        strong = lh in induction
        ax.plot(x, m[key][shown, g], "--" if key == "full" else "-", color=colours[lh],
                lw=2.4 if strong else 0.8, label=head_name(lh) if strong or G <= 8 else None)
        if strong:
          ax.fill_between(x, m[key][shown, g] - m[f"{key}_error"][shown, g],
                          m[key][shown, g] + m[f"{key}_error"][shown, g], color=colours[lh],
                          alpha=0.15, lw=0)
      if len(heads) < m[key].shape[1]:
        ax.plot(x, m[key][shown, G], ls="-." if key == "pp" else (0, (2, 2)), color="black",
                lw=1.1, label="induction heads together")
      ax.axhline(0, color="#bbb", lw=0.8)
      ax.set_ylabel("ΔICL = ICL(ablated) − ICL (nats)")
      ax.set_title(f"{label}: {title},\none head at a time ({m['icl_windows']} windows)",
                   fontsize=9)
    ax = axes[row, 2]
    if np.isfinite(m["projection"]).any():
      for g, lh in enumerate(heads):
        ax.plot(x, m["projection"][shown, g], color=colours[lh],
                lw=2.4 if lh in induction else 0.8)
      if len(heads) < m["projection"].shape[1]:
        ax.plot(x, m["projection"][shown, G], "-.", color="black", lw=1.1)
      ax.axhline(0, color="#bbb", lw=0.8)
      ax.set_ylabel("Δℓ · u (nats)")
      ax.set_title(f"{label}: loss change along the before-and-after vector u\n"
                   f"({m['windows']} windows × every position)", fontsize=9)
    else:
      ax.set_title(f"{label}: loss change along the before-and-after vector", fontsize=9)
      ax.text(0.5, 0.5, "no before-and-after vector:\n" + m["no_vector"], ha="center",
              va="center", transform=ax.transAxes, fontsize=8, color="#7f8c8d")
      ax.set_yticks([])
    for ax in axes[row]:
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(NullFormatter())
      ax.set_xlabel("tokens seen" if m["axis"] == "tokens" else "training steps")
      figure_module("induction_formation").shade_window(ax, windows.get(label))
    axes[row, 0].legend(fontsize=6, ncol=2)
  save_figure(fig, outdir, "ablations_over_training")


def reference_model(models, formations):
  """The label of the model whose window gives u: the first with ≥ 2 layers and a steepest-gain
  window; None when none has one."""
  for label, model in models.items():
    if model.cfg.n_layers >= 2 and formations[label]["gain"] is not None:
      return label
  return None


def run(config, models, outdir):
  formation_module = figure_module("induction_formation")
  fc = config.formation
  claims, results, windows, numbers = [], {}, {}, {}
  usable = {}  # the models with training snapshots and a layer: the others skipped before a pass
  for label, model in models.items():
    require_tokens(model, "ablations_over_training")
    if has_snapshots(model) and model.cfg.n_layers:
      usable[label] = model
    else:
      print(f"ablations_over_training: {label} has no training snapshots (or no layer); "
            "skipped")
      numbers[label] = {"missing": "training snapshots"}
  formations = {label: formation_module.formation(fc, model) for label, model in usable.items()}
  ref = reference_model(usable, formations)
  u, ref_inputs = None, None
  if ref is not None:
    f = formations[ref]
    u = before_and_after(f["token_losses"], f["gain"])
    ref_inputs = np.asarray(models[ref].heldout_windows(fc.icl_windows)[0][:f["token_losses"]
                                                                          .shape[1]])
  numbers["before_and_after"] = None if ref is None else {
      "model": ref, "start": float(formations[ref]["tokens"][formations[ref]["gain"][0]]),
      "end": float(formations[ref]["tokens"][formations[ref]["gain"][1]]),
      "formed": formation_module.formed_window(fc, formations[ref]) is not None}
  for label, model in usable.items():
    f = formations[label]
    m = measure_model(config, model, f, u, ref_inputs)
    results[label] = m
    windows[label] = formation_module.formed_window(fc, f)
    numbers[label] = {k: v for k, v in m.items() if k != "heads"}
    numbers[label]["heads"] = [head_name(x) for x in m["heads"]]
    numbers[label]["induction"] = [head_name(x) for x in m["induction"]]
    numbers[label]["groups"] = numbers[label]["heads"] + (
        ["induction heads together"] if m["induction"] else [])
    numbers[label]["snapshots_used"] = (f"{len(m['index'])} of {len(f['tokens'])} (evenly "
                                        "spaced in index: log-spaced in tokens)")
    if model.cfg.n_layers >= 2:
      claims.extend(claims_of(config, label, m))
  if results:
    plot(config, results, windows, outdir)
  write_json(outdir / "ablations_over_training.json", numbers)
  return claims
