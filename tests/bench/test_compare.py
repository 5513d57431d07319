"""reproduce.bench.compare: the TransformerLens worker's line protocol (run here by a stand-in
interpreter, as the project never installs torch), the alternating timing rounds and the summary's
arithmetic."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from reproduce.bench import compare

# Answers as _TL_WORKER does: one JSON line of information once started, then for every "<n>"
# line on stdin the seconds n steps took (here 0.5 s a step, made up), until stdin closes.
STAND_IN = """#!{python}
import json, sys
shape = json.loads(sys.argv[-1])
print(json.dumps({{"torch": "stand-in", "threads": shape["threads"]}}), flush=True)
for line in sys.stdin:
  print(json.dumps({{"seconds": 0.5 * int(line)}}), flush=True)
"""


def _interpreter(path: Path, text: str) -> str:
  path.write_text(text)
  path.chmod(0o755)
  return str(path)


def test_the_worker_answers_each_request_and_leaves_nothing_behind(tmp_path):
  tl_python = _interpreter(tmp_path / "python", STAND_IN.format(python=sys.executable))
  worker = compare.TransformerLensWorker(tl_python, {"threads": 3, "n_layers": 2})
  folder = Path(worker._dir)  # pylint: disable=protected-access
  assert worker.info == {"torch": "stand-in", "threads": 3}
  assert (folder / "tl_worker.py").read_text() == compare._TL_WORKER  # pylint: disable=protected-access
  assert worker.time(4) == 2.0 and worker.time(1) == 0.5
  worker.close()
  assert not folder.exists()
  silent = _interpreter(tmp_path / "silent", f"#!{sys.executable}\nimport sys\nsys.exit(1)\n")
  with pytest.raises(RuntimeError,
                     match=r"the TransformerLens worker \(.*silent\) failed to start"):
    compare.TransformerLensWorker(silent, {"threads": 1})


class _Steps:
  """Stand-in for OurSteps: ``seconds[dtype]`` a step."""

  def __init__(self, seconds):
    self.seconds, self.calls = seconds, []

  def time(self, dtype, n):
    self.calls.append((dtype, n))
    return self.seconds[dtype] * n


def test_timed_rounds_alternate_and_turn_seconds_into_tokens_per_second(monkeypatch):
  peaks = iter(range(1, 100))
  monkeypatch.setattr(compare, "matmul_peak_flops", lambda n, repeats, dtype: float(next(peaks)))
  tl = SimpleNamespace(time=lambda n: 0.5 * n)
  ours = _Steps({"float32": 0.25, "bfloat16": 0.125})
  tl_rates, our_rates, got_peaks = compare._timed_rounds(  # pylint: disable=protected-access
      tl, ours, tokens_per_step=1000, rounds=2, seconds_per_round=1.0)
  assert tl_rates == [2000.0, 2000.0]  # 2 steps of 0.5 s per round
  assert our_rates == {"float32": [4000.0, 4000.0], "bfloat16": [8000.0, 8000.0]}
  assert got_peaks == {"float32": [1.0, 3.0], "bfloat16": [2.0, 4.0]}  # per round, in turn
  assert ours.calls[:2] == [("float32", 3), ("bfloat16", 3)]  # compiled and warmed up first
  assert ("float32", 4) in ours.calls and ("bfloat16", 8) in ours.calls  # ~1 s per round


def test_summary_ratios_and_flop_utilisation_by_hand():
  plans = {d: SimpleNamespace(describe=lambda d=d: f"plan {d}") for d in compare.DTYPES}
  tl_rates = [100.0, 300.0, 200.0]
  our_rates = {"float32": [150.0, 450.0, 300.0], "bfloat16": [600.0, 200.0, 400.0]}
  peaks = {"float32": [1e3, 2e3, 1.5e3], "bfloat16": [4e3, 5e3, 4.5e3]}
  summary = compare._our_summary(plans, tl_rates, our_rates, peaks, flops=2.0)  # pylint: disable=protected-access
  f32, bf16 = summary["float32"], summary["bfloat16"]
  assert f32["step_plan"] == "plan float32" and f32["tokens_per_s_rounds"] == [150, 450, 300]
  assert f32["ratio_best"] == 1.5 and f32["ratio_median"] == 1.5  # 450 / 300, 300 / 200
  assert bf16["ratio_best"] == 2.0 and bf16["ratio_median"] == 2.0  # 600 / 300, 400 / 200
  assert f32["mfu_rounds"] == [0.3, 0.45, 0.4]  # rate × 2 flops / that round's peak
  assert bf16["mfu_best_rates"] == 0.24 and bf16["mfu_vs_float32_peak"] == 0.6  # 1200/5e3, /2e3
  json.dumps(summary)  # plain JSON
