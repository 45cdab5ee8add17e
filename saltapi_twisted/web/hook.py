"""``POST /hook[/<path>]``: fire ``salt/netapi/hook/<path>`` on the master's bus.

Event data::

    {"post": <parsed body>, "get": <query args>, "headers": <headers>, "body": <raw body text>}

Credential headers (``X-Auth-Token``, ``Cookie``, ``Authorization``,
``Proxy-Authorization``) are replaced by ``<redacted>``: credentials never
reach the bus. The path suffix must be at most 200 characters of
``[A-Za-z0-9._~:@+=,/-]`` with no empty, ``.`` or ``..`` segment, so no
control character or traversal reaches a tag.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from twisted.web.iweb import IRequest

from ..errors import ApiError
from ..negotiation import parse_body

if TYPE_CHECKING:
    from .app import SaltAPI

HOOK_PREFIX = "salt/netapi/hook"
MAX_SUFFIX = 200
_SUFFIX_CHARS = re.compile(r"[A-Za-z0-9._~:@+=,/-]*")
REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"x-auth-token", "cookie", "authorization", "proxy-authorization"})


def hook_tag(raw_path: bytes) -> str:
    """The event tag for a request path under ``/hook`` (400 for a bad suffix)."""
    raw = raw_path.split(b"?", 1)[0]
    if raw == b"/hook":
        return HOOK_PREFIX
    if not raw.startswith(b"/hook/"):
        raise ApiError("bad_request", "Invalid hook path")
    try:
        suffix = unquote(raw[len(b"/hook/") :].decode("ascii"), errors="strict")
    except (UnicodeDecodeError, UnicodeError):
        raise ApiError("bad_request", "Invalid hook path: only ASCII is allowed") from None
    if len(suffix) > MAX_SUFFIX or not _SUFFIX_CHARS.fullmatch(suffix):
        raise ApiError("bad_request", f"Invalid hook path: at most {MAX_SUFFIX} characters of A-Z a-z 0-9 ._~:@+=,/-")
    segments = suffix.split("/")
    if segments and segments[-1] == "" and len(segments) > 1:
        segments = segments[:-1]  # one trailing slash is kept in the tag
    if any(segment in ("", ".", "..") for segment in segments) and suffix != "":
        raise ApiError("bad_request", "Invalid hook path: empty, '.' or '..' segment")
    return f"{HOOK_PREFIX}/{suffix}"


def event_headers(request: IRequest) -> dict[str, str]:
    """Request headers, Title-Case, repeats comma-joined, credentials redacted."""
    headers: dict[str, str] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        text = name.decode("latin-1")
        title = "-".join(part.capitalize() for part in text.split("-"))
        if text.lower() in SECRET_HEADERS:
            headers[title] = REDACTED
            continue
        headers[title] = ", ".join(v.decode("latin-1") for v in values)
    return headers


async def serve_hook(api: SaltAPI, request: IRequest) -> Any:
    """Authenticate, validate, parse, and fire the event."""
    if not api.config.webhook_disable_auth:
        await api._require_token(request)
        api._check_csrf(request)
    tag = hook_tag(request.path)
    ip = api._client_ip(request)
    retry = api.hook_limiter.retry_after(ip)
    if retry:
        raise ApiError("rate_limited", "Too many webhook requests", {"Retry-After": str(retry)})
    api.hook_limiter.hit(ip)
    raw = api._raw_body(request)
    query = api._query(request)
    if raw.strip():
        post = parse_body(
            raw,
            request.getHeader(b"content-type"),
            query=query,
            max_depth=api.config.max_json_depth,
            max_fields=api.config.max_form_fields,
        )
    else:
        post = {}
    data = {
        "post": post,
        "get": {k: (v[0] if len(v) == 1 else v) for k, v in query.items()},
        "headers": event_headers(request),
        "body": raw.decode("utf-8", "replace"),
    }
    api.firer.fire(tag, data)
    return {"success": True}
