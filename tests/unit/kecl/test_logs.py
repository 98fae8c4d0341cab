"""JSON log lines carry the request id of the context that logged them."""

from __future__ import annotations

import json
import logging

from kecl.logs import REQUEST_ID, JsonFormatter


def record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("kecl.api", logging.WARNING, __file__, 1, message, (), exc_info)


def test_json_line_with_and_without_a_request_id() -> None:
    line = json.loads(JsonFormatter().format(record("plain")))
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "kecl.api", "plain")
    assert "request_id" not in line and line["time"].endswith("+00:00")
    token = REQUEST_ID.set("req-42")
    try:
        line = json.loads(JsonFormatter().format(record("answering ünïcode")))
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "req-42" and line["message"] == "answering ünïcode"


def test_exceptions_stay_in_one_json_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError as exc:
        text = JsonFormatter().format(record("failed", exc))
    assert "\n" not in text and "ValueError: bad\\nthing" in text
