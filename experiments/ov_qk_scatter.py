"""Induction heads read off the weights: OV copying against K-composition matching (FW,
'Checking the Mechanistic Theory').

For every head of every layer l ≥ 1: x = positivity of its full OV circuit (does attending to a
token raise that token?), y = positivity of its K-composition QK term with the strongest
previous-token head of the layers before l, W_E W_QK (W_E W_OV^prev)ᵀ (does it attend to sources
whose previous token equals its own?).  Eigenvalues of both come from d_head × d_head matrices
(low-rank trick).  FW: the induction heads sit near (1, 1), alone in the upper right.

The thresholds read FW's words ("near (1, 1)": ≥ 0.8; "upper right" for the other heads:
> 0.5, half way from the random-init centre to 1; configs/ov_qk_scatter.py) and are anchored to
the random-init spread of the same two positivities, drawn as a grey box: on each axis the bar
is max(the config's value, the largest positivity of any random-init head on that axis), so no
head passes by sitting where random weights already sit.  The K-composed axis needs a
previous-token head (previous-token score ≥ the role threshold) in the layers before; without
one the claim on that axis fails and says so.
"""

import numpy as np

from reproduce.core import circuits
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import place_labels, pyplot, save_figure
from reproduce.figure.roles import head_roles
from reproduce.figure.sources import initial_weights

DESCRIPTION = "Heads of layers ≥ 1: OV positivity vs positivity of the K-composition QK term with a previous-token head"
ORDER = 80  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_CHECKING_THEORY = ("FW, 'Two-Layer Attention-Only Transformers' → 'Induction Heads' → 'Checking"
                      " the Mechanistic Theory'")


CORNER = ("FW, \"Checking the Mechanistic Theory\" (the OV/QK positivity scatter): with the "
          "eigenvalue positivity of the OV circuit and of the K-composed QK term as coordinates, "
          "\"all the induction heads turn out to be in an extreme right hand corner\" (both "
          "near 1)")


def scatter_coordinates(weights, roles):
  """(ov, qk, prev) for every head of layers ≥ 1: [L−1, H] positivities and, per layer, the
  previous-token head (layer, head) its y axis uses."""
  L = weights.n_layers
  ov = circuits.positivity(circuits.ov_eigenvalues(weights))[1:]
  qk, prev = [], []
  for l in range(1, L):
    p = roles.previous_token_head(l)
    prev.append(p)
    qk.append(circuits.positivity(circuits.k_composition_qk_eigenvalues(weights, *p))[l])
  return ov, np.stack(qk), prev


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(2, "ov_qk_scatter")
    roles = head_roles(model, config.role_threshold)
    ov, qk, prev = scatter_coordinates(model.weights, roles)
    init, init_source = initial_weights(model)
    init_ov, init_qk, _ = scatter_coordinates(init, roles)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    heads = [(l, h) for l in range(1, L) for h in range(H)]
    induction = [(l, h) for l, h in roles.induction_heads() if l >= 1]
    at = lambda a, l, h: float(a[l - 1, h])
    write_json(outdir / f"ov_qk_{label}.json", {
        "heads": [f"L{l}H{h}" for l, h in heads],
        "previous_token_head_per_layer": {f"layer {l}": f"L{p[0]}H{p[1]}"
                                          for l, p in zip(range(1, L), prev)},
        "ov_positivity": ov, "k_composition_positivity": qk, "prefix_matching_scores": roles.induction,
        "previous_token_scores": roles.previous_token, "head_roles_probe": roles.probe,
        "random_init": {"ov_positivity": init_ov, "k_composition_positivity": init_qk,
                        "source": init_source}})

    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    ax.axhline(0, color="#bbb", lw=0.8); ax.axvline(0, color="#bbb", lw=0.8)
    ax.add_patch(plt.Rectangle((init_ov.min(), init_qk.min()), np.ptp(init_ov), np.ptp(init_qk),
                               color="#ccc", alpha=0.5, lw=0, label="random-init range"))
    x = np.asarray([at(ov, l, h) for l, h in heads])
    y = np.asarray([at(qk, l, h) for l, h in heads])
    score = np.asarray([roles.induction[l, h] for l, h in heads])
    colours = ["#c0392b" if (l, h) in induction else "#5d6d7e" for l, h in heads]
    sizes = 40 + 200 * np.clip(score, 0, 1)
    ax.scatter(x, y, c=colours, s=sizes, alpha=0.85)
    ax.set_xlim(-1.05, 1.1); ax.set_ylim(-1.05, 1.1)
    ax.set_xlabel("OV circuit positivity (copying)")
    used = ", ".join(f"layer {l}: L{p[0]}H{p[1]}" for l, p in zip(range(1, L), prev))
    ax.set_ylabel(f"K-composition QK positivity with the prev-token head\n({used})", fontsize=8)
    ax.set_title(f"{label}: heads of layers ≥ 1 (red: prefix-matching score ≥ {config.role_threshold}; "
                 "size ∝ prefix-matching score)", fontsize=8)
    ax.legend(fontsize=7, loc="lower left")
    # heads often share a corner (L1H2 hid under L1H0): labels placed clear of each other
    place_labels(ax, x, y, [f"L{l}H{h} ind {score[i]:.2f}" for i, (l, h) in
                                       enumerate(heads)], point_radius=np.sqrt(sizes / np.pi) + 1)
    save_figure(fig, outdir, "ov_qk_scatter" if len(models) == 1
                           else f"ov_qk_scatter_{label}")
    claims.extend(claims_of(config, label, roles, ov, qk, prev, init_ov, init_qk))
  return claims


