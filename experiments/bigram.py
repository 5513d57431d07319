"""Zero layers: the direct path W_E W_U is a bigram model (FW, zero-layer transformers).

logits = W_E[t] W_U, so softmax(W_E W_U)[current, next] can only be p(next | current).  We compare
it with the empirical bigram table of the training tokens: a scatter of log-probabilities over
frequent pairs, their correlation, the KL on held-out text and, for a few frequent tokens, the
top next tokens by the model and by the counts.  The same direct path sits inside every deeper
model, where FW reads it as a "residual" of the bigram statistics (the rest of the model predicts
part of them): for the 1L and 2L models we check that it holds bigram statistics beyond the
unigram, not that it is a bigram model (its correlation with the 0L model's table is kept in the
numbers).

Every criterion is anchored to a unigram model p(next) (training frequencies, add-one smoothed),
which knows nothing of the current token: its log-probs correlate with the bigram table only
through how common the next token is.  "Well above" means closing at least ``gap_closed`` of the
distance from the unigram's value to a perfect one (correlation 1, KL 0).
"""

from typing import Optional

import numpy as np

from reproduce.core import scores
from reproduce.core.kernels import items_per_chunk
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import colorbar, pyplot, save_figure, show_token
from reproduce.figure.sources import require_tokens

DESCRIPTION = "0L model vs the corpus's bigram table (and 1L/2L direct paths vs the 0L table): scatter, KL, top-next table"
ORDER = 10  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_DIRECT_PATH = "FW, 'One-Layer Attention-Only Transformers' → 'The Path Expansion Trick'"
FW_ZERO_LAYER = "FW, 'Zero-Layer Transformers'"


def unigram_log_probs(train_tokens, vocab_size):
  """log p(next) of the add-one smoothed unigram model of the training tokens, [vocab]."""
  counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size)[:vocab_size] + 1.0
  return np.log(counts / counts.sum())


def direct_log_probs(weights, current, following, chunk: Optional[int] = None):
  """log softmax(W_E W_U)[current, following] for pairs of token ids (the direct path), float64;
  the rows of W_E W_U go ``chunk`` at a time (default: three float64 blocks of that many rows
  fit ``kernels.CHUNK_BYTES``), never the vocab × vocab table."""
  W_E, W_U = np.asarray(weights.W_E, np.float64), np.asarray(weights.W_U, np.float64)
  rows = np.unique(current)
  chunk = chunk or items_per_chunk(3 * 8 * W_U.shape[1], len(rows))
  lse = np.zeros(W_E.shape[0])
  for start in range(0, len(rows), chunk):
    r = rows[start:start + chunk]
    logits = W_E[r] @ W_U
    top = logits.max(-1, keepdims=True)
    lse[r] = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[:, 0]
  return scores.pair_logits(W_E, W_U, current, following) - lse[current]


def heldout_kl(log_model, heldout_tokens, vocab_size):
  """Σ_pairs p̂(c, n) (log p̂(n | c) − log_model(c, n)) over the held-out pairs: KL of the held-out
  bigram table to a model given as a function (current ids, next ids) → log-probs."""
  tokens = np.asarray(heldout_tokens, np.int64)
  codes, counts = np.unique(tokens[:-1] * vocab_size + tokens[1:], return_counts=True)
  current, following = codes // vocab_size, codes % vocab_size
  source = np.bincount(current, weights=counts, minlength=vocab_size)
  log_emp = np.log(counts / source[current])
  weight = counts / counts.sum()
  return float(np.sum(weight * (log_emp - log_model(current, following))))


def gap_closed(value, reference, perfect):
  """Fraction of the distance from ``reference`` to ``perfect`` that ``value`` covers."""
  return float((value - reference) / (perfect - reference))


