"""The atlas's pages, written from its records (``records.model_record``): ``index.html`` with one
sortable row per head of every model, one page per head, each model's interactive attention
page (induction_attention's own), and the eigenvalue pictures (ov_eigenvalues' own drawing).

Token strings are data: every one goes through ``html.escape`` in the text, and the attention
page's data through ``outputs.script_json``.  The index's only script sorts its tables; the head
pages have none.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from reproduce.config import project_module
from reproduce.figure.plotting import pyplot, show_token

ov_eigenvalues = project_module("experiments", "ov_eigenvalues")
induction_attention = project_module("experiments", "induction_attention")

TEMPLATE = Path(__file__).with_name("page.html")

SORT_SCRIPT = """<script>
document.querySelectorAll("table.heads").forEach(t => t.querySelectorAll("thead th")
    .forEach((th, i) => { th.onclick = () => {  // click: largest first, again: smallest first
  const body = t.tBodies[0], rows = [...body.rows], down = th.dataset.dir !== "down";
  th.dataset.dir = down ? "down" : "up";
  const key = r => { const v = r.cells[i].dataset.v, n = parseFloat(v);
    return v === undefined || v === "" ? null : isNaN(n) ? v : n; };  // no value: last
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const c = typeof x === "number" && typeof y === "number" ? x - y
      : String(x).localeCompare(String(y));
    return down ? -c : c; });
  rows.forEach(r => body.appendChild(r)); }; }));
