"""The quick subset of the fault campaign (benchmarks/faults.py) with real processes: kill -9 of a
cycle in training and of the server mid-POST, a truncated index, a read-only database. Each must
lose nothing acknowledged, block nothing, and say what to do."""

from __future__ import annotations

from pathlib import Path

from benchmarks.faults import QUICK, run_campaign, table


def test_quick_fault_campaign(tmp_path: Path) -> None:
    rows = run_campaign(list(QUICK), tmp_path)
    assert [r.ok for r in rows] == [True] * len(QUICK), table(rows)
    assert all(r.lost.startswith(("none", "0 of")) for r in rows), table(rows)
