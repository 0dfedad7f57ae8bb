"""Every ```python block of README.md and docs/*.md runs, so the documentation cannot rot.

The blocks of one file run in order in one namespace (a page reads as one session), in a fresh
temporary working directory, so files they write land there. A block whose first line is
``# doc: no-run (<reason>)`` is skipped; the reason has to be given, and is shown in the page.
Bash blocks are not run.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
NO_RUN = re.compile(r"#\s*doc:\s*no-run\b\s*(.*)")


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(first line number, code)`` of each python block of ``page``."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def skip_reason(code: str) -> str | None:
    first = code.lstrip().splitlines()[0] if code.strip() else ""
    match = NO_RUN.match(first)
    return None if match is None else match.group(1).strip(" ()")


def test_the_pages_exist_and_have_python_blocks():
    names = {p.name for p in PAGES}
    docs = {"conventions.md", "dream-options.md", "new-family.md", "audit.md", "dyna.md"}
    assert {"README.md", *docs} <= names
    for page in PAGES:
        assert python_blocks(page), f"{page.name} has no python block"


def test_a_skipped_block_says_why():
    for page in PAGES:
        for line, code in python_blocks(page):
            reason = skip_reason(code)
            assert reason is None or len(reason) > 3, f"{page.name}:{line}: `# doc: no-run` needs a reason"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a real module, so that what the page defines (dataclasses, classes) resolves its __module__
    module = types.ModuleType("doc_" + re.sub(r"\W", "_", page.stem))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for line, code in python_blocks(page):
        if skip_reason(code) is not None:
            continue
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), module.__dict__)
        except Exception as err:
            raise AssertionError(f"the python block at {page.name}:{line} failed: {err!r}") from err
