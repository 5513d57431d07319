"""Induction heads in action: attention on repeated random tokens and on real text (FW, 'Induction Heads').

On BOS + 20 random tokens repeated 3 times an induction head attends from each repeated token to
the token after its previous copy: a stripe at offset −(20 − 1).  Patterns are value-weighted as
in FW: A_ij · ‖x_j W_V W_O‖ (what the head would write from source j), drawn on one scale per
head (its largest entry on that sequence = 1, the value printed in its title), never per row:
a head that rests on BOS with a small BOS value reads as faint, not as a solid BOS column.
The per-position loss drops once the sequence repeats.  An interactive HTML view (no
network needed) shows every head on both sequences.

Claims: the stripe belongs to a head of a layer ≥ 1 (a layer-0 head cannot know what followed an
earlier copy); and the loss on the repeats is below the model's own loss on the first copy (it
predicts the repeats from context) and below the one-layer model's loss on the same repeats (one
layer cannot form induction heads, IH; FW: the one-layer model's copying relies on learned
statistics of which token can follow which).  The papers give no number for it; until issue 32
the repeats also had to be below log(n), the project's own anchor (a model knowing only that the
next token is one of the sequence's n tokens), which is still drawn.
"""

import html
import re
from pathlib import Path
from typing import Optional

import numpy as np

from reproduce.core import scores
from reproduce.core.model import forward, token_losses
from reproduce.figure.claims import claim
from reproduce.figure.outputs import script_json, write_json
from reproduce.figure.plotting import colorbar, head_grid, pyplot, save_figure, show_token
from reproduce.figure.roles import HeadRoles, head_roles
from reproduce.figure.sources import require_tokens

DESCRIPTION = "Every head on repeated random tokens and on text (value-weighted), interactive HTML, loss per position"
ORDER = 70  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_IH_INDUCTION_HEADS = ("FW, 'Two-Layer Attention-Only Transformers' → 'Induction Heads'; IH, "
                         "'Key Concepts' → 'Induction Heads'")
FW_INDUCTION_HEADS = "FW, 'Two-Layer Attention-Only Transformers' → 'Induction Heads'"


def value_weighted(model, tokens):
  """Raw and value-weighted patterns [L, B, H, T, T] (value weighting: A_ij·‖x_j W_V W_O‖,
  unscaled: rows keep their magnitudes)."""
  w, cfg = model.weights, model.cfg
  _, ex = forward(cfg, w, tokens, return_patterns=True, return_head_outputs=True)
  patterns, outputs = np.asarray(ex["patterns"]), np.asarray(ex["head_outputs"])
  x = np.asarray(w.W_E)[tokens]
  if cfg.pos == "standard":
    x = x + np.asarray(w.W_pos)[: tokens.shape[1]]
  weighted = np.empty_like(patterns)
  for l in range(cfg.n_layers):
    values = np.einsum("btd,hde->bhte", x, np.asarray(w.W_V[l]), optimize=True)
    gram = np.asarray(w.W_O[l]) @ np.swapaxes(np.asarray(w.W_O[l]), -1, -2)  # [H, dh, dh]
    # ‖v W_O‖² = v (W_O W_Oᵀ) vᵀ: the d_model-wide writes are never formed (one unoptimised
    # three-way einsum over them took 2 minutes at d_model 512)
    norms = np.sqrt(np.maximum(np.einsum("bhte,hef,bhtf->bht", values, gram, values,
                                         optimize=True), 0))
    weighted[l] = patterns[l] * norms[:, :, None, :]
    x = x + outputs[l].sum(1)
  return patterns, weighted


def per_head_scale(weighted):
  """(scaled, scale): each head's value-weighted pattern of each sequence divided by its own
  largest entry, scale [L, B, H] (one number per head and sequence, the same for every row)."""
  scale = weighted.max(axis=(-1, -2))
  return weighted / np.maximum(scale, 1e-12)[..., None, None], scale


def _html(title, views, first_head: int, notes: str):
  """A standalone page: pick a sequence and a head (each button shows the head's scores), hover a
  token to shade the tokens it attends to, hover the map to read one entry.  Opens on
  ``first_head`` (index into every view's heads).

  The page is ``induction_attention.html`` with its {{NAME}} markers filled in one pass (what
  goes in is never searched for markers again): TITLE (escaped here), NOTES (already HTML),
  VIEWS (``views`` as script-safe JSON, ``outputs.script_json``) and FIRST_HEAD."""
  fill = {"TITLE": html.escape(title), "NOTES": notes,
          "VIEWS": script_json(views), "FIRST_HEAD": str(first_head)}
  page = Path(__file__).with_name("induction_attention.html").read_text(encoding="utf-8")
  return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: fill[m.group(1)], page)


