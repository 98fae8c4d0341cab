"""Scheduled job entry points. APScheduler pickles a reference to these (``module:function``)
with plain keyword arguments, so they rebuild everything from settings on each run."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from kecl.services import Kecl, serving_kecl
from kecl.settings import Settings

log = logging.getLogger("kecl.jobs")


def run_scheduled_cycle(home: str | None = None, trigger: str = "schedule") -> dict[str, Any]:
    """Run one update cycle for the kecl home ``home`` (default: settings). Returns the report."""
    kecl = serving_kecl(home)  # the serving process's own Kecl, when the scheduler runs inside it
    owned = kecl is None
    if kecl is None:
        kecl = Kecl(Settings(home=home) if home else Settings())
    try:
        return asdict(kecl.run_update(trigger=trigger))
    finally:
        if owned:
            kecl.close()


__all__ = ["run_scheduled_cycle"]