</script>"""

# Each check's name on a head's page, and its warning in the index where it disagrees
CHECK_NAMES = {"induction_weights_vs_behaviour": "induction: weights against behaviour",
               "induction_reads_previous_token": "an induction head reads a previous-token head",
               "previous_token_is_read": "a previous-token head is read"}
CHECK_WARNINGS = {"induction_weights_vs_behaviour": "induction: weights ≠ behaviour",
                  "induction_reads_previous_token": "K partner not a prev-token head",
                  "previous_token_is_read": "no later head reads it"}

# The index's number columns: score key → header (``records.SCORES`` says what each is)
INDEX_SCORES = ("ov_positivity", "qk_positivity", "previous_token", "prefix_matching", "copying",
                "stripe", "bos_probe", "kcomp_qk_positivity", "positional_tv")
ABLATION_SCORES = ("ablation_icl_removed", "ablation_loss_change")


def page(title: str, body: str, script: str = "") -> str:
  """The atlas's page template with its {{NAME}} markers filled in one pass (what goes in is
  never searched for markers again): TITLE (escaped here), BODY and SCRIPT (already HTML)."""
  fill = {"TITLE": html.escape(title), "BODY": body, "SCRIPT": script}
  return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: fill[m.group(1)], TEMPLATE.read_text("utf-8"))


def e(text) -> str:
  return html.escape(str(text))


def folder_name(label: str) -> str:
  """A model's folder under the atlas: its label with anything but letters, digits, '.', '_'
  and '-' replaced."""
  return re.sub(r"[^A-Za-z0-9._-]", "_", label) or "model"


def fmt(x, digits: int = 2, signed: bool = False) -> str:
  """``x`` with ``digits`` decimals (a sign when ``signed``; 0 when it rounds to 0), three
  significant digits from 10⁴ up; "—" for None."""
  if x is None:
    return "—"
  if abs(x) >= 1e4:
    return f"{x:.3g}"
  if round(x, digits) == 0:
    return f"{0:.{digits}f}"
  return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def token(text: str, width: int = 18, copies: bool = False) -> str:
  return (f"<span class='tok{' copy' if copies else ''}'>"
          f"{e(show_token(text, width))}</span>")


def shown(n: dict, key: str, digits: int = 2):
  """(value, random-init value) of a record's number as HTML: 'undefined' with the reason as a
  tooltip where there is none."""
  signed = key.startswith(("ablation", "qk_")) or key.endswith("positivity")
  show = lambda v, why: (f"<span class='u' title='{e(why)}'>undefined</span>" if v is None
                         else fmt(v, digits, signed))
  return (show(n["value"], n.get("undefined", "")),
          show(n["baseline"], n.get("baseline_undefined", "")))


def number_cell(n: dict, key: str, digits: int = 2) -> str:
  """A table cell: the value, its random-init value beneath."""
  value, base = shown(n, key, digits)
  sort = "" if n["value"] is None else f"{n['value']:.6g}"
  return f"<td data-v='{sort}'>{value}<span class='b'>{base}</span></td>"


def role_number(x, digits: int = 2) -> str:
  """A role's value or threshold: fixed decimals, small ones (the inactive role's 1e-06) in
  exponent form."""
  return f"{x:.2g}" if x is not None and 0 < abs(x) < 10 ** -digits else fmt(x, digits)


def role_tags(roles, criteria: bool = True) -> str:
  out = []
  for r in roles:
    tag = f"<span class='role r-{e(r['role'])}' title='{e(r['criterion'])}'>{e(r['role'])}</span>"
    if criteria and r["value"] is not None:
      cmp = "≤" if r["role"] in ("inactive", "positional") else "≥"
      tag += (f"<span class='crit'>{role_number(r['value'])} {cmp} "
              f"{role_number(r['threshold'])}</span>")
    out.append(tag)
  return "<br>".join(out)


def partner_cell(found: dict, side: str) -> str:
  """The strongest K-, Q- and V-composition partners of one side ("in", "out"), minus the
  baseline, with the same pair at random init."""
  rows = found.get(side, {})
  if not rows:
    return "<td class='pair' data-v=''><span class='u'>none</span></td>"
  lines = [f"{k.upper()} {e(v['partner'])} {fmt(v['value'], 2, True)} "
           f"<small>({fmt(v['baseline'], 2, True)})</small>" for k, v in
           sorted(rows.items(), key=lambda kv: "kqv".index(kv[0]))]
  return f"<td class='pair' data-v='{rows['k']['value']:.6g}'>" + "<br>".join(lines) + "</td>"


def sparkline(t: Optional[dict], width: int = 80, height: int = 26) -> str:
  """Previous-token (blue) and prefix-matching (red) scores over training, log x, 0…1."""
  if not t or len(t["x"]) < 2:
    return "<td data-v=''><span class='u'>no snapshots</span></td>"
  xs = np.log10(np.asarray(t["x"], float) + 1)
  span = max(xs.max() - xs.min(), 1e-9)
  px = 2 + (xs - xs.min()) / span * (width - 4)
  lines = []
  for key, colour in (("previous_token", "#2471a3"), ("prefix_matching", "#c0392b")):
    ys = [2 + (1 - min(max(v or 0.0, 0.0), 1.0)) * (height - 4) for v in t[key]]
    lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.4' points='"
                 + " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, ys)) + "'/>")
  last = t["prefix_matching"][-1]
  return (f"<td data-v='{last or 0:.4g}'><svg width='{width}' height='{height}' "
          f"style='background:#fafafa;border:1px solid #eee'>"
          f"<title>previous-token (blue) and prefix-matching (red) over {len(xs)} snapshots"
          f"</title>{''.join(lines)}</svg></td>")


def checks_cell(checks) -> str:
  bad = [c for c in checks if c["status"] == "disagrees"]
  if not bad:
    return "<td class='checks' data-v='0'><span class='ok'>—</span></td>"
  return (f"<td class='checks' data-v='{len(bad)}'>" + "<br>".join(
      f"<span class='warn' title='{e(c['detail'])}'>⚠ {e(CHECK_WARNINGS[c['id']])}</span>"
      for c in bad) + "</td>")


def head_table(record: dict, link: bool = True) -> str:
  """One row per head, every column sortable (by the cell's data-v): roles with their
  criteria, the index's scores with their random-init values beneath, composition partners,
  ablation effects, the training sparkline and the checks that disagree."""
  scores = record["scores"]
  folder = folder_name(record["label"])
  shown_scores, shown_ablations = (
      [k for k in keys if any(h["scores"][k]["value"] is not None for h in record["heads"])]
      for keys in (INDEX_SCORES, ABLATION_SCORES))
  comp = any(h["composition"]["in"] or h["composition"]["out"] for h in record["heads"])
  train = any(h.get("trajectory") for h in record["heads"])
  headers = (["head", "roles"] + [scores[k]["short"] for k in shown_scores]
             + (["comp. in", "comp. out"] if comp else [])
             + [scores[k]["short"] for k in shown_ablations]
             + (["training"] if train else []) + ["checks"])
  titles = (["layer and head", "roles and the criterion that decided each (value vs threshold)"]
            + [scores[k]["what"] for k in shown_scores]
            + (["strongest K, Q, V composition from an earlier head, minus the baseline "
                "(random init in brackets); sorts by K",
                "strongest K, Q, V composition into a later head, minus the baseline; sorts by K"]
               if comp else [])
            + [scores[k]["what"] for k in shown_ablations]
            + (["previous-token (blue) and prefix-matching (red) over training; sorts by the "
                "final prefix matching"] if train else [])
            + ["consistency checks that disagree (hover for why)"])
  head = "".join(f"<th title='{e(t)}'>{e(h)}</th>" for h, t in zip(headers, titles))
  rows = []
  for h in record["heads"]:
    n = h["scores"]
    name = e(h["name"])
    cell = f"<a href='{e(folder)}/{name}.html'>{name}</a>" if link else name
    tds = [f"<td class='l' data-v='{h['layer'] * 1000 + h['head']}'><b>{cell}</b></td>",
           f"<td class='l' data-v='{e(' '.join(r['role'] for r in h['roles']))}'>"
           f"{role_tags(h['roles'])}</td>"]
    tds += [number_cell(n[k], k) for k in shown_scores]
    if comp:
      tds += [partner_cell(h["composition"], "in"), partner_cell(h["composition"], "out")]
    tds += [number_cell(n[k], k) for k in shown_ablations]
    if train:
      tds.append(sparkline(h.get("trajectory")))
    tds.append(checks_cell(h["checks"]))
    rows.append("<tr>" + "".join(tds) + "</tr>")
  first = record["heads"][0]["scores"]
  hidden = [k for k in INDEX_SCORES + ABLATION_SCORES
            if k not in shown_scores and k not in shown_ablations]
  note = ("" if not hidden else "<p class='note'>Not shown, undefined for every head: " + "; ".join(
      f"{e(scores[k]['short'])} ({e(first[k].get('undefined', ''))})" for k in hidden)
      + ("" if comp else "; composition (one layer: no head reads another)") + ".</p>")
  return (f"<table class='heads'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
          "</tbody></table>" + note)


def model_facts(record: dict) -> str:
  s = record["shape"]
  loss, icl = record["held_out_loss"], record["icl_score"]

  def value(n, digits=3, signed=False, error=None):
    if n["value"] is None:
      return f"<span class='u' title='{e(n.get('undefined', ''))}'>undefined</span>"
    text = f"<b>{fmt(n['value'], digits, signed)}</b>"
    if error is not None:
      text += f" ± {fmt(error, 3)}"
    base = ("—" if n["baseline"] is None else fmt(n["baseline"], digits, signed))
    return text + f" <small>(random init {base})</small>"

  return ("<div class='facts'>"
          f"<div>{s['n_layers']} layer(s) × {s['n_heads']} heads of {s['d_head']} · d_model "
          f"{s['d_model']} · vocab {s['d_vocab']:,} · n_ctx {s['n_ctx']} · {e(s['pos'])} "
          f"positions · norm {e(s['norm'])}</div>"
          f"<div>held-out loss {value(loss)} nats</div>"
          f"<div>ICL score {value(icl, 3, True, icl.get('standard_error'))} nats</div></div>")


def measured_on(record: dict) -> str:
  items = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in record["measured_on"].items())
  return (f"<details><summary>what {e(record['label'])} was measured on</summary><ul>{items}"
          f"<li><b>random init</b>: {e(record['random_init'])}</li><li><b>BOS</b>: "
          f"{e(record['bos'])}</li></ul></details>")


def legend(record: dict) -> str:
  """The role criteria and the checks' rules (the same thresholds for every model)."""
  t = record["thresholds"]
  roles = [("inactive", f"‖W_V W_O‖_F ≤ {t['inactive_ratio']:g} × the largest head's (it "
                        "writes nothing; excludes the others)"),
           ("previous_token", f"previous-token score ≥ {t['role_threshold']:g}"),
           ("induction", f"prefix-matching score ≥ {t['role_threshold']:g}, layer ≥ 1"),
           ("copying", f"full-OV positivity ≥ max({t['copying_threshold']:g}, the largest at "
                       "random init)"),
           ("positional", "shortformer models: mean total-variation distance between its "
                          f"pattern and its positional-only pattern ≤ {t['positional_max_tv']:g}"),
           ("unlabelled", "none of the above")]
  return ("<h2>Roles and consistency checks</h2><h3>Roles (a head may have several)</h3><ul>"
          + "".join(f"<li><span class='role r-{k}'>{k}</span> {e(v)}</li>" for k, v in roles)
          + "</ul><h3>Consistency checks: where the weights and the behaviour disagree</h3><ul>"
          + "".join(f"<li><b>{e(CHECK_NAMES[k])}</b> (warning: “{e(CHECK_WARNINGS[k])}”): "
                    f"{e(v)}</li>" for k, v in record["checks"].items()) + "</ul>")


def index_page(records: Sequence[dict]) -> str:
  sections = []
  for r in records:
    sections.append(
        f"<h2 id='{e(folder_name(r['label']))}'>{e(r['label'])}</h2>"
        f"<p class='note'>{e(r['source'])}</p>{model_facts(r)}"
        "<p class='note'>Each number has the same measure at random init beneath it (grey). "
        "Click a column's header to sort by it; hover a header for what it measures, a role for "
        "its criterion, a warning for the comparison behind it. Composition: score minus the "
        f"baseline {fmt(r['composition_baseline'], 3)}. "
        f"<a href='{e(folder_name(r['label']))}/attention.html'>Attention patterns</a> of every "
        "head (interactive).</p>" + head_table(r) + measured_on(r))
  body = ("<h1>Atlas of attention heads</h1><p class='note'>What each head does and how sure we "
          "are: roles decided by stated criteria, the circuits' eigenvalues and compositions, "
          "the heads' behaviour on random tokens and text, and zero-ablations, each beside the "
          "same measure at random init (rules below; docs/METHODS.md, “Atlas”).</p>"
          + "".join(sections) + (legend(records[0]) if records else ""))
  return page("atlas", body, SORT_SCRIPT)


# ----------------------------------------------------------------------------------------------
# One head's page


def _score_rows(h: dict, scores_info: dict) -> str:
  rows = []
  for k, n in h["scores"].items():
    value, base = shown(n, k, 3)
    what = e(scores_info[k]["what"])
    for side, key in (("value", "undefined"), ("random init", "baseline_undefined")):
      if key in n and (side == "value" or n.get("undefined") != n[key]):
        what += f"<br><i>{side} undefined: {e(n[key])}</i>"
    rows.append(f"<tr><td class='l'>{e(scores_info[k]['short'])}</td><td>{value}</td>"
                f"<td>{base}</td><td class='l note'>{what}</td></tr>")
  return ("<table class='kv'><tr><th class='l'>measure</th><th>value</th><th>random init</th>"
          "<th class='l'>what it is</th></tr>" + "".join(rows) + "</table>")


def _composition_rows(h: dict) -> str:
  rows = []
  for side, what in (("in", "reads from (earlier head)"), ("out", "is read by (later head)")):
    for kind in "kqv":
      v = h["composition"].get(side, {}).get(kind)
      if v is None:
        continue
      rows.append(f"<tr><td class='l'>{kind.upper()}</td><td class='l'>{what}</td>"
                  f"<td class='l'>{e(v['partner'])}</td><td>{fmt(v['value'], 3, True)}</td>"
                  f"<td>{fmt(v['baseline'], 3, True)}</td></tr>")
  if not rows:
    return "<p class='note'>A one-layer model: no head reads another.</p>"
  return ("<table><tr><th>kind</th><th class='l'>direction</th><th class='l'>strongest partner"
          "</th><th>score − baseline</th><th>same pair at random init</th></tr>"
          + "".join(rows) + "</table>")


def _skip_table(h: dict) -> str:
  rows = []
  for t in h["skip_trigrams"]:
    for i, s in enumerate(t["sources"]):
      dest = (token(t["dest"]) + (f" <small>{t['dest_count']:,}×</small>"
                                  if t["dest_count"] is not None else "")) if i == 0 else ""
      outs = ", ".join(token(o["out"]) + f" <small>{fmt(o['gain'], 1)}"
                       + (f"; {o['count']:,}×" if o["count"] is not None else "") + "</small>"
                       for o in s["outputs"])
      rows.append(f"<tr><td class='l'>{dest}</td><td class='l'>{token(s['source'])} "
                  f"<small>{fmt(s['gain'], 1)}</small></td><td class='l'>{outs}</td></tr>")
  return ("<table><tr><th class='l'>destination</th><th class='l'>… source (QK gain)</th>"
          "<th class='l'>→ outputs (OV gain; count of “source … destination → output”)</th></tr>"
          + "".join(rows) + "</table>")


def _text_table(h: dict, how: str) -> str:
  if not h.get("skip_trigrams_on_text"):
    return f"<p class='note'>Undefined: {e(how)}.</p>"
  rows = []
  for p in h["skip_trigrams_on_text"]:
    outs = ", ".join(token(o["out"]) + f" <small>{fmt(o['gain'], 1)}; {o['count']:,}×</small>"
                     for o in p["outputs"])
    rows.append(f"<tr><td>{fmt(100 * p['attention_share'], 1)}%</td><td class='l'>"
                f"{token(p['source'])}</td><td class='l'>{token(p['dest'])}</td>"
                f"<td class='l'>{outs}</td></tr>")
  return (f"<p class='note'>Ranked by {e(how)}; the outputs are what its OV raises most from the "
          "source, with the corpus count of “source … destination → output”.</p><table><tr>"
          "<th>share of its attention</th><th class='l'>source …</th><th class='l'>destination"
          "</th><th class='l'>→ outputs (OV gain; count)</th></tr>" + "".join(rows) + "</table>")


def _ov_table(h: dict) -> str:
  rows = []
  for m in h["ov_mappings"]:
    count = f" <small>{m['source_count']:,}×</small>" if m["source_count"] is not None else ""
    outs = ", ".join(token(o["out"], copies=o["copies"]) + f" <small>{fmt(o['gain'], 1)}</small>"
                     for o in m["outputs"])
    rows.append(f"<tr><td class='l'>{token(m['source'])}{count}</td><td class='l'>{outs}</td></tr>")
  return ("<table><tr><th class='l'>attending to source</th><th class='l'>raises most (OV gain "
          "in nats over the row's mean; shaded: the source itself)</th></tr>" + "".join(rows)
          + "</table>")


def trajectory_plot(t: dict, threshold: float, width: int = 560, height: int = 220) -> str:
  """The previous-token and prefix-matching scores over training, log x axis, as inline SVG."""
  left, right, top, bottom = 46, 12, 12, 34
  xs = np.asarray(t["x"], float)
  lx = np.log10(np.maximum(xs, 1))
  lo, hi = float(lx.min()), float(max(lx.max(), lx.min() + 1e-9))
  X = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)
  Y = lambda v: top + (1 - v) * (height - top - bottom)
  parts = [f"<rect x='{left}' y='{top}' width='{width - left - right}' "
           f"height='{height - top - bottom}' fill='#fcfcfc' stroke='#ccc'/>"]
  for v in (0, 0.5, 1):
    parts.append(f"<text x='{left - 6}' y='{Y(v) + 4:.0f}' font-size='11' text-anchor='end'>"
                 f"{v:g}</text>")
  parts.append(f"<line x1='{left}' x2='{width - right}' y1='{Y(threshold):.1f}' "
               f"y2='{Y(threshold):.1f}' stroke='#999' stroke-dasharray='4 3'/>")
  for k in range(int(math.ceil(lo)), int(math.floor(hi)) + 1):
    parts.append(f"<text x='{X(k):.1f}' y='{height - bottom + 15}' font-size='11' "
                 f"text-anchor='middle'>10<tspan dy='-5' font-size='8'>{k}</tspan></text>")
  for key, colour, label in (("previous_token", "#2471a3", "previous-token"),
                             ("prefix_matching", "#c0392b", "prefix matching")):
    pts = " ".join(f"{X(a):.1f},{Y(min(max(v or 0.0, 0.0), 1.0)):.1f}"
                   for a, v in zip(lx, t[key]))
    parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{pts}'/>")
    y = 24 if key == "previous_token" else 40
    parts.append(f"<text x='{left + 8}' y='{y}' font-size='12' fill='{colour}'>{label}</text>")
  parts.append(f"<text x='{(left + width - right) / 2:.0f}' y='{height - 3}' font-size='12' "
               f"text-anchor='middle'>{e(t['axis'])} seen (log scale); dashed: the role threshold "
               f"{threshold:g}</text>")
  return f"<svg width='{width}' height='{height}'>{''.join(parts)}</svg>"


