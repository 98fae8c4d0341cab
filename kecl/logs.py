"""One way to log: the standard library's ``logging``, configured once per process from settings.

Every record carries ``request_id``: the id of the HTTP request being served (``-`` outside one),
so a traceback in the server's log can be matched to the error a client reports. Lines are plain
text by default, or one JSON object per record with ``log_json`` (``kecl --log-json``,
``KECL_LOG_JSON=1``).
"""

from __future__ import annotations

import datetime as dt
import json
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


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO), level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", REQUEST_ID.get())
        if request_id != "-":
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Log at ``settings.log_level`` to stderr, one line per record with the request id (JSON with
    ``settings.log_json``)."""
    handler = logging.StreamHandler()
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO), handlers=[handler])
    # Alembic narrates every start-up check at INFO; migrations that run are still logged by us.
    logging.getLogger("alembic").setLevel(logging.WARNING)
