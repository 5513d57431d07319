"""The phase change (IH, 'Argument 1'): induction heads and in-context learning appear together.

For every training snapshot of each model (``Model.snapshots``: our run's log-spaced
``snapshots/``, or the ``checkpoints/`` of a downloaded model folder, read one at a time): the
in-context-learning score (loss late in the context minus early, on fixed held-out windows),
every head's prefix-matching score and the held-out loss, against tokens seen (steps where a
folder's file names count steps), beside the training loss when the run logged it.

The claims follow IH's wording rather than a slope criterion (docs/RECIPE.md tells how the earlier
slope criteria failed and why they were replaced):
- abrupt: the head with the highest final prefix-matching score gains most (≥ ``majority``) of
  its total gain (final − initial) between two snapshots at most a factor ``window_ratio`` apart
  in tokens; that span is the formation window;
- ICL: more than 75% of the ICL score's total fall over training (initialisation → end)
  happens inside the window (IH's own number: "more than 75% of the final ICL forms inside the
  window"; until issue 32 we asked for half);
- loss bump: the training loss falls faster inside the window than over the neighbouring
  intervals of the same token ratio on both sides (least-squares slopes against log tokens, by
  more than 2 standard errors); without data on both sides it cannot be tested, and says so;
  the window and both neighbours must lie in the run's constant-learning-rate phase (after the
  warm-up, before the decay: IH checked that its window matches no learning-rate change), the
  neighbours cut to it, read from the run's config (``constant_phase``); a run whose schedule is
  unknown is compared without that check, and the claim says so; without a training-loss log (a
  downloaded folder) the held-out loss measured at each snapshot stands in for it;
- one layer never forms induction heads, and its final ICL score stays above the 2L model's.

A checkpoint without training snapshots (a weight file) has no trajectory: the figure shows its
final scores alone, says what is missing, and makes no claim that needs the trajectory.
"""

import json
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter
from reproduce.core import circuits, scores
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure
from reproduce.figure.sources import has_snapshots, require_tokens
from reproduce.train.step import constant_lr_span
from reproduce.train.workdir import read_metrics

DESCRIPTION = "ICL score and every head's prefix-matching score over training (1L vs 2L), with the loss"
ORDER = 100  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
IH_PHASE_CHANGE = "IH, 'Argument 1: … a “phase change” during training'"


def x_axis(model) -> str:
  """What the x axis counts: "tokens", or "steps" for a folder whose checkpoints count steps."""
  return model.snapshots.axis if model.snapshots is not None else "tokens"


def measure(config, model, cfg, weights, inputs, targets, pool) -> dict:
  """One snapshot's ICL score (and its standard error over the windows), held-out loss, every
  head's prefix matching [L, H], and its per-token losses [K, T] on the first K =
  ``config.token_loss_windows`` held-out windows (every position: the same tokens for every
  snapshot and every model of one corpus).  Also every head's previous-token score [L, H] on
  the first ``config.previous_token_windows`` of them (``scores.previous_token_on``) and IH's
  previous-token K-composition QK trace [L, H] (``circuits.previous_token_k_composition_trace``,
  the weights as folded; NaN in layer 0, below two layers and in a smeared-key model, whose
  keys W_K does not give).  A pass that sets K or the previous-token windows to 0 skips that
  part: no per-token losses ([0, T]), NaN scores and traces."""
  icl = scores.in_context_learning_score(cfg, weights, inputs, targets,
                                         loss_positions=config.loss_positions)
  L, H, T = cfg.n_layers, cfg.n_heads, inputs.shape[1]
  prefix = (np.asarray(scores.prefix_matching_score(cfg, weights, pool, model.bos_id))
            if L else np.zeros((0, H)))
  K = config.token_loss_windows
  token_losses = (scores.sequence_losses(cfg, weights, inputs[:K], targets[:K]) if K
                  else np.zeros((0, T), np.float32))
  previous, trace = np.full((L, H), np.nan), np.full((L, H), np.nan)
  if L and config.previous_token_windows:
    previous = np.asarray(scores.previous_token_on(cfg, weights,
                                                   inputs[:config.previous_token_windows]))
    if L >= 2 and weights.smear is None:
      trace = circuits.previous_token_k_composition_trace(weights, previous)
  return {"icl": icl["score"], "icl_standard_error": icl["standard_error"], "loss": icl["loss"],
          "icl_positions": [icl["early_index"], icl["late_index"]], "prefix": prefix,
          "token_losses": token_losses, "previous_token": previous, "k_composition_trace": trace}


