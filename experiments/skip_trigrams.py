"""One layer: every head as skip-trigrams "source … destination → output" (FW, 'Interpretation
as Skip-Trigrams').  FW's tables fix a source and list the destinations and outputs of its
largest QK and OV entries; ours fix a destination and rank its sources (then each source's
outputs, as FW does), because a QK entry is only comparable within its destination's row.

A head's QK circuit W_E W_QK W_Eᵀ[dest, src] / sqrt(d_head) says how much ``dest`` attends to
``src``; its OV circuit W_E W_OV W_U[src, out] says which outputs attending to ``src`` raises.
Each is compared only along the axis its softmax normalises (``scores.ranked_skip_trigrams``):
a QK entry only against the other sources of the same destination's row, an OV entry only
against the other outputs of the same source's row; entries are gains in nats over the row's
mean.  Each head's table lists its most selective destinations (largest top gain); for each,
the sources it attends to most; for each source, the outputs it raises most; and how often
"src … dest → out" occurs in the training text.  Only [chunk, vocab] blocks of either circuit
are ever formed.

What a code corpus can and cannot show: FW's English examples (" keep … in → mind", " keep … at
→ bay", and the factored form's bug " keep … in → bay") need English text; the same structure
on code is searched for automatically: s … d1 → o1 and s … d2 → o2 both occur, s … d1 → o2 never
does, yet the head raises it (s is a top source of both destinations, o1 and o2 top outputs of s).
"""

import html

import numpy as np

from reproduce.core import scores
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import pyplot, save_figure, show_token
from reproduce.figure.sources import initial_weights, require_tokens

DESCRIPTION = ("1L skip-trigrams per head: destinations, their top QK sources, those sources' top "
               "OV outputs, with corpus counts")
ORDER = 20  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_COPYING = ("FW, 'One-Layer Attention-Only Transformers' → 'Interpretation as Skip-Trigrams' → "
              "'Copying / Primitive In-Context Learning'")
FW_SKIP_TRIGRAM_BUGS = ("FW, 'One-Layer Attention-Only Transformers' → 'Interpretation as Skip-"
                        "Trigrams' → 'Skip-Trigram “Bugs”'")


def frequent_tokens(model, min_count: int) -> np.ndarray:
  """Token ids seen at least ``min_count`` times in training, special tokens left out."""
  counts = np.bincount(np.asarray(model.tokens.train), minlength=model.cfg.d_vocab)
  counts = counts[:model.cfg.d_vocab]
  counts[[model.bos_id, model.tokens.eot_id]] = 0
  return np.flatnonzero(counts >= min_count)


def trigram_counts(ranked, counter) -> np.ndarray:
  """[L, H, n_dest, k, k]: occurrences of "source … destination → output" for every entry of
  the tables (destination d, its i-th source, that source's j-th output)."""
  dest, source, out = ranked["dest"], ranked["source"], ranked["out"]
  counts = np.zeros(out.shape, np.int64)
  for index in np.ndindex(*out.shape):
    l, h, r, i, _ = index
    counts[index] = counter.count(source[l, h, r, i], dest[l, h, r], out[index])
  return counts


def follower_auc(ranked, counter, allowed) -> np.ndarray:
  """[L, H, n_dest]: within each table destination d's QK row, the probability that a token seen
  right after d in the counter's text has a higher gain than a token never seen there (the
  Mann-Whitney AUC, ties half; chance 0.5).  NaN when either group is empty."""
  L, H, n = ranked["dest"].shape
  auc = np.full((L, H, n), np.nan)
  for l, h, r in np.ndindex(L, H, n):
    follows = np.isin(allowed, counter.followers(ranked["dest"][l, h, r]))
    gains = ranked["dest_row"][l, h, r]
    n_pos, n_neg = int(follows.sum()), int((~follows).sum())
    if n_pos and n_neg:
      ranks = _average_ranks(gains)
      auc[l, h, r] = (ranks[follows].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
  return auc


def _average_ranks(x) -> np.ndarray:
  """1-based ranks of ``x`` with ties given their average rank."""
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x))
  ranks[order] = np.arange(1, len(x) + 1)
  values, inverse = np.unique(x, return_inverse=True)
  if len(values) < len(x):
    ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
  return ranks


