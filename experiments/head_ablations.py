"""Zero-ablation of single heads (IH §5): what the model loses in context without each head.

A head is zero-ablated by setting its W_O to 0 (``scores.zero_ablated``): its output is removed
from the residual stream and every later layer reads the ablated stream.  For the unablated
model and each ablation we measure, on BOS + n random tokens repeated twice, the loss drop
first occurrence → repeat, and on held-out text the in-context-learning score (loss late − loss
early).  "Fraction removed" = 1 − (ablated / unablated) for each.
"""

import numpy as np

from reproduce.core import scores
from reproduce import experiment

DESCRIPTION = "Zero-ablating each head: share of the repeat-loss drop and of the ICL score removed"


def roles_to_ablate(roles: experiment.HeadRoles):
  """(induction heads in layers ≥ 1, previous-token head feeding them) or (…, None) if absent.

  Induction heads: induction score ≥ threshold in any layer ≥ 1 (the strongest one when none
  passes, so that the claim can report it failing).  Previous-token head: the strongest one in a
  layer before the earliest induction head."""
  induction = roles.induction.copy()
  induction[0] = -np.inf  # a layer-0 head cannot compose with an earlier one
  heads = [(l, h) for l, h in roles.induction_heads() if l >= 1]
  if not heads:
    heads = [tuple(int(i) for i in np.unravel_index(np.argmax(induction), induction.shape))]
  first = min(l for l, _ in heads)
  prev = roles.previous_token[:first]
  l, h = np.unravel_index(np.argmax(prev), prev.shape)
  return heads, (int(l), int(h))


def measure(model, w, probe, length, icl_inputs, icl_targets):
  repeat = scores.repeat_loss_drop(model.cfg, w, probe, length)
  icl = scores.in_context_learning_score(model.cfg, w, icl_inputs, icl_targets)
  return {"repeat_drop": repeat["drop"], "repeat_loss": repeat["repeat"],
          "first_loss": repeat["first"], "icl": icl["score"]}