def trajectory(model, config):
  """Per training snapshot (``model.snapshots``, one in memory at a time): its step, tokens seen
  and position on ``x_axis``, ICL score, held-out loss and prefix matching [L, H].  Without
  snapshots, one row for the model's own weights."""
  require_tokens(model, "induction_formation")
  inputs, targets = model.heldout_windows(config.icl_windows)
  pool = model.sampling_pool()
  if model.snapshots is not None:
    points, where = model.snapshots.iterate(), model.snapshots.position
  else:
    points = [(model.cfg, model.weights, {"step": model.meta.get("step"),
                                          "tokens_seen": model.meta.get("tokens_seen") or 0})]
    where = lambda meta: meta["tokens_seen"]
  rows = []
  for cfg, weights, meta in points:
    rows.append(dict(measure(config, model, cfg, weights, inputs, targets, pool),
                     step=meta.get("step"), tokens=meta.get("tokens_seen"),
                     x=where(meta) or 0))
    del cfg, weights, meta  # hold one snapshot at a time
  return rows


def training_loss(model):
  """(train [n, 2], held-out [m, 2]) arrays of (tokens, loss) from the run's metrics log."""
  records = read_metrics(Path(model.workdir) / "metrics.jsonl") if model.workdir is not None \
      else []
  train = [(r["tokens"], r["loss"]) for r in records if "loss" in r]
  heldout = [(r["tokens"], r["heldout_loss"]) for r in records if "heldout_loss" in r]
  return np.asarray(train).reshape(-1, 2), np.asarray(heldout).reshape(-1, 2)


def steepest_gain(tokens, score, window_ratio):
  """(i, j, fraction): the pair of snapshots i < j with tokens[j] ≤ window_ratio·tokens[i] over
  which ``score`` rises most, and that rise as a fraction of its total rise score[-1] − score[0].
  None when the score never rises."""
  total = score[-1] - score[0]
  if len(score) < 2 or total <= 0:
    return None
  best = None
  for i in range(len(score)):
    for j in range(i + 1, len(score)):
      if tokens[i] > 0 and tokens[j] <= window_ratio * tokens[i]:
        gain = score[j] - score[i]
        if best is None or gain > best[2]:
          best = (i, j, gain)
  if best is None:
    return None
  return best[0], best[1], float(best[2] / total)


def icl_share(icl, i, j):
  """Share of the ICL score's total fall over training (the first snapshot, the model at
  initialisation, → the end) between snapshots i, j.  Not from the score's highest value: a
  brief loss overshoot late in warm-up lifts early snapshots' scores (docs/RECIPE.md, "The ICL spike
  at 147k tokens"), and the largest of them is noise, not where learning starts."""
  total = float(icl[0] - icl[-1])
  return (float(icl[i] - icl[j]) / total if total > 0 else float("nan")), total


def interval_slope(tokens, loss, lo, hi):
  """(slope, standard error, points): least-squares slope of ``loss`` against log10(tokens) over
  lo ≤ tokens ≤ hi, nats per decade; NaNs with fewer than 3 points."""
  inside = (tokens >= lo) & (tokens <= hi) & (tokens > 0)
  n = int(inside.sum())
  if n < 3:
    return float("nan"), float("nan"), n
  x, y = np.log10(tokens[inside]), loss[inside]
  slope, intercept = np.polyfit(x, y, 1)
  residual = y - (slope * x + intercept)
  spread = float(np.sum((x - x.mean()) ** 2))
  error = float(np.sqrt(np.sum(residual ** 2) / (n - 2) / spread)) if spread > 0 else float("nan")
  return float(slope), error, n


