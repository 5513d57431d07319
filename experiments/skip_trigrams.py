"""One layer: skip-trigrams "src … dest → out" read off the QK and OV circuits (FW §4).

For a source token, a head's QK column W_E W_QK W_Eᵀ[:, src] ranks the destination tokens that
attend to it, and its OV row W_E[src] W_OV W_U ranks the outputs that attending to it raises.
Both come from the factored circuits (one column or row each), never a vocab × vocab matrix.
"""

import numpy as np

from reproduce import circuits, experiment

DESCRIPTION = "1L skip-trigrams: per head, top destination (QK) and output (OV) tokens per source"


def own_output_percentile(weights, sources, chunk: int = 25):
  """[L, H, n_sources]: where each source's own logit ranks in its OV row W_E[src] W_OV W_U, as
  the fraction of the vocabulary below it (0.5 for a random head, 1 when it raises itself most)."""
  ov = circuits.ov_circuit(weights, full=True)
  out = []
  for start in range(0, len(sources), chunk):
    src = np.asarray(sources[start:start + chunk])
    rows = np.asarray(ov.rows(src))  # [L, H, chunk, vocab]
    own = np.take_along_axis(rows, src[None, None, :, None], axis=-1)
    out.append((rows < own).mean(-1))
  return np.concatenate(out, axis=-1)


def run(config, models, outdir):
  plt = experiment.pyplot()
  claims = []
  for label, model in models.items():
    model.need_layers(1, "skip_trigrams")
    experiment.require_tokens(model, "skip_trigrams")
    shown = [t for t in (model.token_id(s) for s in config.sources) if t is not None]
    pool = model.sampling_pool()
    if not shown:
      shown = list(pool[:4])
    trigrams = {k: np.asarray(v) for k, v in
                circuits.skip_trigrams(model.weights, shown, k=config.top_k).items()}
    rng = np.random.default_rng(0)
    sample = rng.choice(pool, size=min(config.copy_sources, len(pool)), replace=False)
    percentile = np.median(own_output_percentile(model.weights, sample), axis=-1)  # [L, H]
    L, H = model.cfg.n_layers, model.cfg.n_heads
    records = []
    for i, src in enumerate(shown):
      for l in range(L):
        for h in range(H):
          records.append({"source": model.token_strings([src])[0], "head": f"L{l}H{h}",
                          "dest": model.token_strings(trigrams["dest_tokens"][l, h, i]),
                          "dest_scores": trigrams["dest_scores"][l, h, i],
                          "out": model.token_strings(trigrams["out_tokens"][l, h, i]),
                          "out_logits": trigrams["out_logits"][l, h, i]})
    experiment.write_json(outdir / f"skip_trigrams_{label}.json",
                          {"trigrams": records, "own_output_median_percentile": percentile})

    heads = [(l, h) for l in range(L) for h in range(H)]
    fig, axes = plt.subplots(len(shown), 1, figsize=(13, 0.32 * len(heads) * len(shown) + 1.2),
                             squeeze=False)
    cmap_dest, cmap_out = plt.get_cmap("Blues"), plt.get_cmap("Reds")
    for i, (ax, src) in enumerate(zip(axes[:, 0], shown)):
      ax.axis("off")
      ax.set_xlim(0, 1)
      ax.set_ylim(len(heads) + 0.5, -1)
      ax.set_title(f"source token {experiment.show_token(model.token_strings([src])[0], 16)!r}: "
                   "destinations that attend to it (QK, blue) → outputs it raises (OV, red)",
                   loc="left")
      for row, (l, h) in enumerate(heads):
        ax.text(0.0, row, f"L{l}H{h}  self-rank {percentile[l, h]:.2f}", va="center", fontsize=7)
        for kind, x0, cmap in (("dest", 0.13, cmap_dest), ("out", 0.57, cmap_out)):
          values = trigrams["dest_scores" if kind == "dest" else "out_logits"][l, h, i]
          tokens = trigrams[f"{kind}_tokens"][l, h, i]
          span = values.max() - values.min() + 1e-9
          for j, (tok, v) in enumerate(zip(model.token_strings(tokens), values)):
            strength = 0.25 + 0.75 * (v - values.min()) / span
            ax.text(x0 + j * 0.072, row, experiment.show_token(tok, 9), va="center", fontsize=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc=cmap(strength * 0.8), ec="none"),
                    color="white" if strength > 0.7 else "black")
    experiment.save_figure(fig, outdir, "skip_trigrams" if len(models) == 1
                           else f"skip_trigrams_{label}")

    copying_heads = int((percentile >= config.copy_percentile).sum())
    claims.append(experiment.claim(
        f"skip_trigrams.copying_{label}",
        f"{label}: most heads copy — attending to a token raises that same token above most of "
        f"the vocabulary (median rank of its own logit ≥ {config.copy_percentile})",
        "FW figs 10, 11, 14",
        f"more than half the heads have median own-logit rank ≥ {config.copy_percentile}",
        f"{copying_heads} of {L * H} heads; median own-logit rank per head over "
        f"{len(sample)} middle-frequency sources: "
        f"{', '.join(f'{x:.2f}' for x in percentile.ravel())} (random head: 0.5)",
        percentile, copying_heads * 2 > L * H))
  return claims
