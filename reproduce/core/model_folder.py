"""A model folder as a user downloads it from a TransformerLens model repository.

    <folder>/
      model_final.pth            the final weights (any file ending in "final.pth", as
                                 TransformerLens picks them; else the folder's one weight file:
                                 .pth, .pt, .safetensors or .npz)
      config.json                TransformerLens's cfg.to_dict() or the training config
                                 (``tl_config``); absent in ARENA's folder: give ``tl_config``
      tokenizer.json             optional; the Hugging Face tokenizer the model reads
      checkpoints/<name>_<n>.pth optional training checkpoints; n counts tokens when the largest
                                 is above 1e9, else steps (TransformerLens's rule)

A folder is one of these when it holds a weight file at its top and no ``snapshots/`` folder (a
training work directory of ours holds its weights in ``checkpoints/<step>/`` and
``snapshots/<step>/`` folders, never at its top).  Only the folder's own entries are listed;
nothing named inside a file is followed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import List, Optional

from reproduce.core.tl_format import WEIGHT_SUFFIXES, WeightFormatError

FINAL = "model_final.pth"
_CHECKPOINT = re.compile(r"^.+_(\d+)\.pth$")
TOKENS_ABOVE = 1e9  # TransformerLens: labels above this count tokens, below it steps


@dataclasses.dataclass(frozen=True)
class TrainingCheckpoint:
  """One file of ``checkpoints/``: its label ``value``, what it counts (``kind``: "tokens" or
  "steps") and its path."""

  value: int
  kind: str
  path: Path


def _weight_files(folder: Path) -> List[Path]:
  return sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def is_model_folder(path) -> bool:
  """Whether ``path`` is a model folder (see the module doc), not a training work directory."""
  path = Path(path)
  return path.is_dir() and not (path / "snapshots").is_dir() and bool(_weight_files(path))


def weights_file(folder) -> Path:
  """The final weights of a model folder: ``model_final.pth``, else the one file ending in
  ``final.pth``, else the one weight file; several candidates are an error naming them."""
  folder = Path(folder)
  files = _weight_files(folder)
  if (folder / FINAL).is_file():
    return folder / FINAL
  for candidates in ([p for p in files if p.name.endswith("final.pth")], files):
    if len(candidates) == 1:
      return candidates[0]
    if len(candidates) > 1:
      names = ", ".join(p.name for p in candidates)
      raise WeightFormatError(f"{folder}: several weight files ({names}); name the one to load")
  raise FileNotFoundError(f"{folder}: no weight file ({FINAL}, or one of "
                          f"{', '.join(WEIGHT_SUFFIXES)})")


def training_checkpoints(folder) -> List[TrainingCheckpoint]:
  """The files ``checkpoints/<name>_<n>.pth`` of a model folder, sorted by n (none: [])."""
  directory = Path(folder) / "checkpoints"
  if not directory.is_dir():
    return []
  found = {}
  for path in directory.iterdir():
    match = _CHECKPOINT.match(path.name)
    if match and path.is_file():
      value = int(match.group(1))
      if value in found:
        raise WeightFormatError(f"{directory}: two checkpoints are labelled {value} "
                                f"({found[value].name}, {path.name})")
      found[value] = path
  kind = "tokens" if found and max(found) > TOKENS_ABOVE else "steps"
  return [TrainingCheckpoint(v, kind, found[v]) for v in sorted(found)]


def folder_of_checkpoint(path) -> Optional[Path]:
  """The model folder of a file ``<folder>/checkpoints/<name>_<n>.pth``, else None."""
  path = Path(path)
  folder = path.parent.parent
  if path.parent.name == "checkpoints" and _CHECKPOINT.match(path.name) and \
      is_model_folder(folder):
    return folder
  return None
