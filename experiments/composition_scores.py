"""Q-, K- and V-composition between layer-0 and layer-1 heads (FW fig 26, correcting fig 19).

comp(X, Y) = ‖XY‖_F / (‖X‖_F ‖Y‖_F) with X = W_OV of the layer-0 head and Y = W_QK (Q),
W_QKᵀ (K) or W_OV (V) of the layer-1 head, computed through the SVD-free trace identity; the
figure shows score − random baseline.  The erratum's variant (FW's original figure), which took
the norm of a cyclically permuted product, is drawn beside it for comparison.
"""

import jax
import numpy as np

from reproduce import circuits, experiment

DESCRIPTION = "Q/K/V composition scores of layer-0 × layer-1 heads minus the random baseline"


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(2, "composition_scores")
    roles = experiment.head_roles(model, config.role_threshold)
    H = model.cfg.n_heads
    variants = [False, True] if config.draw_erratum else [False]
    key = jax.random.key(config.seed)
    results = {}
    for permuted in variants:
      base = circuits.composition_baseline(model.weights, key, config.baseline_samples, permuted)
      results[permuted] = {"baseline": base, **{
          kind: np.asarray(circuits.composition_scores(model.weights, kind, permuted))[0, :, 1, :]
          for kind in circuits.COMPOSITION_KINDS}}
    correct = results[False]
    experiment.write_json(outdir / f"composition_{label}.json", {
        "rows": [roles.label(0, h) for h in range(H)],
        "columns": [roles.label(1, h) for h in range(H)],
        "previous_token_scores": roles.previous_token, "induction_scores": roles.induction,
        **{("erratum_" if p else "") + k: v for p, r in results.items() for k, v in r.items()}})

    fig, axes = plt.subplots(len(variants), 3, figsize=(4.2 * 3, 4.6 * len(variants)),
                             squeeze=False, layout="constrained")
    span = max(np.abs(r[k] - r["baseline"]).max() for r in results.values()
               for k in circuits.COMPOSITION_KINDS)
    for row, permuted in enumerate(variants):
      r = results[permuted]
      for col, kind in enumerate(circuits.COMPOSITION_KINDS):
        ax = axes[row, col]
        image = ax.imshow(r[kind] - r["baseline"], cmap="RdBu_r", vmin=-span, vmax=span)
        ax.set_xticks(range(H), [roles.label(1, h) for h in range(H)], rotation=90, fontsize=6)
        ax.set_yticks(range(H), [roles.label(0, h) for h in range(H)], fontsize=6)
        ax.set_xlabel("layer-1 head (reads)")
        if col == 0:
          ax.set_ylabel("layer-0 head (writes)")
        title = f"{kind.upper()}-comp. − baseline {r['baseline']:.3f}"
        ax.set_title(("erratum, permuted norm: " if permuted else "") + title, fontsize=8)
      fig.colorbar(image, ax=axes[row].tolist(), shrink=0.8)
    fig.suptitle(f"{label}: composition scores (shared colour scale)")
    experiment.save_figure(fig, outdir, "composition_scores" if len(models) == 1
                           else f"composition_scores_{label}")

    prev = roles.previous_token_head()[1]
    k_excess = correct["k"] - correct["baseline"]
    top = np.unravel_index(np.argmax(k_excess), k_excess.shape)
    induction = [h for l, h in roles.induction_heads() if l == 1]
    claims.append(experiment.claim(
        f"composition_scores.k_prev_to_induction_{label}",
        f"{label}: the strongest K-composition is from the previous-token head into an induction "
        "head", "FW fig 26",
        "argmax over layer-0 × layer-1 pairs of K-composition − baseline is (previous-token "
        "head, an induction head)",
        f"largest K − baseline: {roles.label(0, top[0])} → {roles.label(1, top[1])} "
        f"(+{k_excess[top]:.3f}); previous-token head L0H{prev}, induction heads "
        f"{['L1H%d' % h for h in induction] or 'none'}",
        {"top_pair": [int(top[0]), int(top[1])], "excess": float(k_excess[top])},
        top[0] == prev and top[1] in induction))
    if induction:
      ratio = max(correct["k"][prev, h] for h in induction) / correct["baseline"]
      claims.append(experiment.claim(
          f"composition_scores.k_above_baseline_{label}",
          f"{label}: that K-composition is well above the random baseline", "FW fig 26",
          "max over induction heads of K-comp(prev, h) / baseline ≥ 1.5",
          f"{ratio:.2f}× the baseline {correct['baseline']:.3f} "
          f"(FW: baseline ≈ 1/√d_model = {model.cfg.d_model ** -0.5:.3f})",
          ratio, ratio >= 1.5))
  return claims
