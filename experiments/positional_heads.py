"""Positional heads: what each head attends to from positions alone (FW, 'Primarily
Positional Attention Heads').

With positions added to the Q/K inputs only, a head's purely positional score between
destination i and source j is W_pos[i] W_QK W_pos[j]ᵀ / sqrt(d_head); its causal softmax shows
heads that attend to themselves (offset 0) or to the previous token (offset 1).
"""

import numpy as np

from reproduce.core import circuits, scores
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import head_grid, head_labels, pyplot, save_figure

DESCRIPTION = "Per head: softmax of the position-position QK score; offset-0 and offset-1 heads"
ORDER = 30  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_POSITIONAL_HEADS = ("FW, 'One-Layer Attention-Only Transformers' → 'Interpretation as Skip-"
                       "Trigrams' → 'Primarily Positional Attention Heads'")


POSITIONAL = ("FW, \"One-Layer Attention-Only Transformers\", on primarily positional heads: "
              "one-layer models tend to have a few heads that are \"primarily positional\", "
              "strongly preferring some relative positions; FW's example head attends to "
              "\"either\" the \"present token or the previous token\"")


def present_or_previous(offsets) -> np.ndarray:
  """Per head, the positional attention on the present or the previous token: the masses at
  offsets 0 and 1 summed (FW's example head splits its attention between the two) → [L, H]."""
  return np.asarray(offsets["offset0"]) + np.asarray(offsets["offset1"])


def positional_claim(config, label, offsets) -> dict:
  """FW: some one-layer heads are primarily positional, attending to the present or previous
  token: the two masses summed, for the head where that sum is largest."""
  both = present_or_previous(offsets)
  l, h = np.unravel_index(np.argmax(both), both.shape)
  need = config.min_offset_attention
  return claim(
      figure="positional_heads", what="positional", model=label, paper_says=POSITIONAL,
      statement=f"{label}: some heads are primarily positional, attending to the present or the "
      "previous token", source=FW_POSITIONAL_HEADS,
      criterion=f"some head puts ≥ {need} (most) of its purely positional attention on the "
      "present or the previous token: mean attention at offset 0 plus at offset 1, summed "
      "(softmax of W_pos W_QK W_posᵀ / √d_head over the whole context, destinations ≥ 1)",
      measured=f"strongest: L{l}H{h} puts {both[l, h]:.2f} on the present or previous token "
      f"(present {offsets['offset0'][l, h]:.2f}, previous {offsets['offset1'][l, h]:.2f}); "
      f"{int((both >= need).sum())} of {both.size} heads ≥ {need}",
      value={"present_or_previous": both, "offset0": offsets["offset0"],
             "offset1": offsets["offset1"]},
      holds=bool(both[l, h] >= need))


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(1, "positional_heads")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    T = min(config.positions, model.cfg.n_ctx)
    pattern = np.asarray(circuits.positional_attention(model.weights, T))
    offsets = scores.positional_offsets(model.weights)  # over the whole context
    write_json(outdir / f"positional_{label}.json",
                          {"offset0": offsets["offset0"], "offset1": offsets["offset1"],
                           "present_or_previous": present_or_previous(offsets)})
    np.savez(outdir / f"positional_patterns_{label}.npz", patterns=pattern)

    rows, cols, cell = head_grid(L, H)
    fig = plt.figure(figsize=(1.9 * cols + 1.6, 2.0 * rows + 2.6))
    grid = fig.add_gridspec(rows + 1, cols + 1, height_ratios=[1] * rows + [1.2],
                            width_ratios=[1] * cols + [0.08], hspace=0.6)
    for l in range(L):
      for h in range(H):
        ax = fig.add_subplot(grid[cell(l, h)])
        image = ax.imshow(pattern[l, h], cmap="magma", vmin=0, vmax=1)
        ax.set_xticks([0, T - 1], ["0", str(T - 1)], fontsize=6)
        ax.set_yticks([0, T - 1], ["0", str(T - 1)], fontsize=6)
        ax.tick_params(length=2, pad=1)
        ax.set_title(f"L{l}H{h}\nself {offsets['offset0'][l, h]:.2f} prev "
                     f"{offsets['offset1'][l, h]:.2f}", fontsize=7)
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[:rows, cols]))
    bar.set_label("positional attention (softmax over sources)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bars = fig.add_subplot(grid[rows, :cols])
    x = np.arange(L * H)
    bars.bar(x - 0.2, offsets["offset0"].ravel(), 0.4, label="offset 0 (self)")
    bars.bar(x + 0.2, offsets["offset1"].ravel(), 0.4, label="offset 1 (previous token)")
    bars.set_xticks(x, head_labels(L, H), rotation=90, fontsize=7)
    bars.set_ylabel("mean positional attention")
    bars.set_ylim(0, 1)
    bars.legend(fontsize=7)
    fig.suptitle(f"{label}: softmax(W_pos W_QK W_posᵀ / √d_head), first {T} positions "
                 "(rows: destination position, columns: source position)")
    save_figure(fig, outdir, f"positional_heads_{label}")

    if L == 1:  # FW's statement is about one-layer models; deeper ones are drawn, not claimed
      claims.append(positional_claim(config, label, offsets))
  return claims
