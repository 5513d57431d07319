"""Every figure end to end on the `test` preset, the index page, and the CLI's bad inputs."""

import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reproduce
from reproduce.figure import report
from reproduce.figure.claims import claim
from reproduce.figure.roles import HeadRoles
from reproduce.figure.runner import UnknownFigure, figure_names, make_figure
from reproduce.figure.sources import FigureError, ModelSource

ROOT = Path(__file__).resolve().parents[1]
FIGURES = figure_names()
# The batch job's and index.html's order: each figure module's ORDER.
ORDER = ("bigram", "skip_trigrams", "positional_heads", "ov_eigenvalues", "eigen_hist",
         "composition_scores", "induction_attention", "ov_qk_scatter", "term_importance",
         "induction_formation", "head_ablations", "induction_heads")
# Figures that only draw: FW states no claim about what they show (issue 20, item 4).
WITHOUT_CLAIMS = ("ov_eigenvalues",)


@pytest.fixture(scope="session")
def figures(tmp_path_factory, cache_dir):
  """Runs every figure once on the `test` preset (models trained once, shared)."""
  workdir = tmp_path_factory.mktemp("figures")
  loaded = {}
  summaries = {name: make_figure(name,
                                 ModelSource("test", cache_dir=cache_dir),
                                 workdir,
                                 log=lambda *_: None,
                                 loaded=loaded) for name in FIGURES}
  return workdir, summaries, loaded


@pytest.mark.parametrize("name", FIGURES)
def test_figure_writes_picture_numbers_and_claims(figures, name):
  workdir, summaries, _ = figures
  out = workdir / name
  pngs, svgs = list(out.glob("*.png")), list(out.glob("*.svg"))
  assert pngs and svgs and all(p.stat().st_size > 5000 for p in pngs)
  assert list(out.glob("*.json")) and (out / "claims.json").is_file()
  claims = json.loads((out / "claims.json").read_text())
  assert claims["figure"] == name and claims["preset"] == "test"
  assert bool(claims["claims"]) != (name in WITHOUT_CLAIMS)
  for c in claims["claims"]:
    fields = {"id", "kind", "statement", "source", "criterion", "measured", "value", "holds"}
    assert set(c) == fields | ({"paper_says"} if c["kind"] == "paper" else set())
    assert isinstance(c["holds"], bool) and c["kind"] in ("paper", "control")
    assert c["source"] and c["criterion"]
    assert_id_scheme(c["id"], name, claims["models"])
    if c["kind"] == "paper":
      assert c["source"].startswith(("FW", "IH")), c
      # the statement it operationalises: the paper, its section, the paper's key words quoted
      says = c["paper_says"]
      assert says.startswith(("FW, ", "IH, ")) and says.count('"') >= 2, c["id"]
  assert summaries[name]["claims"] == claims["claims"]


def assert_id_scheme(claim_id, figure, labels):
  """``<figure>.<what>`` (about the models together) or ``<figure>.<what>.<label>`` (about the
  model ``label``, however many models the figure has)."""
  parts = claim_id.split(".", 2)
  assert parts[0] == figure and len(parts) >= 2 and parts[1], claim_id
  assert len(parts) == 2 or parts[2] in labels, (claim_id, list(labels))


def test_figures_are_the_experiment_modules_with_description_and_run():
  assert FIGURES == ORDER
  assert "check_transformer_lens" not in FIGURES and not (ROOT / "experiments" /
                                                          "check_transformer_lens.py").exists()


def test_a_new_figure_module_is_found_without_editing_the_runner(tmp_path, monkeypatch):
  from reproduce.figure import runner as figure  # pylint: disable=import-outside-toplevel
  package = figure.figure_module("bigram").__name__.rsplit(".", 1)[0]
  (tmp_path / "zz_new_figure.py").write_text(
      "DESCRIPTION = 'a new figure'\nORDER = 15\n\ndef run(config, models, outdir):\n"
      "  return []\n")
  (tmp_path / "zz_helper.py").write_text("TABLE = 1  # no DESCRIPTION, no run: not a figure\n")
  monkeypatch.setattr(sys.modules[package], "__path__",
                      list(sys.modules[package].__path__) + [str(tmp_path)])
  figure.figure_names.cache_clear()
  try:
    assert figure.figure_names() == ORDER[:1] + ("zz_new_figure",) + ORDER[1:]
    assert figure.figure_module("zz_new_figure").DESCRIPTION == "a new figure"
    with pytest.raises(UnknownFigure):
      figure.figure_module("zz_helper")
  finally:
    figure.figure_names.cache_clear()
    for name in ("zz_new_figure", "zz_helper"):
      sys.modules.pop(f"{package}.{name}", None)


