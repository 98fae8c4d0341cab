"""The inbox: a folder where new input files wait for the next update cycle.

:func:`inbox_ready` is the one rule for which files are candidates (the scheduler's watch asks it
whether to trigger a cycle); :func:`take_inbox` is how a cycle takes them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

# names of files still being written by common tools; never picked up
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".swp", "~")


def inbox_ready(inbox_dir: str | Path, quiet_seconds: float, now: float | None = None) -> list[Path]:
    """Files directly in ``inbox_dir`` ready for a cycle, sorted by name; [] while any is still changing.

    Ready means: the inbox has at least one candidate file and none was written within the last
    ``quiet_seconds`` (a batch being copied in is taken whole, not half). Candidates are plain
    files directly in the folder: subfolders (``processed/``), dotfiles and partial downloads
    (``*.tmp``, ``*.part`` …) are ignored. "Written" is the later of mtime and ctime, so a file
    copied with its old mtime preserved (``cp -p``, ``rsync -t``) still counts as fresh. ``now``
    (seconds since the epoch) defaults to the current time. A missing folder has nothing ready.
    """
    folder = Path(inbox_dir)
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    ready: list[Path] = []
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(".") or name.lower().endswith(_PARTIAL_SUFFIXES):
            continue
        try:
            st = entry.stat()
            if not entry.is_file():
                continue
        except FileNotFoundError:  # moved away (by a running cycle) while we looked
            continue
        if now - max(st.st_mtime, st.st_ctime) < quiet_seconds:
            return []
        ready.append(entry)
    return sorted(ready)


def take_inbox(inbox_dir: Path, run_id: int) -> list[Path]:
    """Move the files waiting in the inbox into ``inbox/processed/run-<id>/`` and return them.

    Moving first means a file dropped during the cycle waits for the next one, and a file is
    never ingested twice by two cycles.
    """
    waiting = inbox_ready(inbox_dir, quiet_seconds=0)  # the watcher's rule for what is a candidate
    if not waiting:
        return []
    target = inbox_dir / "processed" / f"run-{run_id:05d}"
    target.mkdir(parents=True, exist_ok=True)
    moved = []
    for p in waiting:
        dest = target / p.name
        shutil.move(str(p), dest)
        moved.append(dest)
    return moved


def taken_by(inbox_dir: Path, run_id: int) -> list[Path]:
    """The files run ``run_id`` took from the inbox (see :func:`take_inbox`), sorted by name; []
    if it took none."""
    folder = inbox_dir / "processed" / f"run-{run_id:05d}"
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