def correlation_gain(y, x, x_ref, resamples: int = 200, seed: int = 0):
  """(r − r_ref, its bootstrap standard error): how much better ``x`` correlates with ``y`` than
  ``x_ref`` does (Pearson, over the same items), the items resampled with replacement
  ``resamples`` times (a fixed generator: the same draws every run)."""
  y, x, x_ref = (np.asarray(v, np.float64) for v in (y, x, x_ref))
  r = lambda idx: np.corrcoef(x[idx], y[idx])[0, 1] - np.corrcoef(x_ref[idx], y[idx])[0, 1]
  rng = np.random.default_rng(seed)
  draws = [r(rng.integers(0, len(y), len(y))) for _ in range(resamples)]
  return float(r(np.arange(len(y)))), float(np.std(draws, ddof=1))


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
  plt = pyplot()
  claims = []
  zero_layer = next((m for m in models.values() if m.cfg.n_layers == 0), None)
  for label, model in models.items():
    require_tokens(model, "bigram")
    V = model.cfg.d_vocab
    stats = scores.bigram_statistics(model.weights, model.tokens.train, min_count=config.min_count)
    table = _top_next_table(model, stats, config.table_tokens, config.top_next)
    pairs = stats.pop("pairs")
    unigram = unigram_log_probs(model.tokens.train, V)
    uni_corr = float(np.corrcoef(unigram[pairs["next"]], pairs["log_empirical"])[0, 1])
    kl_model = heldout_kl(lambda c, n: direct_log_probs(model.weights, c, n),
                          model.tokens.heldout, V)
    kl_unigram = heldout_kl(lambda c, n: unigram[n], model.tokens.heldout, V)
    numbers = {**stats, "unigram_correlation": uni_corr, "heldout_kl": kl_model,
               "heldout_kl_unigram": kl_unigram, "table": table}
    versus_0l = None
    if zero_layer is not None and model is not zero_layer:
      ours = direct_log_probs(model.weights, pairs["current"], pairs["next"])
      table_0l = direct_log_probs(zero_layer.weights, pairs["current"], pairs["next"])
      versus_0l = {"correlation": float(np.corrcoef(ours, table_0l)[0, 1]),
                   "unigram_correlation": float(np.corrcoef(unigram[pairs["next"]],
                                                            table_0l)[0, 1])}
      numbers["direct_path_vs_0l"] = versus_0l
    if model.cfg.n_layers:  # the direct path against the empirical table, beyond the unigram
      gain, error = correlation_gain(pairs["log_empirical"], pairs["log_model"],
                                     unigram[pairs["next"]], config.bootstrap_resamples)
      numbers["direct_path_gain_over_unigram"] = {"gain": gain, "standard_error": error}
    np.savez(outdir / f"pairs_{label}.npz", **pairs)
    write_json(outdir / f"bigram_{label}.json", numbers)

    fig, (ax, tab) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.2]})
    order = np.argsort(pairs["count"])  # frequent pairs drawn last, on top
    dots = ax.scatter(pairs["log_empirical"][order], pairs["log_model"][order], s=3,
                      c=np.log10(pairs["count"][order]), cmap="viridis", alpha=0.6,
                      rasterized=True)  # ~50k dots: an image inside the SVG (10 MB of paths)
    colorbar(fig, dots, ax, "log10(times the pair occurs in the training tokens)",
                        pad=0.02)
    lo = min(pairs["log_empirical"].min(), pairs["log_model"].min())
    ax.plot([lo, 0], [lo, 0], "k--", lw=0.8, label="model = counts")
    ax.set_xlabel("empirical log p(next | current)")
    path = "W_E W_U" if model.cfg.n_layers == 0 else "direct path W_E W_U"
    ax.set_ylabel(f"model log softmax({path})[current, next]")
    ax.set_title(f"{label}: {stats['n_pairs']:,} pairs seen ≥ {config.min_count}×\n"
                 f"correlation {stats['correlation']:.3f} (unigram {uni_corr:.3f}); held-out KL "
                 f"{kl_model:.2f} nats (unigram {kl_unigram:.2f})", fontsize=9)
    ax.legend(loc="lower right")
    tab.axis("off")
    show = show_token
    cells = [[show(r["token"]), "  ".join(show(x, 8) for x in r["model"]),
              "  ".join(show(x, 8) for x in r["counts"])] for r in table]
    t = tab.table(cellText=cells, colLabels=["current", "model's top next", "corpus's top next"],
                  loc="center", cellLoc="left", colWidths=[0.16, 0.42, 0.42])
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    t.scale(1, 1.4)
    tab.set_title("frequent tokens: top next tokens")
    save_figure(fig, outdir, "bigram" if len(models) == 1 else f"bigram_{label}")
    claims.extend(claims_of(config, label, model.cfg.n_layers, stats, uni_corr, kl_model,
                            kl_unigram, numbers.get("direct_path_gain_over_unigram")))
  return claims


