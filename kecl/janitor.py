"""The start-up janitor: temporary files and folders that a crashed writer left in the home.

Writers build under a temporary name and rename into place (checkpoints, the index, ``ACTIVE``),
so a kill mid-write leaves the temporary behind: a checkpoint's is the size of the model. A
temporary named after its writer (``.tmp-<host>-<pid>-<random>``, see :func:`encoder.temp_name`)
is removed once that process is gone; one that names no writer, once nothing has touched it for
``grace_seconds`` (a live writer touches its files continuously).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

from kecl.settings import Settings
from knowledge import holder_is_gone

log = logging.getLogger("kecl.janitor")

_WRITER = re.compile(r"^\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{32}$")


def _newest_mtime(path: Path) -> float:
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*")), default=path.stat().st_mtime)
    return path.stat().st_mtime


def is_abandoned(path: Path, grace_seconds: float, now: float | None = None) -> bool:
    """Whether the temporary ``path`` has no live writer (see the module's rules)."""
    m = _WRITER.match(path.name)
    if m is not None:
        return holder_is_gone(f"{m['host']}:{m['pid']}:tmp")
    return (now or time.time()) - _newest_mtime(path) > grace_seconds


def _temporaries(settings: Settings) -> list[Path]:
    found: list[Path] = []
    for folder in (settings.checkpoints_dir, settings.cache_dir.expanduser()):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]
    if settings.index_dir.is_dir():
        found += [p for p in settings.index_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    return found


def sweep(settings: Settings, grace_seconds: float = 900.0) -> list[Path]:
    """Remove the home's abandoned temporaries; returns what was removed. Never raises: a file
    that vanishes or resists is left for the next start."""
    removed = []
    for path in _temporaries(settings):
        try:
            if not is_abandoned(path, grace_seconds):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("could not remove the leftover %s: %s", path, exc)
            continue
        removed.append(path)
        log.warning("removed %s, left by a writer that stopped mid-write", path)
    return removed