def test_claim_ids_follow_one_scheme():
  claim = lambda **kw: claim(statement="s", source="FW fig 1", criterion="c",
                                        measured="m", value=1, holds=True,
                                        paper_says='FW, a section: "words"', **kw)
  assert claim(figure="eigen_hist", what="copying", model="attn1l")["id"] == \
      "eigen_hist.copying.attn1l"
  assert claim(figure="bigram", what="both", model=None)["id"] == "bigram.both"
  assert claim(figure="f", what="w", model="model.safetensors")["id"] == "f.w.model.safetensors"
  for bad in ({"figure": "a.b", "what": "w"}, {"figure": "f", "what": "w.x"},
              {"figure": "f", "what": ""}):
    with pytest.raises(ValueError, match="claim id"):
      claim(model=None, **bad)


def test_claim_ids_are_unique_across_figures(figures):
  _, summaries, _ = figures
  ids = [c["id"] for s in summaries.values() for c in s["claims"]]
  assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_a_paper_claim_needs_what_the_paper_says_and_a_control_has_none():
  kw = dict(figure="x", what="y", model=None, statement="s", source="FW fig 1", criterion="c",
            measured="m", value=1, holds=True)
  with pytest.raises(ValueError, match="needs paper_says"):
    claim(**kw)
  with pytest.raises(ValueError, match="a control has no paper_says"):
    claim(**kw, kind="control", paper_says="FW says so")
  made = claim(**kw, paper_says='FW, "Induction Heads": "words"')
  assert made["paper_says"] == 'FW, "Induction Heads": "words"'
  assert "paper_says" not in claim(**kw, kind="control")


def test_claim_record_rejects_unknown_kinds():
  with pytest.raises(ValueError, match="kind must be one of"):
    claim(figure="x", what="y", model=None, statement="s", source="FW fig 1",
                     criterion="c", measured="m", value=1, holds=True, kind="padding")


def test_tally_leaves_out_a_kind_with_no_claims():
  paper = {"kind": "paper", "holds": False}
  assert report.tally([paper]) == "paper claims: 0 of 1 hold"
  assert report.tally([paper, {"kind": "control", "holds": True}]) == (
      "paper claims: 0 of 1 hold; controls: 1 of 1 hold")
  assert report.tally([]) == "no claims"


def test_models_are_trained_once_and_shared(figures):
  workdir, _, loaded = figures
  assert sorted(loaded) == ["attn0l:test", "attn1l:test", "attn2l:test"]
  assert len(list((workdir / "models").iterdir())) == 3


def test_induction_attention_writes_standalone_html(figures):
  folder = figures[0] / "induction_attention"
  page = (folder / "induction_attention_attn2l.html").read_text()
  assert "<script>" in page and "http" not in page.split("<script>")[1]  # no network needed
  # it opens on the strongest induction head, whose button shows its scores, and names BOS
  numbers = json.loads((folder / "induction_attn2l.json").read_text())
  induction = np.asarray(numbers["prefix_matching_scores"])  # the induction score of every figure
  stripe = np.asarray(numbers["stripe_scores"])
  first = int(page.split("let seq = 0, head = ")[1].split(";")[0])
  assert first == int(np.argmax(induction))
  views = json.loads(page.split("const V = ")[1].split(";\n")[0])
  assert views[0]["tokens"][0] == "BOS" and views[0]["bos"]
  assert f"ind {induction.ravel()[first]:.2f}" in views[0]["heads"][first]
  assert f"stripe {stripe.ravel()[first]:.2f}" in views[0]["heads"][first]


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
  assert 'href="induction_attention/induction_attention_attn2l.html"' in page
  assert "controls: 0 of 0" not in page and "paper claims: 0 of 0" not in page


