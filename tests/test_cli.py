"""The command lines' errors (reproduce.cli, reproduce.config's flags): one line on stderr naming
the problem, exit status 2, nothing written."""

import concurrent.futures
import subprocess
import sys

from tests.support.paths import ROOT
from tests.support.runs import copy_run as _copy_run, run_command as _run, train_command as _cli


def test_cli_errors_are_one_line_naming_the_problem(trained_2l, cache_dir, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  broken = _copy_run(trained_2l, tmp_path, "broken")
  (broken / "config.json").write_text('{"name": "attn2l", "model": {')
  python = sys.executable
  cases = [
      (_cli(tmp_path / "w", cache_dir, "--config.train.lrr=0.1"),
       ["train.lrr", 'Did you mean "lr"']),
      (_cli(tmp_path / "w", cache_dir, "--config.train.steps=abc"),
       ["--config.train.steps=abc", "int"]),
      (_cli(tmp_path / "w", cache_dir, "--config.train.lr=-1"), ["train.lr", "must be > 0"]),
      # every CLI that takes a config parses it, and its overrides, the same way
      ([python, "-m", "reproduce.prepare", "--config=attn2l:test", "--config.data.corpsu=x"],
       ["--config.data.corpsu", 'Did you mean "corpus"']),
      ([python, "-m", "reproduce.bench", "train", "--config=configs/attn2l.py:test",
        "--config.trian.steps=3"], ["--config.trian.steps", 'Did you mean "train"']),
      ([python, "-m", "reproduce.bench", "plan", "--config=attn9l:test"],
       ["no config named 'attn9l'"]),
      (_cli(a_file / "run", cache_dir), [f"{a_file} (on the path to", "is a file"]),
      (_cli(broken, cache_dir), [f"{broken / 'config.json'} is not valid JSON"]),
  ]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:  # each case is a process start-up
    outs = list(pool.map(lambda case: _run(case[0]), cases))
  for (args, needles), out in zip(cases, outs):
    assert out.returncode == 2, (args, out.stderr)
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    for needle in needles:
      assert needle in out.stderr, (needle, out.stderr)
  assert not (tmp_path / "w").exists() and a_file.read_text() == "not a directory"


def test_misspelled_config_field_is_named(tmp_path, cache_dir):
  args = [a.replace("configs/attn2l.py:test", "attn2l:test")  # the short form of --config
          for a in _cli(tmp_path / "w", cache_dir, "--config.train.lrr=0.1")]
  out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert out.returncode == 2, out.stderr
  assert out.stderr == ("error: --config.train.lrr: the config has no field 'train.lrr'. "
                        'Did you mean "lr"?\n')
