"""The phase change (IH §3): induction heads and in-context learning appear together.

For every log-spaced snapshot of one training run per model: the in-context-learning score (loss
late in the context minus early, on fixed held-out windows) and every head's prefix-matching
score, against tokens seen, beside the training loss.  The formation window of a model is the
span between its last snapshot whose best prefix-matching score is below ``unformed`` and its
first snapshot at or above ``formed``.
"""

from pathlib import Path

import json
import numpy as np

from reproduce import checkpoint, experiment, scores
from reproduce.loading import load_with_meta

DESCRIPTION = "ICL score and every head's prefix-matching score over training (1L vs 2L), with the loss"


def trajectory(model, config):
  """Per snapshot: tokens seen, ICL score, prefix matching [L, H]."""
  if model.workdir is None or not (Path(model.workdir) / "snapshots").is_dir():
    raise experiment.FigureError(f"figure induction_formation needs a training work directory "
                                 f"with snapshots; {model.label} has none")
  experiment.require_tokens(model, "induction_formation")
  inputs, targets = model.heldout_windows(config.icl_windows)
  pool = model.sampling_pool()
  rows = []
  for step in checkpoint.checkpoint_steps(Path(model.workdir) / "snapshots"):
    cfg, weights, meta = load_with_meta(Path(model.workdir) / "snapshots" / str(step))
    icl = scores.in_context_learning_score(cfg, weights, inputs, targets)
    prefix = (np.asarray(scores.prefix_matching_score(cfg, weights, pool, model.bos_id,
                                                      samples=config.samples))
              if cfg.n_layers else np.zeros((0, cfg.n_heads)))
    rows.append({"step": step, "tokens": meta["tokens_seen"], "icl": icl["score"],
                 "icl_positions": [icl["early_index"], icl["late_index"]], "prefix": prefix})
  return rows


def training_loss(model):
  path = Path(model.workdir) / "metrics.jsonl"
  records = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
  train = [(r["tokens"], r["loss"]) for r in records if "loss" in r]
  heldout = [(r["tokens"], r["heldout_loss"]) for r in records if "heldout_loss" in r]
  return np.asarray(train), np.asarray(heldout)


def formation_window(tokens, best_prefix, formed, unformed):
  """(index before, index after) bracketing the formation, or None if it never forms."""
  after = next((i for i, p in enumerate(best_prefix) if p >= formed), None)
  if after is None:
    return None
  before = max((i for i in range(after) if best_prefix[i] < unformed), default=None)
  return (before, after) if before is not None else None


