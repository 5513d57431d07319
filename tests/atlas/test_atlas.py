"""reproduce.atlas end to end on a small model: the command on a checkpoint with a hostile
vocabulary (token strings stay text on every page), the records (strict JSON, every head a role,
every null with its reason), the pages' links, the QK split against the circuits, and the work
count that sizes the ablation pass (the library form without a tokenizer: test_known_models)."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import reproduce
from reproduce.atlas import default_config, measure, plan
from reproduce.bench.figures import SHAPES
from reproduce.core import circuits
from reproduce.core.model import ModelConfig, forward
from reproduce.core.weights import init_weights
from reproduce.figure.sources import Model

from tests.support.helpers import random_model
from tests.support.paths import ROOT

HOSTILE = ["</script><b>X", "<img/src=x/onerror=alert(1)>", "<!--", "\"quoted'", "a&amp;b",
           "\u2028", "]]>", "${1}", "{{BODY}}", "</SCRIPT >"]


def _hostile_model(folder):
  """A random 2-layer model with a word-level tokenizer of hostile tokens beside it (40 tokens),
  and a corpus of them."""
  words = HOSTILE + [f"w{i}" for i in range(38 - len(HOSTILE))]
  vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
  folder.mkdir(parents=True)
  tok.save(str(folder / "tokenizer.json"))
  cfg = ModelConfig(n_layers=2, n_heads=2, d_head=8, d_model=16, d_vocab=len(vocab), n_ctx=64)
  reproduce.save_transformer_lens(folder / "model.npz", cfg, init_weights(cfg, jax.random.key(1)))
  corpus = folder.parent / "text"
  corpus.mkdir()
  for i in range(12):  # every word many times, in a different order per file
    order = [words[(i * 7 + j * (i + 3)) % len(words)] for j in range(400)]
    (corpus / f"doc{i}.txt").write_text(" ".join(order), encoding="utf-8")
  return folder / "model.npz", corpus


@pytest.fixture(scope="module")
def made(tmp_path_factory, cache_dir):
  """``python -m reproduce.atlas --checkpoint=...`` on the hostile model: (output folder, what
  it printed)."""
  tmp = tmp_path_factory.mktemp("atlas")
  weights, corpus = _hostile_model(tmp / "model")
  out = tmp / "atlas"
  run = subprocess.run([sys.executable, "-m", "reproduce.atlas", f"--checkpoint={weights}",
                        f"--corpus={corpus}", f"--out={out}", "--preset=test"], cwd=ROOT,
                       capture_output=True, text=True, env={"CIRCUITS_REPRO_CACHE": cache_dir,
                                                            "PATH": "/usr/bin:/bin"})
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


def test_qk_split_of_layer_0_is_the_circuits_terms():
  """Layer 0's content, cross and position–position terms, read off the stream, are the full
  QK circuit, ``circuits.token_position_qk`` and ``circuits.positional_qk``: the shares from
  those (computed here with loops) equal ``measure.qk_term_shares``'s."""
  cfg, w = random_model(n_layers=1, n_heads=2, d_head=4, d_model=12, d_vocab=23, n_ctx=10,
                        pos="shortformer", std=0.6)
  model = Model("m", cfg, w, meta={})
  tokens = np.random.default_rng(0).integers(0, 23, (3, 10))
  _, ex = forward(cfg, w, tokens, return_head_outputs=True)
  shares = measure.qk_term_shares(model, jnp.asarray(tokens), ex["head_outputs"])
  qk = circuits.qk_circuit(w)
  token_pos, pos_token = circuits.token_position_qk(w)
  positional = np.asarray(circuits.positional_qk(w), np.float64)
  root = np.sqrt(cfg.d_head)
  for h in range(cfg.n_heads):
    sums = {"content": 0.0, "cross": 0.0, "position": 0.0}
    total_sq = 0.0
    for t in tokens:
      terms = {"content": np.asarray(qk.left[0, h][t] @ qk.right[0, h][:, t]) / root,
               "cross": (np.asarray(token_pos.left[0, h][t] @ token_pos.right[0, h][:, :10])
                         + np.asarray(pos_token.left[0, h][:10] @ pos_token.right[0, h][:, t]))
               / root,
               "position": positional[0, h, :10, :10]}
      for i in range(1, 10):
        row = {k: v[i, : i + 1] - v[i, : i + 1].mean() for k, v in terms.items()}
        total = sum(row.values())
        total_sq += float(total @ total)
        for k in sums:
          sums[k] += float(row[k] @ total)
    for k in sums:
      assert shares[k][0, h] == pytest.approx(sums[k] / total_sq, abs=2e-4), (h, k)
    assert sum(shares[k][0, h] for k in sums) == pytest.approx(1.0, abs=1e-4)


def test_the_ablation_pass_is_sized_from_its_counted_work():
  cpu, paper = default_config("cpu"), default_config("cpu")
  small = ModelConfig.from_any(reproduce.config.load_config("attn2l:cpu"))
  assert plan.ablation_windows(small, cpu) == cpu.icl_windows == 512  # as head_ablations
  big = ModelConfig(**SHAPES["paper"])
  windows = plan.ablation_windows(big, paper)
  assert paper.ablation_min_windows <= windows < paper.icl_windows
  positions = measure.ablation_plan(big, paper).positions
  assert plan.ablation_flops(big, windows, positions) <= paper.ablation_budget_tflop * 1e12
  assert plan.ablation_flops(big, 2 * windows, positions) > paper.ablation_budget_tflop * 1e12
  assert measure.ablation_plan(big, paper).windows == windows
  parts = plan.work(big, paper, has_text=True)
  assert max(parts, key=parts.get) == "ablations" and all(v > 0 for v in parts.values())


def test_tl_config_without_a_checkpoint_is_a_usage_error():
  run = subprocess.run([sys.executable, "-m", "reproduce.atlas", "--tl_config={}"], cwd=ROOT,
                       capture_output=True, text=True)
  assert run.returncode == 2 and run.stderr.startswith("error: --tl_config")