def bars(config, init_ov, init_qk):
  """(OV bar, K-comp QK bar) for "near (1, 1)" and for "upper right": each axis's config value
  or, when larger, the largest positivity of a random-init head on that axis."""
  top = lambda a: float(np.max(a)) if np.size(a) else -1.0
  return ((max(config.near_one, top(init_ov)), max(config.near_one, top(init_qk))),
          (max(config.others_below, top(init_ov)), max(config.others_below, top(init_qk))))


def claims_of(config, label, roles, ov, qk, prev, init_ov, init_qk):
  """FW's corner, from the numbers alone: ``roles`` (``HeadRoles``), the [L − 1, H] positivities
  ``ov`` and ``qk`` of the heads of layers ≥ 1 (trained) and ``init_ov``, ``init_qk`` (random
  init), and ``prev``: per layer ≥ 1, the previous-token head its y axis used."""
  L, H = ov.shape[0] + 1, ov.shape[1]
  heads = [(l, h) for l in range(1, L) for h in range(H)]
  induction = [(l, h) for l, h in roles.induction_heads() if l >= 1]
  at = lambda a, l, h: float(a[l - 1, h])
  (near_ov, near_qk), (others_ov, others_qk) = bars(config, init_ov, init_qk)
  no_prev = [(l, p) for l, p in zip(range(1, L), prev) if roles.previous_token[p] < roles.threshold
             and any(x == l for x, _ in induction)]
  init_range = (f"random init: OV {init_ov.min():+.2f}…{init_ov.max():+.2f}, K-comp QK "
                f"{init_qk.min():+.2f}…{init_qk.max():+.2f}")
  where = ", ".join(f"L{l}H{h} at ({at(ov, l, h):+.2f}, {at(qk, l, h):+.2f})"
                    for l, h in induction) or "no induction head found"
  values = {f"L{l}H{h}": [at(ov, l, h), at(qk, l, h)] for l, h in induction}
  anchored = (f"max({config.near_one}, the largest random-init positivity on that axis): OV "
              f"≥ {near_ov:.2f}")
  missing = "; ".join(f"no previous-token head (score ≥ {roles.threshold:g}) before layer {l}: "
                      f"the strongest, L{p[0]}H{p[1]}, scores {roles.previous_token[p]:.2f}"
                      for l, p in no_prev)
  claims = [
      claim(
          figure="ov_qk_scatter", what="induction_ov_copying", model=label, paper_says=CORNER,
          statement=f"{label}: induction heads copy: their full OV circuit has mostly positive "
          "eigenvalues", source=FW_CHECKING_THEORY,
          criterion=f"every head of layers ≥ 1 with prefix-matching score ≥ {config.role_threshold} "
          f"has OV positivity ≥ {anchored} (and there is one)",
          measured=f"{where}; {init_range}", value=values,
          holds=bool(induction) and all(at(ov, l, h) >= near_ov for l, h in induction)),
      claim(
          figure="ov_qk_scatter", what="induction_k_composed_qk_positive", model=label,
          paper_says=CORNER,
          statement=f"{label}: induction heads match by K-composition: their QK term composed "
          "with the previous-token head has mostly positive eigenvalues", source=FW_CHECKING_THEORY,
          criterion=f"every head of layers ≥ 1 with prefix-matching score ≥ {config.role_threshold} "
          f"has positivity ≥ max({config.near_one}, the largest random-init positivity on that "
          f"axis) = {near_qk:.2f} of W_E W_QK (W_E W_OV^prev)ᵀ (and there is one), prev the "
          f"strongest previous-token head of the earlier layers, which must score ≥ "
          f"{roles.threshold:g} (none: the claim fails)",
          measured=(f"{missing}; " if missing else "") + f"{where}; previous-token heads used: "
          + ", ".join(f"L{p[0]}H{p[1]} ({roles.previous_token[p]:.2f})" for p in prev),
          value={**values, "previous_token_head_missing": bool(no_prev)},
          holds=bool(induction) and not no_prev
          and all(at(qk, l, h) >= near_qk for l, h in induction)),
  ]
  others = [(l, h) for l, h in heads if (l, h) not in induction
            and at(ov, l, h) > others_ov and at(qk, l, h) > others_qk]
  claims.append(claim(
      figure="ov_qk_scatter", what="only_induction_upper_right", model=label,
      statement=f"{label}: only induction heads sit in the upper right (a control of the "
      "reading's specificity: FW says where the induction heads sit, not that no other head "
      "does)", source="control: specificity of the OV/QK corner", kind="control",
      criterion=f"no head of layers ≥ 1 with prefix-matching score < {config.role_threshold} has both "
      f"positivities above max({config.others_below}, the largest random-init positivity on "
      f"that axis): OV > {others_ov:.2f} and K-comp QK > {others_qk:.2f}",
      measured=", ".join(f"L{l}H{h} at ({at(ov, l, h):+.2f}, {at(qk, l, h):+.2f})"
                         for l, h in others) or "none",
      value=[f"L{l}H{h}" for l, h in others], holds=not others))
  return claims