def slope_per_decade(tokens, values, lo, hi):
  """Least-squares slope of ``values`` against log10(tokens) over tokens in [lo, hi]."""
  tokens, values = np.asarray(tokens, float), np.asarray(values, float)
  mask = (tokens >= lo) & (tokens <= hi) & (tokens > 0)
  if mask.sum() < 2:
    return float("nan")
  return float(np.polyfit(np.log10(tokens[mask]), values[mask], 1)[0])


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.6 * len(models)), squeeze=False,
                           layout="constrained")
  numbers = {}
  for row, (label, model) in enumerate(models.items()):
    traj = trajectory(model, config)
    tokens = np.asarray([r["tokens"] for r in traj], float)
    icl = np.asarray([r["icl"] for r in traj])
    L, H = model.cfg.n_layers, model.cfg.n_heads
    prefix = np.stack([r["prefix"] for r in traj]) if L else np.zeros((len(traj), 0, H))
    best = prefix.reshape(len(traj), -1).max(-1) if L else np.zeros(len(traj))
    train_loss, heldout_loss = training_loss(model)
    window = formation_window(tokens, best, config.formed, config.unformed)
    positions = traj[-1]["icl_positions"]
    numbers[label] = {"steps": [r["step"] for r in traj], "tokens": tokens, "icl": icl,
                      "prefix_matching": prefix, "icl_positions": positions,
                      "window": None if window is None else [tokens[window[0]], tokens[window[1]]]}
    shown = tokens > 0  # log axes: the step-0 snapshot is left out of the drawing
    x = tokens[shown]
    ax = axes[row, 0]
    for l in range(L):
      for h in range(H):
        formed = prefix[-1, l, h] >= config.formed
        ax.plot(x, prefix[shown, l, h], color=("#c0392b" if formed else "#95a5a6") if l else "#aed6f1",
                lw=1.6 if formed else 0.8, label=f"L{l}H{h}" if formed else None)
    ax.set_ylabel("prefix-matching score")
    ax.set_ylim(-0.02, 1)  # one scale for every model: a flat line means nothing formed
    ax.set_title(f"{label}: every head's prefix matching (layer 0 light blue)")
    axes[row, 1].plot(x, icl[shown], "o-", ms=3, color="#2e86c1")
    axes[row, 1].axhline(0, color="#bbb", lw=0.8)
    axes[row, 1].set_ylabel(f"ICL score: loss@{positions[1]} − loss@{positions[0]}")
    axes[row, 1].set_title(f"{label}: in-context learning score")
    axes[row, 2].plot(train_loss[:, 0], train_loss[:, 1], color="#7f8c8d", lw=0.8, label="train")
    heldout_loss = heldout_loss[heldout_loss[:, 0] > 0] if len(heldout_loss) else heldout_loss
    if len(heldout_loss):
      axes[row, 2].plot(heldout_loss[:, 0], heldout_loss[:, 1], "o-", ms=2, color="#1c2833",
                        lw=1, label="held-out")
    axes[row, 2].set_ylabel("loss (nats)")
    axes[row, 2].set_title(f"{label}: training loss")
    axes[row, 2].legend(fontsize=7)
    for ax in axes[row]:
      ax.set_xscale("log")
      ax.set_xlabel("tokens seen")
      if window is not None:
        ax.axvspan(tokens[window[0]], tokens[window[1]], color="#f5cba7", alpha=0.5, lw=0)
    if any(prefix[-1].ravel() >= config.formed):
      axes[row, 0].legend(fontsize=7)

    if L >= 2:
      if window is None:
        claims.append(experiment.claim(
            f"induction_formation.abrupt_{label}",
            f"{label}: induction heads form in a narrow window of training", "IH §3",
            f"some head reaches prefix matching ≥ {config.formed}", "no head reached "
            f"prefix matching {config.formed} (best final {best[-1]:.2f})", best, False))
        continue
      a, b = window
      ratio = tokens[b] / max(tokens[a], 1)
      claims.append(experiment.claim(
          f"induction_formation.abrupt_{label}",
          f"{label}: induction heads form abruptly", "IH §3",
          f"best prefix matching goes from < {config.unformed} to ≥ {config.formed} within a "
          f"factor of {config.max_window_ratio:g} in tokens",
          f"between {tokens[a]:,.0f} and {tokens[b]:,.0f} tokens (×{ratio:.1f}); best score "
          f"{best[a]:.2f} → {best[b]:.2f}, final {best[-1]:.2f}",
          {"tokens": [tokens[a], tokens[b]], "best": [best[a], best[b]]},
          ratio <= config.max_window_ratio))
      # Rates per decade of tokens.  The ICL score can lag the prefix-matching crossing by a
      # snapshot, so its change is taken from one snapshot before to one after the window, and
      # compared with its change over the decade of tokens before the window.
      lo_i, hi_i = max(a - 1, 0), min(b + 1, len(tokens) - 1)
      lo, hi = tokens[lo_i], tokens[hi_i]
      decade_i = int(np.argmin(np.abs(np.log10(np.maximum(tokens, 1) / (tokens[a] / 10)))))
      icl_inside = (icl[hi_i] - icl[lo_i]) / np.log10(hi / lo)
      icl_before = (icl[a] - icl[decade_i]) / max(np.log10(tokens[a] / tokens[decade_i]), 1e-9)
      claims.append(experiment.claim(
          f"induction_formation.icl_in_window_{label}",
          f"{label}: the in-context-learning score falls in the same window", "IH §3",
          "ICL change per decade of tokens from one snapshot before to one after the window < "
          "min(0, 2 × its change per decade over the decade before)",
          f"ICL {icl[lo_i]:+.3f} → {icl[hi_i]:+.3f} from one snapshot before to one after the "
          f"window ({icl_inside:+.2f} nats per decade of tokens) vs {icl[decade_i]:+.3f} → "
          f"{icl[a]:+.3f} over the decade before ({icl_before:+.2f} per decade)",
          {"inside": icl_inside, "before": icl_before}, icl_inside < min(0, 2 * icl_before)))
      loss_inside = slope_per_decade(train_loss[:, 0], train_loss[:, 1], lo, hi)
      loss_before = slope_per_decade(train_loss[:, 0], train_loss[:, 1], tokens[a] / 10,
                                     tokens[a])
      claims.append(experiment.claim(
          f"induction_formation.loss_bump_{label}",
          f"{label}: the training loss bends in that window", "IH §3",
          "least-squares slope of training loss per decade around the window < over the decade "
          "before",
          f"{loss_inside:+.2f} nats per decade of tokens around the window vs {loss_before:+.2f} "
          "in the decade before", {"inside": loss_inside, "before": loss_before},
          loss_inside < loss_before))
    else:
      icl_drop = icl.max() - icl[-1]
      claims.append(experiment.claim(
          f"induction_formation.none_in_1l_{label}",
          f"{label}: a one-layer model never forms induction heads", "IH §3",
          f"best prefix matching at every snapshot < {config.unformed}",
          f"best prefix-matching score at any snapshot: {best.max():.2f}" if L else
          "no attention layers", best, best.max() < config.unformed))
      numbers[label]["icl_fall"] = icl_drop
  experiment.save_figure(fig, outdir, "induction_formation")
  experiment.write_json(outdir / "induction_formation.json", numbers)
  return claims
