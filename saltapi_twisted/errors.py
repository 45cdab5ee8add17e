"""HTTP error words, statuses and the error body every failure carries.

Every application 4xx/5xx answer has the body::

    {"status": "<code> <reason>", "error": "<word>", "return": "<message>"}

negotiated to JSON or YAML like any other answer.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

#: error word -> HTTP status
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "invalid_client": 400,
    "client_disabled": 400,
    "wrong_client": 400,
    "reserved_key": 400,
    "unknown_key": 400,
    "invalid_value": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "csrf": 403,
    "origin": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "not_acceptable": 406,
    "request_timeout": 408,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "master_error": 502,
    "master_unavailable": 503,
    "shutting_down": 503,
    "master_timeout": 504,
}


class ApiError(Exception):
    """A failure the HTTP layer turns into an error response.

    :param word: one of :data:`ERROR_STATUS`'s keys.
    :param message: the human-readable ``return`` text.
    :param headers: extra response headers (``Retry-After``, ``Allow``...).
    """

    def __init__(self, word: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if word not in ERROR_STATUS:
            raise ValueError(f"unknown error word {word!r}")
        self.word = word
        self.message = message
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        """The HTTP status code of this error."""
        return ERROR_STATUS[self.word]

    def body(self) -> dict[str, Any]:
        """The error body, ready to be serialised."""
        return error_body(self.status, self.word, self.message)


def status_line(code: int) -> str:
    """``"401 Unauthorized"`` for ``401``."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def error_body(code: int, word: str, message: str) -> dict[str, Any]:
    """The ``{"status", "error", "return"}`` body."""
    return {"status": status_line(code), "error": word, "return": message}


def unauthenticated(message: str = "Please log in") -> ApiError:
    """The 401 every missing, malformed, unknown, expired or revoked token gets."""
    return ApiError("unauthenticated", message, {"WWW-Authenticate": "Session"})


def master_unavailable(message: str = "The Salt master is not reachable") -> ApiError:
    """The 503 given while the master's request channel is down."""
    return ApiError("master_unavailable", message, {"Retry-After": "5"})
