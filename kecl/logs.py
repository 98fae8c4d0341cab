"""One way to log: the standard library's ``logging``, configured once per process from settings.

Every record carries ``request_id``: the id of the HTTP request being served (``-`` outside one),
so a traceback in the server's log can be matched to the error a client reports.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

from kecl.settings import Settings

REQUEST_ID: ContextVar[str] = ContextVar("REQUEST_ID", default="-")
"""The id of the HTTP request this code serves (set by the API's request-id middleware)."""


class RequestIdFilter(logging.Filter):
    """Adds the current :data:`REQUEST_ID` to every record as ``record.request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record``; never drops it."""
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(settings: Settings) -> None:
    """Log at ``settings.log_level`` to stderr, one line per record, with the request id."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    # Alembic narrates every start-up check at INFO; migrations that run are still logged by us.
    logging.getLogger("alembic").setLevel(logging.WARNING)
