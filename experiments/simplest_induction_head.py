"""FW's simplest induction head, built by hand and measured as a trained model would be (FW,
'Two-Layer Attention-Only Transformers' → 'How Induction Heads Work').

``known_circuits.simplest_induction_model``: a layer-0 head that attends to the previous position
by positions alone and writes the attended token into a block of the residual stream that W_U
does not read ("my previous token was A"), and a layer-1 head whose query reads the current token
and whose key reads that block (K-composition): it attends to the token after an earlier copy of
the current one and copies it to the logits; with no earlier copy it rests on BOS, whose value is
zero.  Nothing is trained and no checkpoint is read: the figure shows the mechanism the other
figures look for in trained models, measured with the same functions.

On BOS + n random tokens + the same n again: each head's attention, the loss per position, the
stripe and previous-token scores; from the weights: Q/K/V composition of the two heads against
the random baseline, the induction head's full-OV positivity and the positivity of its QK term
K-composed with the previous-token head (ov_qk_scatter's axes).  ``measure`` and ``verdicts``
take any ``KnownModel`` of the same layout, so a broken construction can be shown to fail.
"""

import dataclasses

import jax
import numpy as np

from reproduce.core import circuits, scores
from reproduce.core.known_circuits import KnownModel, simplest_induction_model
from reproduce.core.model import forward, token_losses
from reproduce.figure.claims import claim
from reproduce.figure.outputs import write_json
from reproduce.figure.plotting import colorbar, pyplot, save_figure

DESCRIPTION = ("FW's simplest induction head built by hand: attention, loss on a repeat, "
               "K-composition and OV/QK positivity")
ORDER = 125  # place in the batch job and index.html (reproduce.figure.runner.figure_names)
FIGURE = "simplest_induction_head"
# Where the papers say what the claims test: section names, which every copy of the papers
# carries (figure numbers are not in their text versions).
FW_HOW = ("FW, 'Two-Layer Attention-Only Transformers' → 'Induction Heads' → 'How Induction "
          "Heads Work'")
FW_CHECKING_THEORY = ("FW, 'Two-Layer Attention-Only Transformers' → 'Induction Heads' → "
                      "'Checking the Mechanistic Theory'")
MECHANISM = ("FW, \"How Induction Heads Work\": in an induction head the key \"is computed from "
             "tokens shifted one token back\", which a \"previous token head\" does by "
             "K-composition; the query then finds the token after an earlier copy of the "
             "current token and the OV copies it, so [A][B] … [A] → [B]: the second copy of a "
             "repeated sequence is predicted")
CORNER = ("FW, \"Checking the Mechanistic Theory\" (the OV/QK positivity scatter): with the "
          "eigenvalue positivity of the OV circuit and of the K-composed QK term as coordinates, "
          "\"all the induction heads turn out to be in an extreme right hand corner\" (both "
          "near 1)")
PREVIOUS, INDUCTION = (0, 0), (1, 0)  # the two heads of the construction


def probe(known: KnownModel, config) -> np.ndarray:
  """BOS + ``config.length`` distinct random tokens, then the same again: [samples, 1 + 2n],
  tokens uniform over every id but BOS."""
  pool = np.array([t for t in range(known.cfg.d_vocab) if t != known.bos_id])
  return scores.repeated_sequences(pool, known.bos_id, config.length, 2, config.samples,
                                   config.seed)