def on_repeats(config, model) -> dict:
  """Patterns (raw and value-weighted), stripe scores (``scores.stripe_score``) and loss per
  position on BOS + n random tokens repeated (no text needed: a model without a tokenizer has
  these too)."""
  pool = model.sampling_pool()  # a small vocabulary's pool may hold fewer than config.length
  n = min(config.length, (model.cfg.n_ctx - 1) // config.repeats, len(pool))
  repeated = scores.repeated_sequences(pool, model.bos_id, n, config.repeats, config.samples)
  raw, weighted = value_weighted(model, repeated)
  weighted, scale = per_head_scale(weighted)
  logits, _ = forward(model.cfg, model.weights, repeated)
  losses = np.asarray(token_losses(logits[:, :-1], repeated[:, 1:])).mean(0)  # predicts t+1
  return {"n": n, "repeats": config.repeats, "repeated": repeated, "weighted": weighted,
          "losses": losses, "scale": {"repeated": scale},
          "stripe": np.asarray(scores.stripe_score(raw, n)),
          "first": losses[: n - 1].mean(), "later": losses[n:].mean(),
          "names": {"repeated": f"BOS + {n} random tokens × {config.repeats}"}}


def repeats_and_text(config, model) -> dict:
  """``on_repeats``, and value-weighted patterns on held-out text."""
  m = on_repeats(config, model)
  text = model.heldout_windows(1)[0][:, : min(config.text_tokens, model.cfg.n_ctx)]
  text_weighted, text_scale = per_head_scale(value_weighted(model, text)[1])
  m["scale"]["text"] = text_scale
  m["names"]["text"] = "held-out text"
  m.update(text=text, text_weighted=text_weighted)
  return m


def boundaries(m, key: str):
  """(position, name) of the ticks drawn on a sequence's maps: BOS, and on the repeated
  sequence where each copy after the first starts (copy r starts at 1 + (r − 1)·n)."""
  if key == "text":
    return [(0, "BOS")]
  return [(0, "BOS")] + [(1 + r * m["n"], f"copy {r + 1}") for r in range(1, m["repeats"])]


def write_page_and_numbers(config, label, model, m, outdir, page_name: str,
                           roles: Optional[HeadRoles] = None) -> None:
  """The interactive view of every head on both sequences (the repeats alone when ``m`` has no
  text), and the numbers.  The page opens on the strongest induction head (or on the head its
  address names after #, e.g. ``#L1H0``); each head's button shows its previous-token and
  prefix-matching scores (``head_roles``, the numbers every figure uses; ``roles`` when already
  measured) and its stripe score here."""
  L, H = model.cfg.n_layers, model.cfg.n_heads
  text_windows = 16
  if roles is None:
    roles = head_roles(model, config.min_induction, text_windows=text_windows)
  previous, induction, stripe = roles.previous_token, roles.induction, m["stripe"]
  heads = [f"L{l}H{h} · prev {previous[l, h]:.2f} · ind {induction[l, h]:.2f} · "
           f"stripe {stripe[l, h]:.2f}" for l in range(L) for h in range(H)]
  marked = (induction >= config.min_induction).ravel().tolist()
  views = []
  shown = [("repeated", m["repeated"][0], m["weighted"][:, 0])]
  if "text" in m:
    shown.append(("text", m["text"][0], m["text_weighted"][:, 0]))
  for key, toks, pats in shown:
    names = [show_token(t, 14) for t in model.token_strings(toks)]
    bos = int(toks[0]) == model.bos_id
    if bos:
      names[0] = "BOS"
    views.append({"name": m["names"][key], "heads": heads, "induction": marked,
                  "tokens": names, "bos": bos, "boundaries": boundaries(m, key),
                  "scale": np.round(m["scale"][key][:, 0].ravel(), 4).tolist(),
                  "patterns": np.round(pats.reshape(L * H, *pats.shape[-2:]), 3).tolist()})
  first = int(np.argmax(induction))
  below = ("" if induction.max() >= config.min_induction else
           f"; no head reaches the induction threshold {config.min_induction}")
  notes = (f"Value-weighted attention A_ij·‖x_j W_V W_O‖, on one scale per head (its largest "
           f"entry on the sequence = 1), never per row. Opens on the strongest induction head, "
           f"L{first // H}H{first % H} (ind {induction.max():.2f}{below}). {roles.probe}. "
           f"ind: IH's prefix-matching score; stripe: mean attention on the induction stripe "
           f"(offset −{m['n'] - 1}) of {m['names']['repeated']}, mean of {config.samples} "
           f"sequences (the first is shown).")
  (outdir / page_name).write_text(_html(f"{label}: attention patterns", views, first,
                                        html.escape(notes)))
  write_json(outdir / f"induction_{label}.json", {
      "stripe_scores": m["stripe"], "stripe_probe": m["names"]["repeated"],
      "loss_per_position": m["losses"], "length": m["n"],
      "repeats": config.repeats, "loss_first_occurrence": m["first"],
      "value_weighted_head_max": {key: v[:, 0] for key, v in m["scale"].items()},
      "previous_token_scores": previous, "prefix_matching_scores": induction,
      "head_roles_probe": roles.probe, "loss_repeats": m["later"]})


def plot_patterns(config, label, model, m, outdir, suffix: str) -> None:
  """One grid of every head's value-weighted pattern per sequence (repeated, text), each head on
  its own scale (its largest entry = 1; that entry's value in its title), one labelled colour
  bar; ticks at BOS and where each copy of the repeated sequence starts."""
  plt = pyplot()
  L, H, stripe = model.cfg.n_layers, model.cfg.n_heads, m["stripe"]
  rows, cols, cell = head_grid(L, H)
  for key, pats in (("repeated", m["weighted"][:, 0]), ("text", m["text_weighted"][:, 0])):
    scale = m["scale"][key][:, 0]  # [L, H]
    ticks = boundaries(m, key)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 1.0, 2.5 * rows + 0.7),
                             squeeze=False, layout="constrained")
    for ax in axes.ravel():
      ax.set_visible(False)
    for l in range(L):
      for h in range(H):
        ax = axes[cell(l, h)]
        ax.set_visible(True)
        image = ax.imshow(pats[l, h], cmap="Blues", vmin=0, vmax=1)
        positions, names = zip(*ticks)
        ax.set_xticks(positions, names, fontsize=6)
        ax.set_yticks(positions, names, fontsize=6)
        ax.tick_params(length=4, width=0.8)
        if cell(l, h)[1] == 0:
          ax.set_ylabel("destination", fontsize=7)
        ax.set_xlabel("source", fontsize=7, labelpad=1)
        extra = f" stripe {stripe[l, h]:.2f}" if key == "repeated" else ""
        ax.set_title(f"L{l}H{h}{extra}\nmax {scale[l, h]:.3g}", fontsize=8,
                     color="#c0392b" if stripe[l, h] >= config.min_induction else "black")
    colorbar(fig, image, axes, "A_ij·‖x_j W_V W_O‖ / the head's max", shrink=0.8)
    fig.suptitle(f"{label}: value-weighted attention on {m['names'][key]} (rows: destination, "
                 "columns: source; one scale per head, not per row)", fontsize=9)
    save_figure(fig, outdir, f"attention_{key}{suffix}")