def find_bugs(ranked, counter, min_seen: int):
  """Factored-form bugs in each head's table: distinct (head, s, d1, o2) with s a top source of
  two destinations d1 ≠ d2 and o1 ≠ o2 among s's top outputs, where s … d1 → o1 and s … d2 → o2
  are each seen ≥ ``min_seen`` times but s … d1 → o2 never is (the head raises it: attending to
  s raises o2 at any destination).  Each bug keeps its best-seen witnesses (d2, o1)."""
  bugs = {}
  L, H, n, k = ranked["source"].shape
  for l, h in np.ndindex(L, H):
    rows = {}  # source → [(destination, its outputs)]
    for r, i in np.ndindex(n, k):
      s = int(ranked["source"][l, h, r, i])
      rows.setdefault(s, []).append((int(ranked["dest"][l, h, r]),
                                     [int(o) for o in ranked["out"][l, h, r, i]]))
    for s, entries in rows.items():
      dests = sorted({d for d, _ in entries})
      outs = sorted({o for _, os_ in entries for o in os_})
      if len(dests) < 2 or len(outs) < 2:
        continue
      seen = {(d, o): counter.count(s, d, o) for d in dests for o in outs}
      for d1 in dests:
        for o2 in outs:
          if seen[d1, o2]:
            continue
          witness = max(((min(seen[d1, o1], seen[d2, o2]), d2, o1) for d2 in dests for o1 in outs
                         if d2 != d1 and o1 != o2), default=None)
          if witness is None or witness[0] < min_seen:
            continue
          _, d2, o1 = witness
          bugs[(l, h, s, d1, o2)] = {"head": f"L{l}H{h}", "source": s, "d1": d1, "o1": o1,
                                     "d2": d2, "o2": o2, "seen_d1_o1": seen[d1, o1],
                                     "seen_d2_o2": seen[d2, o2]}
  return list(bugs.values())


def skip_trigrams(config, model) -> dict:
  """Each head's table with its corpus counts, the plausibility of its sources as next tokens,
  the factored-form bugs in it, and each head's copying rank; the same at random init."""
  allowed = frequent_tokens(model, config.min_count)
  counter = scores.SkipTrigramCounter(np.asarray(model.tokens.train[:config.corpus_tokens]),
                                      config.window)
  init, init_source = initial_weights(model)
  found = {"allowed": allowed, "counter": counter, "searched_tokens": len(counter.tokens),
           "init_source": init_source}
  for prefix, weights in (("", model.weights), ("init_", init)):
    ranked = scores.ranked_skip_trigrams(weights, allowed, config.destinations_per_head,
                                         config.top_k)
    auc = follower_auc(ranked, counter, allowed)
    found.update({f"{prefix}ranked": ranked, f"{prefix}auc": auc,
                  f"{prefix}head_auc": _nanmedian(auc),  # [L, H]
                  f"{prefix}bugs": find_bugs(ranked, counter, config.min_seen),
                  f"{prefix}rank": np.median(scores.own_logit_row_rank(weights, allowed), -1)})
    del ranked["dest_row"]  # [L, H, n_dest, vocab]: no longer needed
  found["counts"] = trigram_counts(found["ranked"], counter)
  found["names"] = token_names(model, found["ranked"]["dest"], found["ranked"]["source"],
                               found["ranked"]["out"])
  return found


def token_names(model, *ids) -> dict:
  """id → text for every token id in the arrays ``ids``, decoded in one call (the tokenizer is
  loaded once: per-token calls took minutes at a 48k vocabulary)."""
  unique = np.unique(np.concatenate([np.ravel(a) for a in ids]))
  return dict(zip(unique.tolist(), model.token_strings(unique)))


def _nanmedian(a):
  """Median over the last axis ignoring NaN; NaN where every value is NaN (without a warning)."""
  out = np.full(a.shape[:-1], np.nan)
  has = np.isfinite(a).any(-1)
  out[has] = np.nanmedian(a[has], axis=-1)
  return out


