"""Smeared keys (IH, 'Argument 2'): let one layer's keys see the previous token, and one-layer
models form induction heads; two-layer models form them earlier.

A smeared-key model (``ModelConfig.smear_keys``; docs/METHODS.md, "Smeared keys") mixes each
head's key with the previous position's, k'_j = σ(α) k_j + (1 − σ(α)) k_{j−1}, one trainable α
per head.  For each model, vanilla and smeared, the figure reads `induction_formation`'s pass
over the training snapshots (``formation``, shared): the best head's prefix matching (the head
with the highest final score) and the ICL score with its standard error over the windows,
against tokens seen, with the formation window shaded where a head forms (``formed_window``);
and each smeared head's learned σ(α) at the end of training.

Claims (IH, "Argument 2"), each verdict a pure function below:
- the smeared 1L model forms an induction head: its best head ends with prefix matching ≥
  ``formed`` (induction_formation's 0.3), where the vanilla 1L stays below ``unformed`` (0.1)
  at every snapshot (``forms_where_vanilla_does_not``);
- it gains in-context learning: its final ICL score is below the vanilla 1L's by more than
  ``standard_errors`` standard errors of the difference (``icl_gain``);
- the smeared 2L model forms earlier: the first snapshot at which its best head reaches
  ``formed`` comes at fewer tokens than the vanilla 2L's, or the vanilla run never reaches it
  within a run longer than that (``formed_earlier``, ``first_formed``).
"""

import numpy as np
from matplotlib.ticker import NullFormatter

from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure
from reproduce.figure.runner import figure_module
from reproduce.figure.sources import FigureError, has_snapshots

DESCRIPTION = "Smeared keys: prefix matching and ICL over training, smeared beside vanilla (1L, 2L)"
ORDER = 105  # after induction_formation (100), whose passes it reads
SHARES = ("induction_formation",)
IH_SMEARED_KEYS = "IH, 'Argument 2: … changing the architecture' (smeared keys)"
PAIRS = (("attn1l", "attn1l_smeared"), ("attn2l", "attn2l_smeared"))

FORMS_1L = ("IH, \"Argument 2\": with smeared keys (each key a trainable mix of its own and the "
            "previous position's) a one-layer model can form induction heads, which it otherwise "
            "cannot, and it goes through the phase change")
ICL_1L = ("IH, \"Argument 2\": the one-layer smeared-key model gains the in-context learning "
          "that induction heads bring: its ICL score improves beyond the vanilla one-layer "
          "model's")
EARLIER_2L = ("IH, \"Argument 2\": two-layer smeared-key models go through the phase change "
              "\"earlier\" than the vanilla two-layer models")


def sigmoid(a):
  return 1.0 / (1.0 + np.exp(-np.asarray(a, float)))


def forms_where_vanilla_does_not(smeared_final: float, vanilla_max: float, formed: float,
                                 unformed: float) -> bool:
  """The smeared model's best head ends ≥ ``formed`` and no vanilla head ever reaches
  ``unformed``."""
  return bool(smeared_final >= formed and vanilla_max < unformed)


def icl_gain(smeared: float, smeared_se: float, vanilla: float, vanilla_se: float,
             k: float) -> tuple:
  """(holds, margin in standard errors): the smeared final ICL score below the vanilla one by
  more than ``k`` standard errors of the difference, sqrt(se_s² + se_v²) (a NaN error: the
  difference alone must be negative)."""
  se = float(np.hypot(smeared_se, vanilla_se))
  diff = float(vanilla - smeared)
  margin = diff / se if np.isfinite(se) and se > 0 else (np.inf if diff > 0 else -np.inf)
  return bool(margin > k), margin


def first_formed(tokens, best, formed: float):
  """Tokens at the first snapshot where ``best`` (the best head's prefix matching) is ≥
  ``formed``; None if it never is."""
  hit = np.flatnonzero(np.asarray(best) >= formed)
  return None if not len(hit) else float(np.asarray(tokens)[hit[0]])


def formed_earlier(smeared_first, vanilla_first, vanilla_end: float) -> bool:
  """The smeared model formed (``smeared_first`` not None) and before the vanilla one: at fewer
  tokens than its first formed snapshot, or, where the vanilla never formed, before the end of
  the vanilla run (``vanilla_end`` tokens)."""
  if smeared_first is None:
    return False
  if vanilla_first is None:
    return bool(smeared_first < vanilla_end)
  return bool(smeared_first < vanilla_first)


def learned_sigma(model) -> np.ndarray:
  """σ(α) of every head of a smeared-key model's final weights, [L, H]."""
  if model.weights.smear is None:
    raise FigureError(f"smeared_keys: model {model.label} has no smeared keys (no smear weights)")
  return sigmoid(np.asarray(model.weights.smear, float))


