"""What ``reproduce.figure`` reports over figures: the claims tally, the table of claims across
training seeds (``seeds.json``, ``seeds.md``) and ``index.html``, all read back from each figure's
``claims.json`` (see ``claims.claim``).  ``names`` is the figures in their display order
(``runner.figure_names()``).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Dict, Sequence

from reproduce.figure.outputs import write_json
from reproduce.train.workdir import read_metrics


def claim_lines(claims) -> list:
  """The CLI's view of a figure's claims: one line each, then the paper/control tally."""
  lines = [f"  [{'holds' if c['holds'] else 'FAILS'}] {c['kind']} {c['id']} ({c['source']}): "
           f"{c['statement']} — {c['measured']}" for c in claims]
  return lines + [f"  {tally(claims)}"]


def tally(claims) -> str:
  """'paper claims: 7 of 9 hold; controls: 2 of 2 hold', counting the two kinds apart and leaving
  out a kind with no claims."""
  parts = []
  for kind, name in (("paper", "paper claims"), ("control", "controls")):
    of_kind = [c for c in claims if c["kind"] == kind]
    if of_kind:
      parts.append(f"{name}: {sum(c['holds'] for c in of_kind)} of {len(of_kind)} hold")
  return "; ".join(parts) or "no claims"


def seed_workdir(workdir, seed_index: int) -> Path:
  """Where the figures of the ``seed_index``-th seed go: ``workdir`` itself for the first."""
  return Path(workdir) if seed_index == 0 else Path(workdir) / f"seed{seed_index}"


def seed_table(workdir, n_seeds: int, names: Sequence[str]) -> list:
  """Per claim (in the order of the figures ``names``): how many of the ``n_seeds`` runs it holds
  for.

  Reads ``claims.json`` of every figure under each seed's folder; a claim missing from a seed
  (its figure failed, or the claim was not made) counts as not holding there.
  """
  rows: Dict[str, dict] = {}
  for index in range(n_seeds):
    for name in names:
      path = seed_workdir(workdir, index) / name / "claims.json"
      if not path.is_file():
        continue
      for c in json.loads(path.read_text())["claims"]:
        row = rows.setdefault(c["id"], {"id": c["id"], "kind": c["kind"], "source": c["source"],
                                         "paper_says": c.get("paper_says"),
                                         "statement": c["statement"], "figure": name,
                                         "holds": [None] * n_seeds, "measured": [None] * n_seeds})
        row["holds"][index], row["measured"][index] = c["holds"], c["measured"]
  for row in rows.values():
    row["seeds_holding"] = sum(bool(h) for h in row["holds"])
  return list(rows.values())


def seed_table_markdown(rows, n_seeds: int) -> str:
  """The seed table as Markdown: one row per claim, paper claims first, each with what the paper
  says (a control: what it checks)."""
  lines = ["| claim | kind | source | what the paper says | holds on | " + " | ".join(
      f"seed {i}" for i in range(n_seeds)) + " |", "|---|---|---|---|---|" + "---|" * n_seeds]
  for row in sorted(rows, key=lambda r: r["kind"] != "paper"):
    cells = ["—" if m is None else ("✓ " if h else "✗ ") + m.replace("|", "/")
             for h, m in zip(row["holds"], row["measured"])]
    says = (row.get("paper_says") or f"(control) {row['statement']}").replace("|", "/")
    lines.append(f"| `{row['id']}` | {row['kind']} | {row['source']} | {says} | "
                 f"{row['seeds_holding']} of {n_seeds} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_seed_table(workdir, n_seeds: int, preset: str, names: Sequence[str]) -> Path:
  """``seeds.json`` and ``seeds.md`` in ``workdir``: each claim over the seeds; returns the .md."""
  rows = seed_table(workdir, n_seeds, names)
  write_json(Path(workdir) / "seeds.json",
                        {"n_seeds": n_seeds, "preset": preset, "claims": rows})
  table = Path(workdir) / "seeds.md"
  table.write_text(seed_table_markdown(rows, n_seeds))
  return table


PAPERS = ("“A Mathematical Framework for Transformer Circuits” (Elhage et al., 2021; FW) and "
          "“In-context Learning and Induction Heads” (Olsson et al., 2022; IH)")


def training_record(run) -> dict:
  """What a training run's ``metrics.jsonl`` says at its end: the last training loss, held-out
  loss, wall time (seconds) and the products' dtype (runs before it was recorded have none);
  empty when ``run`` is not one of our work directories."""
  record = {}
  for r in read_metrics(Path(run) / "metrics.jsonl", log=lambda line: None) if run else []:
    for key, name in (("loss", "final_loss"), ("heldout_loss", "heldout_loss"),
                      ("elapsed_s", "seconds"), ("compute_dtype", "compute_dtype")):
      if key in r:
        record[name] = r[key]
  return record


def _summaries(workdir: Path, names: Sequence[str]) -> list:
  """(name, claims.json contents) of each figure of ``names`` made in ``workdir``, in order."""
  return [(n, json.loads((workdir / n / "claims.json").read_text())) for n in names
          if (workdir / n / "claims.json").is_file()]


def _seeds_held(workdir: Path) -> dict:
  """claim id -> 'k of n' over the training seeds, when ``seeds.json`` is present."""
  path = workdir / "seeds.json"
  if not path.is_file():
    return {}
  seeds = json.loads(path.read_text())
  return {r["id"]: f"{r['seeds_holding']} of {seeds['n_seeds']}" for r in seeds["claims"]}


def paper_says(c) -> str:
  """What the paper says, as the summary shows it: a paper claim's ``paper_says``; a control has
  none, so its statement, marked as a control."""
  return c.get("paper_says") or f"(control) {c['statement']}"


def _statement_cell(c) -> str:
  """A claim's statement about our models, under what the paper says (paper claims)."""
  says = c.get("paper_says")
  return ((f"<span class='says'>{html.escape(says)}</span><br>" if says else "")
          + html.escape(c["statement"]))


