"""One layer: every head as its strongest skip-trigrams "source … destination → output" (FW §4).

A head's QK circuit W_E W_QK W_Eᵀ[dest, src] says how much ``dest`` attends to ``src``; its OV
circuit W_E W_OV W_U[src, out] says which outputs attending to ``src`` raises.  A skip-trigram is
scored by the sum of both entries, each centred along its row (what depends on the destination
alone cancels in the softmax; what depends on the source alone shifts all outputs alike) and
standardised over the head's own block of frequent tokens (``scores.ranked_skip_trigrams``, which also says why a sum).  Only [vocab, chunk] blocks
of either circuit are ever formed.  Each head's table lists its top sources with their best
destinations and outputs, and how often "src … dest → out" occurs in the training text.

What a code corpus can and cannot show: FW's English examples (" keep … in → mind", " keep … at
→ bay", and the factored form's bug " keep … in → bay") need English text; the same structure
on code is searched for automatically: s … d1 → o1 and s … d2 → o2 both occur, s … d1 → o2 never
does, yet a head that learned both raises it.
"""

import html

import numpy as np

from reproduce.core import scores
from reproduce import experiment

DESCRIPTION = "1L skip-trigrams per head, ranked by standardised QK + OV, with corpus counts"
ORDER = 20  # place in the batch job and index.html (reproduce.figure.figure_names)


def frequent_tokens(model, min_count: int) -> np.ndarray:
  """Token ids seen at least ``min_count`` times in training, special tokens left out."""
  counts = np.bincount(np.asarray(model.tokens.train), minlength=model.cfg.d_vocab)
  counts = counts[:model.cfg.d_vocab]
  counts[[model.bos_id, model.tokens.eot_id]] = 0
  return np.flatnonzero(counts >= min_count)


def find_bugs(ranked, counter, min_seen: int):
  """Factored-form bugs among each head's top rows: (l, h, s, d1, o1, d2, o2) with s … d1 → o2
  never seen while s … d1 → o1 and s … d2 → o2 are both seen ≥ ``min_seen`` times, for d1 ≠ d2
  and o1 ≠ o2 among the row's top destinations and outputs (the head raises all four)."""
  bugs = []
  L, H, n = ranked["source"].shape
  for l in range(L):
    for h in range(H):
      for r in range(n):
        s, ds, os_ = ranked["source"][l, h, r], ranked["dest"][l, h, r], ranked["out"][l, h, r]
        seen = np.array([[counter.count(s, d, o) for o in os_] for d in ds])
        for i in range(len(ds)):
          for j in range(len(os_)):
            for i2 in range(len(ds)):
              for j2 in range(len(os_)):
                if (i2 != i and j2 != j and ds[i] != ds[i2] and os_[j] != os_[j2]
                    and seen[i, j2] == 0 and seen[i, j] >= min_seen
                    and seen[i2, j2] >= min_seen):
                  bugs.append({"head": f"L{l}H{h}", "source": int(s), "d1": int(ds[i]),
                               "o1": int(os_[j]), "d2": int(ds[i2]), "o2": int(os_[j2]),
                               "seen_d1_o1": int(seen[i, j]), "seen_d2_o2": int(seen[i2, j2])})
  return bugs


def tables(model, ranked, counts, label):
  """(markdown, html) tables: one per head, a row per source."""
  tok = lambda t: experiment.show_token(model.token_strings([t])[0], 14)
  md, page = [f"# Skip-trigrams of {label}\n", "score = z(QK) + z(OV) of the best trigram (rows centred, standardised per head); "
              "count = occurrences of \"src … dest → out\" (best dest and out) in the searched "
              "training tokens.\n"], []
  L, H, n = ranked["source"].shape
  for l in range(L):
    for h in range(H):
      md.append(f"\n## L{l}H{h}\n\n| source | … destinations (z QK) | → outputs (z OV) | score |"
                " count |\n|---|---|---|---|---|")
      rows = []
      for r in range(n):
        src = tok(ranked["source"][l, h, r])
        dests = ", ".join(f"{tok(d)} ({z:.1f})" for d, z in zip(ranked["dest"][l, h, r],
                                                                ranked["dest_z"][l, h, r]))
        outs = ", ".join(f"{tok(o)} ({z:.1f})" for o, z in zip(ranked["out"][l, h, r],
                                                               ranked["out_z"][l, h, r]))
        cells = [src, dests, outs, f"{ranked['score'][l, h, r]:.1f}", str(counts[l, h, r])]
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
      page.append(f"<h2>L{l}H{h}</h2><table><tr><th>source</th><th>… destinations (z QK)</th>"
                  f"<th>→ outputs (z OV)</th><th>score</th><th>count</th></tr>{''.join(rows)}"
                  "</table>")
  head = ("<!doctype html><html><head><meta charset='utf-8'><title>skip-trigrams</title><style>"
          "body{font-family:sans-serif;margin:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;"
          "font-family:monospace;white-space:pre}table{border-collapse:collapse}</style></head>"
          f"<body><h1>Skip-trigrams of {html.escape(label)}</h1><p>{html.escape(md[1])}</p>")
  return "\n".join(md) + "\n", head + "".join(page) + "</body></html>"


