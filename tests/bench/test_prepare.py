"""reproduce.bench.prepare: the benchmark's corpora are whole source files in ~1 MB parts, its
peak-memory line is read back, and (slow) the benchmark itself at two small sizes."""

import numpy as np
import pytest

from reproduce.bench import prepare
from reproduce.data.corpus import stdlib_files


def test_corpus_parts_are_whole_files_of_about_a_megabyte(tmp_path):
  sources = stdlib_files()[:200]
  written, n_files = prepare._write_corpus(tmp_path / "c", 2, sources,  # pylint: disable=protected-access
                                           np.random.default_rng(0))
  parts = sorted((tmp_path / "c").iterdir())
  assert [p.name for p in parts] == [f"part-{i:05d}.txt" for i in range(n_files)]
  assert written == sum(p.stat().st_size for p in parts) and written >= 2 * 10 ** 6
  assert all(p.stat().st_size >= 10 ** 6 for p in parts[:-1])
  contents = {s.read_bytes() for s in sources}
  first = parts[0].read_bytes()
  assert any(first.startswith(c) for c in contents)  # starts with a whole source file


def test_peak_memory_is_read_from_the_last_marker():
  assert prepare._peak_kib("warning: x\npeak_kib=123\nlater peak_kib=4567 \n") == 4567  # pylint: disable=protected-access


@pytest.mark.slow  # two token-store builds in child processes
def test_bench_prepare_reports_both_sizes(tmp_path):
  result = prepare.bench_prepare(sizes_mb=(1, 2), sample_mib=1, shard_tokens=1 << 16)
  small, large = result["runs"]
  assert small["corpus_mb"] >= 1 and large["corpus_mb"] >= 2
  assert large["tokens"] > small["tokens"] > 0 and large["shards"] >= small["shards"] >= 1
  assert 0 < result["imports_only_rss_mib"] < small["peak_rss_mib"]
