"""Eigenvalues of every head's full OV circuit W_E W_OV W_U in the complex plane (FW fig 15).

All nonzero eigenvalues come from the d_head × d_head matrix W_O (W_U W_E) W_V (low-rank trick).
Magnitudes span orders, so both axes are drawn on a symmetric log scale; positive real
eigenvalues (right of the imaginary axis) mean copying.
"""

import numpy as np

from reproduce import circuits, experiment

DESCRIPTION = "Each head's full-OV eigenvalues in the complex plane (symmetric-log axes)"


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(1, "ov_eigenvalues")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    lam = circuits.ov_eigenvalues(model.weights)
    pos = circuits.positivity(lam)
    np.savez(outdir / f"ov_eigenvalues_{label}.npz", eigenvalues=lam, positivity=pos)
    scale = np.median(np.abs(lam)) / 10 + 1e-12
    limit = float(experiment.symlog(np.abs(lam).max(), scale)) * 1.05
    cols = min(H, 6)
    rows = L * int(np.ceil(H / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
      ax.set_visible(False)
    for l in range(L):
      for h in range(H):
        ax = axes[l * int(np.ceil(H / cols)) + h // cols, h % cols]
        ax.set_visible(True)
        x, y = experiment.symlog(lam[l, h].real, scale), experiment.symlog(lam[l, h].imag, scale)
        ax.axhline(0, color="#bbb", lw=0.6); ax.axvline(0, color="#bbb", lw=0.6)
        ax.scatter(x, y, s=9, c=np.where(lam[l, h].real > 0, "#c0392b", "#2471a3"), alpha=0.8)
        ax.set_xlim(-limit, limit); ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_title(f"L{l}H{h}: positivity {pos[l, h]:+.2f}", fontsize=8,
                     color="#c0392b" if pos[l, h] > config.copying_threshold else "black")
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{label}: eigenvalues of W_E W_OV W_U (axes: sign·log10(1+|x|/{scale:.2g}); "
                 "red: positive real part)")
    fig.tight_layout()
    experiment.save_figure(fig, outdir, "ov_eigenvalues" if len(models) == 1
                           else f"ov_eigenvalues_{label}")
    copying = int((pos > config.copying_threshold).sum())
    claims.append(experiment.claim(
        f"ov_eigenvalues.copying_{label}",
        f"{label}: most heads' OV eigenvalues are mostly positive — the heads copy "
        f"(positivity > {config.copying_threshold}; FW's 1L model: 10 of 12)",
        "FW fig 15", f"more than half the heads have positivity > {config.copying_threshold}",
        f"{copying} of {L * H} heads; positivity per head "
        f"{', '.join(f'{p:+.2f}' for p in pos.ravel())}",
        pos, copying * 2 > L * H))
  return claims
