"""Induction heads beyond the stripe (IH, 'Key Concepts'; FW, 'Analyzing a Two-Layer Model'):
copying, resting on BOS, and the layer-0 heads that feed them.

- IH's prefix-matching and copying scores of every head (``scores.prefix_matching_score``,
  ``scores.copying_score``: mean-subtracted, ReLU, rescaled to [−1, 1]; undefined, drawn apart
  and left out of the claims, for a head resting on BOS) on BOS + 25 random tokens × 4; the same
  scores at random init give the range a head can reach by chance.
- Attention on BOS from destinations whose token has no earlier copy: the first repeat of
  those sequences, and first occurrences in held-out text (``scores.first_occurrences``), next to
  what uniform attention over the visible positions would put there, and next to the attention
  on the one other position that takes most of it (``scores.MaskedTopOffBos``): FW's "they
  attend to the first token" reads as BOS taking more than any other position.
- Every layer-0 head's mean attention at offsets 0, 1, 2, … on held-out text, to find a head
  that averages over the last few tokens (FW, 'Analyzing a Two-Layer Model') if there is one.
"""

import numpy as np

from reproduce.core import circuits, scores
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import place_labels, pyplot, save_figure
from reproduce.figure.sources import initial_weights, require_tokens

DESCRIPTION = ("Prefix matching vs copying of every head, induction heads resting on BOS, "
               "layer-0 averaging heads")
ORDER = 120  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_IH_INDUCTION_HEADS = ("FW, 'Two-Layer Attention-Only Transformers' → 'Induction Heads'; IH, "
                         "'Key Concepts' → 'Induction Heads'")
FW_TWO_LAYER_MODEL = "FW, 'Two-Layer Attention-Only Transformers' → 'Analyzing a Two-Layer Model'"
IH_COPYING = "IH, 'Key Concepts' → 'Induction Heads' (copying)"
IH_PHASE_CHANGE = "IH, 'Argument 1: … a “phase change” during training'"


COPYING = ("IH, \"Key Concepts\" (definition of induction heads): an induction head does two "
           "things on repeated random tokens, \"prefix matching\" (attending to the token after "
           "an earlier copy of the present one) and \"copying\" (raising the logit of the token "
           "it attends to)")
REST_ON_BOS = ("FW, \"Two-Layer Attention-Only Transformers\" (induction heads): induction heads "
               "look for an earlier copy of the present token; \"if they don't find it, they "
               "attend to the first token\" (the start token) and do nothing")
NONE_IN_1L = ("IH, \"Argument 1\" (the phase change): induction heads need two layers (a "
              "previous-token head for their key to compose with); one-layer attention-only "
              "models form none and show no phase change")


def uniform_bos(mask: np.ndarray) -> float:
  """Mean of 1/(i+1) over the masked destinations: BOS's share under uniform causal attention."""
  i = np.nonzero(np.asarray(mask))[1]
  return float(np.mean(1.0 / (i + 1))) if len(i) else float("nan")


def averaging_profile(offsets: np.ndarray, window: int):
  """(mass, spread) of each head's offset profile [..., n_offsets] over the first ``window``
  offsets: mass = Σ p_o, spread = exp(entropy of p_o / mass) (the effective number of offsets)."""
  p = offsets[..., :window]
  mass = p.sum(-1)
  q = p / np.maximum(mass[..., None], 1e-12)
  spread = np.exp(-(q * np.log(np.maximum(q, 1e-12))).sum(-1))
  return mass, spread


def bos_share(model, tokens, mask, *more):
  """Mean attention on BOS over the destinations where ``mask`` [B, T] is true, per head
  [L, H] (``scores.bos_attention``), in chunks of windows; with ``more`` statistics, also their
  [L, B, …] values from the same pass."""
  sums, *rest = scores.pattern_statistics(model.cfg, model.weights, tokens,
                                          (scores.MaskedBos(),) + more, mask)
  share = sums.sum(1) / max(float(np.sum(mask)), 1.0)
  return (share, *rest) if more else share