def constant_phase(model):
  """(first, last) tokens between which every logged training-loss record averages steps run at
  the peak learning rate, after the warm-up and before the decay, from the run's train config
  (``step.constant_lr_span``: a record at step s averages the updates s − log_every … s − 1);
  None when the schedule is unknown (no train config: a downloaded model folder) or the x axis
  counts steps."""
  config = model.meta.get("config") if isinstance(model.meta, dict) else None
  if (not isinstance(config, dict) and model.workdir is not None
      and (Path(model.workdir) / "config.json").is_file()):
    config = json.loads((Path(model.workdir) / "config.json").read_text())
  train = config.get("train") if isinstance(config, dict) else None
  if not isinstance(train, dict) or x_axis(model) != "tokens":
    return None
  first, last = constant_lr_span(train)
  per_step = int(train["batch_size"]) * model.cfg.n_ctx
  return float((first + int(train["log_every"])) * per_step), float((last + 1) * per_step)


def loss_bump(train_loss, lo, hi, min_points: int = 5, clear=None) -> dict:
  """The loss curve's slope (nats per decade of tokens) inside the window [lo, hi] and in its two
  neighbours of the same ratio r = hi/lo, [lo/r, lo) and (hi, hi·r], with standard errors: no
  fit is extrapolated.  A neighbour is ``usable`` when its logged points reach half way across it
  (lo/√r, hi·√r) and number ≥ ``min_points``; ``margin`` (per side) = (neighbour slope − window
  slope) / the standard error of that difference: > 0 where the window falls faster.

  ``clear`` = (first, last) tokens of the run's constant-learning-rate phase (``constant_phase``)
  keeps every comparison clear of a learning-rate change: the window must lie inside it
  (``window_clear``), and each neighbour is cut to it (a neighbour cut short of half way is not
  usable)."""
  tokens, loss = train_loss[:, 0], train_loss[:, 1]
  r = hi / lo
  inside = interval_slope(tokens, loss, lo, hi)
  first, last = clear if clear is not None else (0.0, np.inf)
  window_clear = bool(lo >= first and hi <= last)
  out = {"window": inside, "clear": None if clear is None else [first, last],
         "window_clear": window_clear}
  sides = (("before", max(lo / r, first), lo * (1 - 1e-9), lo / np.sqrt(r)),
           ("after", hi * (1 + 1e-9), min(hi * r, last), hi * np.sqrt(r)))
  for side, a, b, half_way in sides:
    slope, error, n = interval_slope(tokens, loss, a, b)
    there = tokens[(tokens >= a) & (tokens <= b)]
    reaches = bool(len(there)) and (there.min() <= half_way if side == "before"
                                    else there.max() >= half_way)
    usable = window_clear and n >= min_points and reaches and np.isfinite(error)
    margin = (slope - inside[0]) / np.hypot(error, inside[1]) if usable else float("nan")
    out[side] = (slope, error, n)
    out[f"{side}_usable"] = bool(usable)
    out[f"{side}_margin"] = float(margin)
  return out


SHARED_SETTINGS = ("icl_windows", "loss_positions", "token_loss_windows", "window_ratio",
                   "previous_token_windows")


def formation(config, model) -> dict:
  """The model's trajectory as arrays: ``tokens`` (its positions on ``x_axis``: tokens seen or
  steps), ICL score and its standard error, held-out loss, prefix matching [n, L, H], the best
  head's prefix matching, per-token losses [n, K, T], previous-token scores and the
  previous-token K-composition trace [n, L, H] (``measure``), the losses logged, and the formation
  window (``steepest_gain``).  One pass over the snapshots per model and setting: every figure
  that reads the trajectory shares it (``Model.shared``)."""
  key = ("induction_formation.formation",) + tuple(config[k] for k in SHARED_SETTINGS)
  return model.shared(key, lambda: _formation(config, model))