def _verdict(holds: bool) -> str:
  return "holds" if holds else "fails"


def _summary_section(summaries, seeds: dict) -> str:
  """The answer at a glance: every claim, what the paper says, verdict, seeds, its figure."""
  out = []
  for kind, title in (("paper", "Paper claims"), ("control", "Controls")):
    rows = "".join(
        f"<tr class=\"{'ok' if c['holds'] else 'no'}\"><td><a href=\"#{name}\">{name}</a><br>"
        f"<code>{html.escape(c['id'])}</code></td>"
        f"<td>{html.escape(paper_says(c))}<br><span class='kind'>"
        f"{html.escape(c['source'])}</span></td><td>{html.escape(c['measured'])}</td>"
        f"<td class='seeds'>{html.escape(seeds.get(c['id'], 'this run only'))}</td>"
        f"<td class='verdict'>{_verdict(c['holds'])}</td></tr>"
        for name, summary in summaries for c in summary["claims"] if c["kind"] == kind)
    if rows:
      out.append(f"<h2>{title}</h2><table><tr><th>figure, claim</th><th>what the paper says"
                 "</th><th>measured (this run)</th><th>seeds holding</th><th>verdict</th></tr>"
                 f"{rows}</table>")
  return "<section id='summary'>" + "".join(out) + "</section>"


# Claims whose verdict on some training seed differed between float32 and bfloat16 products
# (the same three seeds, the same code; docs/RECIPE.md, "Claims across seeds", both tables):
# claim id → how.
DTYPE_SENSITIVE_CLAIMS = {
    "induction_formation.loss_bump.attn2l": "1 of 3 seeds in either dtype, not the same seed",
    "head_ablations.previous_token_head.attn2l": "3 of 3 seeds in bfloat16, 1 in float32",
    "induction_heads.layer0_averaging_head.attn2l": "3 of 3 seeds in bfloat16, 2 in float32",
}


def _dtype_note(dtypes) -> str:
  """Which products this run's models trained with, and the claims that depend on it."""
  used = ", ".join(sorted(dtypes)) or "unknown (no training record)"
  sensitive = "; ".join(f"<code>{html.escape(i)}</code> ({html.escape(how)})"
                        for i, how in DTYPE_SENSITIVE_CLAIMS.items())
  return (f"<p>This run's models trained with <b>{html.escape(used)}</b> products (bfloat16 on "
          "accelerators and on CPUs with AMX or AVX512-BF16, float32 elsewhere, unless forced). "
          "Trained weights depend on the products' dtype. On the same three training seeds, these "
          f"claims' verdicts differed between the two dtypes: {sensitive}; every other claim "
          "measured in both had the same verdict on every seed (docs/RECIPE.md, \"Claims "
          "across seeds\").</p>")


def _models_section(summaries) -> str:
  """One row per model analysed: its shape, tokens seen, how its training ended and the
  products' dtype, after a note on the dtype and the claims that depend on it."""
  models = {}
  for _, summary in summaries:
    for label, m in summary["models"].items():
      models.setdefault(m.get("source") or label, (label, m))
  rows = []
  for label, m in models.values():
    a, t = m.get("architecture", {}), m.get("training", {})
    number = lambda key, fmt: fmt.format(t[key]) if key in t else "—"
    tokens = f"{m['tokens_seen']:,}" if m.get("tokens_seen") else "—"
    heads = f"{a['n_heads']} × {a['d_head']}" if a.get("n_layers") else "—"
    rows.append(f"<tr><td>{html.escape(label)}</td><td>{a.get('n_layers')}</td>"
                f"<td>{heads}</td><td>{a.get('d_model')}</td>"
                f"<td>{tokens}</td><td>{number('final_loss', '{:.3f}')}</td>"
                f"<td>{number('heldout_loss', '{:.3f}')}</td>"
                f"<td>{number('seconds', '{:.0f} s')}</td>"
                f"<td>{html.escape(t.get('compute_dtype', '—'))}</td></tr>")
  dtypes = {m.get("training", {}).get("compute_dtype") for _, m in models.values()} - {None}
  return ("<section id='models'><h2>Models</h2>" + _dtype_note(dtypes) + "<table><tr><th>model</th>"
          "<th>layers</th><th>heads</th><th>d_model</th><th>tokens trained</th><th>final training "
          "loss</th><th>held-out loss</th><th>training time</th><th>products</th></tr>"
          + "".join(rows) + "</table></section>")


