"""The default suite in two processes, one per core (a pytest plugin, loaded by tests/conftest.py).

Most tests compile and run small programs on one thread, so on a machine with two cores one
process leaves the second idle.  When the selection is the default suite (``-m "not slow"``) and
worth it (an estimated minute or more), the test modules are split in two: the modules whose
tests use the session's trained run or figures (``SHARED``) stay here, so those are made once;
the rest go to whichever process has less estimated work, by the seconds each module took when
last measured (``durations.json``; a module it does not list counts half a second a test).  The
second process is this command again, restricted to its modules (``CIRCUITS_REPRO_TEST_SHARD``
names the file listing them), with its own temporary folder; its modules are deselected here.
Its report (the summary line, and its failures) is printed at the end of this one's, and a
failure there fails this command.  That folder (``pytest-second-process-*`` in the system's
temporary folder) is removed when the second process passes, and kept, with its full output
named in the report, when it fails.

``CIRCUITS_REPRO_TEST_PROCESSES=1`` keeps everything in one process; so do ``-m slow``,
``--collect-only``, ``--pdb``, ``--junitxml`` and a single core.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SHARD = "CIRCUITS_REPRO_TEST_SHARD"  # in the second process: the file of its modules
PROCESSES = "CIRCUITS_REPRO_TEST_PROCESSES"  # "1": one process
SHARED = ("trained_2l", "figures", "mechanism_figures")  # session fixtures made once, here
DURATIONS = Path(__file__).resolve().parent / "durations.json"  # module → seconds (balance only)
MIN_SECONDS = 60  # less estimated work than this: one process
START_SECONDS = 5  # a second process's start-up and collection, counted against it
FIGURES_SECONDS = 25  # the figures job (tests/conftest.py) shares the cores with this process

_second = {}  # the second process: "proc", "log", "modules", "returncode"


def _module(item) -> str:
  return item.nodeid.split("::")[0]


def _cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def _wanted(config) -> bool:
  option = config.option
  return (os.environ.get(PROCESSES) != "1" and _cores() >= 2 and not option.collectonly
          and not getattr(option, "usepdb", False) and not getattr(option, "xmlpath", None)
          and (option.markexpr or "").replace(" ", "") == "notslow")


def _split(items):
  """(modules kept here, modules for the second process), each in collection order."""
  costs = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
  modules = {}
  for item in items:
    modules.setdefault(_module(item), []).append(item)
  cost = lambda m: costs.get(m, 0.5 * len(modules[m]))
  pinned = {m for m, its in modules.items() if any(set(SHARED) & set(i.fixturenames) for i in its)}
  figures = any("figures" in i.fixturenames for m in pinned for i in modules[m])
  here = sum(map(cost, pinned)) + (FIGURES_SECONDS if figures else 0)
  there, theirs = float(START_SECONDS), set()
  for m in sorted(set(modules) - pinned, key=cost, reverse=True):  # largest first, to the lighter
    if there < here:
      theirs.add(m)
      there += cost(m)
    else:
      here += cost(m)
  if here + there < MIN_SECONDS:
    return list(modules), []
  return [m for m in modules if m not in theirs], [m for m in modules if m in theirs]


@pytest.hookimpl(trylast=True)  # after the selection by -m and -k
def pytest_collection_modifyitems(config, items):
  shard = os.environ.get(SHARD)
  if shard:  # the second process: its modules only
    mine = set(json.loads(Path(shard).read_text()))
    dropped = [i for i in items if _module(i) not in mine]
    items[:] = [i for i in items if _module(i) in mine]
  else:
    if not _wanted(config):
      return
    _, theirs = _split(items)
    if not theirs:
      return
    folder = Path(tempfile.mkdtemp(prefix="pytest-second-process-"))
    (folder / "modules.json").write_text(json.dumps(theirs))
    log = folder / "output.txt"
    args = [*config.invocation_params.args, "-p", "no:cacheprovider",
            f"--basetemp={folder / 'tmp'}"]
    with open(log, "w") as out:
      _second.update(proc=subprocess.Popen(
          [sys.executable, "-m", "pytest", *args], cwd=config.invocation_params.dir,
          env=dict(os.environ, **{SHARD: str(folder / "modules.json")}), stdout=out,
          stderr=subprocess.STDOUT), log=log, modules=theirs)
    dropped = [i for i in items if _module(i) in theirs]
    items[:] = [i for i in items if _module(i) not in theirs]
  if dropped:
    config.hook.pytest_deselected(items=dropped)


def pytest_sessionfinish(session, exitstatus):
  proc = _second.get("proc")
  if proc is None:
    return
  if exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldfail or session.shouldstop:
    proc.kill()  # interrupted, or stopped at a failure (-x): the second process stops too
  try:
    _second["returncode"] = proc.wait(timeout=3600)
  except BaseException:  # interrupted, or an hour: it ends with this one
    proc.kill()
    proc.wait()
    raise
  if _second["returncode"] not in (0, 5) and session.exitstatus == 0:
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
  if "returncode" not in _second:
    return
  lines = _second["log"].read_text(errors="replace").rstrip().splitlines()
  failed = _second["returncode"] not in (0, 5)
  terminalreporter.section(f"second process: {len(_second['modules'])} test modules", sep="-",
                           red=failed, green=not failed)
  if failed:  # its failures as it reported them
    start = next((k for k, line in enumerate(lines) if line.startswith("=") and
                  ("FAILURES" in line or "ERRORS" in line)), max(0, len(lines) - 60))
    lines = lines[start:]
  else:  # its summary line ("N passed ..."; with -qq only its progress)
    lines = [line for line in lines if " passed" in line][-1:] or lines[-1:]
  for line in lines:
    terminalreporter.write_line(line)
  folder = _second["log"].parent
  if failed:  # kept for reading: its output and the failed tests' temporary files
    terminalreporter.write_line(f"(its full output: {_second['log']})")
  else:
    shutil.rmtree(folder, ignore_errors=True)