def _formation(config, model) -> dict:
  traj = trajectory(model, config)
  tokens = np.asarray([r["x"] for r in traj], float)
  L, H = model.cfg.n_layers, model.cfg.n_heads
  prefix = np.stack([r["prefix"] for r in traj]) if L else np.zeros((len(traj), 0, H))
  flat = prefix.reshape(len(traj), -1)
  best_head = int(np.argmax(flat[-1])) if L else None
  best = flat[:, best_head] if L else np.zeros(len(traj))
  train_loss, heldout_loss = training_loss(model)
  snapshots = has_snapshots(model)
  gain = steepest_gain(tokens, best, config.window_ratio) if snapshots and L else None
  return {"steps": [r["step"] for r in traj], "tokens": tokens, "axis": x_axis(model),
          "tokens_seen": [r["tokens"] for r in traj],
          "icl": np.asarray([r["icl"] for r in traj]),
          "icl_standard_error": np.asarray([r["icl_standard_error"] for r in traj]),
          "token_losses": np.stack([r["token_losses"] for r in traj]),
          "previous_token": np.stack([r["previous_token"] for r in traj]),
          "k_composition_trace": np.stack([r["k_composition_trace"] for r in traj]),
          "snapshot_loss": np.asarray([r["loss"] for r in traj]), "prefix": prefix, "flat": flat,
          "best_head": best_head, "best": best, "train_loss": train_loss,
          "heldout_loss": heldout_loss, "snapshots": snapshots, "gain": gain,
          "positions": traj[-1]["icl_positions"]}


def formed_window(config, f):
  """(first, last) position of the formation window to shade, or None where nothing forms: the
  best head's steepest gain (``steepest_gain``) when that head ends ≥ ``config.formed``."""
  gain = f["gain"]
  if gain is None or f["best_head"] is None or f["best"][-1] < config.formed:
    return None
  return float(f["tokens"][gain[0]]), float(f["tokens"][gain[1]])


def shade_window(ax, window, label=None) -> None:
  """Shades the formation window (``formed_window``: (first, last) tokens; None: nothing) on a
  plot over training, in the one colour every figure over training uses for it."""
  if window is not None:
    ax.axvspan(*window, color="#f5cba7", alpha=0.5, lw=0, label=label)