def measure(model, w, config):
  cfg = model.cfg
  # IH's probe with the defaults every figure uses: one prefix-matching score per head.
  probe, _ = scores.prefix_probe(cfg.n_ctx, model.sampling_pool(), model.bos_id)
  prefix = np.asarray(scores.prefix_matching_score(cfg, w, model.sampling_pool(), model.bos_id))
  copying = scores.copying_score(cfg, w, probe)  # NaN where the head rests on BOS
  return probe, prefix, copying


def head_scores(config, model) -> dict:
  """Every number the figure shows for one model: prefix matching and copying (trained and at
  random init), attention on BOS from first occurrences, layer 0's attention by offset."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  probe, prefix, copying_details = measure(model, model.weights, config)
  init, init_source = initial_weights(model)
  _, init_prefix, init_details = measure(model, init, config)
  copying, init_copying = copying_details["score"], init_details["score"]
  first_probe = scores.first_occurrences(probe)
  bos_probe, rival_probe = bos_share(model, probe, first_probe, scores.MaskedTopOffBos())
  text = model.heldout_windows(config.text_windows)[0]
  first_text = scores.first_occurrences(text)
  bos_text, rival_text, by_offset = bos_share(model, text, first_text, scores.MaskedTopOffBos(),
                                              scores.Offsets(config.offsets_shown))
  per_dest = lambda sums, mask: sums.sum(1) / max(float(np.sum(mask)), 1.0)  # [L, H]
  offsets = by_offset[0].mean(0)  # layer 0, mean over windows: [H, o]
  mass, spread = averaging_profile(offsets, config.averaging_window)
  k_layer0 = composition_with_layer0(model) if L >= 2 else None
  init_k_max = float(composition_with_layer0(model, init).max()) if L >= 2 else float("nan")
  induction = [(l, h) for l in range(1, L) for h in range(H)
               if prefix[l, h] >= config.role_threshold]
  baseline = {"probe": uniform_bos(first_probe), "text": uniform_bos(first_text)}
  return {"prefix": prefix, "copying": copying, "copying_defined": copying_details["defined"],
          "init_prefix": init_prefix, "init_copying": init_copying, "init_source": init_source,
          "bos_probe": bos_probe, "rival_probe": per_dest(rival_probe, first_probe),
          "bos_text": bos_text, "rival_text": per_dest(rival_text, first_text), "offsets": offsets, "mass": mass, "spread": spread,
          "induction": induction, "baseline": baseline, "k_layer0": k_layer0,
          "init_k_max": init_k_max}


def write_numbers(outdir, label, m) -> None:
  write_json(outdir / f"induction_heads_{label}.json", {
      "prefix_matching": m["prefix"], "copying": m["copying"],
      "copying_defined_share": m["copying_defined"], "copying_undefined_reason": UNDEFINED,
      "random_init_prefix_matching":
      m["init_prefix"], "random_init_copying": m["init_copying"],
      "random_init_source": m["init_source"],
      "induction_heads": [f"L{l}H{h}" for l, h in m["induction"]],
      "bos_attention_first_occurrence_random": m["bos_probe"],
      "bos_attention_first_occurrence_text": m["bos_text"], "uniform_bos_share": m["baseline"],
      "top_other_position_first_occurrence_random": m["rival_probe"],
      "top_other_position_first_occurrence_text": m["rival_text"],
      "layer0_attention_by_offset": m["offsets"], "layer0_window_mass": m["mass"],
      "layer0_spread": m["spread"]})


UNDEFINED = ("copying undefined: the head rests on BOS (attention off BOS below a tenth of "
             "uniform's) at more than 90% of destinations (scores.copying_score)")
UNDEFINED_Y = -1.2  # where heads without a copying score are drawn, below the [−1, 1] range


def plot_prefix_vs_copying(ax, config, label, m) -> list:
  """Every head's prefix matching against its copying score; heads whose copying is undefined
  (NaN) drawn apart, as hollow diamonds on a strip below the axis's [−1, 1] range.  Returns the
  (x, y, name) of the points to label, once the figure's layout is final (``label_points``)."""
  prefix, copying, init_copying = m["prefix"], m["copying"], m["init_copying"]
  L, H = prefix.shape
  ax.scatter(m["init_prefix"].ravel(), np.nan_to_num(init_copying, nan=UNDEFINED_Y).ravel(),
             marker="x", c="#aab7b8", s=25, label=f"random init ({m['init_source']})")
  points = []
  for l in range(L):
    ax.scatter(prefix[l], copying[l], s=45, label=f"layer {l}", alpha=0.9)
    points += [(prefix[l, h], copying[l, h], f"L{l}H{h}")
              for h in np.flatnonzero(np.isfinite(copying[l]))]
  undefined = ~np.isfinite(copying)
  if undefined.any():  # named in the legend: their points sit on one strip and would overlap
    names = ", ".join(f"L{l}H{h}" for l, h in zip(*np.nonzero(undefined)))
    ax.scatter(prefix[undefined], np.full(undefined.sum(), UNDEFINED_Y), marker="D", s=40,
               facecolors="none", edgecolors="#7d3c98",
               label=f"copying undefined (rests on BOS): {names}")
  ax.axhspan(UNDEFINED_Y - 0.1, -1.1, color="#f4ecf7", zorder=0)
  ax.axvline(config.role_threshold, color="#888", ls="--", lw=0.8)
  if np.isfinite(init_copying).any():
    ax.axhline(float(np.nanmax(init_copying)), color="#aab7b8", ls=":", lw=0.8)
  ax.set_xlim(-0.02, 1.02); ax.set_ylim(UNDEFINED_Y - 0.12, 1.05)
  ax.set_xlabel("prefix-matching score"); ax.set_ylabel("copying score (strip below: undefined)")
  ax.set_title(f"{label}: every head\n(dashed: induction threshold; dotted: best random-init "
               "copying)", fontsize=8)
  ax.legend(fontsize=7, loc="lower right")  # heads sit up and left; the strip is bottom left
  return points