def measure(known: KnownModel, config) -> dict:
  """Every number of the figure for ``known`` (2 layers, the previous-token head L0H0 and the
  induction head L1H0): patterns and losses on the probe, composition, positivities."""
  cfg, w, n = known.cfg, known.weights, config.length
  tokens = probe(known, config)
  logits, extras = forward(cfg, w, tokens, return_patterns=True)
  patterns = np.asarray(extras["patterns"], np.float64)  # [L, B, H, T, T]
  losses = np.asarray(token_losses(logits[:, :-1], tokens[:, 1:]), np.float64)  # target t + 1
  per_target = losses.mean(0)  # [2n], entry k: predicting target k + 1
  (l0, h0), (l1, h1) = PREVIOUS, INDUCTION
  comp = {kind: float(np.asarray(circuits.composition_scores(w, kind))[l0, h0, l1, h1])
          for kind in circuits.COMPOSITION_KINDS}
  baseline = circuits.composition_baseline(w, jax.random.key(config.baseline_seed),
                                           config.baseline_samples)
  ov = circuits.positivity(circuits.ov_eigenvalues(w))
  k_qk = circuits.positivity(circuits.k_composition_qk_eigenvalues(w, l0, h0))
  first_occurrence = scores.first_occurrences(tokens)
  return {
      "model": known.name, "description": known.description,
      "probe": f"BOS + {n} random tokens × 2 ({config.samples} samples, tokens uniform over the "
               f"{cfg.d_vocab - 1} ids but BOS {known.bos_id})",
      "length": n, "log_vocab": float(np.log(cfg.d_vocab)),
      # tokens the induction head can match (all but BOS): a perfect K-composition of rank-k
      # maps with equal singular values scores 1/sqrt(k) (drawn beside the scores)
      "matched_tokens": cfg.d_vocab - 1,
      "loss_per_target": per_target,  # index k: the loss predicting position k + 1
      "first_copy_loss": float(per_target[:n].mean()),  # targets 1 … n
      "unpredictable_loss": float(per_target[n]),  # target n + 1: its predecessor is new
      "second_copy_loss": float(per_target[n + 1:].mean()),  # targets n + 2 … 2n
      "previous_token_score": float(scores.previous_token_score(patterns)[l0, h0]),
      "stripe_score": float(scores.stripe_score(patterns, n)[l1, h1]),
      "bos_attention_first_occurrences": float(
          scores.bos_attention(patterns, first_occurrence)[l1, h1]),
      "composition": comp, "composition_baseline": float(baseline),
      "ov_positivity": float(ov[l1, h1]), "k_composition_qk_positivity": float(k_qk[l1, h1]),
      "patterns": {"L0H0": patterns[l0, 0, h0], "L1H0": patterns[l1, 0, h1]},  # sample 0
      "tokens": tokens[0],
  }


