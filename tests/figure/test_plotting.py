"""reproduce.figure.plotting: token labels keep indents apart; placed labels do not overlap."""

import numpy as np

from reproduce.figure.plotting import place_labels, pyplot, show_token


def test_show_token_keeps_indents_apart():
  """Newline-plus-indent tokens of different depth read differently at every width the figures
  use (they were cut to the same ↵·······… before)."""
  show = show_token
  assert show("\n" + " " * 20) == "↵+20sp" and show(" " * 10) == "10sp"
  assert show(" if") == "·if" and show("\t") == "→" and show("\x01") == "¤"
  for width in (9, 10, 14, 24):
    assert len({show("\n" + " " * n, width) for n in range(4, 40)}) == 36
  assert show("):\n" + " " * 24, 6).endswith("+24sp")


def test_placed_labels_do_not_overlap():
  """Heads that share a point (L1H2 used to hide under L1H0 in ov_qk_scatter) keep every label
  readable: no two labels' boxes overlap, and none leaves the axes."""
  from matplotlib.text import Text
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(4, 4))
  x = np.array([0.5] * 5 + [0.52, 0.48, 0.98, 0.02])
  y = np.array([0.5] * 5 + [0.51, 0.49, 0.98, 0.02])
  ax.scatter(x, y); ax.set_xlim(0, 1); ax.set_ylim(0, 1)
  labels = place_labels(ax, x, y, [f"L1H{i} (0.{i}2)" for i in range(len(x))])
  renderer, boxes = fig.canvas.get_renderer(), []
  for label in labels:  # the text alone, without its leader line
    label.update_positions(renderer)
    boxes.append(Text.get_window_extent(label))
  frame = ax.get_window_extent(renderer)
  plt.close(fig)
  assert not any(boxes[i].overlaps(boxes[j]) for i in range(len(boxes)) for j in range(i))
  assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)
