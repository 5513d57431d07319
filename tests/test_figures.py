"""Every figure end to end on the `test` preset, the index page, and the CLI's bad inputs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reproduce
from reproduce import experiment
from reproduce.figure import FIGURES, UnknownFigure, make_figure, write_index

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def figures(tmp_path_factory, cache_dir):
  """Runs every figure once on the `test` preset (models trained once, shared)."""
  workdir = tmp_path_factory.mktemp("figures")
  loaded = {}
  summaries = {name: make_figure(name, "test", workdir, cache_dir=cache_dir, log=lambda *_: None,
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
  assert claims["figure"] == name and claims["preset"] == "test" and claims["claims"]
  for c in claims["claims"]:
    assert set(c) == {"id", "kind", "statement", "source", "criterion", "measured", "value",
                      "holds"}
    assert isinstance(c["holds"], bool) and c["kind"] in ("paper", "control")
    assert c["id"].startswith(f"{name}.") and c["source"] and c["criterion"]
    if c["kind"] == "paper":
      assert c["source"].startswith(("FW", "IH")), c
  assert summaries[name]["claims"] == claims["claims"]


def test_claim_ids_are_unique_across_figures(figures):
  _, summaries, _ = figures
  ids = [c["id"] for s in summaries.values() for c in s["claims"]]
  assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_claim_record_rejects_unknown_kinds():
  with pytest.raises(ValueError, match="kind must be one of"):
    experiment.claim("x.y", "s", "FW fig 1", "c", "m", 1, True, kind="padding")


def test_models_are_trained_once_and_shared(figures):
  workdir, _, loaded = figures
  assert sorted(loaded) == ["attn0l:test", "attn1l:test", "attn2l:test"]
  assert len(list((workdir / "models").iterdir())) == 3


def test_induction_attention_writes_standalone_html(figures):
  page = (figures[0] / "induction_attention" / "induction_attention.html").read_text()
  assert "<script>" in page and "http" not in page.split("<script>")[1]  # no network needed


def test_index_page_shows_every_figure(figures):
  page = write_index(figures[0]).read_text()
  for name in FIGURES:
    assert f'id="{name}"' in page
  assert page.count("data:image/png;base64,") >= len(FIGURES)


def test_checkpoint_option_takes_transformer_lens_weights(figures, tmp_path):
  workdir, _, loaded = figures
  model = loaded["attn2l:test"]
  path = reproduce.save_transformer_lens(tmp_path / "model.safetensors", model.cfg, model.weights)
  shutil.copy(model.workdir / "tokenizer.json", tmp_path / "tokenizer.json")
  summary = make_figure("ov_qk_scatter", "test", tmp_path / "out", checkpoint=str(path),
                        cache_dir=str(Path(model.tokens.tokenizer_path).parent.parent),
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
  with pytest.raises(experiment.FigureError, match="at least 2 layer"):
    make_figure("composition_scores", "test", out, checkpoint=str(one_layer),
                log=lambda *_: None)
  assert sorted(p.name for p in (out / "composition_scores").iterdir()) == before
  assert [p.name for p in out.iterdir()] == ["composition_scores"]  # no temporary leftovers


def test_unknown_figure_lists_the_valid_names():
  with pytest.raises(UnknownFigure, match="choose one of: bigram, skip_trigrams"):
    make_figure("eigen_histogram", "test", "/tmp/unused")
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