def _require(models) -> None:
  missing = [n for pair in PAIRS for n in pair if n not in models]
  if missing:
    raise FigureError(f"smeared_keys needs the models {', '.join(n for p in PAIRS for n in p)} "
                      f"(trained from configs/); missing {', '.join(missing)} "
                      f"(given: {', '.join(models) or 'none'})")


def _plot_pair(ax_prefix, ax_icl, fcfg, curves, layers):
  colours = {False: "#7f8c8d", True: "#c0392b"}
  style = {False: dict(lw=2.6, ms=4, alpha=0.7), True: dict(lw=1.2, ms=2.5)}  # vanilla below
  for label, f, smeared in curves:
    tokens, shown = f["tokens"], f["tokens"] > 0
    if not shown.any():
      shown = np.ones_like(shown)
    x = np.maximum(tokens[shown], 1)
    c = colours[smeared]
    name = f"{label} (best head)" if f["best_head"] is not None else label
    ax_prefix.plot(x, f["best"][shown], "o-", color=c, label=name, **style[smeared])
    ax_icl.plot(x, f["icl"][shown], "o-", color=c, label=label, **style[smeared])
    error = f["icl_standard_error"][shown]
    if np.isfinite(error).any():
      ax_icl.fill_between(x, f["icl"][shown] - error, f["icl"][shown] + error, color=c,
                          alpha=0.2, lw=0)
    window = figure_module("induction_formation").formed_window(fcfg, f)
    if window is not None:
      for ax in (ax_prefix, ax_icl):
        ax.axvspan(*window, color=c, alpha=0.12, lw=0)
  ax_prefix.axhline(fcfg.formed, color="#bbb", lw=0.8, ls="--")
  ax_prefix.set_ylim(-0.02, 1)
  ax_prefix.set_ylabel("best head's prefix matching")
  ax_prefix.set_title(f"{layers}L: best head's prefix matching (dashed: formed, "
                      f"{fcfg.formed:g}; shading: formation window)", fontsize=9)
  ax_icl.axhline(0, color="#bbb", lw=0.8)
  ax_icl.set_ylabel("ICL score (nats; band ± 1 s.e.)")
  ax_icl.set_title(f"{layers}L: in-context learning score", fontsize=9)
  for ax in (ax_prefix, ax_icl):
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("tokens seen" if curves[0][1]["axis"] == "tokens" else "training steps")
    ax.legend(fontsize=7)


def _plot_sigma(ax, sigmas):
  """Each smeared head's learned σ(α): 1 = its own key, 0 = the previous position's."""
  offset = 0
  ticks, names = [], []
  for colour, (label, s) in zip(("#e59866", "#c0392b"), sigmas.items()):
    L, H = s.shape
    for l in range(L):
      xs = offset + np.arange(H)
      ax.bar(xs, s[l], color=colour, width=0.8, label=label if l == 0 else None)
      ticks += list(xs)
      names += [f"L{l}H{h}" for h in range(H)]
      offset += H + 1
    offset += 1
  ax.axhline(0.5, color="#bbb", lw=0.8, ls="--")
  ax.set_ylim(0, 1)
  ax.set_xticks(ticks)
  ax.set_xticklabels(names, rotation=90, fontsize=6)
  ax.set_ylabel("σ(α) at the end (1: own key; 0: previous key)")
  ax.set_title("learned smearing per head (dashed: the initial 1/2)", fontsize=9)
  ax.legend(fontsize=7)


def run(config, models, outdir):
  _require(models)
  fcfg = config.formation
  formation = figure_module("induction_formation").formation
  for name in (n for pair in PAIRS for n in pair):  # before the passes over the snapshots
    if not has_snapshots(models[name]):
      raise FigureError(f"smeared_keys needs training snapshots of every model; {name} has none")
  f = {name: formation(config.smeared_formation if smeared else fcfg, models[name])
       for pair in PAIRS for name, smeared in zip(pair, (False, True))}
  sigmas = {smeared: learned_sigma(models[smeared]) for _, smeared in PAIRS}
  plt = pyplot()
  fig = plt.figure(figsize=(15, 7.6), layout="constrained")
  grid = fig.add_gridspec(2, 3)
  for row, (vanilla, smeared) in enumerate(PAIRS):
    _plot_pair(fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1]), fcfg,
               [(vanilla, f[vanilla], False), (smeared, f[smeared], True)], row + 1)
  _plot_sigma(fig.add_subplot(grid[:, 2]), sigmas)
  save_figure(fig, outdir, "smeared_keys")

  numbers = {}
  for name, got in f.items():
    window = figure_module("induction_formation").formed_window(fcfg, got)
    H = models[name].cfg.n_heads
    numbers[name] = {
        "x_axis": got["axis"], "x": got["tokens"], "best": got["best"],
        "best_head": None if got["best_head"] is None else
        f"L{got['best_head'] // H}H{got['best_head'] % H}",
        "icl": got["icl"], "icl_standard_error": got["icl_standard_error"],
        "formation_window": window, "first_formed": first_formed(got["tokens"], got["best"],
                                                                 fcfg.formed)}
    if name in sigmas:
      numbers[name]["sigma"] = sigmas[name]
  write_json(outdir / "smeared_keys.json", numbers)
  return [_forms_1l_claim(fcfg, f), _icl_1l_claim(config, f), _earlier_2l_claim(fcfg, f, numbers)]