def skip_trigrams(config, model) -> dict:
  """Each head's ranked skip-trigrams with their corpus counts and lifts, the factored-form bugs
  among them, and each head's copying rank; the bugs and ranks also at random init."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  allowed = frequent_tokens(model, config.min_count)
  ranked = scores.ranked_skip_trigrams(model.weights, allowed, config.sources_per_head,
                                       config.top_k)
  counter = scores.SkipTrigramCounter(np.asarray(model.tokens.train[:config.corpus_tokens]),
                                      config.window)
  counts = np.array([[[counter.count(s, d[0], o[0]) for s, d, o in
                       zip(ranked["source"][l, h], ranked["dest"][l, h], ranked["out"][l, h])]
                      for h in range(H)] for l in range(L)])
  lifts = np.array([[[counter.lift(s, d[0]) for s, d in
                      zip(ranked["source"][l, h], ranked["dest"][l, h])]
                     for h in range(H)] for l in range(L)])
  bugs = find_bugs(ranked, counter, config.min_seen)
  rank = np.median(scores.own_logit_column_rank(model.weights, allowed), axis=-1)  # [L, H]
  init, init_source = experiment.initial_weights(model)
  init_bugs = find_bugs(scores.ranked_skip_trigrams(init, allowed, config.sources_per_head,
                                                    config.top_k), counter, config.min_seen)
  init_rank = np.median(scores.own_logit_column_rank(init, allowed), axis=-1)
  return {"allowed": allowed, "ranked": ranked, "counter": counter, "counts": counts,
          "lifts": lifts, "head_lift": np.nanmedian(lifts, axis=-1),  # [L, H]
          "bugs": bugs, "rank": rank, "init_bugs": init_bugs, "init_rank": init_rank,
          "init_source": init_source}


def write_numbers(config, outdir, label, model, t) -> None:
  """The JSON numbers, and the per-head tables as Markdown and HTML."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  ranked, counts, lifts = t["ranked"], t["counts"], t["lifts"]
  names = model.token_strings
  experiment.write_json(outdir / f"skip_trigrams_{label}.json", {
      "tokens_considered": len(t["allowed"]), "min_count": config.min_count,
      "score": "z(QK[dest, src] / sqrt(d_head)) + z(OV[src, out]), rows centred, per-head "
               "standardisation",
      "heads": {f"L{l}H{h}": [{"source": names([ranked["source"][l, h, r]])[0],
                               "dest": names(ranked["dest"][l, h, r]),
                               "dest_z": ranked["dest_z"][l, h, r],
                               "out": names(ranked["out"][l, h, r]),
                               "out_z": ranked["out_z"][l, h, r],
                               "score": ranked["score"][l, h, r],
                               "count_best": counts[l, h, r], "lift_best_dest": lifts[l, h, r]}
                              for r in range(config.sources_per_head)]
                for l in range(L) for h in range(H)},
      "own_logit_column_rank_median": t["rank"], "random_init_rank_median": t["init_rank"],
      "random_init_source": t["init_source"],
      "bugs": [{**b, **{k: names([b[k]])[0] for k in ("source", "d1", "o1", "d2", "o2")}}
               for b in t["bugs"]]})
  markdown, page = tables(model, ranked, counts, label)
  (outdir / f"skip_trigrams_{label}.md").write_text(markdown)
  (outdir / f"skip_trigrams_{label}.html").write_text(page)