def verdicts(m: dict, config) -> list:
  """The figure's claims from ``measure``'s numbers."""
  n, log_v = m["length"], m["log_vocab"]
  comp, base = m["composition"], m["composition_baseline"]
  loss_holds = (m["second_copy_loss"] < config.repeat_loss_below
                and abs(m["first_copy_loss"] - log_v) <= config.first_copy_within)
  near = config.near_one
  return [
      claim(
          figure=FIGURE, what="second_copy_predicted", model=None, paper_says=MECHANISM,
          statement="the hand-built induction head predicts the second copy of random tokens, "
          "while the first copy stays at a uniform guess", source=FW_HOW,
          criterion=f"on BOS + {n} random tokens × 2: mean loss on targets n + 2 … 2n (each "
          f"predicted from a token with an earlier copy) < {config.repeat_loss_below} nats, and "
          f"the first copy's (targets 1 … n) within {config.first_copy_within} of log vocab = "
          f"{log_v:.2f}",
          measured=f"second copy {m['second_copy_loss']:.4f} nats, first copy "
          f"{m['first_copy_loss']:.3f} (log vocab {log_v:.3f}); target n + 1, whose "
          f"predecessor has no earlier copy, {m['unpredictable_loss']:.3f}",
          value={"second_copy": m["second_copy_loss"], "first_copy": m["first_copy_loss"],
                 "log_vocab": log_v, "target_n_plus_1": m["unpredictable_loss"]},
          holds=loss_holds),
      claim(
          figure=FIGURE, what="previous_token_head", model=None, paper_says=MECHANISM,
          statement="the layer-0 head attends to the previous token", source=FW_HOW,
          criterion=f"previous-token score of L0H0 (mean A[i, i − 1], i ≥ 2, "
          f"scores.previous_token_score) ≥ {config.min_previous}",
          measured=f"{m['previous_token_score']:.4f}", value=m["previous_token_score"],
          holds=m["previous_token_score"] >= config.min_previous),
      claim(
          figure=FIGURE, what="induction_stripe", model=None, paper_says=MECHANISM,
          statement="the layer-1 head attends to the token after the earlier copy of the "
          "current token", source=FW_HOW,
          criterion=f"stripe score of L1H0 (mean A[i, i − {n - 1}] over the second copy, "
          f"scores.stripe_score) ≥ {config.min_stripe}",
          measured=f"{m['stripe_score']:.4f}", value=m["stripe_score"],
          holds=m["stripe_score"] >= config.min_stripe),
      claim(
          figure=FIGURE, what="k_composition", model=None, paper_says=MECHANISM,
          statement="the induction head's key reads what the previous-token head writes "
          "(K-composition)", source=FW_HOW,
          criterion=f"K-composition L0H0 → L1H0 (circuits.composition_scores) ≥ "
          f"{config.k_over_baseline} × the random baseline (circuits.composition_baseline, "
          f"{config.baseline_samples} samples)",
          measured=f"K {comp['k']:.4f}, baseline {base:.4f} ({comp['k'] / base:.2f}×)",
          value={"k": comp["k"], "baseline": base},
          holds=comp["k"] >= config.k_over_baseline * base),
      claim(
          figure=FIGURE, what="only_k_composition", model=None, kind="control",
          statement="the induction head reads the previous-token head through its key only: "
          "Q- and V-composition near zero (a check that the scores tell the three kinds apart)",
          source="control: specificity of the composition scores",
          criterion=f"Q- and V-composition L0H0 → L1H0 < {config.qv_below_baseline} × the "
          "random baseline",
          measured=f"Q {comp['q']:.4f}, V {comp['v']:.4f}, baseline {base:.4f}",
          value={"q": comp["q"], "v": comp["v"], "baseline": base},
          holds=max(comp["q"], comp["v"]) < config.qv_below_baseline * base),
      claim(
          figure=FIGURE, what="ov_qk_corner", model=None, paper_says=CORNER,
          statement="the induction head sits in the top right corner of ov_qk_scatter: its OV "
          "copies and its K-composed QK term matches same tokens", source=FW_CHECKING_THEORY,
          criterion=f"full-OV positivity of L1H0 and positivity of its QK term K-composed with "
          f"L0H0 (circuits.k_composition_qk_eigenvalues) both ≥ {near}",
          measured=f"OV {m['ov_positivity']:+.4f}, K-composed QK "
          f"{m['k_composition_qk_positivity']:+.4f}",
          value={"ov": m["ov_positivity"], "k_composition_qk": m["k_composition_qk_positivity"]},
          holds=m["ov_positivity"] >= near and m["k_composition_qk_positivity"] >= near),
      claim(
          figure=FIGURE, what="rests_on_bos", model=None, kind="control",
          statement="where the current token has no earlier copy (the first copy) the induction "
          "head rests on BOS, whose value writes nothing", source="control: the construction's "
          "default when nothing matches",
          criterion=f"mean attention of L1H0 on BOS from first occurrences "
          f"(scores.bos_attention) ≥ {config.min_bos}",
          measured=f"{m['bos_attention_first_occurrences']:.4f}",
          value=m["bos_attention_first_occurrences"],
          holds=m["bos_attention_first_occurrences"] >= config.min_bos),
  ]


