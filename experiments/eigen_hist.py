"""Histogram of OV-circuit positivity over all heads, trained vs random init (FW fig 16).

positivity = Re(Σλ) / Σ|λ| of the full OV circuit W_E W_OV W_U: +1 copying, ≈0 random,
−1 anti-copying.  The random-init distribution is the same run's step-0 snapshot (or a fresh
init of the same shapes when the checkpoint has no snapshots).
"""

from pathlib import Path

import jax
import numpy as np

from reproduce import circuits, experiment
from reproduce.loading import load
from reproduce.weights import init_weights

DESCRIPTION = "Histogram of OV positivity over all heads, trained vs random init, 1L and 2L"


def initial_weights(model):
  if model.workdir is not None and (Path(model.workdir) / "snapshots" / "0").is_dir():
    return load(Path(model.workdir) / "snapshots" / "0")[1], "the run's step-0 snapshot"
  return init_weights(model.cfg, jax.random.key(0)), "a fresh N(0, 0.02²) init"


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
    init, init_source = initial_weights(model)
    random = circuits.positivity(circuits.ov_eigenvalues(init))
    numbers[label] = {"trained": trained, "random_init": random, "random_init_source": init_source}
    ax.hist(random.ravel(), bins, alpha=0.6, color="#999", label="random init")
    ax.hist(trained.ravel(), bins, alpha=0.7, color="#c0392b", label="trained")
    ax.axvline(config.copying_threshold, color="k", ls="--", lw=0.8)
    ax.set_xlabel("OV positivity  Re(Σλ) / Σ|λ|")
    ax.set_ylabel("heads")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    copying = int((trained > config.copying_threshold).sum())
    ax.set_title(f"{label}: {copying} of {L * H} heads copy (> {config.copying_threshold})")
    ax.legend(fontsize=8, loc="upper left")
    per_layer = "; ".join(f"layer {l}: {int((trained[l] > config.copying_threshold).sum())}/{H}"
                          for l in range(L))
    claims.append(experiment.claim(
        f"eigen_hist.copying_{label}",
        f"{label}: most heads copy (OV positivity > {config.copying_threshold}; FW's 1L model: "
        "10 of 12)" if L == 1 else
        f"{label}: heads that copy (OV positivity > {config.copying_threshold}) are common",
        "FW fig 16", f"count of heads with positivity > {config.copying_threshold}: "
        + ("> half" if L == 1 else "≥ 1"),
        f"{copying} of {L * H} heads ({per_layer})", trained,
        copying * 2 > L * H if L == 1 else copying >= 1))
    mean_random = float(random.mean())
    claims.append(experiment.claim(
        f"eigen_hist.random_init_{label}",
        f"{label}: at random init OV positivity is near 0",
        "control: random init",
        f"|mean positivity over heads| < {config.random_init_max_abs_mean}",
        f"mean {mean_random:+.3f} over {L * H} heads ({init_source})", random,
        abs(mean_random) < config.random_init_max_abs_mean, kind="control"))
  fig.tight_layout()
  experiment.save_figure(fig, outdir, "eigen_hist")
  experiment.write_json(outdir / "eigen_hist.json", numbers)
  return claims
