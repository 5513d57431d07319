"""Zero layers: the direct path W_E W_U is a bigram model (FW §3).

logits = W_E[t] W_U, so softmax(W_E W_U)[current, next] can only be p(next | current).  We compare
it with the empirical bigram table of the training tokens: a scatter of log-probabilities over
frequent pairs, their correlation, KL(empirical ‖ model) and, for a few frequent tokens, the top
next tokens by the model and by the counts.
"""

import numpy as np

from reproduce import experiment, scores

DESCRIPTION = "0L model vs the corpus's empirical bigram table: log-prob scatter, KL, top-next table"


def _top_next_table(model, stats, n_tokens, top):
  counts = np.bincount(np.asarray(model.tokens.train), minlength=model.cfg.d_vocab)
  counts[[model.tokens.bos_id, model.tokens.eot_id]] = 0
  frequent = np.argsort(-counts)[:n_tokens]
  W_E, W_U = np.asarray(model.weights.W_E), np.asarray(model.weights.W_U)
  pairs = stats["pairs"]
  rows = []
  for t in frequent:
    by_model = np.argsort(-(W_E[t] @ W_U))[:top]
    mask = pairs["current"] == t
    by_counts = pairs["next"][mask][np.argsort(-pairs["count"][mask])][:top]
    rows.append({"token": model.token_strings([t])[0],
                 "model": model.token_strings(by_model), "counts": model.token_strings(by_counts)})
  return rows


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  for label, model in models.items():
    experiment.require_tokens(model, "bigram")
    stats = scores.bigram_statistics(model.weights, model.tokens.train, min_count=config.min_count)
    table = _top_next_table(model, stats, config.table_tokens, config.top_next)
    pairs = stats.pop("pairs")
    np.savez(outdir / f"pairs_{label}.npz", **pairs)
    experiment.write_json(outdir / f"bigram_{label}.json", {**stats, "table": table})

    fig, (ax, tab) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.2]})
    order = np.argsort(pairs["count"])  # frequent pairs drawn last, on top
    ax.scatter(pairs["log_empirical"][order], pairs["log_model"][order], s=3,
               c=np.log10(pairs["count"][order]), cmap="viridis", alpha=0.6)
    lo = min(pairs["log_empirical"].min(), pairs["log_model"].min())
    ax.plot([lo, 0], [lo, 0], "k--", lw=0.8, label="model = counts")
    ax.set_xlabel("empirical log p(next | current)")
    ax.set_ylabel("model log softmax(W_E W_U)[current, next]")
    ax.set_title(f"{label}: {stats['n_pairs']:,} pairs seen ≥ {config.min_count}×\n"
                 f"correlation {stats['correlation']:.3f}, KL {stats['kl']:.3f} nats "
                 f"(table entropy {stats['conditional_entropy']:.2f})")
    ax.legend(loc="lower right")
    tab.axis("off")
    show = experiment.show_token
    cells = [[show(r["token"]), "  ".join(show(x, 8) for x in r["model"]),
              "  ".join(show(x, 8) for x in r["counts"])] for r in table]
    t = tab.table(cellText=cells, colLabels=["current", "model's top next", "corpus's top next"],
                  loc="center", cellLoc="left", colWidths=[0.16, 0.42, 0.42])
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    t.scale(1, 1.4)
    tab.set_title("frequent tokens: top next tokens")
    experiment.save_figure(fig, outdir, "bigram" if len(models) == 1 else f"bigram_{label}")

    claims.append(experiment.claim(
        f"bigram.correlation_{label}",
        f"{label}: a zero-layer model learns the bigram table",
        "FW §2 (zero-layer transformers)",
        f"Pearson correlation of model vs empirical log p(next | current) over pairs seen ≥ "
        f"{config.min_count}× is ≥ {config.min_correlation}",
        f"correlation {stats['correlation']:.3f} over {stats['n_pairs']:,} frequent pairs",
        stats["correlation"], stats["correlation"] >= config.min_correlation))
    claims.append(experiment.claim(
        f"bigram.kl_{label}",
        f"{label}: its predictions are close to the table",
        "FW §2 (zero-layer transformers)",
        f"KL(empirical ‖ model) weighted by pair frequency ≤ {config.max_kl} nats",
        f"KL(empirical ‖ model) = {stats['kl']:.3f} nats; model cross-entropy "
        f"{stats['model_cross_entropy']:.3f} vs table entropy {stats['conditional_entropy']:.3f}",
        stats["kl"], stats["kl"] <= config.max_kl))
  return claims
