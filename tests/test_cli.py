"""reproduce.cli and the command lines' errors (with reproduce.config's flags): one line on stderr
naming the problem, exit status 2, nothing written; library logs quiet unless --verbose."""

import concurrent.futures
import logging
import subprocess
import sys
import warnings

import pytest
from absl import logging as absl_logging

from reproduce.cli import USER_ERRORS, quiet_libraries, usage_error
from reproduce.core.checkpoint import CheckpointError
from reproduce.train.workdir import WorkdirLocked
from tests.support.paths import ROOT
from tests.support.runs import copy_run as _copy_run, run_command as _run, train_command as _cli


@pytest.mark.slow  # eight command starts; the same errors in process: tests/test_config.py
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


def test_usage_error_is_one_line_on_stderr_and_exit_status_2(capsys):
  with pytest.raises(SystemExit) as e:
    usage_error("--seeds needs a preset, not --checkpoint")
  assert e.value.code == 2
  out = capsys.readouterr()
  assert out.err == "error: --seeds needs a preset, not --checkpoint\n" and out.out == ""
  assert issubclass(CheckpointError, USER_ERRORS) and issubclass(WorkdirLocked, USER_ERRORS)


def test_library_logs_are_quiet_unless_verbose():
  before, absl_level = absl_logging.get_verbosity(), logging.getLogger("absl").level
  try:
    with warnings.catch_warnings():  # restores the warning filters afterwards
      quiet_libraries(verbose=False)
      assert warnings.filters[0][0] == "ignore" and warnings.filters[0][2] is Warning
    assert absl_logging.get_verbosity() == absl_logging.FATAL
    assert logging.getLogger("absl").level == logging.CRITICAL
    quiet_libraries(verbose=True)
    assert absl_logging.get_verbosity() == absl_logging.INFO
  finally:
    absl_logging.set_verbosity(before)
    logging.getLogger("absl").setLevel(absl_level)
