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
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure
from reproduce.figure.sources import initial_weights

DESCRIPTION = "Histogram of OV positivity over all heads, trained vs random init, 1L and 2L"
ORDER = 50  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_DETECTING_COPYING = ("FW, 'One-Layer Attention-Only Transformers' → 'Summarizing OV/QK "
                        "Matrices' → 'Detecting Copying Behavior'")


def plot_layers(plt, axes, label, trained, random, threshold, missing) -> None:
  """One histogram per layer of the model ``label`` (trained [L, H] against random init), on
  ``axes`` (one per layer); a one-layer model's panel is the whole model."""
  bins = np.linspace(-1, 1, 21)
  L, H = trained.shape
  for l, ax in enumerate(axes):
    ax.hist(random[l], bins, alpha=0.6, color="#999", label="random init")
    ax.hist(trained[l], bins, alpha=0.7, color="#c0392b", label="trained")
    ax.axvline(threshold, color="k", ls="--", lw=0.8, label=f"copying threshold {threshold:.2f}")
    ax.set_xlabel("OV positivity  Re(Σλ) / Σ|λ|")
    ax.set_ylabel("heads")
    ax.set_ylim(0, H + 0.5)
    ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    where = label if L == 1 else f"{label} layer {l}"
    ax.set_title(f"{where}: {int((trained[l] > threshold).sum())} of {H} heads copy"
                 f"{missing}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


COPYING_MAJORITY = ("FW, \"Detecting Copying Behavior\" (eigenvalue summary): in its one-layer "
                    "model, by the positive-eigenvalue statistic of the OV circuit, \"10 out of "
                    "12 heads are significantly copying\"")


def claims_of(config, label, trained, random, init_source) -> list:
  """The claims of one model from its OV positivities [L, H], trained and at random init
  (``init_source`` says where the random init came from): the copying majority (one-layer
  models only, as FW's statement) and the random-init control."""
  L, H = trained.shape
  threshold = max(config.copying_threshold, float(random.max()))
  copying = int((trained > threshold).sum())
  per_layer = "; ".join(f"layer {l}: {int((trained[l] > threshold).sum())}/{H}"
                        for l in range(L))
  claims = []
  if L == 1:
    claims.append(claim(
        figure="eigen_hist", what="copying_majority", model=label,
        paper_says=COPYING_MAJORITY,
        statement=f"{label}: most heads of a one-layer model copy (FW's 1L model: 10 of 12)",
        source=FW_DETECTING_COPYING,
        criterion=f"more than half the heads have OV positivity > max("
        f"{config.copying_threshold}, the largest positivity at random init = "
        f"{float(random.max()):+.2f})",
        measured=f"{copying} of {L * H} heads ({per_layer}); random init from {init_source}",
        value=trained, holds=copying * 2 > L * H))
  mean_random = float(random.mean())
  claims.append(claim(
      figure="eigen_hist", what="random_init_near_zero", model=label,
      statement=f"{label}: at random init OV positivity is near 0",
      source="control: random init",
      criterion=f"|mean positivity over heads| < {config.random_init_max_abs_mean}",
      measured=f"mean {mean_random:+.3f}, range {random.min():+.2f}…{random.max():+.2f} over "
      f"{L * H} heads ({init_source})", value=random,
      holds=abs(mean_random) < config.random_init_max_abs_mean, kind="control"))
  return claims


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  labels = list(models)
  panels = [models[label].cfg.n_layers for label in labels]
  fig, axes = plt.subplots(1, sum(panels), figsize=(4.6 * sum(panels), 3.6), squeeze=False)
  numbers = {}
  for i, label in enumerate(labels):
    model = models[label]
    model.need_layers(1, "eigen_hist")
    trained = circuits.positivity(circuits.ov_eigenvalues(model.weights))
    init, init_source = initial_weights(model)
    random = circuits.positivity(circuits.ov_eigenvalues(init))
    numbers[label] = {"trained": trained, "random_init": random, "random_init_source": init_source}
    threshold = max(config.copying_threshold, float(random.max()))
    missing = ("\n(no training snapshots: grey is a fresh init, not this run's)"
               if model.snapshots is None else "" if "step-0" in init_source
               else f"\n(grey: {init_source}, the earliest there is)")
    plot_layers(plt, axes[0, sum(panels[:i]): sum(panels[: i + 1])], label, trained, random,
                threshold, missing)
    claims.extend(claims_of(config, label, trained, random, init_source))
  fig.tight_layout()
  save_figure(fig, outdir, "eigen_hist")
  write_json(outdir / "eigen_hist.json", numbers)
  return claims
