"""A figure's output folder and its JSON files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


class OutputDir:
  """A figure's output folder, written in a private temporary folder and swapped in at the end,
  so a failed run leaves the previous outputs untouched."""

  def __init__(self, final: Path):
    self.final = Path(final)
    self.final.parent.mkdir(parents=True, exist_ok=True)
    self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}-", dir=self.final.parent))

  def commit(self) -> Path:
    old = None
    if self.final.exists():
      old = self.final.with_name(f".{self.final.name}-old-{os.getpid()}")
      self.final.rename(old)
    self.path.rename(self.final)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
    return self.final

  def discard(self) -> None:
    shutil.rmtree(self.path, ignore_errors=True)


def write_json(path: Path, obj) -> None:
  Path(path).write_text(json.dumps(obj, indent=1, default=lambda o: np.asarray(o).tolist()))


def script_json(obj) -> str:
  """``obj`` as JSON that is safe inside an inline ``<script>``: ``<``, ``>`` and ``&`` (and the
  line separators U+2028, U+2029) as ``\\u`` escapes, so that no string in it, a token such as
  ``</script>`` or ``<!--``, can end the script or open markup.  The browser reads the same
  values."""
  text = json.dumps(obj, separators=(",", ":"))
  for char in "<>&\u2028\u2029":
    text = text.replace(char, f"\\u{ord(char):04x}")
  return text
