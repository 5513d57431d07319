"""``python -m reproduce.atlas`` end to end on a small checkpoint with a hostile vocabulary: its
plan and progress lines, the files it writes and their links, token strings that stay text on
every page, strict JSON with every null explained; a flag without its partner refused."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support.helpers import hostile_model
from tests.support.paths import ROOT


def _hostile_model(folder):
  """A random 2-layer model with a word-level tokenizer of hostile tokens beside it, and a corpus
  of them (``helpers.hostile_model``)."""
  return hostile_model(folder, n_layers=2)


@pytest.fixture(scope="module")
def made(tmp_path_factory, cache_dir):
  """``python -m reproduce.atlas --checkpoint=...`` on the hostile model: (output folder, what
  it printed)."""
  tmp = tmp_path_factory.mktemp("atlas")
  weights, corpus = _hostile_model(tmp / "model")
  out = tmp / "atlas"
  run = subprocess.run([sys.executable, "-m", "reproduce.atlas", f"--checkpoint={weights}",
                        f"--corpus={corpus}", f"--out={out}", "--preset=test"], cwd=ROOT,
                       capture_output=True, text=True,
                       env={"CIRCUITS_REPRO_CACHE": cache_dir, "PATH": "/usr/bin:/bin",
                            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")})  # the suite's compile flags
  assert run.returncode == 0, run.stderr[-3000:]
  return out, run.stdout


def test_the_command_plans_reports_progress_and_writes_the_atlas(made):
  out, printed = made
  assert "atlas plan: 1 model(s), 4 heads" in printed and "TFLOP" in printed
  assert "estimated" in printed and "random init" in printed and "ablations:" in printed
  label = "model.npz"
  assert sorted(p.name for p in out.iterdir()) == ["atlas.json", "index.html", label]
  heads = ["L0H0", "L0H1", "L1H0", "L1H1"]
  assert sorted(p.name for p in (out / label).glob("L*.html")) == [f"{h}.html" for h in heads]
  assert all((out / label / f"{h}_{k}.png").is_file() for h in heads for k in ("ov", "qk"))
  index = (out / "index.html").read_text()
  for h in heads:
    assert f"href='{label}/{h}.html'" in index
  page = (out / label / "L0H1.html").read_text()
  for target in ("L0H0.html", "L1H0.html", "../index.html", "attention.html#L0H1"):
    assert f"href='{target}'" in page, target  # previous, next, index, its attention view
  assert "<script" not in page.lower()  # head pages need no script
  attention = (out / label / "attention.html").read_text()
  assert "location.hash" in attention  # opens on the head the address names


def test_hostile_tokens_stay_text_on_every_page(made):
  out, _ = made
  pages = sorted(out.rglob("*.html"))
  assert len(pages) == 6
  for page_file in pages:
    page = page_file.read_text(encoding="utf-8")
    assert "<b>X" not in page and "<img/src" not in page, page_file
    assert "\u2028" not in page and "<!--" not in page, page_file
    assert not re.search(r"\bnan\b", page, flags=re.I), page_file  # null, said "undefined"
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S | re.I)
    assert page.lower().count("</script") == len(scripts), page_file  # no early closer
    assert "http" not in "".join(scripts), page_file  # nothing fetched
  # the data still arrives: the tokens are in the attention page's data and in the tables
  attention = (out / "model.npz" / "attention.html").read_text(encoding="utf-8")
  views = json.loads(re.search(r"const V = (.*);\n", attention).group(1))
  shown = json.dumps(views, ensure_ascii=False)
  assert "</script><b>X" in shown or "<img/src" in shown
  tables = "".join(p.read_text(encoding="utf-8") for p in (out / "model.npz").glob("L*.html"))
  assert "&lt;" in tables  # a hostile token, escaped, in a token table


def _no_nan(value):
  raise ValueError(f"{value} in atlas.json")


def test_atlas_json_is_strict_with_every_null_explained(made):
  out, _ = made
  data = json.loads((out / "atlas.json").read_text(encoding="utf-8"), parse_constant=_no_nan)
  record, = data["models"]
  assert record["shape"]["n_layers"] == 2 and record["tokenizer"]
  for key in ("held_out_loss", "icl_score"):
    assert set(record[key]) >= {"value", "baseline"}
  assert record["random_init"].startswith("a fresh")  # a weight file has no snapshots
  roles = {"inactive", "previous_token", "induction", "copying", "positional", "unlabelled"}
  for h in record["heads"]:
    assert h["roles"] and {r["role"] for r in h["roles"]} <= roles
    assert {c["id"] for c in h["checks"]} == set(record["checks"])
    for key, n in h["scores"].items():
      assert n["value"] is not None or n["undefined"], (h["name"], key)
      assert n["baseline"] is not None or n["baseline_undefined"], (h["name"], key)
    assert len(h["eigenvalues"]["ov"]) == 8 and h["skip_trigrams"] and h["ov_mappings"]
    assert all(o["count"] is not None for t in h["skip_trigrams"] for s in t["sources"]
               for o in s["outputs"])
  # the layer-0 heads have no K-composition QK term, and say why
  assert "layer 0" in record["heads"][0]["scores"]["kcomp_qk_positivity"]["undefined"]


def test_tl_config_without_a_checkpoint_is_a_usage_error():
  run = subprocess.run([sys.executable, "-m", "reproduce.atlas", "--tl_config={}"], cwd=ROOT,
                       capture_output=True, text=True)
  assert run.returncode == 2 and run.stderr.startswith("error: --tl_config")
