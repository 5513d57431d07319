"""Every figure on the `test` preset, made by a process of its own beside the test session.

    python -m tests.support.figures_job WORKDIR CACHE_DIR

tests/conftest.py starts it when the session's first test runs (if any selected test uses the
``figures`` fixture) and runs the tests that use the figures last, so the figures are made on
the second core while the other tests run on the first.  It writes what ``make_figure`` returned
for each figure to ``WORKDIR/summaries.json`` once every figure is made.
"""

import sys
from pathlib import Path

from reproduce.figure.outputs import write_json
from reproduce.figure.runner import figure_names, make_figure
from reproduce.figure.sources import ModelSource


def main(workdir: str, cache_dir: str) -> None:
  loaded = {}
  summaries = {name: make_figure(name, ModelSource("test", cache_dir=cache_dir), workdir,
                                 log=lambda *_: None, loaded=loaded)
               for name in figure_names()}
  write_json(Path(workdir) / "summaries.json", summaries)


if __name__ == "__main__":
  main(*sys.argv[1:])
