"""One way to log: the standard library's ``logging``, configured once per process from settings."""

from __future__ import annotations

import logging

from kecl.settings import Settings


def configure_logging(settings: Settings) -> None:
    """Log at ``settings.log_level`` to stderr, one line per record."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every start-up check at INFO; migrations that run are still logged by us.
    logging.getLogger("alembic").setLevel(logging.WARNING)
