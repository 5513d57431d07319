"""Q-, K- and V-composition between heads of every pair of layers l1 < l2 (FW, 'Two-Layer
Attention-Only Transformers' → 'Analyzing a Two-Layer Model': the corrected figure, and FW's
original figure with its norm bug).

comp(X, Y) = ‖XY‖_F / (‖X‖_F ‖Y‖_F) with X = W_OV of the earlier (writing) head and Y = W_QK (Q),
W_QKᵀ (K) or W_OV (V) of the later (reading) head, computed through the SVD-free trace identity;
the figure shows score − random baseline, one row of heatmaps per layer pair.  The erratum's
variant (FW's original figure), which took the norm of a cyclically permuted product, is drawn
below for comparison.

Claims are anchored to the same model at random init (its step-0 snapshot): FW's corrected
figure shows the previous-token head K-composing with the induction heads far above everything
else, while Q- and V-composition of that pair stay near the baseline.  "Above the random-init range" means above the
largest score of that kind over all head pairs of the initial weights; "near the baseline" means
within that range.
"""

import jax
import numpy as np

from reproduce.core import circuits
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import colorbar, pyplot, save_figure
from reproduce.figure.roles import head_roles
from reproduce.figure.sources import initial_weights

DESCRIPTION = "Q/K/V composition scores of every earlier × later layer pair minus the random baseline"
ORDER = 60  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_TWO_LAYER_MODEL = "FW, 'Two-Layer Attention-Only Transformers' → 'Analyzing a Two-Layer Model'"


K_COMPOSITION = ("FW, \"Two-Layer Attention-Only Transformers\" (and the corrected composition "
                 "figure): small two-layer models often have a simple structure where the main "
                 "composition is K-composition of \"a single first layer head\" (a previous-token "
                 "head) into the induction heads; after the norm-bug correction \"the importance "
                 "of K-composition with the previous token head remains unchanged\"")
Q_V_SMALL = ("FW, \"Two-Layer Attention-Only Transformers\": in its two-layer model the "
             "composition is K-composition (\"the only type\" before the correction), and it "
             "saw no \"significant V-composition\"; the corrected figure adds composition with "
             "a layer-0 averaging head, not Q- or V-composition with the previous-token head")


def layer_pairs(n_layers: int):
  return [(l1, l2) for l2 in range(1, n_layers) for l1 in range(l2)]


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(2, "composition_scores")
    roles = head_roles(model, config.role_threshold)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    pairs = layer_pairs(L)
    variants = [False, True] if config.draw_erratum else [False]
    key = jax.random.key(config.seed)
    results = {}
    for permuted in variants:
      base = circuits.composition_baseline(model.weights, key, config.baseline_samples, permuted)
      results[permuted] = {"baseline": float(base), **{
          kind: np.asarray(circuits.composition_scores(model.weights, kind, permuted))
          for kind in circuits.COMPOSITION_KINDS}}
    correct = results[False]
    init, init_source = initial_weights(model)
    init_scores = {kind: np.asarray(circuits.composition_scores(init, kind))
                   for kind in circuits.COMPOSITION_KINDS}
    init_max = {kind: max(float(init_scores[kind][l1, :, l2, :].max()) for l1, l2 in pairs)
                for kind in circuits.COMPOSITION_KINDS}
    write_json(outdir / f"composition_{label}.json", {
        "heads": [[roles.label(l, h) for h in range(H)] for l in range(L)],
        "layer_pairs": pairs, "layout": "[l1, h1, l2, h2], zero unless l1 < l2",
        "previous_token_scores": roles.previous_token, "prefix_matching_scores": roles.induction,
        "head_roles_probe": roles.probe,
        "random_init_max": init_max, "random_init_source": init_source,
        **{("erratum_" if p else "") + k: v for p, r in results.items() for k, v in r.items()}})

    rows = [(permuted, l1, l2) for permuted in variants for l1, l2 in pairs]
    fig, axes = plt.subplots(len(rows), 3, figsize=(4.2 * 3, 4.4 * len(rows)), squeeze=False,
                             layout="constrained")
    span = max(np.abs(r[k][l1, :, l2, :] - r["baseline"]).max() for r in results.values()
               for k in circuits.COMPOSITION_KINDS for l1, l2 in pairs)
    for row, (permuted, l1, l2) in enumerate(rows):
      r = results[permuted]
      for col, kind in enumerate(circuits.COMPOSITION_KINDS):
        ax = axes[row, col]
        image = ax.imshow(r[kind][l1, :, l2, :] - r["baseline"], cmap="RdBu_r", vmin=-span,
                          vmax=span)
        ax.set_xticks(range(H), [roles.label(l2, h) for h in range(H)], rotation=90, fontsize=6)
        ax.set_yticks(range(H), [roles.label(l1, h) for h in range(H)], fontsize=6)
        ax.set_xlabel(f"layer-{l2} head (reads)")
        if col == 0:
          ax.set_ylabel(f"layer-{l1} head (writes)")
        title = f"L{l1}→L{l2} {kind.upper()}-comp. − baseline {r['baseline']:.3f}"
        ax.set_title(("FW's original figure (norm bug)\n" if permuted else "") + title,
                     fontsize=8, color="#7d3c98" if permuted else "black")
      colorbar(fig, image, axes[row].tolist(),
                          "composition score − random baseline" if not permuted else
                          "norm-bug score − its baseline", shrink=0.8)
    fig.suptitle(f"{label}: composition scores, every layer pair (one colour scale for every "
                 "panel; red above the baseline, blue below)")
    save_figure(fig, outdir, "composition_scores" if len(models) == 1
                           else f"composition_scores_{label}")
    claims.extend(claims_of(config, label, roles, correct, init_max, init_source))
  return claims


