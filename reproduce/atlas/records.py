"""The atlas's records: what ``measure`` found, as plain JSON-able dicts (``atlas.json``), with
each head's roles decided and its consistency checks made (docs/METHODS.md, "Atlas").

A number is ``{"value": v, "baseline": b}``: b is the same measure of the same head at the
model's random init (``sources.initial_weights``: the earliest training snapshot, or a fresh init
of the same shapes).  Where a value cannot be measured it is null with ``"undefined": reason``
(``baseline_undefined`` likewise): no NaN reaches a record.

Roles (thresholds in configs/atlas.py), each with the criterion that decided it:

- ``inactive``: ‖W_V W_O‖_F ≤ inactive_ratio × the largest head's: it writes nothing (and then
  takes no other role);
- ``previous_token``: previous-token score ≥ role_threshold;
- ``induction``: prefix-matching score ≥ role_threshold, layer ≥ 1;
- ``copying``: full-OV positivity ≥ max(copying_threshold, the largest at random init);
- ``positional``: shortformer models only: mean total-variation distance between the head's
  pattern and its positional-only pattern ≤ positional_max_tv;
- ``unlabelled``: none of these.

Consistency checks (``CHECKS``): where what the weights say and what the head does disagree.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np

from reproduce.atlas.measure import (NO_TOKENIZER, Measured, measure_model, positional_terms,
                                     separable_qk)
from reproduce.config import project_module
from reproduce.core import circuits

head_ablations = project_module("experiments", "head_ablations")

ROLES = ("inactive", "previous_token", "induction", "copying", "positional")

# Per-head scores: key → (short name for the table, what it is and which function measures it)
SCORES = {
    "ov_positivity": ("OV+", "full-OV eigenvalue positivity Re Σλ / Σ|λ| of W_E W_OV W_U "
                      "(circuits.ov_eigenvalues, circuits.positivity; +1 copies)"),
    "qk_positivity": ("QK+", "full-QK eigenvalue positivity of W_E W_QK W_Eᵀ "
                      "(circuits.qk_eigenvalues; + attends to tokens like its own)"),
    "previous_token": ("prev", "previous-token score: mean A[i, i−1], i ≥ 2 (roles.head_roles)"),
    "prefix_matching": ("prefix", "IH's prefix-matching score on BOS + 25 random tokens × 4 "
                        "(scores.prefix_matching_score)"),
    "copying": ("copy", "IH's copying score on the same probe (scores.copying_score; undefined "
                "where the head rests on BOS)"),
    "stripe": ("stripe", "induction-stripe score on BOS + 20 random tokens × 3 "
               "(scores.stripe_score, as induction_attention measures it)"),
    "bos_probe": ("BOS", "attention on BOS from first occurrences in repeated random tokens "
                  "(scores.bos_attention with scores.first_occurrences, as induction_heads)"),
    "bos_text": ("BOS text", "attention on BOS from first occurrences in held-out text "
                 "(induction_heads' windows)"),
    "kcomp_qk_positivity": ("K-QK+", "positivity of the K-composition QK term W_E W_QK "
                            "(W_E W_OV^prev)ᵀ with the strongest earlier previous-token head "
                            "(ov_qk_scatter.scatter_coordinates)"),
    "positional_tv": ("pos TV", "mean total-variation distance between the head's pattern and "
                      "its positional-only pattern (circuits.positional_attention)"),
    "qk_position_share": ("QK pos", "share of the variance of its attention scores (within a "
                          "row) carried by the position–position term"),
    "qk_cross_share": ("QK cross", "… by the token–position cross terms"),
    "qk_content_share": ("QK content", "… by the content term (tokens and earlier heads' "
                         "writes)"),
    "ov_norm_ratio": ("‖OV‖", "‖W_V W_O‖_F over the largest head's"),
    "ablation_icl_removed": ("ICL removed", "share of the ICL score its zero-ablation removes, "
                             "1 − ablated/unablated (head_ablations' bookkeeping)"),
    "ablation_icl": ("ICL ablated", "the ICL score with the head zero-ablated (nats)"),
    "ablation_loss_change": ("Δloss", "held-out loss with the head zero-ablated minus without "
                             "(nats)"),
}

CHECKS = {
    "induction_weights_vs_behaviour": (
        "The weights say induction and the behaviour does not, or the reverse: a head of a "
        "layer ≥ 1 in the induction corner of ov_qk_scatter (full-OV positivity and K-composition "
        "QK positivity with the strongest earlier previous-token head both ≥ {corner}) whose "
        "prefix-matching score is below {threshold}; or an induction head (prefix matching ≥ "
        "{threshold}) with either positivity below 0.5 (not even in the upper right)."),
    "induction_reads_previous_token": (
        "An induction head's strongest K-composition partner among the earlier heads is not a "
        "previous-token head (previous-token score < {threshold}): FW's mechanism has the "
        "induction head's key read what a previous-token head wrote."),
    "previous_token_is_read": (
        "A previous-token head (score ≥ {threshold}) below the last layer that no later head "
        "K-composes with above chance: its strongest K-composition reader (score minus the "
        "composition baseline) is not above the largest of any head pair at random init."),
}


def finite(x) -> Optional[float]:
  """``x`` as a float, or None when it is NaN or infinite (no NaN reaches a record)."""
  if x is None:
    return None
  x = float(x)
  return x if math.isfinite(x) else None


def number(value, baseline=None, undefined: str = "", baseline_undefined: str = "") -> dict:
  """``{"value", "baseline"}`` with null and a reason where either is not a finite number."""
  out = {"value": finite(value), "baseline": finite(baseline)}
  if out["value"] is None:
    out["undefined"] = undefined or "not a finite number"
  if out["baseline"] is None:
    out["baseline_undefined"] = baseline_undefined or undefined or "not a finite number"
  return out


def name(l: int, h: int) -> str:
  return f"L{l}H{h}"


def _head_values(m: Measured, scores: dict, ablated: Optional[dict]) -> Dict[str, np.ndarray]:
  """The [L, H] arrays of ``SCORES`` from one set of weights' measurements."""
  L, H = m.model.cfg.n_layers, m.model.cfg.n_heads
  nan = np.full((L, H), np.nan)
  norms = np.asarray(scores["ov_norm"], np.float64)
  out = {k: np.asarray(scores[k], np.float64) for k in
         ("ov_positivity", "qk_positivity", "previous_token", "prefix_matching", "copying",
          "stripe", "bos_probe", "bos_text", "kcomp_qk_positivity", "positional_tv")}
  out["ov_norm_ratio"] = norms / norms.max() if norms.max() > 0 else np.zeros((L, H))
  shares = scores.get("qk_shares")
  for k in ("position", "cross", "content"):
    out[f"qk_{k}_share"] = nan if shares is None else shares[k]
  if ablated is None:
    for k in ("ablation_icl_removed", "ablation_icl", "ablation_loss_change"):
      out[k] = nan
  else:
    base = ablated["base_icl"]
    significant = abs(base["score"]) >= 2 * base["standard_error"]
    out["ablation_icl"] = ablated["icl"]
    out["ablation_icl_removed"] = np.vectorize(
        lambda a: head_ablations.share_removed(base["score"], a) if significant else np.nan)(
            ablated["icl"])
    out["ablation_loss_change"] = ablated["loss"] - ablated["base_loss"]
  return out


