"""Ablation of single heads (IH, 'Argument 3'): what the model loses in context without each
head, measured two ways.

- Pattern-preserving (IH's measurement, ``scores.pattern_preserving_losses``): the head's output
  zeroed with every attention pattern (and norm scale) held at the unablated run's, so only the
  value paths downstream of it change.  IH's claims use it.
- Full (total) zero-ablation (``scores.zero_ablated``, W_O = 0): every later layer reads the
  ablated stream and recomputes its patterns.  Shown beside it as the comparison, and the
  control on the previous-token head uses it (FW's mechanism runs through the induction heads'
  keys, which only the full ablation changes).

For a 2L model the two coincide on the layer-1 heads: no later layer reads them.  For the
unablated model and each ablation we measure, on BOS + n random tokens repeated twice, the loss
drop first occurrence → repeat, and on held-out text the in-context-learning score (loss late −
loss early).  "Fraction removed" = 1 − (ablated / unablated) for each.
"""

import dataclasses

import numpy as np

from reproduce.core import scores
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure
from reproduce.figure.roles import HeadRoles, head_roles
from reproduce.figure.sources import require_tokens

DESCRIPTION = "Zero-ablating each head: share of the repeat-loss drop and of the ICL score removed"
ORDER = 110  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
IH_KNOCK_OUT = "IH, 'Argument 3: … “knock out” induction heads'"


def roles_to_ablate(roles: HeadRoles):
  """(induction heads in layers ≥ 1, previous-token head feeding them, whether no head passed).

  Induction heads: *every* head of a layer ≥ 1 that passes the induction criterion (prefix-
  matching score ≥ threshold, ``HeadRoles``), all ablated together; when none passes, the
  strongest one, flagged (``fallback``) so that the claim reports it failing.  Previous-token
  head: the strongest one in a layer before the earliest induction head."""
  induction = roles.induction.copy()
  induction[0] = -np.inf  # a layer-0 head cannot compose with an earlier one
  heads = [(l, h) for l, h in roles.induction_heads() if l >= 1]
  fallback = not heads
  if fallback:
    heads = [tuple(int(i) for i in np.unravel_index(np.argmax(induction), induction.shape))]
  first = min(l for l, _ in heads)
  prev = roles.previous_token[:first]
  l, h = np.unravel_index(np.argmax(prev), prev.shape)
  return heads, (int(l), int(h)), fallback


def measure(repeat, icl):
  """The repeat-loss drop ``repeat`` (``scores.repeat_loss_drop``) beside the ICL score ``icl``
  (``scores.ablations_icl``)."""
  return {"repeat_drop": repeat["drop"], "repeat_loss": repeat["repeat"],
          "first_loss": repeat["first"], "icl": icl["score"],
          "icl_standard_error": icl["standard_error"]}


def share_removed(base: float, ablated: float) -> float:
  """1 − ablated / base: the share of the unablated ``base`` that an ablation removes (NaN when
  ``base`` is 0)."""
  return 1 - ablated / base if base != 0 else float("nan")


def removed(base: dict, ablated: dict) -> dict:
  return {key: share_removed(base[key], ablated[key]) for key in ("repeat_drop", "icl")}


def head_name(lh) -> str:
  return f"L{lh[0]}H{lh[1]}"


@dataclasses.dataclass
class Ablations:
  """What ablation removes from one model, and the roles that picked the heads: ``single`` and
  ``together`` pattern-preserving (IH's), ``full_single`` and ``full_together`` full."""

  roles: HeadRoles
  induction: list  # the induction heads (layers ≥ 1), ablated together
  prev: tuple  # the previous-token head feeding them
  base: dict  # the unablated model's numbers (``measure``)
  single: dict  # (layer, head) → numbers with that head ablated, patterns preserved
  together: dict  # numbers with the induction heads ablated together, patterns preserved
  others: dict  # layer → the heads of that layer with neither role
  fallback: bool = False  # no head passed the induction criterion: the strongest one stands in
  icl: dict = dataclasses.field(default_factory=dict)  # windows and positions of the ICL score
  full_single: dict = dataclasses.field(default_factory=dict)  # as ``single``, full ablation
  full_together: dict = dataclasses.field(default_factory=dict)  # as ``together``, full

  @property
  def share(self) -> dict:
    return {k: removed(self.base, v) for k, v in self.single.items()}

  @property
  def share_induction(self) -> dict:
    return removed(self.base, self.together)

  @property
  def full_share(self) -> dict:
    return {k: removed(self.base, v) for k, v in self.full_single.items()}

  @property
  def full_share_induction(self) -> dict:
    return removed(self.base, self.full_together) if self.full_together else {}


