"""CORS, CSRF and websocket-origin decisions (pure tables).

* ``Access-Control-Allow-Origin`` only when ``cors_origin`` is set and the
  request's ``Origin`` matches it exactly (scheme, host and port): ``"*"``
  sends ``*``; a string or list sends the request's origin when listed.
* ``Access-Control-Allow-Credentials`` is never sent.
* A POST authenticated only by the session cookie from a foreign origin is
  refused (CSRF).
"""

from __future__ import annotations

from collections.abc import Sequence

ALLOWED_REQUEST_HEADERS = frozenset(
    {"accept", "content-type", "x-auth-token", "x-requested-with", "last-event-id", "authorization"}
)


def allow_origin(origin: str | None, cors_origin: Sequence[str]) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for *origin*, or ``None``."""
    if not cors_origin or origin is None:
        return None
    if "*" in cors_origin:
        return "*"
    if origin in cors_origin:
        return origin
    return None


def cors_headers(origin: str | None, cors_origin: Sequence[str]) -> dict[str, str]:
    """Headers for an actual (non-preflight) response."""
    headers: dict[str, str] = {}
    if cors_origin and "*" not in cors_origin:
        headers["Vary"] = "Origin"
    allowed = allow_origin(origin, cors_origin)
    if allowed is not None:
        headers["Access-Control-Allow-Origin"] = allowed
        headers["Access-Control-Expose-Headers"] = "X-Auth-Token"
    return headers


def preflight_headers(origin: str | None, cors_origin: Sequence[str], request_headers: str | None) -> dict[str, str]:
    """Headers for an ``OPTIONS`` answer.

    Requested headers are echoed, filtered to :data:`ALLOWED_REQUEST_HEADERS`;
    without ``Access-Control-Request-Headers`` no ``Allow-Headers`` is sent.
    """
    headers = cors_headers(origin, cors_origin)
    headers["Access-Control-Expose-Headers"] = "X-Auth-Token"
    headers["Access-Control-Allow-Methods"] = "OPTIONS, GET, POST"
    if request_headers:
        wanted = [h.strip() for h in request_headers.split(",") if h.strip()]
        allowed = [h for h in wanted if h.lower() in ALLOWED_REQUEST_HEADERS]
        if allowed:
            headers["Access-Control-Allow-Headers"] = ", ".join(allowed)
    return headers


def own_origin(scheme: str, host: str | None) -> str | None:
    """The server's own origin as a browser names it."""
    if not host:
        return None
    return f"{scheme}://{host}"


def is_foreign(origin: str | None, own: str | None, cors_origin: Sequence[str], sec_fetch_site: str | None) -> bool:
    """Whether a request comes from a foreign site (CSRF and websocket checks).

    No ``Origin`` (curl, scripts) is not foreign; ``Origin: null`` is.
    """
    if sec_fetch_site == "cross-site":
        return True
    if origin is None:
        return False
    if origin == "null":
        return True
    if own is not None and origin == own:
        return False
    if cors_origin and "*" not in cors_origin and origin in cors_origin:
        return False
    return True