def _undefined(m: Measured, key: str, l: int, h: int, which: str) -> str:
  """Why score ``key`` of head (l, h) is undefined on the ``which`` ("trained"/"init")
  weights."""
  model = m.model
  scores = m.trained if which == "trained" else m.init
  ablated = m.ablated if which == "trained" else m.init_ablated
  if key in ("bos_text",) or key.startswith("ablation_"):
    if model.tokens is None:
      return NO_TOKENIZER
  if key == "copying":
    return (f"the head rests on BOS: attention off BOS is below a tenth of uniform's at "
            f"{1 - scores['copying_defined'][l, h]:.0%} of destinations (scores.copying_score)")
  if key == "kcomp_qk_positivity":
    return "layer 0 reads no earlier previous-token head"
  if key == "positional_tv":
    return positional_terms(model) or "not measured"
  if key.startswith("qk_") and key.endswith("_share"):
    return separable_qk(model) or "its attention scores do not vary within a row (a zero QK)"
  if key == "ablation_icl_removed" and ablated is not None:
    base = ablated["base_icl"]
    return (f"the unablated ICL score {base['score']:+.3f} is within 2 standard errors "
            f"({base['standard_error']:.3f}) of 0, so a share of it means nothing")
  return "not a finite number"


def decide_roles(m: Measured, values: Dict[str, np.ndarray], init_values) -> Dict[tuple, list]:
  """Each head's roles (module docstring), each with its criterion, value and threshold."""
  c, model = m.config, m.model
  L, H = model.cfg.n_layers, model.cfg.n_heads
  copy_bar = max(c.copying_threshold, float(np.nanmax(init_values["ov_positivity"])))
  text = "held-out text" if model.tokens is not None else "IH's probe (no tokenizer)"
  out = {}
  for l in range(L):
    for h in range(H):
      at = lambda k: float(values[k][l, h])
      ratio = at("ov_norm_ratio")
      if ratio <= c.inactive_ratio:
        out[(l, h)] = [{"role": "inactive", "criterion": f"‖W_V W_O‖_F ≤ {c.inactive_ratio:g} × "
                        "the largest head's: it writes nothing", "value": ratio,
                        "threshold": c.inactive_ratio}]
        continue
      roles = []
      if at("previous_token") >= c.role_threshold:
        roles.append({"role": "previous_token", "criterion": f"previous-token score on {text} ≥ "
                      f"{c.role_threshold:g}", "value": at("previous_token"),
                      "threshold": c.role_threshold})
      if l >= 1 and at("prefix_matching") >= c.role_threshold:
        roles.append({"role": "induction", "criterion": "prefix-matching score ≥ "
                      f"{c.role_threshold:g}, layer ≥ 1", "value": at("prefix_matching"),
                      "threshold": c.role_threshold})
      if at("ov_positivity") >= copy_bar:
        roles.append({"role": "copying", "criterion": f"full-OV positivity ≥ max("
                      f"{c.copying_threshold:g}, the largest at random init "
                      f"{float(np.nanmax(init_values['ov_positivity'])):+.2f})",
                      "value": at("ov_positivity"), "threshold": copy_bar})
      tv = values["positional_tv"][l, h]
      if np.isfinite(tv) and tv <= c.positional_max_tv:
        roles.append({"role": "positional", "criterion": "mean total-variation distance from its "
                      f"positional-only pattern ≤ {c.positional_max_tv:g}", "value": float(tv),
                      "threshold": c.positional_max_tv})
      out[(l, h)] = roles or [{"role": "unlabelled", "criterion": "no role's criterion is met",
                               "value": None, "threshold": None}]
  return {k: [dict(r, value=finite(r["value"]), threshold=finite(r["threshold"])) for r in v]
          for k, v in out.items()}