def label_points(ax, points) -> None:
  """Names the points of ``plot_prefix_vs_copying`` (12 heads of a 1L model crowd one corner),
  no two labels overlapping and none over a point or the legend."""
  if points:
    x, y, text = zip(*points)
    legend = ax.get_legend().get_window_extent()
    place_labels(ax, x, y, text, point_radius=4.5, avoid=[legend])


def plot_bos_attention(ax, label, m) -> None:
  bos_probe, bos_text, baseline = m["bos_probe"], m["bos_text"], m["baseline"]
  L, H = bos_probe.shape
  x = np.arange(L * H)
  ax.bar(x - 0.2, bos_probe.ravel(), 0.4, label="first repeat of random tokens", color="#2471a3")
  ax.bar(x + 0.2, bos_text.ravel(), 0.4, label="first occurrences in text", color="#7fb3d5")
  ax.scatter(x - 0.2, m["rival_probe"].ravel(), marker="_", s=90, color="#c0392b", zorder=3,
             label="top other position (BOS must beat it)")
  ax.scatter(x + 0.2, m["rival_text"].ravel(), marker="_", s=90, color="#c0392b", zorder=3)
  ax.axhline(baseline["probe"], color="#2471a3", ls=":", lw=0.8,
             label="uniform attention (random)")
  ax.axhline(baseline["text"], color="#7fb3d5", ls=":", lw=0.8, label="uniform attention (text)")
  names = [f"L{l}H{h}" + ("*" if (l, h) in m["induction"] else "") for l in range(L)
           for h in range(H)]
  ax.set_xticks(x, names, fontsize=7, rotation=90 if L * H > 16 else 0)
  ax.set_ylim(0, 1.4)  # room above the bars for the legend
  ax.set_yticks(np.linspace(0, 1, 6))
  ax.set_ylabel("mean attention on BOS")
  ax.set_title(f"{label}: attention on BOS when the token has no earlier copy\n"
               "(* induction head)", fontsize=8)
  ax.legend(fontsize=7, loc="upper right", ncol=2)


def plot_layer0_offsets(ax, config, label, m) -> None:
  offsets, mass, spread = m["offsets"], m["mass"], m["spread"]
  for h in range(len(offsets)):
    ax.plot(range(config.offsets_shown), offsets[h], marker="o", ms=3,
            label=f"L0H{h}: last {config.averaging_window} hold {mass[h]:.2f}, spread "
                  f"{spread[h]:.1f}")
  ax.axvspan(-0.3, config.averaging_window - 0.7, color="#f4ecf7", zorder=0)
  ax.set_xlabel("offset (0 = the destination itself, 1 = previous token)")
  ax.set_ylabel("mean attention on held-out text")
  ax.set_title(f"{label}: layer-0 heads by offset\n(shaded: the window for 'the last few "
               "tokens')", fontsize=8)
  ax.legend(fontsize=6)


