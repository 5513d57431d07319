"""The documents hold together: every relative link in README, BUILD and docs/ names a file that
exists and, with an anchor, a heading of that file (GitHub's anchors); README stays a guide."""

import re
import urllib.parse
from pathlib import Path

import pytest

from tests.support.paths import ROOT


README_MAX_LINES = 180
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "BUILD.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`\n]+`")
# [text](target) or [text](target "title"); the text may hold one level of brackets and newlines.
LINK = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose(text: str) -> str:
  """``text`` with every line of a fenced code block blanked (line numbers kept)."""
  lines, fenced = [], False
  for line in text.split("\n"):
    if FENCE.match(line):
      fenced = not fenced
      lines.append("")
    else:
      lines.append("" if fenced else line)
  return "\n".join(lines)


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: its text lowercased, every character that is not a letter,
  digit, space, hyphen or underscore removed, spaces turned into hyphens."""
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
  text = re.sub(r"[^\w\- ]", "", text.lower())
  return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
  """Every heading anchor of a markdown file; a repeated slug gets -1, -2, ... as on GitHub."""
  seen: dict[str, int] = {}
  found = set()
  for line in _prose(path.read_text(encoding="utf-8")).split("\n"):
    match = HEADING.match(line)
    if not match:
      continue
    base = slug(match.group(1))
    count = seen.get(base, 0)
    seen[base] = count + 1
    found.add(base if count == 0 else f"{base}-{count}")
  return found


def links(path: Path) -> list[tuple[int, str]]:
  """(line, target) of every relative link outside code blocks and code spans."""
  text = _prose(path.read_text(encoding="utf-8"))
  spans = [m.span() for m in CODE_SPAN.finditer(text)]
  found = []
  for match in LINK.finditer(text):
    if any(start <= match.start() < end for start, end in spans):
      continue
    target = match.group(2)
    if SCHEME.match(target) or target.startswith("//"):
      continue  # http(s), mailto, ...: not checked here (no network)
    found.append((text.count("\n", 0, match.start()) + 1, target))
  return found


def test_slug_follows_github():
  assert slug("A plateau after the phase change (item 2 of 3, 1.5-2.5B tokens)") == \
      "a-plateau-after-the-phase-change-item-2-of-3-15-25b-tokens"
  assert slug("Fifth pass: attention's backward (10:30–11:40)") == \
      "fifth-pass-attentions-backward-10301140"
  assert slug("`icl_in_window`: the total fall") == "icl_in_window-the-total-fall"
  assert slug("Réglages [du modèle](x.md)") == "réglages-du-modèle"


def test_links_are_found_outside_code_only(tmp_path):
  doc = tmp_path / "doc.md"
  doc.write_text("See [a](a.md#x) and [b,\ntwo lines](b.md) and [web](https://x.org).\n"
                 "`[not](code.md)`\n```\n[not](fenced.md)\n```\n# X\n", encoding="utf-8")
  assert links(doc) == [(1, "a.md#x"), (1, "b.md")]
  assert anchors(doc) == {"x"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
  broken = []
  for line, target in links(document):
    file_part, _, anchor = target.partition("#")
    file_part = urllib.parse.unquote(file_part)
    linked = (document.parent / file_part).resolve() if file_part else document
    where = f"{document.relative_to(ROOT)}:{line}: {target}"
    if not linked.exists():
      broken.append(f"{where} (no such file)")
    elif anchor and linked.suffix == ".md" and urllib.parse.unquote(anchor) not in anchors(linked):
      broken.append(f"{where} (no heading with that anchor)")
  assert not broken, "\n".join(broken)


def test_readme_is_a_guide_not_a_log():
  lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
  assert len(lines) <= README_MAX_LINES, \
      f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): records go to docs/"
