"""Every error the API sends, and its OpenAPI documentation: ``{"error": {"status", "message", "details"?}}``.

The handlers in :mod:`kecl.api.app` send this shape for every HTTP error, validation error and
oversized body (FastAPI's own ``{"detail": ...}`` never reaches a client), so routes document their
errors with the dicts below in ``responses=`` and the document matches the wire.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema


class Error(BaseModel):
    """What went wrong."""

    status: int = Field(description="the HTTP status code, repeated")
    message: str = Field(description="what went wrong and, where it helps, what to do about it")
    # Absent, never null: SkipJsonSchema keeps `null` out of the documented type.
    details: list[str] | SkipJsonSchema[None] = Field(
        None, description="request validation errors only: one `where: what` line per problem"
    )


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: Error


def error_response(status: int, message: str, details: list[str] | None = None) -> JSONResponse:
    """An error as the JSON response the API sends (``details`` only when given)."""
    body = ErrorBody(error=Error(status=status, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


Responses = dict[int | str, dict[str, Any]]


def documented(status: int, description: str) -> Responses:
    """A ``responses=`` entry: ``status`` with the :class:`ErrorBody` schema and ``description``."""
    return {status: {"model": ErrorBody, "description": description}}


UNAUTHORIZED = documented(401, "The `X-API-Key` header is missing or does not match `api.api_key`.")
FORBIDDEN = documented(403, "Mutating endpoints are disabled: the server has no `api.api_key` configured.")
KEYED = {**UNAUTHORIZED, **FORBIDDEN}
TOO_LARGE = documented(413, "The request body is larger than `api.max_body_bytes`.")
INVALID = documented(422, "A parameter or the body is invalid (`details` lists each problem).")
UNAVAILABLE = documented(503, "The database refused the request (read-only, full or unreachable); nothing was stored.")
SERVER_ERROR = documented(500, "An unexpected error; the message names the request id the server logged it under.")
NO_ENTITY = documented(404, "No entity has this id, external id, name or alias.")


def invalid(description: str) -> Responses:
    """A 422 entry for a route that checks more than its schema (limits, cross-field rules)."""
    return documented(422, description)