def head_page(record: dict, index: int) -> str:
  heads = record["heads"]
  h = heads[index]
  name = e(h["name"])
  prev_head, next_head = heads[index - 1]["name"], heads[(index + 1) % len(heads)]["name"]
  nav = (f"<nav><a href='{e(prev_head)}.html'>← {e(prev_head)}</a><a href='../index.html'>"
         f"index</a><a href='attention.html#{name}'>attention patterns of {name}</a>"
         f"<a href='{e(next_head)}.html'>{e(next_head)} →</a></nav>")
  roles = "".join(f"<li>{role_tags([r], criteria=False)} {e(r['criterion'])}"
                  + (f": <b>{role_number(r['value'], 3)}</b> (threshold "
                     f"{role_number(r['threshold'], 3)})"
                     if r["value"] is not None else "") + "</li>" for r in h["roles"])
  checks = "".join(
      f"<div class='check-{'na' if c['status'] == 'n/a' else c['status']}'><b>"
      f"{e(CHECK_NAMES[c['id']])}</b>: {e(c['status'])} — {e(c['detail'])}<br>"
      f"<small>{e(record['checks'][c['id']])}</small></div>" for c in h["checks"])
  n = h["scores"]
  ablation = ("<p class='note'>" + e(record["measured_on"]["ablations"]) + ".</p>"
              "<table class='kv'><tr><th class='l'>zero-ablated</th><th>value</th><th>random init"
              "</th></tr>" + "".join(
                  f"<tr><td class='l'>{e(record['scores'][k]['what'])}</td><td>"
                  + "</td><td>".join(shown(n[k], k, 3)) + "</td></tr>"
                  for k in ("ablation_icl", "ablation_icl_removed", "ablation_loss_change"))
              + "</table>")
  shares = [n[f"qk_{k}_share"] for k in ("position", "cross", "content")]
  if shares[0]["value"] is None:
    qk = f"<p class='note'>Undefined: {e(shares[0].get('undefined', ''))}.</p>"
  else:
    qk = ("<p>Of the variance of its attention scores within each destination's row "
          f"({e(record['measured_on']['positional'])}): position–position term "
          f"<b>{fmt(shares[0]['value'], 2)}</b> (random init {fmt(shares[0]['baseline'], 2)}), "
          f"token–position cross terms <b>{fmt(shares[1]['value'], 2)}</b> "
          f"({fmt(shares[1]['baseline'], 2)}), content (tokens and earlier heads' writes) "
          f"<b>{fmt(shares[2]['value'], 2)}</b> ({fmt(shares[2]['baseline'], 2)}). Shares are "
          "Σ term·total / Σ total² over row-centred scores: they sum to 1.</p>")
  if "undefined" in h:
    tables = f"<p class='note'>Undefined: {e(h['undefined'])}.</p>"
  else:
    tables = (f"<p class='note'>{e(record['measured_on']['tables'])}. Gains are nats over the "
              "row's mean: e^gain is the attention on a source relative to the destination's "
              "average source, or the odds of an output relative to the source's average output."
              f" Counts: {e(h['counts'])}.</p><h3>What attending to a token raises (OV)</h3>"
              + _ov_table(h) + "<h3>Skip-trigrams by the circuits</h3><p class='note'>Ranked "
              "by the QK and OV entries alone (scores.ranked_skip_trigrams): its most selective "
              "destinations, the sources each attends to most (QK compared within the "
              "destination's row), the outputs each source raises most (OV, within the source's "
              "row).</p>" + _skip_table(h) + "<h3>Skip-trigrams by what it does on text</h3>"
              + _text_table(h, record["measured_on"]["text_pairs"]))
  training = ("<p class='note'>No training snapshots: no trajectory.</p>"
              if not h.get("trajectory") else
              trajectory_plot(h["trajectory"], record["thresholds"]["role_threshold"]))
  body = (nav + f"<h1>{e(record['label'])} · {name}</h1>" + model_facts(record)
          + f"<h2>Roles</h2><ul>{roles}</ul><h2>Consistency checks</h2>{checks}"
          + "<h2>Numbers beside their random-init values</h2>"
          + f"<p class='note'>Random init: {e(record['random_init'])}.</p>"
          + _score_rows(h, record["scores"])
          + "<h2>Eigenvalues of the full OV and QK circuits</h2><div class='pics'>"
          + f"<img src='{name}_ov.png' alt='OV eigenvalues of {name}'>"
          + f"<img src='{name}_qk.png' alt='QK eigenvalues of {name}'></div>"
          + "<h2>Composition (score − baseline "
          + f"{fmt(record['composition_baseline'], 3)})</h2>" + _composition_rows(h)
          + "<h2>Zero-ablation</h2>" + ablation
          + "<h2>Position and content in its attention scores</h2>" + qk
          + "<h2>Token tables</h2>" + tables
          + "<h2>Over training</h2>" + training
          + f"<h2>Attention</h2><p><a href='attention.html#{name}'>{name} on repeated random "
          "tokens and on text</a> (interactive; value-weighted patterns).</p>")
  return page(f"{record['label']} {h['name']}", body)