def plot_row(config, axes, label, model, f) -> None:
  """One model's row: every head's prefix matching, the ICL score, the training loss."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  tokens, prefix, icl, window = f["tokens"], f["prefix"], f["icl"], formed_window(config, f)
  positions = f["positions"]
  train_loss, heldout_loss = f["train_loss"], f["heldout_loss"]
  missing = "" if f["snapshots"] else " (no training snapshots: final weights only)"
  if not len(train_loss) and not len(heldout_loss) and f["snapshots"]:
    heldout_loss = np.stack([tokens, f["snapshot_loss"]], axis=1)  # measured at each snapshot
  shown = tokens > 0  # log axes: the step-0 snapshot is left out of the drawing
  if not shown.any():
    shown = np.ones_like(shown)
  x = np.maximum(tokens[shown], 1)
  ax = axes[0]
  for l in range(L):
    for h in range(H):
      formed = prefix[-1, l, h] >= config.formed
      ax.plot(x, prefix[shown, l, h], "o-" if len(x) == 1 else "-",
              color=("#c0392b" if formed else "#95a5a6") if l else "#aed6f1",
              lw=1.6 if formed else 0.8, label=f"L{l}H{h}" if formed else None)
  ax.set_ylabel("prefix-matching score")
  ax.set_ylim(-0.02, 1)  # one scale for every model: a flat line means nothing formed
  ax.set_title(f"{label}: every head's prefix matching (layer 0 light blue){missing}",
               fontsize=9)
  axes[1].plot(x, icl[shown], "o-", ms=3, color="#2e86c1")
  error = f["icl_standard_error"][shown]
  if np.isfinite(error).any():
    axes[1].fill_between(x, icl[shown] - error, icl[shown] + error, color="#2e86c1", alpha=0.2,
                         lw=0, label="± 1 standard error over the windows")
    axes[1].legend(fontsize=7)
  axes[1].axhline(0, color="#bbb", lw=0.8)
  axes[1].set_ylabel(f"ICL score: loss@{positions[1]} − loss@{positions[0]}")
  axes[1].set_title(f"{label}: in-context learning score{missing}", fontsize=9)
  if len(train_loss):
    axes[2].plot(train_loss[:, 0], train_loss[:, 1], color="#7f8c8d", lw=0.8, label="train")
  heldout_loss = heldout_loss[heldout_loss[:, 0] > 0] if len(heldout_loss) else heldout_loss
  if len(heldout_loss):
    axes[2].plot(heldout_loss[:, 0], heldout_loss[:, 1], "o-", ms=2, color="#1c2833", lw=1,
                 label="held-out")
  clear = constant_phase(model) if f["snapshots"] else None
  if clear is not None:  # where the learning rate is not at its peak (warm-up, decay)
    for a, b in ((x.min(), clear[0]), (clear[1], x.max())):
      if b > a:
        axes[2].axvspan(a, b, color="#eaeded", lw=0, zorder=0,
                        label="learning rate warming up or decaying" if a == x.min() else None)
  axes[2].set_ylabel("loss (nats)")
  title = ("training loss" if len(train_loss) else "held-out loss at each snapshot (no "
           "training-loss log)" if f["snapshots"] else "training loss (no metrics log: missing)")
  axes[2].set_title(f"{label}: {title}", fontsize=9)
  if len(train_loss) or len(heldout_loss):
    axes[2].legend(fontsize=7)
  for ax in axes:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # < 1 decade would label every minor tick
    ax.set_xlabel("tokens seen" if f["axis"] == "tokens" else "training steps")
    shade_window(ax, window)
  if any(prefix[-1].ravel() >= config.formed):
    axes[0].legend(fontsize=7)


PHASE_CHANGE = ("IH, \"Argument 1\" (macroscopic co-occurrence): early in training, models "
                "with more than one layer go through a \"phase change\": induction heads form "
                "within a narrow window of training")
ICL_IN_WINDOW = ("IH, \"Argument 1\": during the same phase change in-context learning "
                 "improves \"dramatically\": the ICL score goes from below 0.15 nats before the "
                 "window to about 0.4 after it, and more than 75% of the final ICL forms inside "
                 "the window")
LOSS_BUMP = ("IH, \"Argument 1\": the phase change is visible in the training loss as a "
             "\"bump\": the loss curve bends there; IH checked that the window does not "
             "coincide with a learning-rate change (its warm-up ended earlier)")
NONE_IN_1L = ("IH, \"Argument 1\": one-layer attention-only models form no induction heads (an "
              "induction head needs a previous-token head in an earlier layer) and show no "
              "phase change")
ICL_1L = ("IH, \"Argument 1\": one-layer models, lacking induction heads, end training with a "
          "weaker in-context-learning score than the models with two or more layers")


def _none_in_1l_claim(config, label, flat):
  return claim(
      figure="induction_formation", what="none_in_1l", model=label, paper_says=NONE_IN_1L,
      statement=f"{label}: a one-layer model never forms induction heads", source=IH_PHASE_CHANGE,
      criterion=f"best prefix-matching score of any head at every snapshot < {config.unformed}",
      measured=f"best at any snapshot: {flat.max():.2f}", value=flat.max(axis=1),
      holds=flat.max() < config.unformed)


def _icl_2l_below_1l_claim(final_icl):
  """IH, 'Argument 1': the final ICL score of the 2L model(s) below the 1L model(s)' (None without both)."""
  one = [(lab, v) for lab, (layers, v) in final_icl.items() if layers == 1]
  two = [(lab, v) for lab, (layers, v) in final_icl.items() if layers >= 2]
  if not (one and two):
    return None
  return claim(
      figure="induction_formation", what="icl_2l_below_1l", model=None, paper_says=ICL_1L,
      statement="the two-layer model learns more in context than the one-layer model: its ICL "
      "score is lower", source=IH_PHASE_CHANGE,
      criterion="final ICL score (loss late − loss early) of every model with ≥ 2 layers < that "
      "of every one-layer model",
      measured="; ".join(f"{lab}: {v:+.3f} nats" for lab, v in one + two),
      value={lab: v for lab, v in one + two},
      holds=max(v for _, v in two) < min(v for _, v in one))


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.6 * len(models)), squeeze=False,
                           layout="constrained")
  numbers, final_icl = {}, {}
  for row, (label, model) in enumerate(models.items()):
    f = formation(config, model)
    L, H, tokens, gain = model.cfg.n_layers, model.cfg.n_heads, f["tokens"], f["gain"]
    final_icl[label] = (L, float(f["icl"][-1]))
    numbers[label] = {"x_axis": f["axis"], "x": tokens, "steps": f["steps"],
                      "tokens": f["tokens_seen"], "icl": f["icl"],
                      "icl_standard_error": f["icl_standard_error"],
                      "heldout_loss": f["snapshot_loss"], "prefix_matching": f["prefix"],
                      "icl_positions": f["positions"],
                      "snapshots": None if model.snapshots is None else
                      f"{len(model.snapshots)} {model.snapshots.source} in "
                      f"{model.snapshots.root}",
                      "best_head": None if f["best_head"] is None else
                      f"L{f['best_head'] // H}H{f['best_head'] % H}",
                      "window": None if gain is None else [tokens[gain[0]], tokens[gain[1]]]}
    plot_row(config, axes[row], label, model, f)
    if not f["snapshots"]:
      print(f"induction_formation: {label} has no training snapshots; drawing its final scores "
            "only, without the claims that need the trajectory")
      numbers[label]["missing"] = "training snapshots (a weight file has none)"
      continue
    if L >= 2:
      loss = (f["train_loss"], "training loss") if len(f["train_loss"]) else \
          (np.stack([tokens, f["snapshot_loss"]], axis=1), "held-out loss at each snapshot")
      clear = constant_phase(model)
      numbers[label]["constant_learning_rate_tokens"] = clear
      claims.extend(_phase_change_claims(config, label, tokens, f["best"], f["icl"], loss, gain,
                                         numbers[label], f["axis"], clear))
    elif L == 1:
      claims.append(_none_in_1l_claim(config, label, f["flat"]))
  comparison = _icl_2l_below_1l_claim(final_icl)
  if comparison is not None:
    claims.append(comparison)
  save_figure(fig, outdir, "induction_formation")
  write_json(outdir / "induction_formation.json", numbers)
  return claims