def removed(base: dict, ablated: dict) -> dict:
  share = lambda key: 1 - ablated[key] / base[key] if base[key] != 0 else float("nan")
  return {"repeat_drop": share("repeat_drop"), "icl": share("icl")}


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(2, "head_ablations")
    experiment.require_tokens(model, "head_ablations")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    roles = experiment.head_roles(model, config.role_threshold)
    induction, prev = roles_to_ablate(roles)
    length = min(config.length, (model.cfg.n_ctx - 1) // 2)
    probe = scores.repeated_sequences(model.sampling_pool(), model.bos_id, length, 2,
                                      config.samples, seed=1)
    inputs, targets = model.heldout_windows(config.icl_windows)
    base = measure(model, model.weights, probe, length, inputs, targets)
    single = {}
    for l in range(L):
      for h in range(H):
        single[(l, h)] = measure(model, scores.zero_ablated(model.weights, [(l, h)]), probe,
                                 length, inputs, targets)
    together = measure(model, scores.zero_ablated(model.weights, induction), probe, length,
                       inputs, targets)
    share = {k: removed(base, v) for k, v in single.items()}
    share_induction = removed(base, together)
    role_heads = set(induction) | {prev}
    others = {layer: [(l, h) for l, h in single if l == layer and (l, h) not in role_heads]
              for layer in sorted({l for l, _ in role_heads})}
    name = lambda lh: f"L{lh[0]}H{lh[1]}"
    experiment.write_json(outdir / f"head_ablations_{label}.json", {
        "unablated": base, "induction_heads": [name(x) for x in induction],
        "previous_token_head": name(prev), "induction_heads_together": together,
        "removed_induction_heads_together": share_induction,
        "single": {name(k): {**v, "removed": share[k]} for k, v in single.items()},
        "previous_token_scores": roles.previous_token, "induction_scores": roles.induction})

    bars = [("induction heads\n" + "+".join(name(x) for x in induction), share_induction,
             "#c0392b")]
    for (l, h), s in share.items():
      colour = ("#c0392b" if (l, h) in induction else "#2471a3" if (l, h) == prev
                else "#95a5a6")
      bars.append((roles.label(l, h).replace(" (", "\n("), s, colour))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(bars) * 2), 3.6), sharey=True)
    for ax, key, title in ((axes[0], "repeat_drop",
                            f"loss drop on repeated tokens (unablated {base['repeat_drop']:.2f} "
                            "nats)"),
                           (axes[1], "icl", f"in-context-learning score (unablated "
                                            f"{base['icl']:.2f} nats)")):
      values = [b[1][key] for b in bars]
      ax.bar(range(len(bars)), values, color=[b[2] for b in bars])
      ax.axhline(config.most_removed, color="#444", ls="--", lw=0.8)
      ax.axhline(0, color="#bbb", lw=0.8)
      ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
      ax.set_title(f"{label}: share of the {title} removed", fontsize=8)
      for i, v in enumerate(values):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=7)
    axes[0].set_ylabel("fraction removed by zero-ablation (1 = all)")
    experiment.save_figure(fig, outdir, "head_ablations" if len(models) == 1
                           else f"head_ablations_{label}")

    most = config.most_removed
    both = lambda s: (f"repeat-loss drop {s['repeat_drop']:.2f} removed, ICL score "
                      f"{s['icl']:.2f} removed")
    has_icl = base["icl"] < 0
    fid = lambda n: f"head_ablations.{n}" if len(models) == 1 else f"head_ablations.{label}.{n}"
    claims.append(experiment.claim(
        fid("induction_heads"),
        f"{label}: zero-ablating the induction heads removes most of the loss drop on repeated "
        "tokens and most of the in-context-learning score", "IH §5 (ablations)",
        f"with all heads of induction score ≥ {config.role_threshold} in layers ≥ 1 ablated "
        f"together, 1 − ablated/unablated ≥ {most} for both the repeat-loss drop and the ICL "
        "score (unablated ICL score must be negative)",
        f"{'+'.join(name(x) for x in induction)}: {both(share_induction)} (unablated: drop "
        f"{base['repeat_drop']:.2f} nats, ICL {base['icl']:.3f})",
        {"removed": share_induction, "unablated": base},
        has_icl and min(share_induction.values()) >= most))
    claims.append(experiment.claim(
        fid("previous_token_head"),
        f"{label}: zero-ablating the previous-token head that feeds the induction heads removes "
        "most of the repeat-loss drop and of the ICL score", "IH §5 (ablations)",
        f"the strongest previous-token head in a layer before the induction heads; "
        f"1 − ablated/unablated ≥ {most} for both",
        f"{name(prev)} (previous-token score {roles.previous_token[prev]:.2f}): "
        f"{both(share[prev])}", {"removed": share[prev]},
        has_icl and min(share[prev].values()) >= most))
    other_shares = {name(x): share[x] for layer in others for x in others[layer]}
    mean_other = {key: float(np.mean([s[key] for s in other_shares.values()]))
                  if other_shares else float("nan") for key in ("repeat_drop", "icl")}
    claims.append(experiment.claim(
        fid("other_heads"),
        f"{label}: ablating another head of the same layer as the induction or previous-token "
        "head does not remove most of either", "IH §5 (ablations)",
        "the mean over those layers' other heads (the expected effect of ablating one at random)"
        f" of 1 − ablated/unablated < {most} for both; each head is in the figure",
        f"mean over {', '.join(other_shares) or 'no other heads'}: {both(mean_other)}; per head: "
        + "; ".join(f"{k} {v['repeat_drop']:.2f}/{v['icl']:.2f}" for k, v in
                    other_shares.items()),
        {"mean": mean_other, "per_head": other_shares},
        bool(other_shares) and max(mean_other.values()) < most))
  return claims
