"""What the commands (``reproduce.train``, ``reproduce.figure``, ``reproduce.bench``) share: which
errors are the user's to fix, and how errors and library logs reach the terminal."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import NoReturn

from absl import logging as absl_logging

from reproduce.core.checkpoint import CheckpointError
from reproduce.train.workdir import TrainingDiverged, WorkdirLocked

# Errors that are the user's to fix: one line naming the problem, exit status 2.
USER_ERRORS = (ValueError, OSError, TrainingDiverged, WorkdirLocked, CheckpointError)


def quiet_libraries(verbose: bool) -> None:
  """Library log lines and warnings off stderr (our own messages stay) unless ``verbose``."""
  if verbose:
    absl_logging.set_verbosity(absl_logging.INFO)
    return
  absl_logging.set_verbosity(absl_logging.FATAL)  # Orbax logs every file it writes, and retries
  logging.getLogger("absl").setLevel(logging.CRITICAL)
  warnings.simplefilter("ignore")


def usage_error(message: str) -> NoReturn:
  """``error: <message>`` on stderr, exit status 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)