def _phase_change_claims(config, label, tokens, best, icl, loss, gain, numbers, axis,
                         clear=None):
  """IH 'Argument 1''s phase change in a model that can form induction heads; ``tokens``: the snapshots'
  positions on ``axis`` ("tokens" or "steps"); ``loss``: ((position, loss) [n, 2], its name);
  ``clear``: the tokens of the run's constant-learning-rate phase (None: schedule unknown)."""
  train_loss, loss_name = loss
  if gain is None:
    return [claim(
        figure="induction_formation", what="abrupt", model=label, paper_says=PHASE_CHANGE,
        statement=f"{label}: induction heads form abruptly", source=IH_PHASE_CHANGE,
        criterion=f"the best head's prefix matching gains ≥ {config.majority} of its total rise "
        f"within a factor {config.window_ratio:g} of {axis}",
        measured=f"its prefix matching never rises (final {best[-1]:.2f})", value=best,
        holds=False)]
  i, j, fraction = gain
  claims = [claim(
      figure="induction_formation", what="abrupt", model=label, paper_says=PHASE_CHANGE,
      statement=f"{label}: induction heads form abruptly", source=IH_PHASE_CHANGE,
      criterion=f"the head with the highest final prefix-matching score gains ≥ "
      f"{config.majority} of its total rise (final − initial) between two snapshots ≤ "
      f"{config.window_ratio:g}× apart in {axis}, and ends ≥ {config.formed}",
      measured=f"{fraction:.2f} of its rise ({best[i]:.2f} → {best[j]:.2f}) between "
      f"{tokens[i]:,.0f} and {tokens[j]:,.0f} {axis} (×{tokens[j] / tokens[i]:.2f}); final "
      f"{best[-1]:.2f}",
      value={"fraction": fraction, axis: [tokens[i], tokens[j]], "final": best[-1]},
      holds=fraction >= config.majority and best[-1] >= config.formed)]
  share, total = icl_share(icl, i, j)
  numbers["icl_share_in_window"] = share
  claims.append(claim(
      figure="induction_formation", what="icl_in_window", model=label,
      paper_says=ICL_IN_WINDOW,
      statement=f"{label}: most in-context learning (more than three quarters) is acquired in "
      "the same window", source=IH_PHASE_CHANGE,
      criterion=f"ICL fall between the window's snapshots > {config.icl_in_window} of the total "
      "fall over training (first snapshot, the model at initialisation, → final): IH's \"more "
      "than 75%\"",
      measured=f"ICL {icl[i]:+.3f} → {icl[j]:+.3f} in the window; total fall {total:.3f} "
      f"({icl[0]:+.3f} → {icl[-1]:+.3f}): share {share:.2f}",
      value={"share": share, "window": [icl[i], icl[j]], "total_fall": total},
      holds=share > config.icl_in_window))
  bump = loss_bump(train_loss, tokens[i], tokens[j], clear=clear) if len(train_loss) else None
  claims.append(_loss_bump_claim(config, label, tokens[i], tokens[j], bump, loss_name))
  numbers["loss_bump"] = bump
  return claims


