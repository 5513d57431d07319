"""Eigenvalues of every head's full OV circuit W_E W_OV W_U and full QK circuit W_E W_QK W_Eᵀ in
the complex plane (FW, 'One-Layer Attention-Only Transformers' → 'Summarizing OV/QK Matrices':
its OV eigenvalue plot and the QK counterpart).  Re λ across, Im λ up, on one symmetric-log
scale shared by every eigenvalue plot of the figure.

All nonzero eigenvalues come from d_head × d_head matrices (low-rank trick): W_O (W_U W_E) W_V for
OV, W_Kᵀ (W_Eᵀ W_E) W_Q for QK.  Magnitudes span orders, so both axes are drawn on a symmetric
log scale; positive real eigenvalues (right of the imaginary axis) mean copying (OV) or attending
to the same token (QK).

No claims: the OV copying majority is claimed once, in eigen_hist.  The QK eigenvalues are drawn
(and their positivity kept in the numbers), but FW states no claim about them for one-layer
models: FW's one-layer QK statement is that heads attend back to tokens that "could plausibly be
the next token", not to copies of the present one, and skip_trigrams tests that
(``attends_to_plausible_next_tokens``).
"""

import numpy as np

from reproduce.core import circuits
from reproduce.figure.plotting import head_grid, pyplot, save_figure, symlog
from reproduce.figure.sources import initial_weights

DESCRIPTION = "Each head's full-OV and full-QK eigenvalues in the complex plane (symmetric-log axes)"
ORDER = 40  # place in the batch job and index.html (reproduce.figure.runner.figure_names)

SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def symlog_ticks(limit: float, scale: float):
  """(positions, labels) of ticks at 0 and ±10^k on a ``symlog(·, scale)`` axis running to
  ±``limit``: labels in λ's own units ("10²"), at most three on each side of 0."""
  positions, labels = [0.0], ["0"]
  for k in range(-3, 9):
    at = float(symlog(10.0 ** k, scale))
    if at <= limit and at - positions[-1] >= limit / 3.5:
      positions.append(at)
      labels.append("1" if k == 0 else "10" + str(k).translate(SUPERSCRIPT))
  return ([-p for p in positions[:0:-1]] + positions,
          [f"−{t}" for t in labels[:0:-1]] + labels)


def draw_eigenvalues(plt, lam, pos, threshold, title, scale, limit):
  """Every head's eigenvalues ``lam`` [L, H, n] in the complex plane, Re λ across and Im λ up,
  each axis sign·log10(1 + |·|/``scale``) out to ±``limit`` (the same on every eigenvalue plot,
  so that the pictures compare)."""
  L, H = pos.shape
  rows, cols, cell = head_grid(L, H)
  fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.set_visible(False)
  ticks = symlog_ticks(limit, scale)
  for l in range(L):
    for h in range(H):
      ax = axes[cell(l, h)]
      ax.set_visible(True)
      x, y = symlog(lam[l, h].real, scale), symlog(lam[l, h].imag, scale)
      ax.axhline(0, color="#bbb", lw=0.6); ax.axvline(0, color="#bbb", lw=0.6)
      ax.scatter(x, y, s=9, c=np.where(lam[l, h].real > 0, "#c0392b", "#2471a3"), alpha=0.8)
      ax.set_xlim(-limit, limit); ax.set_ylim(-limit, limit)
      ax.set_aspect("equal")
      ax.set_xticks(*ticks); ax.set_yticks(*ticks)
      ax.set_xlabel("Re λ", fontsize=7, labelpad=1); ax.set_ylabel("Im λ", fontsize=7, labelpad=0)
      ax.set_title(f"L{l}H{h}: positivity {pos[l, h]:+.2f}", fontsize=8,
                   color="#c0392b" if pos[l, h] > threshold else "black")
      ax.tick_params(labelsize=6)
  fig.suptitle(f"{title}\nRe λ and Im λ on symmetric-log axes, sign·log10(1 + |·|/c) with "
               f"c = {scale:.3g} on every eigenvalue plot; red: Re λ > 0", fontsize=9)
  fig.tight_layout()
  return fig


def shared_scale(*eigenvalues):
  """(c, limit) for every eigenvalue plot of the figure: c = a tenth of the median |λ| over all of
  ``eigenvalues`` (OV and QK, every model), limit = the largest |λ| on that axis, plus 5%."""
  magnitudes = np.concatenate([np.abs(np.asarray(lam)).ravel() for lam in eigenvalues])
  scale = float(np.median(magnitudes)) / 10 + 1e-12
  return scale, float(symlog(magnitudes.max(), scale)) * 1.05


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  eigenvalues = {}
  for label, model in models.items():
    model.need_layers(1, "ov_eigenvalues")
    eigenvalues[label] = (circuits.ov_eigenvalues(model.weights),
                          circuits.qk_eigenvalues(model.weights))
  scale, limit = shared_scale(*(lam for pair in eigenvalues.values() for lam in pair))
  for label, model in models.items():
    ov, qk = eigenvalues[label]
    ov_pos, qk_pos = circuits.positivity(ov), circuits.positivity(qk)
    init, init_source = initial_weights(model)
    init_qk = circuits.positivity(circuits.qk_eigenvalues(init))
    np.savez(outdir / f"eigenvalues_{label}.npz", ov_eigenvalues=ov, ov_positivity=ov_pos,
             qk_eigenvalues=qk, qk_positivity=qk_pos, random_init_qk_positivity=init_qk,
             axis_scale=scale)
    suffix = "" if len(models) == 1 else f"_{label}"
    save_figure(draw_eigenvalues(plt, ov, ov_pos, config.copying_threshold,
                                            f"{label}: eigenvalues of W_E W_OV W_U", scale,
                                            limit),
                           outdir, f"ov_eigenvalues{suffix}")
    threshold = float(init_qk.max())
    save_figure(draw_eigenvalues(plt, qk, qk_pos, threshold,
                                            f"{label}: eigenvalues of W_E W_QK W_Eᵀ", scale,
                                            limit),
                           outdir, f"qk_eigenvalues{suffix}")
  return claims
