"""experiments/smeared_keys.py: each claim's verdict on hand-made numbers, where it holds and where
it must fail, and the figure's refusal of a model list without the models it compares."""

import types

import numpy as np
import pytest

from reproduce.figure.runner import figure_config, figure_module
from reproduce.figure.sources import FigureError

smeared_keys = figure_module("smeared_keys")


def test_a_smeared_1l_forms_only_where_it_passes_formed_and_the_vanilla_stays_flat():
  assert smeared_keys.forms_where_vanilla_does_not(0.7, 0.05, formed=0.3, unformed=0.1)
  assert not smeared_keys.forms_where_vanilla_does_not(0.25, 0.05, formed=0.3, unformed=0.1)
  # The vanilla 1L forming too would contradict the premise: no verdict for the smeared model.
  assert not smeared_keys.forms_where_vanilla_does_not(0.7, 0.12, formed=0.3, unformed=0.1)


def test_the_icl_gain_must_exceed_the_standard_errors_of_the_difference():
  holds, margin = smeared_keys.icl_gain(-0.6, 0.03, -0.2, 0.04, k=2.0)
  assert holds and np.isclose(margin, 0.4 / 0.05)
  holds, margin = smeared_keys.icl_gain(-0.25, 0.03, -0.2, 0.04, k=2.0)  # 1 s.e.: noise
  assert not holds and np.isclose(margin, 1.0)
  assert not smeared_keys.icl_gain(-0.1, 0.01, -0.2, 0.01, k=2.0)[0]  # worse, not better
  assert smeared_keys.icl_gain(-0.3, np.nan, -0.2, np.nan, k=2.0)[0]  # no errors: sign only


def test_first_formed_is_the_first_snapshot_at_or_above_the_threshold():
  tokens = np.array([0, 1e6, 2e6, 4e6, 8e6])
  assert smeared_keys.first_formed(tokens, [0.1, 0.2, 0.31, 0.2, 0.6], 0.3) == 2e6
  assert smeared_keys.first_formed(tokens, [0.1, 0.2, 0.29, 0.2, 0.25], 0.3) is None


def test_formed_earlier_holds_only_for_fewer_tokens_than_the_vanilla_run():
  assert smeared_keys.formed_earlier(2e6, 8e6, vanilla_end=18e6)
  assert not smeared_keys.formed_earlier(8e6, 8e6, vanilla_end=18e6)  # the same time
  assert not smeared_keys.formed_earlier(9e6, 8e6, vanilla_end=18e6)
  assert not smeared_keys.formed_earlier(None, 8e6, vanilla_end=18e6)  # never formed
  # The vanilla never forms: earlier only if the smeared formed within the vanilla's run.
  assert smeared_keys.formed_earlier(2e6, None, vanilla_end=18e6)
  assert not smeared_keys.formed_earlier(20e6, None, vanilla_end=18e6)


def test_the_figure_refuses_models_it_cannot_compare_in_one_line(tmp_path):
  config = figure_config("smeared_keys", "test")
  some = {name: None for name in ("attn1l", "attn2l", "attn1l_smeared")}
  with pytest.raises(FigureError, match="missing attn2l_smeared") as e:
    smeared_keys.run(config, some, tmp_path)
  assert "\n" not in str(e.value)
  vanilla = types.SimpleNamespace(label="attn1l", weights=types.SimpleNamespace(smear=None))
  with pytest.raises(FigureError, match="attn1l has no smeared keys"):
    smeared_keys.learned_sigma(vanilla)
  smeared = types.SimpleNamespace(label="s", weights=types.SimpleNamespace(
      smear=np.array([[0.0, np.log(3.0)]])))
  np.testing.assert_allclose(smeared_keys.learned_sigma(smeared), [[0.5, 0.75]])


def test_it_reads_induction_formation_s_shared_pass_with_its_settings():
  config = figure_config("smeared_keys", "cpu")
  formation = figure_config("induction_formation", "cpu")
  assert config.formation.to_dict() == formation.to_dict()
  lean = dict(formation.to_dict(), token_loss_windows=0, previous_token_windows=0)
  assert config.smeared_formation.to_dict() == lean  # the smeared models' own, leaner passes
  assert smeared_keys.SHARES == ("induction_formation",)
  assert smeared_keys.ORDER > figure_module("induction_formation").ORDER


def test_a_model_without_snapshots_is_refused_before_any_pass(tmp_path, monkeypatch):
  from reproduce.figure.sources import Model
  formation = figure_module("induction_formation")
  monkeypatch.setattr(formation, "formation", lambda *a: pytest.fail("a pass was made"))
  models = {n: Model(n, None, None, {}) for pair in smeared_keys.PAIRS for n in pair}
  with pytest.raises(FigureError, match="training snapshots"):
    smeared_keys.run(figure_config("smeared_keys", "test"), models, tmp_path)