def plot(m: dict, outdir) -> None:
  """Both heads' attention on the first sequence, the loss per position and the composition
  scores against the random baseline."""
  plt = pyplot()
  n = m["length"]
  fig, axes = plt.subplots(2, 2, figsize=(10.5, 9.2))
  for ax, (name, title) in zip(axes[0], (
      ("L0H0", "L0H0, previous-token head\n(QK from positions: i attends to i − 1)"),
      ("L1H0", "L1H0, induction head\n(key reads L0H0's output: the token after the earlier "
               "copy; none yet: BOS)"))):
    image = ax.imshow(m["patterns"][name], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    for edge in (0.5, n + 0.5):
      ax.axhline(edge, color="#c0392b", lw=0.6, ls=":")
      ax.axvline(edge, color="#c0392b", lw=0.6, ls=":")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("source position (0 = BOS; dotted: copies start)")
    ax.set_ylabel("destination position")
    colorbar(fig, image, ax, "attention", fraction=0.046, pad=0.03)
  ax = axes[1, 0]
  loss = np.asarray(m["loss_per_target"])
  targets = np.arange(1, len(loss) + 1)
  ax.axvspan(0.5, n + 0.5, color="#eee", lw=0, label="first copy")
  ax.plot(targets, loss, "o-", ms=3, color="#2c3e50", label="loss")
  ax.axhline(m["log_vocab"], color="#7f8c8d", ls="--", lw=0.8, label="log vocab (uniform guess)")
  ax.set_xlabel("target position")
  ax.set_ylabel("next-token loss (nats), mean over sequences")
  ax.set_title(f"loss: first copy {m['first_copy_loss']:.2f}, second copy "
               f"{m['second_copy_loss']:.3f} nats\n(target n + 1 = {n + 1}: its predecessor has "
               "no earlier copy)", fontsize=9)
  ax.legend(fontsize=7, loc="center right")
  ax = axes[1, 1]
  kinds = ("q", "k", "v")
  values = [m["composition"][k] for k in kinds]
  bars = ax.bar([f"{k.upper()}-composition" for k in kinds], values,
                color=["#95a5a6", "#c0392b", "#95a5a6"])
  ax.axhline(m["composition_baseline"], color="#2c3e50", ls="--", lw=0.8,
             label=f"random baseline {m['composition_baseline']:.3f}")
  matched = m["matched_tokens"]
  ax.axhline(1 / np.sqrt(matched), color="#c0392b", ls=":", lw=0.8,
             label=f"1/sqrt({matched}) = {1 / np.sqrt(matched):.3f}: a perfect match of "
                   f"{matched} tokens")
  for bar, v in zip(bars, values):
    ax.annotate(f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 3),
                textcoords="offset points", ha="center", fontsize=8)
  ax.set_ylim(0, max(max(values), m["composition_baseline"], 1 / np.sqrt(matched)) * 1.35)
  ax.set_ylabel("composition score L0H0 → L1H0")
  ax.set_title(f"composition with the previous-token head\nOV positivity "
               f"{m['ov_positivity']:+.2f}, K-composed QK positivity "
               f"{m['k_composition_qk_positivity']:+.2f}", fontsize=9)
  ax.legend(fontsize=7, loc="upper right")
  fig.suptitle(f"FW's simplest induction head, built by hand, on {m['probe']}", fontsize=10)
  fig.tight_layout()
  save_figure(fig, outdir, FIGURE)


def run(config, models, outdir):
  known = simplest_induction_model(config.d_vocab, config.n_ctx)
  ignored = sorted(models)
  if ignored:
    print(f"{FIGURE}: analyses a model built by hand; ignoring {', '.join(ignored)}")
  m = measure(known, config)
  plot(m, outdir)
  roles = {f"L{l}H{h}": sorted(r) for (l, h), r in known.roles.items()}
  write_json(outdir / f"{FIGURE}.json", {
      **{k: v for k, v in m.items() if k != "patterns"}, "roles_by_construction": roles,
      "architecture": dataclasses.asdict(known.cfg), "ignored_models": ignored})
  return verdicts(m, config)
