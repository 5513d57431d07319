"""What ``reproduce.figure`` reports over figures: the claims tally, the table of claims across
training seeds (``seeds.json``, ``seeds.md``) and ``index.html``, all read back from each figure's
``claims.json`` (see ``experiment.claim``).  ``names`` is the figures in their display order
(``figure.figure_names()``).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Dict, Sequence

from reproduce import experiment


def claim_lines(claims) -> list:
  """The CLI's view of a figure's claims: one line each, then the paper/control tally."""
  lines = [f"  [{'holds' if c['holds'] else 'FAILS'}] {c['kind']} {c['id']} ({c['source']}): "
           f"{c['statement']} — {c['measured']}" for c in claims]
  return lines + [f"  {tally(claims)}"]


def tally(claims) -> str:
  """'paper claims: 7 of 9 hold; controls: 2 of 2 hold', counting the two kinds apart."""
  parts = []
  for kind, name in (("paper", "paper claims"), ("control", "controls")):
    of_kind = [c for c in claims if c["kind"] == kind]
    parts.append(f"{name}: {sum(c['holds'] for c in of_kind)} of {len(of_kind)} hold")
  return "; ".join(parts)


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
                                         "statement": c["statement"], "figure": name,
                                         "holds": [None] * n_seeds, "measured": [None] * n_seeds})
        row["holds"][index], row["measured"][index] = c["holds"], c["measured"]
  for row in rows.values():
    row["seeds_holding"] = sum(bool(h) for h in row["holds"])
  return list(rows.values())


def seed_table_markdown(rows, n_seeds: int) -> str:
  """The seed table as Markdown: one row per claim, paper claims first."""
  lines = ["| claim | kind | source | holds on | " + " | ".join(
      f"seed {i}" for i in range(n_seeds)) + " |", "|---|---|---|---|" + "---|" * n_seeds]
  for row in sorted(rows, key=lambda r: r["kind"] != "paper"):
    cells = ["—" if m is None else ("✓ " if h else "✗ ") + m.replace("|", "/")
             for h, m in zip(row["holds"], row["measured"])]
    lines.append(f"| `{row['id']}` | {row['kind']} | {row['source']} | "
                 f"{row['seeds_holding']} of {n_seeds} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_seed_table(workdir, n_seeds: int, preset: str, names: Sequence[str]) -> Path:
  """``seeds.json`` and ``seeds.md`` in ``workdir``: each claim over the seeds; returns the .md."""
  rows = seed_table(workdir, n_seeds, names)
  experiment.write_json(Path(workdir) / "seeds.json",
                        {"n_seeds": n_seeds, "preset": preset, "claims": rows})
  table = Path(workdir) / "seeds.md"
  table.write_text(seed_table_markdown(rows, n_seeds))
  return table


def _seed_section(workdir: Path) -> str:
  """index.html's table of claims across seeds, when ``seeds.json`` is present."""
  path = workdir / "seeds.json"
  if not path.is_file():
    return ""
  seeds = json.loads(path.read_text())
  n = seeds["n_seeds"]
  rows = "".join(
      f"<tr class=\"{'ok' if r['seeds_holding'] == n else 'no'}\"><td><code>"
      f"{html.escape(r['id'])}</code></td><td>{r['kind']}</td><td>{html.escape(r['source'])}"
      f"</td><td>{html.escape(r['statement'])}</td><td>{r['seeds_holding']} of {n}</td></tr>"
      for r in sorted(seeds["claims"], key=lambda r: r["kind"] != "paper"))
  return (f"<section id='seeds'><h2>Claims across {n} training seeds</h2><p>The figures below "
          "are seed 0's; seeds 1 and later are under <code>seed1/</code>, … </p><table><tr>"
          f"<th>id</th><th>kind</th><th>source</th><th>statement</th><th>holds on</th></tr>"
          f"{rows}</table></section>")


def _claims_table(title: str, claims) -> str:
  """An HTML table of claims of one kind (empty string when there are none)."""
  if not claims:
    return ""
  rows = "".join(
      f"<tr class=\"{'ok' if c['holds'] else 'no'}\"><td><code>{html.escape(c['id'])}</code>"
      f"<br><span class='kind'>{html.escape(c['source'])}</span></td>"
      f"<td>{html.escape(c['statement'])}</td><td>{html.escape(c['criterion'])}</td>"
      f"<td>{html.escape(c['measured'])}</td>"
      f"<td>{'holds' if c['holds'] else 'does not hold'}</td></tr>" for c in claims)
  return (f"<h3>{html.escape(title)}</h3><table><tr><th>id, source</th><th>statement</th>"
          f"<th>criterion</th><th>measured</th><th></th></tr>{rows}</table>")


def write_index(workdir, names: Sequence[str]) -> Path:
  """``index.html``: every figure of ``names`` present in ``workdir``, in that order, with its
  picture and claims table, self-contained (pictures embedded), so it opens offline anywhere."""
  workdir = Path(workdir)
  parts, all_claims = [], []
  for name in names:
    claims_file = workdir / name / "claims.json"
    if not claims_file.is_file():
      continue
    summary = json.loads(claims_file.read_text())
    pictures = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{html.escape(p.stem)}">' for p in sorted((workdir / name).glob("*.png")))
    all_claims.extend(summary["claims"])
    tables = "".join(_claims_table(title, [c for c in summary["claims"] if c["kind"] == kind])
                     for kind, title in (("paper", "paper claims"), ("control", "controls")))
    extra = ""
    if (workdir / name / f"{name}.html").is_file():
      extra = f'<p><a href="{name}/{name}.html">interactive view</a></p>'
    models = ", ".join(f"{k} (step {v.get('step')})" for k, v in summary["models"].items())
    parts.append(f'<section id="{name}"><h2>{name}</h2><p>{html.escape(summary["description"])}'
                 f'</p><p class="models">models: {html.escape(models)}; preset '
                 f'{html.escape(summary["preset"])}; {html.escape(tally(summary["claims"]))}</p>'
                 f'{pictures}{extra}{tables}</section>')
  page = ("<!doctype html><html><head><meta charset='utf-8'><title>circuits-repro figures</title>"
          "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse;"
          "width:100%;font-size:90%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;"
          "vertical-align:top}tr.ok td:last-child{color:#176b2c;font-weight:bold}tr.no "
          "td:last-child{color:#a11;font-weight:bold}.models{color:#666;font-size:90%}"
          "section{margin-bottom:3em}.kind{font-size:80%;color:#666}</style></head><body>"
          "<h1>A Mathematical Framework for Transformer Circuits — reproduced</h1>"
          f"<p class='tally'>All figures: {html.escape(tally(all_claims))}. Paper claims are "
          "statements of the papers (FW: A Mathematical Framework for Transformer Circuits; IH: "
          "In-context Learning and Induction Heads); controls are sanity baselines.</p>"
          + "".join(f'<a href="#{n}">{n}</a> · ' for n in names
                    if (workdir / n / "claims.json").is_file())
          + _seed_section(workdir) + "".join(parts) + "</body></html>")
  path = workdir / "index.html"
  path.write_text(page)
  return path