def _file_links(folder: Path, name: str) -> str:
  """Links to a figure's interactive pages, vector pictures and numbers."""
  links = []
  for pattern, what in (("*.html", "interactive"), ("*.svg", "SVG"), ("*.json", "JSON")):
    links += [f'<a href="{name}/{p.name}">{html.escape(p.name)}</a> ({what})'
              for p in sorted(folder.glob(pattern))]
  return f"<p class='files'>files: {' · '.join(links)}</p>" if links else ""


def _claims_table(title: str, claims) -> str:
  """An HTML table of claims of one kind (empty string when there are none)."""
  if not claims:
    return ""
  rows = "".join(
      f"<tr class=\"{'ok' if c['holds'] else 'no'}\"><td><code>{html.escape(c['id'])}</code>"
      f"<br><span class='kind'>{html.escape(c['source'])}</span></td>"
      f"<td>{_statement_cell(c)}</td><td>{html.escape(c['criterion'])}</td>"
      f"<td>{html.escape(c['measured'])}</td>"
      f"<td class='verdict'>{_verdict(c['holds'])}</td></tr>" for c in claims)
  return (f"<h3>{html.escape(title)}</h3><table><tr><th>id, source</th><th>what the paper says; "
          "what we test</th>"
          f"<th>criterion</th><th>measured</th><th></th></tr>{rows}</table>")


def _figure_section(workdir: Path, name: str, summary: dict) -> str:
  pictures = "".join(
      f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
      f'alt="{html.escape(p.stem)}">' for p in sorted((workdir / name).glob("*.png")))
  tables = "".join(_claims_table(title, [c for c in summary["claims"] if c["kind"] == kind])
                   for kind, title in (("paper", "paper claims"), ("control", "controls")))
  models = (", ".join(f"{k} (step {v.get('step')})" for k, v in summary["models"].items())
            or "built by the figure itself")
  return (f'<section id="{name}"><h2>{name}</h2><p>{html.escape(summary["description"])}</p>'
          f'<p class="models">models: {html.escape(models)}; preset '
          f'{html.escape(summary["preset"])}; {html.escape(tally(summary["claims"]))}</p>'
          f'{pictures}{_file_links(workdir / name, name)}{tables}</section>')


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
         "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse;"
         "width:100%;font-size:90%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;"
         "vertical-align:top;overflow-wrap:break-word}td.verdict,td.seeds{white-space:nowrap}th{background:#f3f3f3}tr.ok td.verdict{color:#176b2c;"
         "font-weight:bold}tr.no td.verdict{color:#a11;font-weight:bold}tr.no{background:#fff5f5}"
         ".models,.files{color:#666;font-size:90%}section{margin-bottom:3em}"
         ".kind{font-size:80%;color:#666}.says{font-style:italic}nav{display:flex;flex-wrap:wrap;gap:.3em .9em}")


def write_index(workdir, names: Sequence[str]) -> Path:
  """``index.html``, the landing page: what reproduces (every claim with what the paper says, its
  verdict and the seeds it holds on), the models, then every figure of ``names`` present in
  ``workdir`` in that order with its pictures (embedded, so the page opens offline anywhere),
  links to its interactive, SVG and JSON files, and its claims."""
  workdir = Path(workdir)
  summaries = _summaries(workdir, names)
  all_claims = [c for _, s in summaries for c in s["claims"]]
  page = ("<!doctype html><html><head><meta charset='utf-8'><title>circuits-repro: FW and IH "
          f"reproduced</title><style>{STYLE}</style></head><body>"
          f"<h1>Reproducing {html.escape(PAPERS)}</h1>"
          f"<p class='tally'>{html.escape(tally(all_claims))}. A paper claim is a statement of "
          "one of the papers, tested on our models; a control is a sanity baseline.</p><nav>"
          + "".join(f'<a href="#{n}">{n}</a>' for n, _ in summaries) + "</nav>"
          + _summary_section(summaries, _seeds_held(workdir)) + _models_section(summaries)
          + "".join(_figure_section(workdir, n, s) for n, s in summaries) + "</body></html>")
  path = workdir / "index.html"
  path.write_text(page)
  return path