def plot_loss(config, label, model, m, outdir, suffix: str) -> None:
  """Loss per position on the repeated random tokens, with log V (uniform over the vocabulary)
  and log n (uniform over the sequence's n distinct tokens) for reference."""
  plt = pyplot()
  n, losses = m["n"], m["losses"]
  fig, ax = plt.subplots(figsize=(8, 3.2))
  ax.plot(np.arange(1, len(losses) + 1), losses, color="#2e86c1", label="loss")
  log_v = float(np.log(model.cfg.d_vocab))
  ax.axhline(log_v, color="#7f8c8d", ls="--", lw=1,
             label=f"log V = {log_v:.2f}: uniform over the vocabulary")
  ax.axhline(np.log(n), color="#7d3c98", ls=":", lw=1,
             label=f"log n = {np.log(n):.2f}: uniform over the sequence's {n} tokens")
  for r in range(1, config.repeats):
    ax.axvline(r * n + 0.5, color="#c0392b", ls="--", lw=0.8)
  ax.set_xticks([1] + [r * n + 1 for r in range(1, config.repeats)],
                ["1"] + [f"{r * n + 1}\ncopy {r + 1}" for r in range(1, config.repeats)])
  ax.set_xlabel("position of the predicted token")
  ax.set_ylabel("loss (nats)")
  ax.set_ylim(0, max(float(np.max(losses)), log_v) * 1.08)
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)
  ax.set_title(f"{label}: loss on BOS + {n} random tokens × {config.repeats} (mean of "
               f"{config.samples}); first copy {m['first']:.2f}, repeats {m['later']:.2f} nats",
               fontsize=9)
  save_figure(fig, outdir, f"loss_per_position{suffix}")


