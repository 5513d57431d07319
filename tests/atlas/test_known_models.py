"""The atlas labels every head of the hand-built models (reproduce.core.known_circuits) with
exactly the roles it has by construction, none left over, from probes alone (they have no
tokenizer): the roles' criteria read the scores right.  Built as a notebook would: an ``Atlas``
of a ``sources.Model``, its records and its inline table."""

import pytest

from reproduce.atlas import Atlas, default_config
from reproduce.core import known_circuits
from reproduce.figure.sources import Model


def _model(known):
  return Model(label=known.name, cfg=known.cfg, weights=known.weights,
               meta={"bos_token_id": known.bos_id})


@pytest.mark.parametrize("build", [known_circuits.simplest_induction_model,
                                   known_circuits.head_zoo_model])
def test_every_head_of_a_known_model_gets_exactly_its_roles(build):
  known = build()
  atlas = Atlas(_model(known), default_config("cpu"))
  record, = atlas.records
  found = {(h["layer"], h["head"]): frozenset(r["role"] for r in h["roles"])
           for h in record["heads"]}
  assert found == dict(known.roles), {k: (sorted(found[k]), sorted(known.roles[k]))
                                      for k in found if found[k] != known.roles[k]}
  assert set().union(*known.roles.values()) <= set(known_circuits.ROLES)
  for h in record["heads"]:
    for role in h["roles"]:  # each role says what decided it
      assert role["criterion"] and role["value"] is not None and role["threshold"] is not None
    # nothing the weights say contradicts what the heads do
    assert all(c["status"] != "disagrees" for c in h["checks"]), h["checks"]
  # no tokenizer: the text measures are undefined, with the reason, and null in the record
  for key in ("bos_text", "ablation_icl", "ablation_loss_change"):
    n = record["heads"][0]["scores"][key]
    assert n["value"] is None and "no tokenizer" in n["undefined"]
  assert record["held_out_loss"]["value"] is None and record["icl_score"]["value"] is None
  inline = atlas._repr_html_()  # pylint: disable=protected-access
  assert "<table class='heads'>" in inline and "<script" not in inline
  assert all(f">{h['name']}<" in inline for h in record["heads"])
