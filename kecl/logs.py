"""One way to log: the standard library's ``logging``, configured once per process from settings.

Lines are plain text by default, or one JSON object per record with ``log_json`` (``kecl --log-json``,
``KECL_LOG_JSON=1``), carrying the id of the HTTP request being answered when there is one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextvars import ContextVar

from kecl.settings import Settings

# The id of the HTTP request this context is answering (set by the API's request-id middleware).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO), level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Log at ``settings.log_level`` to stderr, one line per record (JSON with ``settings.log_json``)."""
    handler = logging.StreamHandler()
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO), handlers=[handler])
    # Alembic narrates every start-up check at INFO; migrations that run are still logged by us.
    logging.getLogger("alembic").setLevel(logging.WARNING)
