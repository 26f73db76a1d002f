"""The studio's errors: each a JSON ``{"error": message}`` answer with one status, and the table of
what every status means — the one source of the ``responses`` each route documents.

422 means *invalid whatever the server's state* (the request contract rejects it); 409 means *valid,
but not for this resource now* (a branch that is done, a fork past the branch cap, a condition whose
length does not fit the branch's images): a client that follows the contract never gets a 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["StudioError", "NotFound", "Conflict", "Gone", "Invalid", "Busy", "Unsupported", "TooLarge", "ErrorBody",
           "responses", "STATUS_TEXT"]


class StudioError(Exception):
    """A client error, answered as JSON ``{"error": message}`` with :attr:`status`."""

    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.headers = message, headers or {}


class NotFound(StudioError):
    status = 404


class Conflict(StudioError):
    status = 409


class Gone(StudioError):
    status = 410


class Unsupported(StudioError):
    status = 415


class TooLarge(StudioError):
    status = 413


class Invalid(StudioError):
    status = 422


class Busy(StudioError):
    status = 429


class ErrorBody(BaseModel):
    """Every error the studio answers: one line saying what is wrong and what is accepted."""

    error: str


STATUS_TEXT = {
    401: "no valid `Authorization: Bearer <token>` (servers started with a token)",
    403: "the `Host` is not this server (DNS-rebinding protection) or a state-changing request came from "
         "another origin",
    404: "no such session, branch, frame or image (deleted, expired, pruned or never created)",
    409: "valid, but not for this resource in its current state",
    410: "the frame is no longer kept (the session's cap on kept images); a branch's latest frame always is",
    413: "the request body is larger than the server's limit (an uploaded image: its bytes or pixels)",
    415: "the request body is not `application/json` (an upload: not a PNG, JPEG or WebP image)",
    422: "the request breaks the published contract (types, ranges, lengths, combinations; an upload: a "
         "truncated or corrupt image)",
    429: "the server (or this session's event streams) is at capacity; retry after `Retry-After` seconds",
    500: "an unexpected server error (the server goes on); never a traceback",
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer",
                                                                                       "minimum": 1}}},
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for the error ``statuses`` it can return (plus 401, 403 and 500,
    which every ``/v1`` route can): each with the :class:`ErrorBody` schema and its headers."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({401, 403, 500, *statuses}):
        entry: dict[str, Any] = {"model": ErrorBody, "description": STATUS_TEXT[status]}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        out[status] = entry
    return out
