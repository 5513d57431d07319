"""reproduce.figure.runner: every figure end to end on the `test` preset, figure discovery, when
a figure is current (its models, steps, config and measuring code), failed figures keeping the
previous outputs, and deeper models."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reproduce
from reproduce.figure.outputs import write_json
from reproduce.figure.runner import (UnknownFigure, code_version, figure_config, figure_is_current,
                                     figure_module, figure_names, make_figure, measuring_sources,
                                     source_hash)
from reproduce.figure.sources import FigureError, ModelSource

from tests.support.helpers import MECHANISM
from tests.support.paths import ROOT

FIGURES = figure_names()


# The batch job's and index.html's order: each figure module's ORDER.
ORDER = ("bigram", "skip_trigrams", "positional_heads", "ov_eigenvalues", "eigen_hist",
         "composition_scores", "induction_attention", "ov_qk_scatter", "term_importance",
         "induction_formation", "per_token_losses", "smeared_keys", "head_ablations",
         "ablations_over_training", "induction_heads", "simplest_induction_head")


# Figures that only draw: FW states no claim about what they show.
WITHOUT_CLAIMS = ("ov_eigenvalues",)


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


def test_models_are_trained_once_and_shared(figures):
  workdir, _, loaded = figures
  assert sorted(loaded) == ["attn0l:test", "attn1l:test", "attn1l_smeared:test", "attn2l:test",
                            "attn2l_smeared:test"]
  assert len(list((workdir / "models").iterdir())) == 5


@pytest.mark.parametrize("name", MECHANISM)
def test_mechanism_figure_writes_picture_numbers_and_claims(mechanism_figures, name):
  workdir, claims, _ = mechanism_figures
  out = workdir / name
  assert [p for p in out.glob("*.png") if p.stat().st_size > 5000] and list(out.glob("*.svg"))
  assert list(out.glob("*.json"))
  ids = [c["id"] for c in claims[name]]
  assert claims[name] and len(set(ids)) == len(ids)
  # <figure>.<what>.<model label> even for a single model
  assert all(i.startswith(f"{name}.") and i.endswith(".attn2l") and i.count(".") == 2
             for i in ids), ids
  for c in claims[name]:
    assert c["kind"] in ("paper", "control")
    assert c["source"].startswith(("FW", "IH") if c["kind"] == "paper" else "control")
    assert c["criterion"] and isinstance(c["holds"], bool)
    json.dumps(c)  # plain JSON


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


@pytest.mark.slow  # a command start; in process: figure/test_main.py
def test_unknown_figure_lists_the_valid_names():
  with pytest.raises(UnknownFigure, match="choose one of: bigram, skip_trigrams"):
    make_figure("eigen_histogram", ModelSource("test"), "/tmp/unused")
  out = subprocess.run([sys.executable, "-m", "reproduce.figure", "--name=eigen_histogram"],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0
  assert "unknown figure 'eigen_histogram'" in out.stderr
  assert all(name in out.stderr for name in FIGURES)


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


@pytest.mark.slow  # two figures on a 3-layer model with its own token store
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


def _fake_claims(workdir, name, preset="test", **changes):
  """A claims.json as ``make_figure`` writes it for finished `test` runs (no training needed)."""
  config = figure_config(name, preset)
  models = {}
  for model_name in config.models:
    model_config, run = ModelSource(preset, models_dir=Path(workdir) / "models").run(model_name)
    models[model_name] = {"source": str(run), "step": model_config.train.steps}
  summary = {"figure": name, "preset": preset, "figure_config": config.to_dict(),
             "code": code_version(name), "models": models, "claims": []}
  summary.update(changes)
  (Path(workdir) / name).mkdir(parents=True, exist_ok=True)
  write_json(Path(workdir) / name / "claims.json", summary)
  return summary


def test_a_figure_is_current_only_for_the_same_models_steps_and_config(tmp_path):
  name = "induction_formation"  # reads two models
  assert not figure_is_current(name, ModelSource("test"), tmp_path)  # nothing made yet
  summary = _fake_claims(tmp_path, name)
  assert figure_is_current(name, ModelSource("test"), tmp_path)
  assert not figure_is_current(name, ModelSource("test", models_dir=tmp_path / "elsewhere"), tmp_path)

  changed_config = dict(summary["figure_config"], formed=0.5)
  _fake_claims(tmp_path, name, figure_config=changed_config)
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  earlier = {k: dict(v, step=v["step"] - 10) for k, v in summary["models"].items()}
  _fake_claims(tmp_path, name, models=earlier)  # made from an unfinished run
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  other_run = {k: dict(v, source=v["source"] + "x") for k, v in summary["models"].items()}
  _fake_claims(tmp_path, name, models=other_run)  # a model whose config (hash) has changed
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  one_model = {"attn2l": summary["models"]["attn2l"]}
  _fake_claims(tmp_path, name, models=one_model)
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  _fake_claims(tmp_path, name, preset="cpu")
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  _fake_claims(tmp_path, name, code="made-by-older-code")  # measured or judged by other code
  assert not figure_is_current(name, ModelSource("test"), tmp_path)

  (tmp_path / name / "claims.json").write_text("{not json")
  assert not figure_is_current(name, ModelSource("test"), tmp_path)


def test_a_figure_is_keyed_on_the_code_that_measures_and_judges_it(tmp_path):
  sources = {p.relative_to(ROOT).as_posix() for p in measuring_sources("bigram")}
  assert {"experiments/bigram.py", "configs/bigram.py", "reproduce/core/circuits.py",
          "reproduce/core/scores/patterns.py", "reproduce/figure/claims.py",
          "reproduce/data/batches.py"} <= sources
  assert "experiments/eigen_hist.py" not in sources
  module = tmp_path / "scores.py"
  module.write_text("THRESHOLD = 0.5\n")
  before = source_hash([module])
  module.write_text("THRESHOLD = 0.4\n")
  assert source_hash([module]) != before


def test_a_figure_is_keyed_on_the_figures_whose_passes_it_reads(monkeypatch):
  monkeypatch.setattr(figure_module("bigram"), "SHARES", ("induction_formation",), raising=False)
  sources = {p.relative_to(ROOT).as_posix() for p in measuring_sources("bigram")}
  assert {"experiments/induction_formation.py", "configs/induction_formation.py"} <= sources
  monkeypatch.delattr(figure_module("bigram"), "SHARES")
  sources = {p.relative_to(ROOT).as_posix() for p in measuring_sources("bigram")}
  assert "experiments/induction_formation.py" not in sources