def partners(m: Measured) -> Dict[tuple, dict]:
  """Each head's strongest Q-, K- and V-composition partner among the earlier heads ("in": it
  reads them) and the later heads ("out": they read it), score minus the composition baseline,
  beside the same pair's at random init."""
  L, H = m.model.cfg.n_layers, m.model.cfg.n_heads
  comp, init = m.trained["composition"], m.init["composition"]
  out = {}
  for l in range(L):
    for h in range(H):
      found = {"in": {}, "out": {}}
      for kind in circuits.COMPOSITION_KINDS:
        into = comp[kind][:l, :, l, h]  # earlier writers → this head
        if into.size:
          l1, h1 = np.unravel_index(np.argmax(into), into.shape)
          found["in"][kind] = {"partner": name(int(l1), int(h1)),
                               **number(into[l1, h1], init[kind][l1, h1, l, h])}
        read = comp[kind][l, h, l + 1:]  # this head → later readers
        if read.size:
          l2, h2 = np.unravel_index(np.argmax(read), read.shape)
          found["out"][kind] = {"partner": name(int(l + 1 + l2), int(h2)),
                                **number(read[l2, h2], init[kind][l, h, l + 1 + l2, h2])}
      out[(l, h)] = found
  return out


def init_max_composition(m: Measured) -> Dict[str, Optional[float]]:
  """Per kind, the largest score minus baseline of any head pair (l1 < l2) at random init."""
  L = m.model.cfg.n_layers
  out = {}
  for kind, c in m.init["composition"].items():
    pairs = [c[l1, :, l2, :].max() for l2 in range(L) for l1 in range(l2)]
    out[kind] = finite(max(pairs)) if pairs else None
  return out


