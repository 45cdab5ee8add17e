"""The twisted.web ``Site``: access log with secrets redacted.

The access log names method, path (query values of ``token``-like
parameters and path tokens redacted), status, bytes, duration and client;
never a header.
"""

from __future__ import annotations

import re
import time
from typing import Any

from twisted.logger import Logger
from twisted.web.server import Request, Site

_PATH_TOKEN = re.compile(r"^(/(?:all_events|formatted_events|ws)/)[^/?]+")
_QUERY_SECRET = re.compile(r"((?:^|[?&])(?:token|salt_token|password|session_id)=)[^&]*", re.IGNORECASE)


def redact_path(path: str) -> str:
    """*path* with path tokens and secret query values replaced by ``<redacted>``."""
    path = _PATH_TOKEN.sub(r"\1<redacted>", path)
    return _QUERY_SECRET.sub(r"\1<redacted>", path)


class ApiRequest(Request):
    """A request that remembers when it started (access log duration)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()


class ApiSite(Site):
    """The site serving the API."""

    requestFactory = ApiRequest
    noisy = False
    _log = Logger(namespace="saltapi_twisted.access")

    def log(self, request: Request) -> None:
        """One access-log event per request, secrets redacted."""
        path = request.uri.decode("latin-1", "replace")
        peer = request.getClientAddress()
        self._log.info(
            '{client} "{method} {path}" {status} {size} {duration:.3f}s',
            client=getattr(peer, "host", "-"),
            method=request.method.decode("latin-1", "replace"),
            path=redact_path(path),
            status=request.code,
            size=request.sentLength,
            duration=time.monotonic() - getattr(request, "started", time.monotonic()),
        )


def build_site(service: Any, salt_version: str | None) -> tuple[ApiSite, Any]:
    """The site and the klein application for *service*."""
    from .app import SaltAPI

    api = SaltAPI(
        service.config,
        service.master,
        service.bus,
        service.auth,
        service.runner,
        service.reactor,
        channel=service.channel,
        firer=service.firer,
        salt_version=salt_version,
    )
    site = ApiSite(api.resource(), timeout=service.config.request_header_timeout)
    return site, api
