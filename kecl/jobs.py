"""Scheduled job entry points. APScheduler pickles a reference to these (``module:function``)
with plain keyword arguments, so they rebuild everything from settings on each run."""

from __future__ import annotations

import logging

log = logging.getLogger("kecl.jobs")


def run_scheduled_cycle(home: str | None = None, trigger: str = "schedule") -> dict:
    """Run one update cycle for the kecl home ``home`` (default: settings). Returns the report."""
    from dataclasses import asdict

    from kecl.services import Kecl, active_kecl
    from kecl.settings import Settings

    kecl = active_kecl(home)  # the serving process's own Kecl, when the scheduler runs inside it
    owned = kecl is None
    if kecl is None:
        settings = Settings(home=home) if home else Settings()
        kecl = Kecl(settings)
    try:
        report = kecl.run_update(trigger=trigger)
        return asdict(report)
    finally:
        if owned:
            kecl.close()


__all__ = ["run_scheduled_cycle"]