def test_checkpoint_option_takes_transformer_lens_weights(figures, tmp_path):
  workdir, _, loaded = figures
  model = loaded["attn2l:test"]
  path = reproduce.save_transformer_lens(tmp_path / "model.safetensors", model.cfg, model.weights)
  shutil.copy(model.workdir / "tokenizer.json", tmp_path / "tokenizer.json")
  summary = make_figure("ov_qk_scatter",
                        ModelSource("test", checkpoint=str(path), cache_dir=str(Path(model.tokens.tokenizer_path).parent.parent)),
                        tmp_path / "out",
                        log=lambda *_: None)
  assert summary["models"]["model.safetensors"]["architecture"]["n_layers"] == 2
  ours = json.loads((workdir / "ov_qk_scatter" / "claims.json").read_text())["claims"]
  assert summary["claims"][0]["value"] == ours[0]["value"]  # same weights, same numbers


def test_a_failed_figure_keeps_the_previous_outputs(figures, tmp_path):
  workdir, _, loaded = figures
  out = tmp_path / "figs"
  shutil.copytree(workdir / "composition_scores", out / "composition_scores")
  before = sorted(p.name for p in (out / "composition_scores").iterdir())
  one_layer = loaded["attn1l:test"].workdir
  with pytest.raises(FigureError, match="at least 2 layer"):
    make_figure("composition_scores",
                ModelSource("test", checkpoint=str(one_layer)),
                out,
                log=lambda *_: None)
  assert sorted(p.name for p in (out / "composition_scores").iterdir()) == before
  assert [p.name for p in out.iterdir()] == ["composition_scores"]  # no temporary leftovers


def test_unknown_figure_lists_the_valid_names():
  with pytest.raises(UnknownFigure, match="choose one of: bigram, skip_trigrams"):
    make_figure("eigen_histogram", ModelSource("test"), "/tmp/unused")
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=eigen_histogram"],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0
  assert "unknown figure 'eigen_histogram'" in out.stderr
  assert all(name in out.stderr for name in FIGURES)


def test_cli_lists_figures_and_rejects_bad_flags():
  listing = subprocess.run([sys.executable, "-m", "reproduce.figure", "--list"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
  assert all(name in listing for name in FIGURES)
  bad = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=bigram",
                        "--preset=laptop"], cwd=ROOT, capture_output=True, text=True)
  assert bad.returncode != 0 and "laptop" in bad.stderr


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=eigen_hist",
                        f"--checkpoint={tmp_path / 'nope'}", f"--workdir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode != 0 and "no checkpoint at" in out.stderr