def plot_heads(config, label, model, t, outdir, picture: str) -> None:
  """One text panel per head: its top sources, their destinations and outputs, score, count."""
  plt = experiment.pyplot()
  L, H = model.cfg.n_layers, model.cfg.n_heads
  ranked, counts, rank, head_lift = t["ranked"], t["counts"], t["rank"], t["head_lift"]
  heads = [(l, h) for l in range(L) for h in range(H)]
  cols = 2 if len(heads) > 1 else 1
  rows = -(-len(heads) // cols)
  n = config.sources_per_head
  fig, axes = plt.subplots(rows, cols, figsize=(8.5 * cols, 0.24 * (n + 2) * rows + 1.0),
                           squeeze=False)
  tok = lambda i: experiment.show_token(model.token_strings([i])[0], 9)
  for ax, (l, h) in zip(axes.ravel(), heads):
    ax.axis("off")
    ax.set_xlim(0, 1); ax.set_ylim(n + 0.5, -1.2)
    ax.text(0, -0.9, f"L{l}H{h}  copying: own-logit column rank {rank[l, h]:.2f}  ·  "
            f"dest-after-source lift {head_lift[l, h]:.1f}", fontsize=8, weight="bold")
    ax.text(0.0, 0, "source", fontsize=7, color="#666")
    ax.text(0.14, 0, "… destinations (QK)", fontsize=7, color="#2471a3")
    ax.text(0.52, 0, "→ outputs (OV)", fontsize=7, color="#c0392b")
    ax.text(0.9, 0, "score  count", fontsize=7, color="#666")
    for r in range(n):
      y = r + 1
      ax.text(0.0, y, tok(ranked["source"][l, h, r]), fontsize=7, family="monospace")
      ax.text(0.14, y, "  ".join(tok(d) for d in ranked["dest"][l, h, r]), fontsize=7,
              family="monospace", color="#1a5276")
      ax.text(0.52, y, "  ".join(tok(o) for o in ranked["out"][l, h, r]), fontsize=7,
              family="monospace", color="#922b21")
      ax.text(0.9, y, f"{ranked['score'][l, h, r]:4.1f}  {counts[l, h, r]}", fontsize=7,
              family="monospace")
  for ax in axes.ravel()[len(heads):]:
    ax.axis("off")
  fig.suptitle(f"{label}: strongest skip-trigrams 'source … destination → output' per head, "
               "score = z(QK) + z(OV); count = occurrences in the training text.\nFW's English "
               "examples (keep … in mind / at bay, and the bug keep … in bay) cannot occur on a "
               f"Python corpus; code analogues of the bug found: {len(t['bugs'])}", fontsize=9)
  experiment.save_figure(fig, outdir, picture)


def claims_of(config, label, model, t) -> list:
  """FW §4: most heads copy, destinations plausibly follow sources, the factored form's bugs."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  rank, init_rank, head_lift, bugs = t["rank"], t["init_rank"], t["head_lift"], t["bugs"]
  claim = lambda what, **kw: experiment.claim(figure="skip_trigrams", what=what, model=label,
                                              **kw)
  copying = int((rank >= config.copy_rank).sum())
  plausible = int((head_lift >= config.min_lift).sum())
  tok = lambda i: experiment.show_token(model.token_strings([i])[0], 24)
  examples = "; ".join(
      f"{b['head']}: {tok(b['source'])} … {tok(b['d1'])} → {tok(b['o1'])} (seen "
      f"{b['seen_d1_o1']}×) and … {tok(b['d2'])} → {tok(b['o2'])} ({b['seen_d2_o2']}×), but "
      f"… {tok(b['d1'])} → {tok(b['o2'])} never" for b in bugs[:3])
  return [
      claim("most_heads_copy",
            statement=f"{label}: most heads copy — attending to a token raises that same token",
            source="FW §4 (figs 10, 14)",
            criterion=f"heads whose median (over {len(t['allowed'])} tokens seen ≥ "
            f"{config.min_count} times) rank of a token's own logit within its OV column is ≥ "
            f"{config.copy_rank} are a majority",
            measured=f"{copying} of {L * H} heads; per head: "
            f"{', '.join(f'{x:.2f}' for x in rank.ravel())}; random init ({t['init_source']}): "
            f"{init_rank.min():.2f} … {init_rank.max():.2f}",
            value={"rank": rank, "random_init": init_rank}, holds=copying * 2 > L * H),
      claim("destinations_follow_sources",
            statement=f"{label}: the destinations that attend to a source are tokens that "
            "plausibly follow it", source="FW §4",
            criterion=f"per head, the median over its top {config.sources_per_head} trigrams of "
            f"how much more often the source is within {config.window} tokens before the best "
            f"destination than before a random position is ≥ {config.min_lift}, for a majority "
            "of heads",
            measured=f"{plausible} of {L * H} heads; median lift per head: "
            f"{', '.join(f'{x:.1f}' for x in head_lift.ravel())}", value={"lift": head_lift},
            holds=plausible * 2 > L * H),
      claim("factored_form_bug",
            statement=f"{label}: the factored form makes skip-trigram bugs: a head that learned "
            "s … d1 → o1 and s … d2 → o2 also raises s … d1 → o2 (FW's English 'keep … in bay' "
            "cannot occur on Python code; this is the same pattern searched for on code)",
            source="FW §4 (skip-trigram bugs)",
            criterion=f"among each head's top {config.sources_per_head} sources and their top "
            f"{config.top_k} destinations and outputs, at least one s … d1 → o2 that never occurs "
            f"in {len(t['counter'].tokens):,} training tokens while s … d1 → o1 and s … d2 → o2 "
            f"each occur ≥ {config.min_seen} times; more of them than the same search finds in "
            "the random-init model's tables (its chance level)",
            measured=f"{len(bugs)} found (random init: {len(t['init_bugs'])})"
            + (f", e.g. {examples}" if bugs else ""),
            value={"found": len(bugs), "random_init": len(t["init_bugs"])},
            holds=len(bugs) > len(t["init_bugs"]))]


def run(config, models, outdir):
  claims = []
  for label, model in models.items():
    model.need_layers(1, "skip_trigrams")
    experiment.require_tokens(model, "skip_trigrams")
    found = skip_trigrams(config, model)
    write_numbers(config, outdir, label, model, found)
    plot_heads(config, label, model, found, outdir,
               "skip_trigrams" if len(models) == 1 else f"skip_trigrams_{label}")
    claims.extend(claims_of(config, label, model, found))
  return claims