def _names_of(heads) -> str:
  return ", ".join(f"L{l}H{h}" for l, h in heads) or "none"


def induction_claims(config, label, m) -> list:
  """IH, 'Key Concepts'; FW, 'Induction Heads': the induction heads copy, and rest on BOS when
  nothing earlier matches.  Heads whose copying score is undefined (NaN: resting on BOS) are left
  out of the comparison and counted."""
  induction, copying, init_copying = m["induction"], m["copying"], m["init_copying"]
  defined = [(l, h) for l, h in induction if np.isfinite(copying[l, h])]
  undefined = [(l, h) for l, h in induction if not np.isfinite(copying[l, h])]
  init_defined = init_copying[np.isfinite(init_copying)]
  init_max = float(init_defined.max()) if init_defined.size else float("nan")
  init_range = (f"random init: {init_defined.min():.2f} … {init_max:.2f}" if init_defined.size
                else "random init: none defined") + (
                    f", {init_copying.size - init_defined.size} of {init_copying.size} undefined"
                    if init_defined.size < init_copying.size else "")
  claims = [claim(
      figure="induction_heads", what="induction_heads_copy", model=label, paper_says=COPYING,
      statement=f"{label}: induction heads also copy (IH's copying score)",
      source=IH_COPYING,
      criterion=f"every head with prefix-matching score ≥ {config.role_threshold} in layers ≥ 1 "
      "whose copying score is defined has one above the largest defined score of the random-init "
      f"heads ({init_max:.2f}); a head resting on BOS (undefined copying) is left out and counted, "
      "and at least one induction head must be defined",
      measured=f"{_names_of(induction)}: copying "
      + (", ".join(f"{copying[l, h]:.2f}" if (l, h) in defined else "undefined"
                   for l, h in induction) or "—")
      + f" ({len(undefined)} of {len(induction)} undefined; {init_range})",
      value={f"L{l}H{h}": (float(copying[l, h]) if (l, h) in defined else None)
             for l, h in induction},
      holds=bool(defined) and bool(init_defined.size)
      and all(copying[l, h] > init_max for l, h in defined))]
  for where, key, mask in (("random", "probe", "the first repeat of random tokens"),
                           ("text", "text", "tokens of held-out text not seen earlier in the "
                                            "window")):
    values, rival, uniform = m[f"bos_{key}"], m[f"rival_{key}"], m["baseline"][key]
    claims.append(claim(
        figure="induction_heads", what=f"induction_heads_rest_on_bos_{where}", model=label,
        paper_says=REST_ON_BOS,
        statement=f"{label}: induction heads attend to BOS when the current token has no "
        f"earlier copy ({where}): BOS takes more of their attention than any other position",
        source=FW_IH_INDUCTION_HEADS,
        criterion=f"over {mask}, for every induction head: mean attention on position 0 > the "
        "mean, over the same destinations, of the largest attention on any one other position "
        "(FW gives no number: \"they attend to the first token\" read as BOS being where the "
        "head attends most)",
        measured=f"{_names_of(induction)}: "
        + (", ".join(f"BOS {values[l, h]:.2f} vs top other position {rival[l, h]:.2f}"
                     for l, h in induction) or "—")
        + f" (uniform attention would put {uniform:.2f} on BOS)",
        value={f"L{l}H{h}": {"bos": float(values[l, h]), "top_other": float(rival[l, h])}
               for l, h in induction},
        holds=bool(induction) and all(values[l, h] > rival[l, h] for l, h in induction)))
  return claims


AVERAGING = ("FW, \"Technical Details\" (the corrected composition figure, after the norm "
             "bug): besides the previous-token head, \"two of the induction heads also rely on a "
             "head which attends to the last several tokens, rather than just the previous "
             "token\"")


def composition_with_layer0(model, weights=None) -> np.ndarray:
  """K-composition of every layer-0 head into every layer-1 head, [H0, H1]
  (``circuits.composition_scores``, the corrected norm)."""
  k = np.asarray(circuits.composition_scores(model.weights if weights is None else weights, "k"))
  return k[0, :, 1, :]


