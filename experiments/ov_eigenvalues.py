"""Eigenvalues of every head's full OV circuit W_E W_OV W_U and full QK circuit W_E W_QK W_Eᵀ in
the complex plane (FW fig 15 and its QK counterpart).

All nonzero eigenvalues come from d_head × d_head matrices (low-rank trick): W_O (W_U W_E) W_V for
OV, W_Kᵀ (W_Eᵀ W_E) W_Q for QK.  Magnitudes span orders, so both axes are drawn on a symmetric
log scale; positive real eigenvalues (right of the imaginary axis) mean copying (OV) or attending
to the same token (QK).

No claims: the OV copying majority is claimed once, in eigen_hist.  The QK eigenvalues are drawn
(and their positivity kept in the numbers), but FW states no claim about them for one-layer
models: FW's one-layer QK statement is that heads attend back to tokens that "could plausibly be
the next token", not to copies of the present one, and skip_trigrams tests that
(``attends_to_plausible_next_tokens``).  The earlier same-token claim was dropped (issue 20).
"""

import numpy as np

from reproduce.core import circuits
from reproduce import experiment

DESCRIPTION = "Each head's full-OV and full-QK eigenvalues in the complex plane (symmetric-log axes)"
ORDER = 40  # place in the batch job and index.html (reproduce.figure.figure_names)


def draw_eigenvalues(plt, lam, pos, threshold, title):
  L, H = pos.shape
  scale = np.median(np.abs(lam)) / 10 + 1e-12
  limit = float(experiment.symlog(np.abs(lam).max(), scale)) * 1.05
  cols = min(H, 6)
  per_layer = int(np.ceil(H / cols))
  fig, axes = plt.subplots(L * per_layer, cols, figsize=(2.3 * cols, 2.3 * L * per_layer),
                           squeeze=False)
  for ax in axes.ravel():
    ax.set_visible(False)
  for l in range(L):
    for h in range(H):
      ax = axes[l * per_layer + h // cols, h % cols]
      ax.set_visible(True)
      x, y = experiment.symlog(lam[l, h].real, scale), experiment.symlog(lam[l, h].imag, scale)
      ax.axhline(0, color="#bbb", lw=0.6); ax.axvline(0, color="#bbb", lw=0.6)
      ax.scatter(x, y, s=9, c=np.where(lam[l, h].real > 0, "#c0392b", "#2471a3"), alpha=0.8)
      ax.set_xlim(-limit, limit); ax.set_ylim(-limit, limit)
      ax.set_aspect("equal")
      ax.set_title(f"L{l}H{h}: positivity {pos[l, h]:+.2f}", fontsize=8,
                   color="#c0392b" if pos[l, h] > threshold else "black")
      ax.tick_params(labelsize=6)
  fig.suptitle(f"{title} (axes: sign·log10(1+|x|/{scale:.2g}); red: positive real part)")
  fig.tight_layout()
  return fig


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(1, "ov_eigenvalues")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    ov = circuits.ov_eigenvalues(model.weights)
    qk = circuits.qk_eigenvalues(model.weights)
    ov_pos, qk_pos = circuits.positivity(ov), circuits.positivity(qk)
    init, init_source = experiment.initial_weights(model)
    init_qk = circuits.positivity(circuits.qk_eigenvalues(init))
    np.savez(outdir / f"eigenvalues_{label}.npz", ov_eigenvalues=ov, ov_positivity=ov_pos,
             qk_eigenvalues=qk, qk_positivity=qk_pos, random_init_qk_positivity=init_qk)
    suffix = "" if len(models) == 1 else f"_{label}"
    experiment.save_figure(draw_eigenvalues(plt, ov, ov_pos, config.copying_threshold,
                                            f"{label}: eigenvalues of W_E W_OV W_U"),
                           outdir, f"ov_eigenvalues{suffix}")
    threshold = float(init_qk.max())
    experiment.save_figure(draw_eigenvalues(plt, qk, qk_pos, threshold,
                                            f"{label}: eigenvalues of W_E W_QK W_Eᵀ"),
                           outdir, f"qk_eigenvalues{suffix}")
  return claims