ZERO_LAYER = ("FW, \"Zero-Layer Transformers\": with no layers the logits W_U W_E depend on the "
              "present token alone, so the best such model approximates the bigram "
              "log-likelihoods, and trained zero-layer models do approximate the bigram table")
DIRECT_PATH = ("FW, \"Zero-Layer Transformers\" (on the W_U W_E term of deeper models, the "
               "direct path): other parts of a deeper model predict part of the bigram "
               "log-likelihood, so the direct path does not represent the bigram statistics "
               "exactly, but a \"residual\" of them (FW's example: a bigram like Barack → Obama "
               "that no general rule gives)")


def claims_of(config, label, n_layers, stats, uni_corr, kl_model, kl_unigram, gain):
  """The claims of one model from its numbers alone: ``stats`` (``correlation``, ``n_pairs``),
  the unigram's correlation ``uni_corr``, the held-out KLs of the model and the unigram, and
  for a model with layers the direct path's correlation ``gain`` over the unigram
  (``correlation_gain``: ``gain``, ``standard_error``; None: no claim)."""
  need = config.gap_closed
  if n_layers == 0:
    closed = gap_closed(stats["correlation"], uni_corr, 1.0)
    kl_closed = gap_closed(kl_model, kl_unigram, 0.0)
    return [
        claim(
            figure="bigram", what="correlation", model=label, paper_says=ZERO_LAYER,
            statement=f"{label}: a zero-layer model learns the bigram table",
            source=FW_ZERO_LAYER,
            criterion=f"correlation r of model vs empirical log p(next | current) over pairs seen "
            f"≥ {config.min_count}× closes ≥ {need} of the gap from the unigram model's r_u to "
            f"1: (r − r_u) / (1 − r_u) ≥ {need}",
            measured=f"r = {stats['correlation']:.3f}, unigram r_u = {uni_corr:.3f} over "
            f"{stats['n_pairs']:,} pairs: closes {closed:.2f} of the gap",
            value={"correlation": stats["correlation"], "unigram": uni_corr,
                   "gap_closed": closed},
            holds=closed >= need),
        claim(
            figure="bigram", what="heldout_kl", model=label, paper_says=ZERO_LAYER,
            statement=f"{label}: its predictions are close to the bigram table on held-out text",
            source=FW_ZERO_LAYER,
            criterion="KL(held-out bigram table ‖ model) is at most (1 − "
            f"{need}) × the unigram model's: (KL_u − KL) / KL_u ≥ {need}",
            measured=f"KL {kl_model:.3f} nats vs unigram {kl_unigram:.3f}: closes "
            f"{kl_closed:.2f} of the gap",
            value={"kl": kl_model, "unigram": kl_unigram, "gap_closed": kl_closed},
            holds=kl_closed >= need)]
  if gain is None:
    return []
  k = config.standard_errors
  return [claim(
      figure="bigram", what="direct_path_bigram_residual", model=label, paper_says=DIRECT_PATH,
      statement=f"{label}: the direct path of a {n_layers}-layer model holds part of "
      "the bigram statistics (a residual of them, not a bigram model of its own)",
      source=FW_DIRECT_PATH,
      criterion="the correlation r of log softmax(W_E W_U)[current, next] with the empirical log "
      f"p(next | current) over pairs seen ≥ {config.min_count}× exceeds the unigram model's r_u "
      f"by > {k:g} bootstrap standard errors of r − r_u ({config.bootstrap_resamples} resamples "
      "of the pairs): bigram content beyond how common the next token is; how much of the table "
      "it holds is not part of the claim",
      measured=f"r = {stats['correlation']:.3f}, unigram r_u = {uni_corr:.3f}: r − r_u = "
      f"{gain['gain']:+.3f} ± {gain['standard_error']:.3f} "
      f"({gain['gain'] / gain['standard_error']:.1f} standard errors)",
      value={**gain, "correlation": stats["correlation"], "unigram": uni_corr},
      holds=gain["gain"] > k * gain["standard_error"])]
