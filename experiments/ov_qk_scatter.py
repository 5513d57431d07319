"""Induction heads read off the weights: OV copying against K-composition matching (FW fig 22).

For every layer-1 head: x = positivity of its full OV circuit (does attending to a token raise
that token?), y = positivity of its K-composition QK term with the previous-token head,
W_E W_QK (W_E W_OV^prev)ᵀ (does it attend to sources whose previous token equals its own?).
Eigenvalues of both come from d_head × d_head matrices (low-rank trick).
"""

import numpy as np

from reproduce import circuits, experiment

DESCRIPTION = "Layer-1 heads: OV positivity vs positivity of the K-composition QK term with the prev-token head"


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(2, "ov_qk_scatter")
    roles = experiment.head_roles(model, config.role_threshold, samples=config.samples)
    _, prev = roles.previous_token_head()
    ov = circuits.positivity(circuits.ov_eigenvalues(model.weights))[1]
    qk = circuits.positivity(circuits.k_composition_qk_eigenvalues(model.weights, 0, prev))[1]
    H = model.cfg.n_heads
    induction = [h for l, h in roles.induction_heads() if l == 1]
    experiment.write_json(outdir / f"ov_qk_{label}.json", {
        "previous_token_head": f"L0H{prev}", "ov_positivity": ov, "k_composition_positivity": qk,
        "induction_scores": roles.induction[1], "heads": [f"L1H{h}" for h in range(H)]})

    fig, ax = plt.subplots(figsize=(5.4, 5))
    ax.axhline(0, color="#bbb", lw=0.8); ax.axvline(0, color="#bbb", lw=0.8)
    colours = ["#c0392b" if h in induction else "#5d6d7e" for h in range(H)]
    ax.scatter(ov, qk, c=colours, s=40 + 200 * roles.induction[1], alpha=0.85)
    offsets = [(6, 6), (6, -12), (-70, 6), (-70, -12)]  # staggered: heads often share a corner
    for h in range(H):
      ax.annotate(f"L1H{h} ({roles.induction[1, h]:.2f})", (ov[h], qk[h]), fontsize=7,
                  xytext=offsets[h % 4], textcoords="offset points")
    ax.set_xlim(-1.05, 1.1); ax.set_ylim(-1.05, 1.1)
    ax.set_xlabel("OV circuit positivity (copying)")
    ax.set_ylabel(f"positivity of K-composition QK term with L0H{prev} (matching)")
    ax.set_title(f"{label}: layer-1 heads (red: induction score ≥ {config.role_threshold}; "
                 "size ∝ induction score)", fontsize=8)
    experiment.save_figure(fig, outdir, "ov_qk_scatter" if len(models) == 1
                           else f"ov_qk_scatter_{label}")
    upper_right = [h for h in induction if ov[h] > 0 and qk[h] > 0]
    where = ", ".join(f"L1H{h} at ({ov[h]:.2f}, {qk[h]:.2f})" for h in induction) or "none found"
    claims.append(experiment.claim(
        f"ov_qk_scatter.upper_right_{label}",
        f"{label}: induction heads sit in the upper-right quadrant, near (1, 1): they copy and "
        "match the previous token by K-composition",
        "FW fig 22", "every head with induction score ≥ "
        f"{config.role_threshold} has both positivities > 0",
        f"induction heads (score ≥ {config.role_threshold}): {where}",
        {f"L1H{h}": [float(ov[h]), float(qk[h])] for h in induction},
        bool(induction) and len(upper_right) == len(induction)))
  return claims
