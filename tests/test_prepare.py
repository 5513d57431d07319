"""python -m reproduce.prepare: the token store of a config's corpus, and its errors."""

import json
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT
from tests.support.text import words as _words


def test_prepare_command_and_its_errors(tmp_path):
  (tmp_path / "ok").mkdir()
  for i in range(3):
    (tmp_path / "ok" / f"{i}.txt").write_text(f"text number {i}\n" + _words(400, i))
  (tmp_path / "ok" / "blob.bin").write_bytes(bytes(range(1, 256)) * 100)
  base = [sys.executable, "-m", "reproduce.prepare", "--config=configs/attn0l.py:test",
          f"--config.data.cache_dir={tmp_path / 'cache'}"]
  run = lambda corpus: subprocess.run(base + [f"--config.data.corpus={corpus}"], cwd=ROOT,
                                      capture_output=True, text=True, timeout=120)
  out = run(tmp_path / "ok")
  assert out.returncode == 0, out.stderr
  assert f"warning: skipping {tmp_path / 'ok' / 'blob.bin'}: not UTF-8 text" in out.stderr
  manifest = json.loads(out.stdout)
  assert manifest["train_tokens"] > 0 and manifest["heldout_tokens"] > 0
  assert (Path(manifest["store"]) / "manifest.json").exists()
  (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"other": 1}\n{"text": "fine"}\n')
  out = run(tmp_path / "bad.jsonl")
  assert out.returncode == 2 and out.stdout == ""
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'bad.jsonl'}:2: record has no field 'text' (set data.jsonl_field)")