def claims_of(config, label, roles, correct, init_max, init_source):
  """FW's (corrected) statements about the previous-token → induction-head pairs, from the
  numbers alone: ``roles`` (``HeadRoles``), ``correct`` (``baseline`` and the [L, H, L, H]
  ``q``/``k``/``v`` scores), ``init_max`` (per kind, the largest score of any head pair at
  random init).  The previous-token head an induction head of layer l reads is the strongest
  one of layers < l, and only if it passes the role threshold: without one, the claims about
  that pair fail and say so."""
  claims = []
  base = correct["baseline"]
  induction = [(l, h) for l, h in roles.induction_heads() if l >= 1]
  name = lambda l, h: f"L{l}H{h}"
  if not induction:
    claims.append(claim(
        figure="composition_scores", what="k_prev_to_induction", model=label,
        paper_says=K_COMPOSITION,
        statement=f"{label}: each induction head's strongest K-composition is with a "
        "previous-token head of an earlier layer", source=FW_TWO_LAYER_MODEL,
        criterion=f"needs an induction head (prefix-matching score ≥ {roles.threshold}) in a layer ≥ 1",
        measured="no induction head found", value=None, holds=False))
    return claims
  # The previous-token head each induction head reads: the strongest one in earlier layers,
  # when it passes the role threshold.
  pairs = [((roles.previous_token_head(l2)), (l2, h2)) for l2, h2 in induction]
  missing = [(p, i) for p, i in pairs if roles.previous_token[p] < roles.threshold]
  no_prev = "; ".join(
      f"no previous-token head (score ≥ {roles.threshold:g}) in the layers before {name(*i)}: "
      f"the strongest, {name(*p)}, scores {roles.previous_token[p]:.2f}" for p, i in missing)
  strongest = []
  for (_, _), (l2, h2) in pairs:
    into = correct["k"][:l2, :, l2, h2]  # every earlier head → this induction head
    l1, h1 = np.unravel_index(np.argmax(into), into.shape)
    strongest.append((int(l1), int(h1)))
  is_prev = [roles.previous_token[l1, h1] >= roles.threshold for l1, h1 in strongest]
  claims.append(claim(
      figure="composition_scores", what="k_prev_to_induction", model=label,
        paper_says=K_COMPOSITION,
      statement=f"{label}: each induction head's strongest K-composition is with a previous-token "
      "head of an earlier layer", source=FW_TWO_LAYER_MODEL,
      criterion=f"for every head with prefix-matching score ≥ {roles.threshold} in layer l ≥ 1, the "
      f"head of layers < l with the largest K-composition into it has previous-token score ≥ "
      f"{roles.threshold}",
      measured="; ".join(
          f"into {name(*ind)}: strongest from {name(*s)} (prev-token "
          f"{roles.previous_token[s]:.2f}, K {correct['k'][s[0], s[1], ind[0], ind[1]]:.3f})"
          for ind, s in zip(induction, strongest)),
      value={name(*ind): name(*s) for ind, s in zip(induction, strongest)}, holds=all(is_prev)))
  k = [correct["k"][p[0], p[1], i[0], i[1]] for p, i in pairs]
  q = [correct["q"][p[0], p[1], i[0], i[1]] for p, i in pairs]
  v = [correct["v"][p[0], p[1], i[0], i[1]] for p, i in pairs]
  described = [f"{name(*p)}→{name(*i)}" for p, i in pairs]
  prev_rule = (f"the previous-token head: the strongest of the layers before the induction head, "
               f"with previous-token score ≥ {roles.threshold:g} (none: the claim fails)")
  claims.append(claim(
      figure="composition_scores", what="k_above_random_init", model=label,
      paper_says=K_COMPOSITION,
      statement=f"{label}: the previous-token head K-composes with the induction heads far above "
      "chance", source=FW_TWO_LAYER_MODEL,
      criterion="K-comp(previous-token head, induction head) > the largest K-composition of any "
      f"head pair at random init ({init_source}); {prev_rule}",
      measured=(f"{no_prev}; " if missing else "")
      + ", ".join(f"{d}: K {s:.3f}" for d, s in zip(described, k))
      + f"; random-init max {init_max['k']:.3f}, baseline {base:.3f}",
      value={"k": k, "random_init_max": init_max["k"], "baseline": base,
             "previous_token_head_missing": bool(missing)},
      holds=not missing and min(k) > init_max["k"]))
  claims.append(claim(
      figure="composition_scores", what="q_v_near_baseline", model=label,
      paper_says=Q_V_SMALL,
      statement=f"{label}: Q- and V-composition of the induction heads with the previous-token "
      "head stay near the baseline", source=FW_TWO_LAYER_MODEL,
      criterion="Q-comp and V-comp(previous-token head, induction head) ≤ the largest Q- and "
      f"V-composition of any head pair at random init; {prev_rule}",
      measured=(f"{no_prev}; " if missing else "")
      + ", ".join(f"{d}: Q {a:.3f}, V {b:.3f}" for d, a, b in zip(described, q, v))
      + f"; random-init max Q {init_max['q']:.3f}, V {init_max['v']:.3f}",
      value={"q": q, "v": v, "random_init_max": init_max,
             "previous_token_head_missing": bool(missing)},
      holds=not missing and max(q) <= init_max["q"] and max(v) <= init_max["v"]))
  return claims
