"""reproduce.figure.outputs: a figure's outputs are written aside and swapped in whole, so a failed
run leaves the previous ones; JSON files take NumPy arrays and scalars."""

import json

import numpy as np

from reproduce.figure.outputs import OutputDir, write_json


def test_outputs_replace_the_previous_folder_only_when_committed(tmp_path):
  final = tmp_path / "figs" / "bigram"
  first = OutputDir(final)
  assert first.path.parent == final.parent and first.path != final and not final.exists()
  (first.path / "a.txt").write_text("first")
  assert first.commit() == final and (final / "a.txt").read_text() == "first"

  failed = OutputDir(final)
  (failed.path / "a.txt").write_text("half-written")
  failed.discard()  # the run failed: the previous outputs stay as they were
  assert (final / "a.txt").read_text() == "first" and not failed.path.exists()

  second = OutputDir(final)
  (second.path / "b.txt").write_text("second")
  second.commit()
  assert sorted(p.name for p in final.iterdir()) == ["b.txt"]  # replaced whole, not merged
  assert [p.name for p in final.parent.iterdir()] == ["bigram"]  # no temporary folders left


def test_json_files_take_numpy_arrays_and_scalars(tmp_path):
  value = {"scores": np.arange(6, dtype=np.float32).reshape(2, 3) / 4, "n": np.int64(3),
           "flag": np.bool_(True), "plain": [1, "x"]}
  write_json(tmp_path / "numbers.json", value)
  assert json.loads((tmp_path / "numbers.json").read_text()) == {
      "scores": [[0.0, 0.25, 0.5], [0.75, 1.0, 1.25]], "n": 3, "flag": True, "plain": [1, "x"]}
