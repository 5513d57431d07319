"""reproduce.bench.figures: a child's wall time, CPU time, peak memory and exit status as measured,
the shapes it benchmarks, and its refusals before any work."""

import resource
import sys

import pytest

from reproduce.bench import figures as bench_figures_module
from reproduce.bench.figures import SHAPES, bench_figures, run_measured
from reproduce.config import load_config
from reproduce.core.model import ModelConfig


def test_run_measured_reports_the_childs_own_time_memory_and_status(tmp_path):
  """The child's peak RSS: it counts what the child had at its start (Linux carries the parent's
  resident size into a vfork'ed child's ru_maxrss), so the child here grows 300 MiB beyond this
  process's own peak to be told apart from it."""
  own_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB → GiB
  size = int((own_gib + 0.3) * 2 ** 30)
  grow = f"x = bytearray({size}); x[::4096] = b'1' * len(x[::4096]); print('done')"
  ok = run_measured([sys.executable, "-c", grow], tmp_path / "ok.log")
  assert ok["exit_status"] == 0 and "last_line" not in ok
  assert own_gib + 0.3 - 0.02 <= ok["peak_rss_gib"] < own_gib + 1, (own_gib, ok)
  assert ok["wall_s"] > 0 and ok["wall_s"] >= ok["cpu_s"] - 0.1  # one thread: CPU ≤ wall
  assert (tmp_path / "ok.log").read_text() == "done\n"
  failed = run_measured([sys.executable, "-c", "print('first'); print('why it failed'); "
                         "raise SystemExit(3)"], tmp_path / "failed.log")
  assert failed["exit_status"] == 3 and failed["last_line"] == "why it failed"


def test_the_shapes_are_models_and_paper_is_the_paper_preset():
  for name, shape in SHAPES.items():
    ModelConfig(**shape)  # a valid architecture
  paper = load_config("attn2l:paper").model
  assert {k: SHAPES["paper"][k] for k in ("n_layers", "n_heads", "d_head", "d_model", "d_vocab",
                                           "n_ctx", "pos", "norm")} == {
      k: paper[k] for k in ("n_layers", "n_heads", "d_head", "d_model", "d_vocab", "n_ctx", "pos",
                            "norm")}


def test_unknown_shapes_and_figures_are_refused_before_any_work(tmp_path, monkeypatch):
  monkeypatch.setattr(bench_figures_module, "build_shape", lambda *a, **k: pytest.fail("built"))
  with pytest.raises(ValueError, match="--shape=one of attn-only-2l, .*paper, not 'gpt2'"):
    bench_figures("gpt2", cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown figure\\(s\\) nope"):
    bench_figures("paper", only=["bigram", "nope"], cache_dir=str(tmp_path))
  command = bench_figures_module._figure_command("bigram", tmp_path / "m", tmp_path / "w")  # pylint: disable=protected-access
  assert command[1:] == ["-m", "reproduce.figure", "--name=bigram",
                         f"--checkpoint={tmp_path / 'm'}", f"--workdir={tmp_path / 'w'}"]
