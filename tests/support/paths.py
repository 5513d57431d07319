"""Where the repository and the test fixtures are, found from this file (not from the working
directory): the repository root is the first folder above that holds setup.cfg."""

from pathlib import Path


def _root() -> Path:
  for parent in Path(__file__).resolve().parents:
    if (parent / "setup.cfg").is_file():
      return parent
  raise FileNotFoundError(f"no setup.cfg above {__file__}")


ROOT = _root()
TORCH_ZIP_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torch_zip"