def checks(m: Measured, values, roles, found, init_max) -> Dict[tuple, list]:
  """Each head's consistency checks (``CHECKS``): status "agrees", "disagrees" or "n/a", and
  what was compared."""
  c, L, H = m.config, m.model.cfg.n_layers, m.model.cfg.n_heads
  has = lambda l, h, role: any(r["role"] == role for r in roles[(l, h)])
  shown = lambda x, spec=".2f": "undefined" if finite(x) is None else format(float(x), spec)
  out = {}
  for l in range(L):
    for h in range(H):
      ov, kq = values["ov_positivity"][l, h], values["kcomp_qk_positivity"][l, h]
      prefix = values["prefix_matching"][l, h]
      rows = []
      inactive = has(l, h, "inactive")
      # 1. weights vs behaviour on induction
      if l == 0 or inactive:
        rows.append(("induction_weights_vs_behaviour", "n/a",
                     "an inactive head" if inactive else "layer 0 reads no earlier head"))
      else:
        corner = ov >= c.corner and kq >= c.corner
        where = (f"OV {shown(ov, '+.2f')}, K-comp QK {shown(kq, '+.2f')}; prefix matching "
                 f"{shown(prefix)}")
        if corner and prefix < c.role_threshold:
          rows.append(("induction_weights_vs_behaviour", "disagrees",
                       f"in the induction corner ({where} < {c.role_threshold:g}): the weights say "
                       "induction, the behaviour does not"))
        elif prefix >= c.role_threshold and min(ov, kq) < 0.5:
          rows.append(("induction_weights_vs_behaviour", "disagrees",
                       f"an induction head outside the upper right ({where}): the behaviour says "
                       "induction, the weights do not"))
        else:
          rows.append(("induction_weights_vs_behaviour", "agrees", where))
      # 2. an induction head's K-composition partner is a previous-token head
      if not has(l, h, "induction"):
        rows.append(("induction_reads_previous_token", "n/a", "not an induction head"))
      else:
        k_in = found[(l, h)]["in"].get("k")
        l1, h1 = (int(x) for x in k_in["partner"][1:].split("H"))
        prev = values["previous_token"][l1, h1]
        rows.append(("induction_reads_previous_token",
                     "agrees" if prev >= c.role_threshold else "disagrees",
                     f"strongest K-composition from {k_in['partner']} "
                     f"({shown(k_in['value'], '+.3f')} over the baseline), whose previous-token "
                     f"score is {shown(prev)}"))
      # 3. a previous-token head is read by a later head through K
      if not has(l, h, "previous_token"):
        rows.append(("previous_token_is_read", "n/a", "not a previous-token head"))
      elif l == L - 1:
        rows.append(("previous_token_is_read", "n/a", "in the last layer: nothing reads it"))
      else:
        k_out = found[(l, h)]["out"]["k"]
        bar = init_max["k"]
        read = k_out["value"] is not None and bar is not None and k_out["value"] > bar
        rows.append(("previous_token_is_read", "agrees" if read else "disagrees",
                     f"strongest K-composition reader {k_out['partner']}: "
                     f"{shown(k_out['value'], '+.3f')} over the baseline (random-init pairs reach "
                     f"{shown(bar, '+.3f')})"))
      out[(l, h)] = [{"id": i, "status": s, "detail": d} for i, s, d in rows]
  return out


