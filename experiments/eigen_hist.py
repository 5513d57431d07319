"""Histogram of OV-circuit positivity over all heads, trained vs random init (FW,
'One-Layer Attention-Only Transformers' → 'Detecting Copying Behavior'); a model with more than
one layer gets one histogram per layer.

positivity = Re(Σλ) / Σ|λ| of the full OV circuit W_E W_OV W_U: +1 copying, ≈0 random,
−1 anti-copying.  The random-init distribution is the model's earliest training snapshot: our
run's step-0 snapshot, or the first of a downloaded folder's ``checkpoints/`` (the figure says
which); a weight file without either has no initial weights, so a fresh init of the same shapes
stands in for it and the figure says so.

Copying is judged against both the fixed threshold (FW's "mostly positive eigenvalues") and the
whole random-init range: a copying head must sit above every head of the initial weights.  FW's
statement is about the 1L model (10 of 12 heads); the 2L model's copying heads are drawn but not
claimed (the induction heads' copying is a claim of ov_qk_scatter).
"""

import numpy as np

from reproduce.core import circuits
from reproduce import experiment

DESCRIPTION = "Histogram of OV positivity over all heads, trained vs random init, 1L and 2L"
ORDER = 50  # place in the batch job and index.html (reproduce.figure.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_DETECTING_COPYING = ("FW, 'One-Layer Attention-Only Transformers' → 'Summarizing OV/QK "
                        "Matrices' → 'Detecting Copying Behavior'")


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  labels = list(models)
  fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 3.6), squeeze=False)
  bins = np.linspace(-1, 1, 21)
  numbers = {}
  for ax, label in zip(axes[0], labels):
    model = models[label]
    model.need_layers(1, "eigen_hist")
    trained = circuits.positivity(circuits.ov_eigenvalues(model.weights))
    init, init_source = experiment.initial_weights(model)
    random = circuits.positivity(circuits.ov_eigenvalues(init))
    numbers[label] = {"trained": trained, "random_init": random, "random_init_source": init_source}
    ax.hist(random.ravel(), bins, alpha=0.6, color="#999", label="random init")
    ax.hist(trained.ravel(), bins, alpha=0.7, color="#c0392b", label="trained")
    threshold = max(config.copying_threshold, float(random.max()))
    ax.axvline(threshold, color="k", ls="--", lw=0.8)
    ax.set_xlabel("OV positivity  Re(Σλ) / Σ|λ|")
    ax.set_ylabel("heads")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    copying = int((trained > threshold).sum())
    missing = ("\n(no training snapshots: grey is a fresh init, not this run's)"
               if model.snapshots is None else "" if "step-0" in init_source
               else f"\n(grey: {init_source}, the earliest there is)")
    ax.set_title(f"{label}: {copying} of {L * H} heads copy (> {threshold:.2f}){missing}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    per_layer = "; ".join(f"layer {l}: {int((trained[l] > threshold).sum())}/{H}"
                          for l in range(L))
    if L == 1:
      claims.append(experiment.claim(
          figure="eigen_hist", what="copying_majority", model=label,
          statement=f"{label}: most heads of a one-layer model copy (FW's 1L model: 10 of 12)",
          source=FW_DETECTING_COPYING,
          criterion=f"more than half the heads have OV positivity > max("
          f"{config.copying_threshold}, the largest positivity at random init = "
          f"{float(random.max()):+.2f})",
          measured=f"{copying} of {L * H} heads ({per_layer}); random init from {init_source}",
          value=trained, holds=copying * 2 > L * H))
    mean_random = float(random.mean())
    claims.append(experiment.claim(
        figure="eigen_hist", what="random_init_near_zero", model=label,
        statement=f"{label}: at random init OV positivity is near 0",
        source="control: random init",
        criterion=f"|mean positivity over heads| < {config.random_init_max_abs_mean}",
        measured=f"mean {mean_random:+.3f}, range {random.min():+.2f}…{random.max():+.2f} over "
        f"{L * H} heads ({init_source})", value=random,
        holds=abs(mean_random) < config.random_init_max_abs_mean, kind="control"))
  fig.tight_layout()
  experiment.save_figure(fig, outdir, "eigen_hist")
  experiment.write_json(outdir / "eigen_hist.json", numbers)
  return claims