def write_numbers(config, outdir, label, model, t) -> None:
  """The JSON numbers, and the per-head tables as Markdown and HTML."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  ranked, counts = t["ranked"], t["counts"]
  name = t["names"].__getitem__
  names = lambda ids: [name(int(i)) for i in ids]
  n, k = ranked["source"].shape[-2:]
  write_json(outdir / f"skip_trigrams_{label}.json", {
      "tokens_considered": len(t["allowed"]), "min_count": config.min_count,
      "gains": "QK[dest, src] / sqrt(d_head) centred over sources within the destination's row; "
               "OV[src, out] centred over outputs within the source's row (nats)",
      "heads": {f"L{l}H{h}": [{"dest": names([ranked["dest"][l, h, r]])[0],
                               "follower_auc": t["auc"][l, h, r],
                               "sources": [{"source": names([ranked["source"][l, h, r, i]])[0],
                                            "gain": ranked["source_gain"][l, h, r, i],
                                            "out": names(ranked["out"][l, h, r, i]),
                                            "out_gain": ranked["out_gain"][l, h, r, i],
                                            "count": counts[l, h, r, i]} for i in range(k)]}
                              for r in range(n)]
                for l in range(L) for h in range(H)},
      "own_logit_row_rank_median": t["rank"], "random_init_rank_median": t["init_rank"],
      "follower_auc_median": t["head_auc"], "random_init_follower_auc_median": t["init_head_auc"],
      "random_init_source": t["init_source"],
      "bugs": [{**b, **{key: names([b[key]])[0] for key in ("source", "d1", "o1", "d2", "o2")}}
               for b in t["bugs"]]})
  markdown, page = tables(t["names"], ranked, counts, label)
  (outdir / f"skip_trigrams_{label}.md").write_text(markdown)
  (outdir / f"skip_trigrams_{label}.html").write_text(page)


def tables(names, ranked, counts, label):
  """(markdown, html) tables: one per head, a row per (destination, source); ``names`` maps
  token ids to their text."""
  tok = lambda t: show_token(names[int(t)], 16)
  legend = ("Per head: its most selective destinations; for each, the sources it attends to most "
            "(QK gain: nats over the row's mean source, compared only within that destination's "
            "row); for each source, the outputs it raises most (OV gain: nats over the row's mean "
            "output, compared only within that source's row) with the count of \"source … "
            "destination → output\" in the searched training tokens.")
  md, page = [f"# Skip-trigrams of {label}\n", legend + "\n"], []
  L, H, n, k = ranked["source"].shape
  header = ["destination", "… source (QK gain)", "→ outputs (OV gain; count)"]
  for l, h in np.ndindex(L, H):
    md.append(f"\n## L{l}H{h}\n\n| " + " | ".join(header) + " |\n|---|---|---|")
    rows = []
    for r, i in np.ndindex(n, k):
      cells = [tok(ranked["dest"][l, h, r]) if i == 0 else "",
               f"{tok(ranked['source'][l, h, r, i])} ({ranked['source_gain'][l, h, r, i]:.1f})",
               ", ".join(f"{tok(o)} ({g:.1f}; {c})" for o, g, c in
                         zip(ranked["out"][l, h, r, i], ranked["out_gain"][l, h, r, i],
                             counts[l, h, r, i]))]
      md.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
      rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    page.append(f"<h2>L{l}H{h}</h2><table><tr>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in header)
                + f"</tr>{''.join(rows)}</table>")
  head = ("<!doctype html><html><head><meta charset='utf-8'><title>skip-trigrams</title><style>"
          "body{font-family:sans-serif;margin:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;"
          "font-family:monospace;white-space:pre}table{border-collapse:collapse}</style></head>"
          f"<body><h1>Skip-trigrams of {html.escape(label)}</h1><p>{html.escape(legend)}</p>")
  return "\n".join(md) + "\n", head + "".join(page) + "</body></html>"


def plot_heads(config, label, model, t, outdir, picture: str) -> None:
  """One text panel per head: a line per destination with its top sources, the top source's top
  outputs and how often that trigram occurs."""
  plt = pyplot()
  L, H = model.cfg.n_layers, model.cfg.n_heads
  ranked, counts, rank, auc = t["ranked"], t["counts"], t["rank"], t["head_auc"]
  heads = [(l, h) for l in range(L) for h in range(H)]
  cols = 2 if len(heads) > 1 else 1
  rows = -(-len(heads) // cols)
  n = ranked["dest"].shape[-1]
  height = 0.24 * (n + 2) * rows + 1.0
  fig, axes = plt.subplots(rows, cols, figsize=(9.5 * cols, height), squeeze=False)
  fig.subplots_adjust(top=1 - 0.7 / height, bottom=0.01, hspace=0.15)
  tok = lambda i: show_token(t["names"][int(i)], 10)
  for ax, (l, h) in zip(axes.ravel(), heads):
    ax.axis("off")
    ax.set_xlim(0, 1); ax.set_ylim(n + 0.5, -1.2)
    ax.text(0, -0.9, f"L{l}H{h}  copying: own-logit row rank {rank[l, h]:.2f}  ·  followers "
            f"ranked above non-followers (AUC) {auc[l, h]:.2f}", fontsize=8, weight="bold")
    ax.text(0.0, 0, "destination", fontsize=7, color="#666")
    ax.text(0.15, 0, "… attends to sources (QK row)", fontsize=7, color="#2471a3")
    ax.text(0.56, 0, "first source → outputs (OV row)", fontsize=7, color="#c0392b")
    ax.text(0.93, 0, "count", fontsize=7, color="#666")
    for r in range(n):
      y = r + 1
      ax.text(0.0, y, tok(ranked["dest"][l, h, r]), fontsize=7, family="monospace")
      ax.text(0.15, y, "  ".join(tok(s) for s in ranked["source"][l, h, r]), fontsize=7,
              family="monospace", color="#1a5276")
      ax.text(0.56, y, "  ".join(tok(o) for o in ranked["out"][l, h, r, 0]), fontsize=7,
              family="monospace", color="#922b21")
      ax.text(0.93, y, str(counts[l, h, r, 0, 0]), fontsize=7, family="monospace")
  for ax in axes.ravel()[len(heads):]:
    ax.axis("off")
  fig.suptitle(f"{label}: skip-trigrams 'source … destination → output' per head: QK compared "
               "within a destination's row, OV within a source's row; count = occurrences of "
               "destination ← first source → first output in the training text.\nFW's English "
               "examples (keep … in mind / at bay, and the bug keep … in bay) cannot occur on a "
               f"Python corpus; code analogues of the bug found: {len(t['bugs'])} distinct",
               fontsize=9)
  save_figure(fig, outdir, picture)


COPYING = ("FW, \"One-Layer Attention-Only Transformers\" (copying / primitive in-context "
           "learning): \"most attention heads\" of one-layer models spend much of their capacity "
           "on copying: the OV circuit makes a token, once attended to, raise its own "
           "probability (and less so that of similar tokens)")
PLAUSIBLE = ("FW, same section: the QK circuit of those heads \"only attends back to tokens "
             "which could plausibly be the next token\", so tokens are copied only where "
             "bigram-like statistics make them plausible")
BUGS = ("FW, \"Skip-Trigram Bugs\": one-layer models hold skip-trigrams in a \"factored "
        "form\" split between OV and QK, so a head that raises keep … in mind and keep … at bay "
        "must also raise keep … in bay; FW reports it \"frequently\" observes such bugs")


def claims_of(config, label, t) -> list:
  """FW, 'Interpretation as Skip-Trigrams': most heads copy, they attend to plausible next
  tokens, the factored form's bugs.  From the numbers of ``skip_trigrams`` alone: ``rank`` and
  ``init_rank`` [L, H] (median own-logit row rank), ``head_auc`` and ``init_head_auc`` [L, H],
  ``bugs`` and ``init_bugs`` (lists), ``names`` (id → text of the bugs' tokens), ``allowed``
  (the tokens ranked), ``searched_tokens`` (how many training tokens were searched) and
  ``init_source``."""
  rank, init_rank, bugs = t["rank"], t["init_rank"], t["bugs"]
  L, H = rank.shape
  auc, init_auc = t["head_auc"], t["init_head_auc"]
  claim_on = lambda what, **kw: claim(figure="skip_trigrams", what=what, model=label,
                                      **kw)
  copy_bar = max(config.copy_rank, float(init_rank.max()))
  copying = int((rank > copy_bar).sum())
  auc_bar = float(np.nanmax(init_auc)) if np.isfinite(init_auc).any() else float("nan")
  plausible = int((auc > auc_bar).sum())
  undefined = int((~np.isfinite(auc)).sum())
  tok = lambda i: show_token(t["names"][int(i)], 24)
  examples = "; ".join(
      f"{b['head']}: {tok(b['source'])} … {tok(b['d1'])} → {tok(b['o1'])} (seen "
      f"{b['seen_d1_o1']}×) and … {tok(b['d2'])} → {tok(b['o2'])} ({b['seen_d2_o2']}×), but "
      f"… {tok(b['d1'])} → {tok(b['o2'])} never" for b in bugs[:3])
  n_dest = config.destinations_per_head
  return [
      claim_on("most_heads_copy", paper_says=COPYING,
               statement=f"{label}: most heads copy — attending to a token raises that same token",
               source=FW_COPYING,
               criterion=f"heads whose median (over {len(t['allowed'])} tokens seen ≥ "
               f"{config.min_count} times) rank of a token's own logit within its OV row (what "
               f"attending to it raises; 0.5: no higher than the row's median output) is above "
               f"max({config.copy_rank}, the largest random-init head's) = {copy_bar:.2f} are a "
               "majority (FW's words give no number: attending to a token raises that token, "
               "and above chance)",
               measured=f"{copying} of {L * H} heads; per head: "
               f"{', '.join(f'{x:.2f}' for x in rank.ravel())}; random init ({t['init_source']}): "
               f"{init_rank.min():.2f} … {init_rank.max():.2f}",
               value={"rank": rank, "random_init": init_rank, "bar": copy_bar},
               holds=copying * 2 > L * H),
      claim_on("attends_to_plausible_next_tokens", paper_says=PLAUSIBLE,
               statement=f"{label}: the QK circuit attends back to tokens that could plausibly be "
               "the next token (FW: 'tokens are copied, but only to places where bigram-ish "
               "statistics make them seem plausible')", source=FW_COPYING,
               criterion=f"per head, for each of its {n_dest} table destinations d: the probability "
               "that a token seen right after d in the searched text gets a higher QK gain in d's "
               "row than a token never seen there (AUC, chance 0.5; only d's own row is compared); "
               "the head's median over its destinations is above every random-init head's "
               f"({auc_bar:.2f}), for a majority of heads (heads without a defined AUC count as "
               "not above)",
               measured=f"{plausible} of {L * H} heads ({undefined} undefined); median AUC per "
               f"head: {', '.join(f'{x:.2f}' for x in auc.ravel())}; random init: "
               f"{np.nanmin(init_auc):.2f} … {auc_bar:.2f}",
               value={"auc": auc, "random_init": init_auc}, holds=plausible * 2 > L * H),
      claim_on("factored_form_bug", paper_says=BUGS,
               statement=f"{label}: the factored form makes skip-trigram bugs: a head that learned "
               "s … d1 → o1 and s … d2 → o2 also raises s … d1 → o2 (FW's English 'keep … in bay' "
               "cannot occur on Python code; this is the same pattern searched for on code)",
               source=FW_SKIP_TRIGRAM_BUGS,
               criterion=f"in each head's table (its {n_dest} destinations, their top "
               f"{config.top_k} sources, those sources' top {config.top_k} outputs), at least one "
               f"distinct s … d1 → o2 that never occurs in {t['searched_tokens']:,} training "
               f"tokens while s … d1 → o1 and s … d2 → o2 each occur ≥ {config.min_seen} times (s a "
               "top source of both destinations, o1 and o2 top outputs of s); more of them than the "
               "same search finds in the random-init model's tables (its chance level)",
               measured=f"{len(bugs)} distinct found (random init: {len(t['init_bugs'])})"
               + (f", e.g. {examples}" if bugs else ""),
               value={"found": len(bugs), "random_init": len(t["init_bugs"])},
               holds=len(bugs) > len(t["init_bugs"]))]


def run(config, models, outdir):
  claims = []
  for label, model in models.items():
    model.need_layers(1, "skip_trigrams")
    require_tokens(model, "skip_trigrams")
    found = skip_trigrams(config, model)
    write_numbers(config, outdir, label, model, found)
    plot_heads(config, label, model, found, outdir,
               "skip_trigrams" if len(models) == 1 else f"skip_trigrams_{label}")
    claims.extend(claims_of(config, label, found))
  return claims
