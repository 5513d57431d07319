"""reproduce.figure.report: the tally, the index page, the seed table, and the training record
read from a metrics log cut short."""

import html
import json
from pathlib import Path

import pytest

from reproduce.figure import report
from reproduce.figure.claims import claim
from reproduce.figure.runner import figure_module, figure_names

FIGURES = figure_names()


def test_tally_leaves_out_a_kind_with_no_claims():
  paper = {"kind": "paper", "holds": False}
  assert report.tally([paper]) == "paper claims: 0 of 1 hold"
  assert report.tally([paper, {"kind": "control", "holds": True}]) == (
      "paper claims: 0 of 1 hold; controls: 1 of 1 hold")
  assert report.tally([]) == "no claims"


def test_index_page_shows_every_figure(figures):
  _, summaries, _ = figures
  page = report.write_index(figures[0], FIGURES).read_text()
  for name in FIGURES:
    assert f'id="{name}"' in page
  assert [page.index(f'id="{name}"') for name in FIGURES] == sorted(
      page.index(f'id="{name}"') for name in FIGURES)  # in figure order
  assert page.count("data:image/png;base64,") >= len(FIGURES)
  assert "<h3>paper claims</h3>" in page and "<h3>controls</h3>" in page
  assert "In-context Learning and Induction Heads" in page.split("</h1>")[0]  # both papers
  summary = page.split("<section id='summary'>")[1].split("</section>")[0]
  claims = [c for s in summaries.values() for c in s["claims"]]
  assert summary.count("<tr class=") == len(claims)  # every claim, with its verdict and figure
  assert summary.count("<td class='verdict'>fails</td>") == sum(not c["holds"] for c in claims)
  assert "<th>what the paper says</th>" in summary
  for c in claims:  # the summary shows what the paper says, not our statement
    assert html.escape(c.get("paper_says") or f"(control) {c['statement']}") in summary
  assert "<section id='models'>" in page and "tokens trained" in page
  models = page.split("<section id='models'>")[1].split("</section>")[0]
  dtypes = {m["training"]["compute_dtype"] for s in summaries.values()
            for m in s["models"].values() if "compute_dtype" in m.get("training", {})}
  assert f"trained with <b>{', '.join(sorted(dtypes))}</b> products" in models
  for claim_id in report.DTYPE_SENSITIVE_CLAIMS:  # named as the figures name them
    figure, what, model = claim_id.split(".", 2)
    assert f'"{what}"' in Path(figure_module(figure).__file__).read_text()
    assert model in ("attn0l", "attn1l", "attn2l") and f"<code>{claim_id}</code>" in models
  assert 'href="induction_attention/induction_attention_attn2l.html"' in page
  assert "controls: 0 of 0" not in page and "paper claims: 0 of 0" not in page


def test_seed_table_counts_the_seeds_each_claim_holds_for(tmp_path):
  def write(index, name, holds):
    folder = report.seed_workdir(tmp_path, index) / name
    folder.mkdir(parents=True)
    claims = [claim(figure=name, what="a", model=None, statement="s",
                               source="FW fig 1", criterion="c", measured=f"m{index}", value=0,
                               holds=h, paper_says="FW says a") for h in holds[:1]]
    claims += [claim(figure=name, what="b", model=None, statement="s",
                                source="control: x", criterion="c", measured="m", value=0,
                                holds=h, kind="control") for h in holds[1:]]
    (folder / "claims.json").write_text(json.dumps({"claims": claims}))
  write(0, "bigram", [True, True])
  write(1, "bigram", [False, True])
  write(2, "bigram", [True])  # claim b missing on seed 2: counts as not holding
  rows = {r["id"]: r for r in report.seed_table(tmp_path, 3, FIGURES)}
  assert rows["bigram.a"]["seeds_holding"] == 2 and rows["bigram.a"]["holds"] == [True, False, True]
  assert rows["bigram.b"]["seeds_holding"] == 2 and rows["bigram.b"]["holds"][2] is None
  table = report.seed_table_markdown(list(rows.values()), 3)
  assert "| `bigram.a` | paper | FW fig 1 | FW says a | 2 of 3 |" in table
  assert "| `bigram.b` | control | control: x | (control) s | 2 of 3 |" in table
  assert rows["bigram.a"]["paper_says"] == "FW says a" and rows["bigram.b"]["paper_says"] is None
  assert table.index("bigram.a") < table.index("bigram.b")  # paper claims first


def test_the_report_reads_a_metrics_log_cut_short_as_training_does(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text('{"step": 10, "loss": 3.5, "elapsed_s": 4.0}\n'
                     '{"step": 20, "heldout_loss": 3.25}\n{"step": 30, "lo')
  assert report.training_record(tmp_path) == {"final_loss": 3.5, "heldout_loss": 3.25,
                                              "seconds": 4.0}
  metrics.write_text('{"step": 10, "loss": 3.5}\nnot json\n{"step": 30, "loss": 2.0}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a metrics record"):
    report.training_record(tmp_path)


def test_the_dtype_note_names_the_products_used_and_the_claims_that_depend_on_them():
  note = report._dtype_note({"bfloat16"})
  assert "trained with <b>bfloat16</b> products" in note
  assert all(f"<code>{i}</code>" in note for i in report.DTYPE_SENSITIVE_CLAIMS)
  assert "<b>unknown (no training record)</b>" in report._dtype_note(set())
  assert "<b>bfloat16, float32</b>" in report._dtype_note({"float32", "bfloat16"})