def _eigen(lam) -> List[List[float]]:
  return [[round(float(z.real), 6), round(float(z.imag), 6)] for z in np.asarray(lam)]


def _tables(m: Measured, l: int, h: int) -> dict:
  """Head (l, h)'s skip-trigrams and OV mappings with token strings (and corpus counts)."""
  t = m.tables
  if "undefined" in t:
    return {"undefined": t["undefined"]}
  names, counts, tc = t["names"], t["counts"], t["token_counts"]
  word = lambda i: names[int(i)]
  count = lambda i: None if tc is None else int(tc[int(i)])
  skip, ov = t["skip"], t["ov"]
  n_dest, k = skip["source"].shape[-2:]
  def outputs(r, i):
    return [{"out": word(o), "gain": finite(g),
             "count": None if counts is None else int(counts[l, h, r, i, j])}
            for j, (o, g) in enumerate(zip(skip["out"][l, h, r, i], skip["out_gain"][l, h, r, i]))]

  trigrams = [{"dest": word(skip["dest"][l, h, r]), "dest_count": count(skip["dest"][l, h, r]),
               "sources": [{"source": word(skip["source"][l, h, r, i]),
                            "gain": finite(skip["source_gain"][l, h, r, i]),
                            "outputs": outputs(r, i)} for i in range(k)]}
              for r in range(n_dest)]
  mappings = [{"source": word(s), "source_count": count(s),
               "outputs": [{"out": word(o), "gain": finite(g), "copies": bool(o == s)}
                           for o, g in zip(ov["out"][l, h, i], ov["gain"][l, h, i])]}
              for i, s in enumerate(ov["source"][l, h])]
  text = t["on_text"]
  on_text = None if text is None else [
      {"source": word(text["source"][l, h, r]), "dest": word(text["dest"][l, h, r]),
       "attention_share": finite(text["share"][l, h, r]),
       "outputs": [{"out": word(o), "gain": finite(g), "count": int(c)}
                   for o, g, c in zip(text["out"][l, h, r], text["out_gain"][l, h, r],
                                      text["counts"][l, h, r])]}
      for r in range(text["source"].shape[-1])]
  return {"skip_trigrams": trigrams, "skip_trigrams_on_text": on_text, "ov_mappings": mappings,
          "counts": "corpus counts" if counts is not None else
                    "no tokenizer: no corpus to count in"}


