"""reproduce.figure.claims: one id scheme, unique across figures; paper claims quote the paper,
controls do not."""

import pytest

from reproduce.figure import claims
from reproduce.figure.claims import claim


def test_claim_ids_follow_one_scheme():
  claim = lambda **kw: claims.claim(statement="s", source="FW fig 1", criterion="c",
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