def _forms_1l_claim(fcfg, f):
  smeared, vanilla = f["attn1l_smeared"], f["attn1l"]
  final, vanilla_max = float(smeared["best"][-1]), float(vanilla["flat"].max())
  return claim(
      figure="smeared_keys", what="forms_in_1l", model="attn1l_smeared", paper_says=FORMS_1L,
      statement="with smeared keys a one-layer model forms an induction head, which the vanilla "
      "one-layer model does not", source=IH_SMEARED_KEYS,
      criterion=f"the smeared 1L's best head ends with prefix matching ≥ {fcfg.formed} "
      f"(induction_formation's 'formed') and every head of the vanilla 1L stays < "
      f"{fcfg.unformed} at every snapshot",
      measured=f"smeared 1L best head: final {final:.2f}; vanilla 1L: highest at any snapshot "
      f"{vanilla_max:.2f}",
      value={"smeared_final": final, "vanilla_max": vanilla_max},
      holds=forms_where_vanilla_does_not(final, vanilla_max, fcfg.formed, fcfg.unformed))


def _icl_1l_claim(config, f):
  smeared, vanilla = f["attn1l_smeared"], f["attn1l"]
  s, v = float(smeared["icl"][-1]), float(vanilla["icl"][-1])
  s_se, v_se = float(smeared["icl_standard_error"][-1]), float(vanilla["icl_standard_error"][-1])
  holds, margin = icl_gain(s, s_se, v, v_se, config.standard_errors)
  return claim(
      figure="smeared_keys", what="icl_gain_in_1l", model="attn1l_smeared", paper_says=ICL_1L,
      statement="the smeared one-layer model learns more in context than the vanilla one: a "
      "lower final ICL score (loss late − loss early)", source=IH_SMEARED_KEYS,
      criterion=f"final ICL score of the smeared 1L below the vanilla 1L's by > "
      f"{config.standard_errors:g} standard errors of the difference (each over the windows)",
      measured=f"smeared {s:+.3f} ± {s_se:.3f}, vanilla {v:+.3f} ± {v_se:.3f} nats: "
      f"{margin:.1f} standard errors apart",
      value={"smeared": s, "smeared_se": s_se, "vanilla": v, "vanilla_se": v_se,
             "margin_standard_errors": margin},
      holds=holds)


def _earlier_2l_claim(fcfg, f, numbers):
  smeared, vanilla = numbers["attn2l_smeared"], numbers["attn2l"]
  s_first, v_first = smeared["first_formed"], vanilla["first_formed"]
  v_end = float(f["attn2l"]["tokens"][-1])
  axis = f["attn2l"]["axis"]
  show = lambda t: "never" if t is None else f"{t:,.0f} {axis}"
  windows = "; ".join(f"{name} window {numbers[name]['formation_window']}"
                      for name in ("attn2l_smeared", "attn2l"))
  return claim(
      figure="smeared_keys", what="earlier_in_2l", model="attn2l_smeared",
      paper_says=EARLIER_2L,
      statement="the smeared two-layer model forms its induction head earlier in training than "
      "the vanilla two-layer model", source=IH_SMEARED_KEYS,
      criterion=f"first snapshot with the best head's prefix matching ≥ {fcfg.formed}: at "
      f"fewer {axis} in the smeared 2L than in the vanilla 2L (or the vanilla never reaches it, "
      "over a longer run)",
      measured=f"smeared 2L first formed at {show(s_first)}, vanilla 2L at {show(v_first)} "
      f"(its run ends at {v_end:,.0f}); {windows}",
      value={"smeared_first": s_first, "vanilla_first": v_first, "vanilla_end": v_end},
      holds=formed_earlier(s_first, v_first, v_end))