def model_record(m: Measured) -> dict:
  """The atlas of one model as plain dicts: its shape, held-out loss, ICL score and one record
  per head (module docstring)."""
  model, c = m.model, m.config
  cfg = model.cfg
  L, H = cfg.n_layers, cfg.n_heads
  values = _head_values(m, m.trained, m.ablated)
  init_values = _head_values(m, m.init, m.init_ablated)
  roles = decide_roles(m, values, init_values)
  found = partners(m)
  init_max = init_max_composition(m)
  head_checks = checks(m, values, roles, found, init_max)
  heads = []
  for l in range(L):
    for h in range(H):
      numbers = {k: number(values[k][l, h], init_values[k][l, h],
                           _undefined(m, k, l, h, "trained"), _undefined(m, k, l, h, "init"))
                 for k in SCORES}
      record = {"layer": l, "head": h, "name": name(l, h), "roles": roles[(l, h)],
                "scores": numbers, "composition": found[(l, h)], "checks": head_checks[(l, h)],
                "eigenvalues": {"ov": _eigen(m.trained["ov_eigenvalues"][l, h]),
                                "qk": _eigen(m.trained["qk_eigenvalues"][l, h])},
                **_tables(m, l, h)}
      if m.trajectory is not None:
        t = m.trajectory
        record["trajectory"] = {
            "x": [int(x) for x in t["x"]], "axis": t["axis"],
            "previous_token": [finite(v) for v in t["previous_token"][:, l, h]],
            "prefix_matching": [finite(v) for v in t["prefix_matching"][:, l, h]]}
      heads.append(record)
  text_undefined = "" if model.tokens is not None else NO_TOKENIZER
  if m.ablated is not None:
    icl, init_icl = m.ablated["model_icl"], m.init_ablated["model_icl"]
    loss = number(m.ablated["base_loss"], m.init_ablated["base_loss"])
    icl_score = number(icl["score"], init_icl["score"])
    icl_score.update(standard_error=finite(icl["standard_error"]),
                     baseline_standard_error=finite(init_icl["standard_error"]),
                     windows=int(icl["windows"]), positions=[icl["early_index"],
                                                            icl["late_index"]])
    loss.update(windows=m.ablation_plan.windows, positions=list(m.ablation_plan.spread))
  else:
    loss, icl_score = number(None, None, text_undefined), number(None, None, text_undefined)
  roles_probe = m.trained["roles"].probe
  attention = m.trained["attention"]["names"]
  return {
      "label": model.label,
      "source": str(model.workdir or model.meta.get("path") or model.meta.get("folder") or ""),
      "shape": cfg.to_dict(),
      "tokenizer": model.tokens is not None,
      "bos": f"token {model.bos_id} ({model.bos_source})",
      "random_init": m.init_source,
      "held_out_loss": loss,
      "icl_score": icl_score,
      "composition_baseline": finite(m.trained["composition_baseline"]),
      "composition_random_init_max": init_max,
      "measured_on": {
          "roles": roles_probe,
          "copying": "IH's probe (BOS + 25 random tokens × 4, 10 samples)",
          "stripe": attention["repeated"] + f", {c.attention.samples} samples",
          "bos": "first occurrences in IH's probe" + (
              f" and in {c.bos_text_windows} held-out windows" if model.tokens is not None
              else ""),
          "positional": (positional_terms(model) or (
              f"the first {min(c.positional_tokens, cfg.n_ctx)} tokens of "
              f"{c.positional_windows} held-out windows" if model.tokens is not None
              else "IH's probe (no tokenizer)")),
          "ablations": m.ablation_plan.note if m.ablation_plan is not None else NO_TOKENIZER,
          "tables": (f"among the {len(m.tables.get('tokens', []))} most frequent tokens of the "
                     f"corpus seen ≥ {c.min_count} times; counts in the first "
                     f"{c.corpus_tokens:,} training tokens" if model.tokens is not None else
                     "among every token but BOS (no tokenizer: no corpus counts)"),
          "text_pairs": (f"the attention of each head on the first "
                         f"{min(c.positional_tokens, cfg.n_ctx)} tokens of "
                         f"{c.positional_windows} held-out windows, summed by (source token, "
                         "destination token) over earlier positions other than BOS"
                         if model.tokens is not None else NO_TOKENIZER),
      },
      "thresholds": {"role_threshold": c.role_threshold,
                     "copying_threshold": c.copying_threshold,
                     "copying_bar": finite(max(c.copying_threshold,
                                               float(np.nanmax(init_values["ov_positivity"])))),
                     "inactive_ratio": c.inactive_ratio,
                     "positional_max_tv": c.positional_max_tv, "corner": c.corner},
      "checks": {k: v.format(corner=c.corner, threshold=c.role_threshold)
                 for k, v in CHECKS.items()},
      "scores": {k: {"short": s, "what": w} for k, (s, w) in SCORES.items()},
      "heads": heads,
      "seconds": m.seconds,
  }


def head_records(model, config=None, log=lambda line: None) -> dict:
  """The atlas of ``model`` (a ``sources.Model``) as one plain dict with a ``heads`` list: its
  shape, held-out loss, ICL score and, per head, its roles with their criteria and every number
  beside its random-init baseline (``model_record``).  ``config``: configs/atlas.py's (default:
  the cpu preset's)."""
  if config is None:
    config = project_module("configs", "atlas").get_config("cpu")
  return model_record(measure_model(model, config, log))
