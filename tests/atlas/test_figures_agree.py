"""One implementation: the atlas's numbers are the figures' numbers.  On the `test` preset's 1L
and 2L models (made once by the session's ``figures`` fixture), every per-head number the
induction_heads, head_ablations, ov_eigenvalues, eigen_hist, ov_qk_scatter, induction_attention
and composition_scores figures write equals the atlas's record of the same head, and the atlas
names the same induction and previous-token heads."""

import json

import numpy as np
import pytest

from reproduce.atlas import Atlas, default_config
from reproduce.figure.sources import ModelSource


@pytest.fixture(scope="module")
def atlas(figures, cache_dir):
  workdir, _, loaded = figures
  source = ModelSource("test", cache_dir=cache_dir)
  models = {name: loaded[source.key(name)] for name in ("attn1l", "attn2l")}
  return workdir, Atlas(models, default_config("test"))


def per_head(record, key, which="value"):
  """[L, H] of a score from the atlas's record (NaN where null)."""
  s = record["shape"]
  out = np.full((s["n_layers"], s["n_heads"]), np.nan)
  for h in record["heads"]:
    v = h["scores"][key][which]
    out[h["layer"], h["head"]] = np.nan if v is None else v
  return out


def same(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), equal_nan=True,
                             **({"rtol": 1e-5, "atol": 1e-6} | kw))


def test_atlas_rows_are_the_figures_numbers(atlas):
  workdir, atlas = atlas
  records = {r["label"]: r for r in atlas.records}
  compared = []
  for label, r in records.items():
    ih = json.loads((workdir / "induction_heads" / f"induction_heads_{label}.json").read_text())
    same(per_head(r, "prefix_matching"), ih["prefix_matching"])
    same(per_head(r, "prefix_matching", "baseline"), ih["random_init_prefix_matching"])
    same(per_head(r, "copying"), np.array(ih["copying"], float))  # null where NaN, both
    same(per_head(r, "copying", "baseline"), np.array(ih["random_init_copying"], float))
    same(per_head(r, "bos_probe"), ih["bos_attention_first_occurrence_random"])
    same(per_head(r, "bos_text"), ih["bos_attention_first_occurrence_text"])
    assert r["random_init"] == ih["random_init_source"]
    eig_file = workdir / "ov_eigenvalues" / f"eigenvalues_{label}.npz"  # the 1L model's
    if eig_file.is_file():
      eig = np.load(eig_file)
      same(per_head(r, "ov_positivity"), eig["ov_positivity"])
      same(per_head(r, "qk_positivity"), eig["qk_positivity"])
      same(per_head(r, "qk_positivity", "baseline"), eig["random_init_qk_positivity"])
      compared.append(eig_file.name)
    hist = json.loads((workdir / "eigen_hist" / "eigen_hist.json").read_text())[label]
    same(per_head(r, "ov_positivity", "baseline"), hist["random_init"])
    stripe = json.loads((workdir / "induction_attention" / f"induction_{label}.json").read_text())
    same(per_head(r, "stripe"), stripe["stripe_scores"])
    same(per_head(r, "previous_token"), stripe["previous_token_scores"])

  assert compared == ["eigenvalues_attn1l.npz"]
  r = records["attn2l"]
  ab = json.loads((workdir / "head_ablations" / "head_ablations_attn2l.json").read_text())
  assert r["icl_score"]["windows"] == ab["icl_score"]["windows"]
  assert r["icl_score"]["positions"] == ab["icl_score"]["positions"]
  same(r["icl_score"]["value"], ab["unablated"]["icl"], rtol=1e-4, atol=1e-5)
  same(r["icl_score"]["standard_error"], ab["unablated"]["icl_standard_error"], rtol=1e-3)
  for h in r["heads"]:  # the atlas zero-ablates (full ablation): head_ablations' comparison
    single = ab["full_single"][h["name"]]
    same(h["scores"]["ablation_icl"]["value"], single["icl"], rtol=1e-4, atol=1e-5)
    removed = h["scores"]["ablation_icl_removed"]
    if removed["value"] is not None:
      same(removed["value"], single["removed"]["icl"], rtol=1e-3, atol=1e-4)
    else:  # the atlas says why it gives no share: the unablated score is not significant
      assert "within 2 standard errors" in removed["undefined"]
  same(per_head(r, "prefix_matching"), ab["prefix_matching_scores"])
  same(per_head(r, "previous_token"), ab["previous_token_scores"])

  scatter = json.loads((workdir / "ov_qk_scatter" / "ov_qk_attn2l.json").read_text())
  same(per_head(r, "kcomp_qk_positivity")[1:], scatter["k_composition_positivity"])
  same(per_head(r, "kcomp_qk_positivity", "baseline")[1:],
       scatter["random_init"]["k_composition_positivity"])
  comp = json.loads((workdir / "composition_scores" / "composition_attn2l.json").read_text())
  k = np.asarray(comp["k"]) - comp["baseline"]
  for h in r["heads"]:
    if h["layer"] == 1:
      into = h["composition"]["in"]["k"]
      l1, h1 = (int(x) for x in into["partner"][1:].split("H"))
      same(into["value"], k[0, :, 1, h["head"]].max(), rtol=1e-5)
      assert k[l1, h1, 1, h["head"]] == k[0, :, 1, h["head"]].max()


def test_atlas_names_the_induction_and_previous_token_heads_the_figures_name(atlas):
  workdir, atlas = atlas
  r = next(r for r in atlas.records if r["label"] == "attn2l")
  with_role = lambda role: sorted(h["name"] for h in r["heads"]
                                  if any(x["role"] == role for x in h["roles"]))
  ih = json.loads((workdir / "induction_heads" / "induction_heads_attn2l.json").read_text())
  assert with_role("induction") == sorted(ih["induction_heads"])
  ab = json.loads((workdir / "head_ablations" / "head_ablations_attn2l.json").read_text())
  prev = np.asarray(ab["previous_token_scores"])
  named = sorted(f"L{l}H{h}" for l, h in zip(*np.nonzero(prev >= 0.3)))
  assert with_role("previous_token") == named
  for h in r["heads"]:
    assert h["roles"], h["name"]  # every head has a role or is "unlabelled"
