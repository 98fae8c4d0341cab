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