def _loss_bump_claim(config, label, lo, hi, bump, loss_name="training loss"):
  """IH, 'Argument 1': the loss falls faster inside the formation window than on both sides of
  it, every comparison inside the run's constant-learning-rate phase when its schedule is known
  (``bump["clear"]``); not testable without a usable neighbour on each side, or when the window
  itself overlaps a learning-rate change (docs/RECIPE.md)."""
  k = config.bump_standard_errors
  clear = None if bump is None else bump.get("clear")
  schedule = ("; the window and both neighbours lie in the run's constant-learning-rate phase "
              "(after the warm-up, before the decay, from its config), each neighbour cut to it, "
              "so that no learning-rate change bends the curve (IH checked the same of its "
              "window); a window overlapping a change cannot be tested")
  criterion = (f"the least-squares slope of the logged {loss_name} against log10 tokens inside "
               f"the window is below the slope over each neighbouring interval of the same token "
               f"ratio (before and after) by > {k:g} standard errors of the difference; each "
               "neighbour needs ≥ 5 logged points reaching half way across it, else the claim "
               "cannot be tested"
               + (schedule if clear is not None else
                  "; the run's learning-rate schedule is unknown, so the comparison could not be "
                  "kept clear of a learning-rate change"))
  statement = f"{label}: the training loss shows a bump in that window"
  if bump is None:
    measured, testable, holds = f"cannot be tested: no {loss_name} log", False, False
  else:
    slope = lambda key: f"{bump[key][0]:+.3f} ± {bump[key][1]:.3f} ({bump[key][2]} points)"
    parts = [f"window {lo:,.0f} → {hi:,.0f} tokens: {slope('window')} nats/decade"]
    for side in ("before", "after"):
      parts.append(f"{side}: {slope(side)}" + (f", margin {bump[side + '_margin']:.1f} SE"
                                               if bump[side + "_usable"] else ", not usable"))
    if clear is not None:
      parts.append(f"constant learning rate from {clear[0]:,.0f} to {clear[1]:,.0f} tokens")
    testable = bump["before_usable"] and bump["after_usable"]
    holds = testable and min(bump["before_margin"], bump["after_margin"]) > k
    missing = [side for side in ("before", "after") if not bump[side + "_usable"]]
    why = ("the window overlaps a learning-rate change" if not bump.get("window_clear", True)
           else f"no usable {' and '.join(missing)} neighbour"
           + (" inside the constant-learning-rate phase" if clear is not None else ""))
    measured = ("" if testable else f"cannot be tested: {why}; ") + "; ".join(parts)
  return claim(
      figure="induction_formation", what="loss_bump", model=label, statement=statement,
      paper_says=LOSS_BUMP,
      source=IH_PHASE_CHANGE, criterion=criterion, measured=measured,
      value={"testable": testable, "slopes": bump,
             "constant_learning_rate_tokens": clear}, holds=holds)
