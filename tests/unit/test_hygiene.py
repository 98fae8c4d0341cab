"""What the repository says about itself: no lab history in code or settings text."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("encoder", "knowledge", "retrieval", "updater", "kecl", "benchmarks", "tests")
HISTORY = re.compile(r"\b(session|recipe) [0-9]+\b|\b(this|last) session\b", re.IGNORECASE)


def files(*patterns: str) -> list[Path]:
    out = []
    for folder in SOURCES:
        for pattern in patterns:
            out += (ROOT / folder).rglob(pattern)
    return sorted(out)


def test_code_and_settings_say_why_not_when() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in files("*.py", "*.toml")
        if path.name != "test_hygiene.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not bad, "lab history belongs in git and docs/benchmarks-history.md:\n" + "\n".join(bad)


OUTSIDE = re.compile(r"/work/shared|\.\./shared/")


def test_nothing_points_outside_the_repository() -> None:
    """A user's clone has only the repository: code, docs and build files may not name folders
    beside it (data sets are given by argument or environment, e.g. ``--lama`` / ``KECL_LAMA``)."""
    docs = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))
    build = [ROOT / "Makefile", ROOT / "pyproject.toml", *sorted((ROOT / ".ci").glob("*"))]
    bad = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in [*files("*.py", "*.toml", "*.md", "*.html", "*.sh"), *docs, *build]
        if path.name != "test_hygiene.py" and path.is_file()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not bad, "the repository must stand alone:\n" + "\n".join(bad)
