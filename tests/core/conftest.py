"""The analysis core's fixtures: ``budget`` runs a chunked computation with the default budget
and with one item per chunk."""

import pytest

from reproduce.core import kernels


@pytest.fixture(params=[pytest.param("whole", marks=pytest.mark.slow), "one_item"])
def budget(request, monkeypatch):
  """Runs a test with the default budget (one chunk at these sizes: slow, as the references
  compute the whole batch anyway) and with a 1-byte budget (one window, row or head per chunk)."""
  if request.param == "one_item":
    monkeypatch.setattr(kernels, "CHUNK_BYTES", 1)
  return request.param
