"""reproduce.bench.atlas: an unknown shape refused before any work; the child's measurement
reported beside the atlas's estimate, its steps and the counted work."""

import pytest

from reproduce.bench import atlas as bench_atlas_module
from reproduce.bench import figures as bench_figures_module
from reproduce.bench.atlas import bench_atlas


def test_unknown_shapes_are_refused_before_any_work(tmp_path, monkeypatch):
  monkeypatch.setattr(bench_atlas_module, "build_shape", lambda *a, **k: pytest.fail("built"))
  with pytest.raises(ValueError, match="--shape=one of attn-only-2l, .*paper, not 'gpt2'"):
    bench_atlas("gpt2", cache_dir=str(tmp_path))


def test_the_report_holds_the_measurement_the_estimate_and_the_count(tmp_path, monkeypatch):
  commands = []

  def run(command, log_file):
    commands.append(command)
    log_file.write_text("atlas plan: 1 model(s), 24 heads; …; estimated 9.5 min on this machine\n"
                        "  circuits: eigenvalues, positivity, composition (3.2s)\n"
                        "  ablations: every head zero-ablated on 64 windows (120.5s)\n")
    return {"wall_s": 300.0, "peak_rss_gib": 2.5, "cpu_s": 550.0, "exit_status": 0}

  monkeypatch.setattr(bench_atlas_module, "build_shape", lambda shape, folder, log: folder)
  monkeypatch.setattr(bench_atlas_module, "run_measured", run)
  monkeypatch.setattr(bench_figures_module, "run_measured", run)  # its token-store step
  result = bench_atlas("paper", cache_dir=str(tmp_path), log=lambda line: None)
  assert result["atlas"]["peak_rss_gib"] == 2.5 and result["estimated_min"] == 9.5
  assert result["steps_s"] == [["circuits: eigenvalues, positivity, composition", 3.2],
                               ["ablations: every head zero-ablated on 64 windows", 120.5]]
  assert result["counted_tflop_total"] > 1 and "ablations" in result["counted_tflop"]
  assert commands[1][1:3] == ["-m", "reproduce.atlas"]
  assert commands[1][3] == f"--checkpoint={tmp_path / 'bench-shapes' / 'paper'}"