def ablate(config, model) -> Ablations:
  """The unablated numbers, every single-head ablation and the induction heads ablated together,
  each with the patterns preserved and fully."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  roles = head_roles(model, config.role_threshold)
  induction, prev, fallback = roles_to_ablate(roles)
  pool = model.sampling_pool()  # a small vocabulary's pool may hold fewer than config.length
  length = min(config.length, (model.cfg.n_ctx - 1) // 2, len(pool))
  probe = scores.repeated_sequences(pool, model.bos_id, length, 2, config.samples, seed=1)
  inputs, targets = model.heldout_windows(config.icl_windows)
  # Every ablation's ICL score from one pass that shares the unablated layers, per kind
  # (scores.ablated_position_losses, scores.pattern_preserving_losses); the pattern-preserving
  # repeat-loss drops from one shared pass too, the full ones per ablation.
  singles = [(l, h) for l in range(L) for h in range(H)]
  groups = [[]] + [[x] for x in singles] + [induction]
  cfg, w = model.cfg, model.weights
  kept_icl = scores.ablations_icl(cfg, w, inputs, targets, groups, preserve_patterns=True)
  kept_repeat = scores.pattern_preserving_repeat_drops(cfg, w, probe, length, groups)
  kept = [measure(r, i) for r, i in zip(kept_repeat, kept_icl)]
  full_icl = scores.ablations_icl(cfg, w, inputs, targets, groups)
  full = [measure(scores.repeat_loss_drop(cfg, scores.zero_ablated(w, g), probe, length), i)
          for g, i in zip(groups, full_icl)]
  base = full[0]
  single = {x: kept[1 + i] for i, x in enumerate(singles)}
  full_single = {x: full[1 + i] for i, x in enumerate(singles)}
  role_heads = set(induction) | {prev}
  others = {layer: [(l, h) for l, h in single if l == layer and (l, h) not in role_heads]
            for layer in sorted({l for l, _ in role_heads})}
  early, late = scores.icl_positions(inputs.shape[1])
  icl = {"windows": int(inputs.shape[0]), "positions": [early, late]}
  return Ablations(roles, induction, prev, base, single, kept[-1], others, fallback, icl,
                   full_single, full[-1])


def write_numbers(outdir, label, ab: Ablations) -> None:
  share, full_share = ab.share, ab.full_share
  write_json(outdir / f"head_ablations_{label}.json", {
      "unablated": ab.base, "induction_heads": [head_name(x) for x in ab.induction],
      "induction_criterion": ab.roles.criterion() + ", layers ≥ 1; all of them ablated together",
      "induction_heads_fallback": ab.fallback, "icl_score": ab.icl,
      "previous_token_head": head_name(ab.prev),
      "ablations": "single, induction_heads_together: patterns preserved (IH); full_*: W_O = 0 "
                   "with every later pattern recomputed",
      "induction_heads_together": ab.together,
      "removed_induction_heads_together": ab.share_induction,
      "full_induction_heads_together": ab.full_together,
      "full_removed_induction_heads_together": ab.full_share_induction,
      "single": {head_name(k): {**v, "removed": share[k]} for k, v in ab.single.items()},
      "full_single": {head_name(k): {**v, "removed": full_share[k]}
                      for k, v in ab.full_single.items()},
      "previous_token_scores": ab.roles.previous_token,
      "prefix_matching_scores": ab.roles.induction, "head_roles_probe": ab.roles.probe})


def plot(config, label, ab: Ablations, outdir, picture: str) -> None:
  """Two bar charts (repeat-loss drop, ICL score): the share each ablation removes, patterns
  preserved (solid) beside the full ablation (hatched)."""
  plt = pyplot()
  base = ab.base
  group = ("strongest head (none passes)" if ab.fallback else
           f"all induction heads\n(prefix ≥ {ab.roles.threshold:g})")
  full_share = ab.full_share
  bars = [(group + "\n" + "+".join(head_name(x) for x in ab.induction), ab.share_induction,
           "#c0392b", ab.full_share_induction)]
  for (l, h), s in ab.share.items():
    colour = ("#c0392b" if (l, h) in ab.induction else "#2471a3" if (l, h) == ab.prev
              else "#95a5a6")
    bars.append((ab.roles.label(l, h).replace(" (", "\n("), s, colour, full_share.get((l, h))))
  fig, axes = plt.subplots(1, 2, figsize=(max(13, 1.1 * len(bars) * 2), 3.6), sharey=True)
  for ax, key, title in ((axes[0], "repeat_drop",
                          f"loss drop on repeated tokens (unablated {base['repeat_drop']:.2f} "
                          "nats)"),
                         (axes[1], "icl", f"in-context-learning score (unablated "
                                          f"{base['icl']:.2f} nats, {ab.icl['windows']} "
                                          "windows)")):
    values = [b[1][key] for b in bars]
    at = np.arange(len(bars))
    ax.bar(at - 0.2, values, width=0.4, color=[b[2] for b in bars],
           label="patterns preserved (IH)")
    full = [b[3][key] if b[3] else np.nan for b in bars]
    ax.bar(at + 0.2, full, width=0.4, color=[b[2] for b in bars], alpha=0.35, hatch="//",
           label="full (later patterns recomputed)")
    ax.axhline(config.almost_all, color="#444", ls="--", lw=0.8)  # "almost all" (IH)
    ax.axhline(config.most_removed, color="#999", ls=":", lw=0.8)  # "most" (the control)
    ax.axhline(0, color="#bbb", lw=0.8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.set_title(f"{label}: share of the {title} removed", fontsize=8)
    for i, v in enumerate(values):
      ax.text(i - 0.2, v, f"{v:.2f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=6)
    for i, v in enumerate(full):
      if np.isfinite(v):
        ax.text(i + 0.2, v, f"{v:.2f}", ha="center", va="bottom" if v >= 0 else "top",
                fontsize=6, color="#555")
  axes[0].set_ylabel("fraction removed by the ablation (1 = all)")
  axes[0].legend(fontsize=7)
  save_figure(fig, outdir, picture)


def _both(s) -> str:
  return f"repeat-loss drop {s['repeat_drop']:.2f} removed, ICL score {s['icl']:.2f} removed"


KNOCK_OUT = ("IH, \"Argument 3\" (ablations): in small attention-only models, ablating the "
             "induction heads at test time, with the attention patterns preserved, removes "
             "\"almost all\" of the in-context learning")
KNOCK_OUT_OTHERS = ("IH, \"Argument 3\": in the same small attention-only models, ablating most "
                    "of the other heads slightly increases the in-context learning")
PREV_CONTROL = ("control: the mechanism's dependence on the previous-token head (FW, \"How "
                "Induction Heads Work\": the induction head's key reads what a previous-token "
                "head writes, by K-composition), checked by the full ablation of that head, "
                "every later pattern recomputed; IH's Argument 3 ablates with the patterns "
                "preserved, which would keep the induction heads' patterns, so no statement of "
                "the papers is about this full ablation")


def claims_of(config, label, ab: Ablations) -> list:
  """IH, 'Argument 3', with IH's pattern-preserving ablation: ablating the induction heads removes
  almost all of the in-context learning, ablating most other heads of their layers removes
  little of it; and a control: fully ablating the previous-token head that feeds them (later
  patterns recomputed) removes most of it.  From the numbers of ``Ablations`` alone (which can
  be made by hand); the full ablation's numbers are reported beside the paper claims.

  Without a head passing the induction criterion (``ab.fallback``: the strongest stands in)
  every claim fails: the induction heads' claim because there are none, the previous-token
  head's because it is defined as the head feeding them, and the other heads' because "other"
  means other than those two roles.  The previous-token head must pass the role threshold too."""
  almost_all, most, little = config.almost_all, config.most_removed, 1 - config.almost_all
  base, share, prev, together = ab.base, ab.share, ab.prev, ab.share_induction
  full_share, full_together = ab.full_share, ab.full_share_induction
  has_icl = base["icl"] < 0
  threshold = ab.roles.threshold
  prev_score = float(ab.roles.previous_token[prev])
  prev_passes = prev_score >= threshold
  claim_on = lambda what, **kw: claim(figure="head_ablations", what=what, model=label, **kw)
  other_shares = {head_name(x): share[x] for layer in ab.others for x in ab.others[layer]}
  removing_little = [k for k, v in other_shares.items() if max(v.values()) < little]
  other_full = {head_name(x): full_share[x] for layer in ab.others for x in ab.others[layer]
                if x in full_share}
  names = "+".join(head_name(x) for x in ab.induction)
  no_induction = (f"no head of a layer ≥ 1 passes the induction criterion "
                  f"({ab.roles.criterion()}); the strongest, {names} "
                  f"({float(ab.roles.induction[ab.induction[0]]):.2f}), stood in: ")
  no_prev = (f"{head_name(prev)}, the strongest previous-token head before the induction heads, "
             f"scores {prev_score:.2f} < {threshold:g}: no previous-token head; ")
  last_layer = ab.roles.induction.shape[0] - 1
  preserved = ("ablated with every attention pattern and norm scale held at the unablated "
               "run's (IH's pattern-preserving ablation)" + (
                   "; the heads are in the last layer, where it equals the full ablation"
                   if all(l == last_layer for l, _ in ab.induction) else ""))
  full_text = lambda s: f"; full ablation (later patterns recomputed): {_both(s)}" if s else ""
  return [
      claim_on("induction_heads", paper_says=KNOCK_OUT, source=IH_KNOCK_OUT,
               statement=f"{label}: ablating the induction heads with the patterns preserved "
               "removes almost all of the in-context learning: of the ICL score on text and of "
               "the loss drop on repeated random tokens",
               criterion=f"with every head of layers ≥ 1 passing the induction criterion "
               f"({ab.roles.criterion()}) ablated together (none passing: the strongest stands in "
               f"and the claim fails), on {ab.icl['windows']} held-out windows, 1 − "
               f"ablated/unablated ≥ {almost_all} (IH's \"almost all\": at most a tenth left) "
               "for both the ICL score and the repeat-loss drop (unablated ICL score must be "
               f"negative); {preserved}",
               measured=(no_induction if ab.fallback else "")
               + f"{names}: {_both(together)} "
               f"(unablated: drop {base['repeat_drop']:.2f} nats, ICL {base['icl']:.3f} ± "
               f"{base['icl_standard_error']:.3f} over {ab.icl['windows']} windows)"
               + full_text(full_together),
               value={"removed": together, "unablated": base, "fallback": ab.fallback,
                      "full_removed": full_together},
               holds=has_icl and not ab.fallback and min(together.values()) >= almost_all),
      claim_on("previous_token_head", kind="control", source=PREV_CONTROL,
               statement=f"{label}: fully ablating the previous-token head that feeds the "
               "induction heads (later patterns recomputed) removes most of the repeat-loss drop "
               "and of the ICL score",
               criterion="the strongest previous-token head in a layer before the induction heads, "
               f"with previous-token score ≥ {threshold:g} (none, or no induction head for it to "
               f"feed: the control fails); 1 − ablated/unablated ≥ {most} for both",
               measured=(no_induction if ab.fallback else "") + (no_prev if not prev_passes else "")
               + f"{head_name(prev)} (previous-token score {prev_score:.2f}): "
               f"{_both(full_share[prev])}; with the patterns preserved: {_both(share[prev])}",
               value={"removed": full_share[prev], "previous_token_score": prev_score,
                      "pattern_preserving_removed": share[prev], "fallback": ab.fallback},
               holds=has_icl and not ab.fallback and prev_passes
               and min(full_share[prev].values()) >= most),
      claim_on("other_heads", paper_says=KNOCK_OUT_OTHERS, source=IH_KNOCK_OUT,
               statement=f"{label}: ablating most of the other heads of the induction and "
               "previous-token heads' layers, with the patterns preserved, removes little of "
               "the in-context learning",
               criterion=f"more than half of those layers' other heads each remove < {little:.1f} "
               f"(1 − {almost_all}: what \"almost all\" leaves to the rest) of both the ICL score "
               "and the repeat-loss drop, patterns preserved (IH's ablation); IH finds most of "
               "them slightly increase it; without a "
               "head passing the induction criterion there are no roles to compare the others "
               "with, and the claim fails",
               measured=(no_induction if ab.fallback else "")
               + f"{len(removing_little)} of {len(other_shares)} other heads remove < "
               f"{little:.1f} of both ({', '.join(removing_little) or 'none'}); per head "
               "(repeat-loss drop/ICL score removed): " + ("; ".join(
                   f"{k} {v['repeat_drop']:.2f}/{v['icl']:.2f}" for k, v in other_shares.items())
                   or "no other heads") + ("; full ablation: " + "; ".join(
                       f"{k} {v['repeat_drop']:.2f}/{v['icl']:.2f}"
                       for k, v in other_full.items()) if other_full else ""),
               value={"per_head": other_shares, "removing_little": removing_little,
                      "full_per_head": other_full, "fallback": ab.fallback},
               holds=not ab.fallback and 2 * len(removing_little) > len(other_shares))]


def run(config, models, outdir):
  claims = []
  for label, model in models.items():
    model.need_layers(2, "head_ablations")
    require_tokens(model, "head_ablations")
    ablations = ablate(config, model)
    write_numbers(outdir, label, ablations)
    plot(config, label, ablations, outdir,
         "head_ablations" if len(models) == 1 else f"head_ablations_{label}")
    claims.extend(claims_of(config, label, ablations))
  return claims