def _three_layer_file(loaded, tmp_path):
  """A 3-layer TransformerLens-format file (layers L0, L1, L1 of the trained 2L test model) with
  its tokenizer beside it, and the cache holding that tokenizer's corpus."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  model = loaded["attn2l:test"]
  w = model.weights
  pick = lambda a: np.asarray(a)[[0, 1, 1]]
  weights = dataclasses.replace(w, W_Q=pick(w.W_Q), W_K=pick(w.W_K), W_V=pick(w.W_V),
                                W_O=pick(w.W_O))
  cfg = dataclasses.replace(model.cfg, n_layers=3)
  path = reproduce.save_transformer_lens(tmp_path / "deep.safetensors", cfg, weights)
  shutil.copy(model.workdir / "tokenizer.json", tmp_path / "tokenizer.json")
  return str(path), str(Path(model.tokens.tokenizer_path).parent.parent)


def test_figures_cover_every_layer_of_a_three_layer_model(figures, tmp_path):
  _, _, loaded = figures
  path, cache = _three_layer_file(loaded, tmp_path)
  out = tmp_path / "out"
  loaded_here = {}
  for name in ("composition_scores", "ov_qk_scatter"):
    make_figure(name,
                ModelSource("test", checkpoint=path, cache_dir=cache),
                out,
                log=lambda *_: None,
                loaded=loaded_here)
  comp = json.loads((out / "composition_scores" / "composition_deep.safetensors.json").read_text())
  assert comp["layer_pairs"] == [[0, 1], [0, 2], [1, 2]]
  k = np.asarray(comp["k"])
  assert k.shape == (3, 2, 3, 2) and (k[1, :, 2, :] > 0).all() and (k[0, :, 2, :] > 0).all()
  scatter = json.loads((out / "ov_qk_scatter" / "ov_qk_deep.safetensors.json").read_text())
  assert scatter["heads"] == ["L1H0", "L1H1", "L2H0", "L2H1"]
  assert set(scatter["previous_token_head_per_layer"]) == {"layer 1", "layer 2"}
  assert np.asarray(scatter["k_composition_positivity"]).shape == (2, 2)
  assert np.isfinite(np.asarray(scatter["k_composition_positivity"])).all()


def test_head_roles_look_in_every_layer():
  roles = HeadRoles(previous_token=np.array([[0.1, 0.2], [0.9, 0.0], [0.0, 0.95]]),
                               induction=np.array([[0.0, 0.0], [0.0, 0.4], [0.5, 0.0]]),
                               threshold=0.3)
  assert roles.previous_token_head(1) == (0, 1)  # only layer 0 precedes layer 1
  assert roles.previous_token_head(2) == (1, 0)  # layer 1's head is readable by layer 2
  assert roles.previous_token_head() == (1, 0)  # default: every layer but the last
  assert roles.previous_token_heads() == [(1, 0), (2, 1)]
  assert roles.induction_heads() == [(1, 1), (2, 0)]


def test_weight_file_figures_say_what_is_missing_and_make_the_rest(figures, tmp_path):
  _, _, loaded = figures
  model = loaded["attn2l:test"]
  path = reproduce.save_transformer_lens(tmp_path / "model.safetensors", model.cfg, model.weights)
  shutil.copy(model.workdir / "tokenizer.json", tmp_path / "tokenizer.json")
  cache = str(Path(model.tokens.tokenizer_path).parent.parent)
  out, here = tmp_path / "out", {}
  formation = make_figure("induction_formation",
                          ModelSource("test", checkpoint=str(path), cache_dir=cache),
                          out,
                          log=lambda *_: None,
                          loaded=here)
  assert (out / "induction_formation" / "induction_formation.png").is_file()
  numbers = json.loads((out / "induction_formation" / "induction_formation.json").read_text())
  assert "snapshots" in numbers["model.safetensors"]["missing"]
  assert formation["claims"] == []  # nothing that needs a trajectory is claimed
  hist = make_figure("eigen_hist",
                     ModelSource("test", checkpoint=str(path), cache_dir=cache),
                     out,
                     log=lambda *_: None,
                     loaded=here)
  assert all("no training snapshots" in c["measured"] for c in hist["claims"]
             if c["id"].startswith("eigen_hist.random_init"))


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


def test_seeds_flag_refuses_a_checkpoint(tmp_path):
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=bigram", "--seeds=3",
                        f"--checkpoint={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and "--seeds" in out.stderr


def test_first_run_plan_lists_every_seeds_models_and_spots_finished_ones(tmp_path):
  from reproduce.figure.estimate import first_run_plan  # pylint: disable=import-outside-toplevel
  from reproduce.figure.runner import figure_config  # pylint: disable=import-outside-toplevel
  _, finished = ModelSource("test", models_dir=tmp_path, seed=1).run("attn2l")
  (finished / "checkpoints" / "30").mkdir(parents=True)  # the test preset trains 30 steps
  models = figure_config("eigen_hist", "test").models
  plan = first_run_plan(models, 1, ModelSource("test", models_dir=tmp_path), seeds=2).splitlines()
  assert "2 seeds" in plan[0] and "estimated" in plan[0]
  assert [line.split(", 0.0M tokens")[0] for line in plan[1:]] == [
      "  attn1l seed 0: train 30 steps", "  attn2l seed 0: train 30 steps",
      "  attn1l seed 1: train 30 steps", "  attn2l seed 1: trained, reused"]
  single = first_run_plan(models, 1, ModelSource("test", models_dir=tmp_path)).splitlines()
  assert single[1:] and all(line.startswith(("  attn1l: train", "  attn2l: train"))
                           for line in single[1:])  # seed 0 trains; seed 1 is not it


def test_forced_compute_dtype_trains_into_its_own_run_and_the_plan_says_so(tmp_path):
  from reproduce.figure.estimate import first_run_plan  # pylint: disable=import-outside-toplevel
  auto_config, auto_run = ModelSource("test", models_dir=tmp_path).run("attn2l")
  for dtype in ("float32", "bfloat16"):
    config, run = ModelSource("test", models_dir=tmp_path, compute_dtype=dtype).run("attn2l")
    assert config.train.compute_dtype == dtype and run != auto_run
    plan = first_run_plan(["attn2l"], 1, ModelSource("test", models_dir=tmp_path, compute_dtype=dtype)).splitlines()
    assert f"{dtype} products" in plan[1], plan
  assert auto_config.train.compute_dtype == "auto"
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=bigram",
                        "--compute_dtype=float32", f"--checkpoint={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 2 and "--compute_dtype" in out.stderr