# ----------------------------------------------------------------------------------------------
# Files


def eigenvalue_pictures(folder: Path, record: dict, ov, qk) -> None:
  """``<head>_ov.png`` and ``<head>_qk.png``: ov_eigenvalues' drawing of one head, on the scale
  shared by every head of the model (``ov_eigenvalues.shared_scale``)."""
  plt = pyplot()
  scale, limit = ov_eigenvalues.shared_scale(ov, qk)
  for h in record["heads"]:
    l, i = h["layer"], h["head"]
    for kind, lam, what in (("ov", ov, "W_E W_OV W_U"), ("qk", qk, "W_E W_QK W_Eᵀ")):
      lam1 = np.asarray(lam)[l:l + 1, i:i + 1]
      pos = h["scores"][f"{kind}_positivity"]["value"]
      fig = ov_eigenvalues.draw_eigenvalues(
          plt, lam1, np.array([[pos if pos is not None else 0.0]]), 0.5,
          f"{record['label']} {h['name']}: {what}", scale, limit)
      fig.axes[0].set_title(f"positivity {fmt(pos, 2, True)}", fontsize=9)
      fig.suptitle(f"{h['name']}: eigenvalues of {what}\nsymmetric-log axes, c = {scale:.3g} "
                   "(every head of the model)", fontsize=9)
      fig.set_size_inches(3.8, 4.0)
      fig.tight_layout()
      fig.savefig(folder / f"{h['name']}_{kind}.png", dpi=110)
      plt.close(fig)


def write_model_pages(out: Path, record: dict, measured) -> List[Path]:
  """A model's folder: its head pages, eigenvalue pictures and attention page."""
  folder = Path(out) / folder_name(record["label"])
  folder.mkdir(parents=True, exist_ok=True)
  written = []
  for i, h in enumerate(record["heads"]):
    path = folder / f"{h['name']}.html"
    path.write_text(head_page(record, i), encoding="utf-8")
    written.append(path)
  eigenvalue_pictures(folder, record, measured.trained["ov_eigenvalues"],
                      measured.trained["qk_eigenvalues"])
  induction_attention.write_page_and_numbers(
      measured.config.attention, record["label"], measured.model, measured.trained["attention"],
      folder, "attention.html", roles=measured.trained["roles"])
  written.append(folder / "attention.html")
  return written
