"""Plotting helpers every figure shares: the Agg backend and style, PNG + SVG output, token labels
as they read in every figure, head grids, colour bars and non-overlapping point labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import matplotlib
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.transforms import Bbox


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
  matplotlib.use("Agg")
  plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "font.size": 9,
                       "axes.titlesize": 10, "axes.spines.top": False,
                       "axes.spines.right": False})
  return plt


def save_figure(fig, outdir: Path, name: str) -> None:
  """Writes ``name.png`` and ``name.svg``."""
  fig.savefig(Path(outdir) / f"{name}.png", bbox_inches="tight")
  fig.savefig(Path(outdir) / f"{name}.svg", bbox_inches="tight")
  pyplot().close(fig)


def show_token(text: str, width: int = 10) -> str:
  """A token as it reads in every figure: a space as ·, a newline as ↵, a tab as →, a run of
  ≥ 4 spaces as its length (``"\\n" + 20 spaces`` → ``↵+20sp``) so that indents of different depth
  stay apart; control bytes as ¤; cut to ``width`` with … (the counted run is never cut)."""
  parts = []
  for run in re.findall(r" {4,}|[^ ]+| +", text):
    if run.startswith(" ") and len(run) >= 4:
      parts.append(("+" if parts else "") + f"{len(run)}sp")
    else:
      run = run.replace(" ", "·").replace("\n", "↵").replace("\t", "→")
      parts.append(("+" if parts and parts[-1].endswith("sp") else "")
                   + "".join(ch if ch.isprintable() else "¤" for ch in run))
  shown = "".join(parts)
  if len(shown) <= width:
    return shown
  if parts[-1].endswith("sp"):  # keep the indent's count whole, cut the text before it
    tail = parts[-1]
    return shown[: max(width - len(tail) - 1, 0)] + "…" + tail
  return shown[: width - 1] + "…"


def head_labels(L: int, H: int) -> List[str]:
  return [f"L{l}H{h}" for l in range(L) for h in range(H)]


def head_grid(L: int, H: int, max_cols: int = 6):
  """(rows, cols, cell): a grid of every head, each layer's heads on ``ceil(H / cols)`` rows of at
  most ``max_cols`` (12 heads → 2 rows of 6, not one long strip); ``cell(l, h)`` is the (row,
  column) of head ``h`` of layer ``l``."""
  cols = min(H, max_cols)
  per_layer = -(-H // cols)
  return L * per_layer, cols, lambda l, h: (l * per_layer + h // cols, h % cols)


def colorbar(fig, image, ax, label: str, **kw):
  """A colour bar with its quantity named (every figure's colour bars have a label)."""
  bar = fig.colorbar(image, ax=ax, **kw)
  bar.set_label(label, fontsize=8)
  bar.ax.tick_params(labelsize=7)
  return bar


def place_labels(ax, x, y, texts, fontsize: float = 7, radii=(5, 10, 17, 26, 38, 52),
                 point_radius=3.5, avoid=(), **kw):
  """Labels the points (x[i], y[i]) with texts[i] so that no two labels overlap and no label
  covers a point (a disc of ``point_radius`` points, one number or one per point): each label,
  in order, takes the first offset (rings of growing ``radii``, in points, eight directions
  each) where its box meets no label placed before it, no point, none of the display-space
  boxes ``avoid`` (a legend's window extent) and nothing outside the axes; with none free, the
  offset that overlaps least.  A label set away from its point gets a thin leader line.  Call it
  once the axes' limits and the figure's layout are final (offsets are in points; a later change
  of scale moves points, not labels).  Returns the annotations; ``kw`` goes to each (colour,
  weight)."""
  fig = ax.figure
  renderer = fig.canvas.get_renderer()
  at = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
  px = fig.dpi / 72  # pixels per point
  dots = np.broadcast_to(np.asarray(point_radius, float), (len(at),)) * px
  points = [Bbox.from_extents(u - d, v - d, u + d, v + d) for (u, v), d in zip(at, dots)]
  frame = ax.get_window_extent(renderer)
  directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]

  def overlap(box):
    def area(a, b):
      w = min(a.x1, b.x1) - max(a.x0, b.x0)
      h = min(a.y1, b.y1) - max(a.y0, b.y0)
      return w * h if w > 0 and h > 0 else 0.0
    inside = area(box, frame)
    return (box.width * box.height - inside) + sum(area(box, b) for b in placed + points)

  def annotate(i, radius, dx, dy, leader=None):
    norm = np.hypot(dx, dy)
    return ax.annotate(texts[i], (x[i], y[i]), xytext=(radius * dx / norm, radius * dy / norm),
                       textcoords="offset points", fontsize=fontsize, arrowprops=leader,
                       ha={1: "left", -1: "right", 0: "center"}[dx],
                       va={1: "bottom", -1: "top", 0: "center"}[dy], **kw)

  placed, out = list(avoid), []
  for i in range(len(texts)):
    best = None
    for radius in radii:
      for dx, dy in directions:
        trial = annotate(i, radius, dx, dy)
        box = trial.get_window_extent(renderer)
        trial.remove()
        cost = overlap(box)
        if best is None or cost < best[0]:
          best = (cost, radius, dx, dy, box)
        if cost == 0:
          break
      if best[0] == 0:
        break
    _, radius, dx, dy, box = best
    leader = (dict(arrowstyle="-", lw=0.5, color="#999", shrinkA=0, shrinkB=2)
              if radius > radii[0] else None)
    out.append(annotate(i, radius, dx, dy, leader))
    placed.append(box)
  return out


def symlog(x, scale: float = 1.0):
  """sign(x)·log10(1 + |x|/scale): keeps sign, compresses magnitudes that span orders."""
  x = np.asarray(x)
  return np.sign(x) * np.log10(1 + np.abs(x) / scale)