STRIPE = ("FW, \"Two-Layer Attention-Only Transformers\" (induction heads on random tokens): on "
          "a sequence of uniformly random tokens repeated, induction heads attend from each token "
          "of a repeat to the token after its previous copy, an off-diagonal stripe: they work "
          "\"on totally random repeated patterns\"")
REPEATS = ("FW, \"Two-Layer Attention-Only Transformers\": induction heads \"repeat previous "
           "sequences of tokens\", even of random tokens, unlike the one-layer model's copying, "
           "which relies on learned statistics of which token can follow which; IH, \"Key "
           "Concepts\": so a two-layer model predicts the repeats of a random sequence")


def claims_of(config, label, m, one_layer) -> list:
  """The stripe in a layer ≥ 1, and the loss on the repeats below the first copy's and below
  ``one_layer`` (the 1L models' losses on the same repeats; empty: none was analysed, and the
  criterion says the comparison was not made).  From ``on_repeats``' numbers alone."""
  n, stripe, first, later = m["n"], m["stripe"], m["first"], m["later"]
  later_layers = stripe[1:]
  best = np.unravel_index(np.argmax(later_layers), later_layers.shape)
  best = (best[0] + 1, best[1])
  holds = later < first and (not one_layer or later < min(one_layer))
  return [
      claim(
          figure="induction_attention", what="stripe", model=label, paper_says=STRIPE,
          statement=f"{label}: a head of a layer ≥ 1 attends along the induction stripe on "
          "repeated random tokens", source=FW_INDUCTION_HEADS,
          criterion=f"max over heads of layers ≥ 1 of the mean attention on the stripe at offset "
          f"−{n - 1} ≥ {config.min_induction} (uniform attention over the repeat: 1/{n})",
          measured=f"best: L{best[0]}H{best[1]} with stripe score {stripe[best]:.2f} on "
          f"{m['names']['repeated']} (scores.stripe_score; its prefix-matching score is in "
          "induction_heads)", value=stripe,
          holds=stripe[best] >= config.min_induction),
      claim(
          figure="induction_attention", what="repeat_loss", model=label,
          paper_says=REPEATS,
          statement=f"{label}: the model predicts the repeats of a random sequence from context, "
          "better than a one-layer model can",
          source=FW_IH_INDUCTION_HEADS,
          criterion=f"on {m['names']['repeated']}: mean loss on the repeats < the same "
          "model's mean loss on the first copy"
          + (" and < the 1L model's loss on the same repeats" if one_layer else
             "; no one-layer model was analysed, so the comparison with one is not made"),
          measured=f"{later:.2f} nats on the repeats ({first:.2f} on the first copy); 1L model: "
          + (f"{min(one_layer):.2f}" if one_layer else "not analysed"),
          value={"repeats": later, "first": first, "log_n": float(np.log(n)),
                 "one_layer": min(one_layer) if one_layer else None}, holds=holds)]


def run(config, models, outdir):
  claims, repeat_loss = [], {}
  for label, model in models.items():
    model.need_layers(1, "induction_attention")
    require_tokens(model, "induction_attention")
    m = repeats_and_text(config, model)
    repeat_loss[label] = (model.cfg.n_layers, float(m["later"]))
    single = len(models) == 1
    write_page_and_numbers(config, label, model, m, outdir, "induction_attention.html" if single
                           else f"induction_attention_{label}.html")
    plot_patterns(config, label, model, m, outdir, "" if single else f"_{label}")
    plot_loss(config, label, model, m, outdir, "" if single else f"_{label}")
    if model.cfg.n_layers >= 2:
      one_layer = [loss for layers, loss in repeat_loss.values() if layers == 1]
      claims.extend(claims_of(config, label, m, one_layer))
  return claims
