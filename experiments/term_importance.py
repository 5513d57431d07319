"""How much each order of path matters: the frozen-pattern recursion (FW, 'Term
Importance Analysis').

With attention patterns frozen at their values on held-out text, the loss with paths through at
most k heads is L_k: L0 is the direct path, L1 adds each head on the embeddings, L2 adds the
virtual heads and equals the full loss in a 2-layer model.  The marginal effect of order k is
L(k−1) − Lk; first-order terms are also split by layer and by head.
"""

import numpy as np
from reproduce.core.paths import term_importance
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure
from reproduce.figure.sources import require_tokens

DESCRIPTION = "Loss with paths through ≤ k heads (frozen patterns): marginal effect by order and layer"
ORDER = 90  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_TERM_IMPORTANCE = "FW, 'Two-Layer Attention-Only Transformers' → 'Term Importance Analysis'"


def run(config, models, outdir):
  plt = pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(1, "term_importance")
    require_tokens(model, "term_importance")
    inputs, targets = model.heldout_windows(config.windows)
    out = term_importance(model.cfg, model.weights, inputs, targets)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    uniform = float(np.log(model.cfg.d_vocab))
    direct = out["losses"][0]
    layer_effect = direct - out["first_order_by_layer"]  # loss reduction from layer l's heads alone
    head_effect = direct - out["first_order_by_head"]
    write_json(outdir / f"term_importance_{label}.json",
                          {**out, "uniform_loss": uniform, "layer_effect": layer_effect,
                           "head_effect": head_effect})

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    names = [f"≤ {k} head{'' if k == 1 else 's'}" for k in range(L + 1)] + ["full"]
    values = list(out["losses"]) + [float(out["loss_full"])]
    bars = axes[0].bar(names, values, color=["#7f8c8d"] + ["#2e86c1"] * L + ["#1c2833"])
    axes[0].bar_label(bars, fmt="%.2f", fontsize=7)
    axes[0].axhline(uniform, color="#c0392b", ls="--", lw=1, label=f"uniform, log V = {uniform:.2f}")
    axes[0].set_ylabel("held-out loss (nats)")
    axes[0].set_title("loss with paths through ≤ k heads (≤ 0: the direct path)")
    axes[0].legend(fontsize=7)
    bars = axes[1].bar([f"paths through {k + 1} head{'' if k == 0 else 's'}"
                        + ("\n(virtual heads)" if k else "") for k in range(L)],
                       out["marginal"], color="#2e86c1")
    axes[1].bar_label(bars, fmt="%+.3f", fontsize=7)
    axes[1].set_ylabel("loss reduction (nats)")
    axes[1].set_title("marginal effect of each order: L(≤ k−1) − L(≤ k)")
    x = np.arange(H)
    for l in range(L):
      axes[2].bar(x + (l - (L - 1) / 2) * 0.8 / L, head_effect[l], 0.8 / L,
                  label=f"layer {l} (all heads: {layer_effect[l]:.2f})")
    axes[2].set_xticks(x, [f"H{h}" for h in range(H)], fontsize=7)
    axes[2].set_ylabel("loss reduction vs direct path")
    axes[2].set_title("first-order terms, one head at a time")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"{label}: term importance on {len(inputs)} held-out windows")
    save_figure(fig, outdir, "term_importance" if len(models) == 1
                           else f"term_importance_{label}")

    claims.extend(claims_of(config, label, out["losses"], float(out["loss_full"]),
                            out["marginal"], layer_effect))
  return claims


VIRTUAL_SMALL = ("FW, \"Term Importance Analysis\" (ablating path orders with frozen attention): "
                 "in its two-layer model the second-order \"virtual attention head\" terms have "
                 "\"a pretty small marginal effect\", next to the direct path and the individual "
                 "heads")
LAYER1 = ("FW, \"Term Importance Analysis\": split by layer, the individual-head (first-order) "
          "terms of the second layer matter most, which \"suggests we should focus on the second "
          "layer head terms\"")


def claims_of(config, label, losses, loss_full, marginal, layer_effect):
  """The control (the recursion reaches the full loss) and, for two or more layers, FW's
  claims, from the numbers alone: ``losses`` L0 … L_L, the full loss, the marginal effect of
  each order (L(k−1) − Lk) and each layer's first-order effect (direct loss − the loss with that
  layer's heads alone)."""
  L = len(losses) - 1
  claims = [claim(
      figure="term_importance", what="recursion_exact", model=label,
      statement=f"{label}: with every order included the recursion gives the model's own loss",
      source="control: the recursion is exact", criterion="|L_L − L_full| < 1e-4 nats",
      measured=f"L{L} = {losses[-1]:.4f}, full loss = {loss_full:.4f}",
      value=[losses[-1], loss_full], holds=abs(losses[-1] - loss_full) < 1e-4, kind="control")]
  return claims + (_paper_claims(config, label, marginal, layer_effect) if L >= 2 else [])


def _paper_claims(config, label, marginal, layer_effect):
  """FW, 'Term Importance Analysis': first-order terms matter, virtual heads add little, layer 1 matters most."""
  first, higher = float(marginal[0]), float(np.sum(marginal[1:]))
  orders = "second" if len(marginal) == 2 else f"second to {len(marginal)}th"
  return [
      claim(
          figure="term_importance", what="virtual_heads_small", model=label,
          paper_says=VIRTUAL_SMALL,
          statement=f"{label}: the virtual-head ({orders}-order) terms matter little next to the "
          "first-order ones", source=FW_TERM_IMPORTANCE,
          criterion=f"first-order loss reduction ≥ {config.min_first_order} nats (heads matter "
          f"at all) and {orders}-order reduction ≤ {config.max_higher_fraction} × the "
          "first-order one",
          measured=f"loss reduction: first order {first:+.3f} nats, {orders} order "
          f"{higher:+.3f} ({higher / first if first else float('nan'):.2f}×)",
          value={"first": first, "higher": higher},
          holds=first >= config.min_first_order
          and higher <= config.max_higher_fraction * first),
      claim(
          figure="term_importance", what="layer1_matters_most", model=label,
          paper_says=LAYER1,
          statement=f"{label}: among first-order terms, the layer-1 heads matter most",
          source=FW_TERM_IMPORTANCE,
          criterion=f"loss reduction of layer 1's heads alone > layer 0's (FW gives no ratio: "
          f"'matter most'), and ≥ {config.min_first_order} nats (an effect no untrained head has)",
          measured=f"loss reduction: layer 0 alone {layer_effect[0]:+.3f} nats, layer 1 alone "
          f"{layer_effect[1]:+.3f} "
          f"({layer_effect[1] / layer_effect[0] if layer_effect[0] else float('nan'):.2f}×)",
          value=layer_effect,
          holds=layer_effect[1] > layer_effect[0] and layer_effect[1] >= config.min_first_order)]