def averaging_head_claim(config, label, m) -> dict:
  """FW's corrected composition figure: a layer-0 head attending over the last several tokens,
  which induction heads rely on (K-composition above every head pair at random init)."""
  offsets, mass, spread = m["offsets"], m["mass"], m["spread"]
  k, init_max = m["k_layer0"], m["init_k_max"]
  H = len(offsets)
  window = config.averaging_window
  averaging = [h for h in range(H)
               if mass[h] >= config.min_window_mass and spread[h] >= config.min_spread]
  layer1 = [h for l, h in m["induction"] if l == 1]
  relied_on = {h: [h1 for h1 in layer1 if k[h, h1] > init_max] for h in averaging}
  best = int(np.argmax(np.minimum(mass / config.min_window_mass, spread / config.min_spread)))
  k_text = "; ".join(f"L0H{h}→" + (", ".join(f"L1H{h1} {k[h, h1]:.3f}" for h1 in layer1) or
                                   "no layer-1 induction head") for h in averaging)
  return claim(
      figure="induction_heads", what="layer0_averaging_head", model=label, paper_says=AVERAGING,
      statement=f"{label}: a layer-0 head attends over the last several tokens, and an induction "
      "head relies on it (K-composition)", source=FW_TWO_LAYER_MODEL,
      criterion=f"a layer-0 head with ≥ {config.min_window_mass} of its attention on text within "
      f"the last {window} tokens (offsets 0 … {window - 1}: 'the last several tokens') spread "
      f"over them, exp(entropy) ≥ {config.min_spread:g} ('several', not one or two); and a "
      "layer-1 induction head whose K-composition with it is above the largest K-composition "
      f"of any layer-0 → layer-1 pair at random init ({init_max:.3f})",
      measured=(f"averaging heads: {', '.join(f'L0H{h}' for h in averaging)} (K-composition: "
                f"{k_text}); " if averaging else "no averaging head; ")
      + "per head mass/spread: " + ", ".join(
          f"L0H{h} {mass[h]:.2f}/{spread[h]:.1f}" for h in range(H))
      + f" (nearest to passing both: L0H{best})",
      value={"mass": mass, "spread": spread, "k_into_layer1": k,
             "random_init_k_max": init_max,
             "relied_on_by": {f"L0H{h}": [f"L1H{x}" for x in v] for h, v in relied_on.items()}},
      holds=any(relied_on.values()))


def claims_of(config, label, n_layers, m) -> list:
  """A one-layer model: no induction head (IH, 'Argument 1'); deeper ones: the claims about
  theirs.  From ``head_scores``' numbers alone (``m``, which can be made by hand)."""
  if n_layers == 1:
    prefix = m["prefix"]
    return [claim(
        figure="induction_heads", what="no_prefix_matching_in_1l", model=label,
        paper_says=NONE_IN_1L,
        statement=f"{label}: a one-layer model has no induction head", source=IH_PHASE_CHANGE,
        criterion=f"every head's prefix-matching score < {config.role_threshold}",
        measured=f"largest prefix-matching score {prefix.max():.2f} "
        f"(L0H{int(np.argmax(prefix[0]))}); random init largest {m['init_prefix'].max():.2f}",
        value={"prefix_matching": prefix}, holds=bool(prefix.max() < config.role_threshold))]
  return induction_claims(config, label, m) + [averaging_head_claim(config, label, m)]


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  labels = list(models)
  fig, axes = plt.subplots(len(labels), 3, figsize=(15, 4.8 * len(labels)), squeeze=False)
  points = {}
  for row, label in enumerate(labels):
    model = models[label]
    require_tokens(model, "induction_heads")
    m = head_scores(config, model)
    write_numbers(outdir, label, m)
    points[label] = plot_prefix_vs_copying(axes[row, 0], config, label, m)
    plot_bos_attention(axes[row, 1], label, m)
    plot_layer0_offsets(axes[row, 2], config, label, m)
    claims.extend(claims_of(config, label, model.cfg.n_layers, m))
  fig.tight_layout()
  for row, label in enumerate(labels):
    label_points(axes[row, 0], points[label])
  save_figure(fig, outdir, "induction_heads")
  return claims
