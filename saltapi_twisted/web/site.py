"""The twisted.web ``Site``: limits, deadlines, connection caps, access log.

* **Body size:** a ``Content-Length`` over ``max_request_body_size`` is
  answered 413 as soon as the headers are in, and the connection closed;
  nothing of the body is buffered. A chunked body is cut off the same way
  when its running total passes the cap.
* **Deadlines:** the request line and headers must arrive within
  ``request_header_timeout`` seconds (Twisted's own idle timeout restarts on
  every byte, so a client trickling a byte at a time would never hit it);
  the body within ``request_body_timeout`` (408).
* **Connection caps:** ``max_connections`` in total and
  ``max_connections_per_ip`` per TCP peer; connections over a cap are
  closed at once.
* **Access log:** method, path (path tokens and secret query values
  redacted), status, bytes, duration and client; never a header.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from ..errors import error_body
from .proxies import TrustedProxies

_PATH_TOKEN = re.compile(r"^(/(?:all_events|formatted_events|ws)/)[^/?]+")
_QUERY_SECRET = re.compile(r"((?:^|[?&])(?:token|salt_token|password|session_id)=)[^&]*", re.IGNORECASE)


def redact_path(path: str) -> str:
    """*path* with path tokens and secret query values replaced by ``<redacted>``."""
    path = _PATH_TOKEN.sub(r"\1<redacted>", path)
    return _QUERY_SECRET.sub(r"\1<redacted>", path)


def raw_error_response(code: int, word: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = json.dumps(error_body(code, word, message)).encode()
    status = error_body(code, word, message)["status"]
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ApiRequest(Request):
    """A request that remembers when it started and caps a chunked body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()
        self._body_bytes = 0

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted hook
        """Count the body; past the cap, answer 413 and close."""
        self._body_bytes += len(data)
        channel = self.channel
        limit = getattr(getattr(channel, "site", None), "max_body", None)
        if limit is not None and self._body_bytes > limit:
            if isinstance(channel, ApiChannel):
                channel.refuse(413, "payload_too_large", f"Request body over {limit} bytes")
            return
        super().handleContentChunk(data)


class ApiChannel(HTTPChannel):
    """An HTTP channel with header and body deadlines and an early 413."""

    site: ApiSite
    _header_deadline: IDelayedCall | None = None
    _body_deadline: IDelayedCall | None = None
    _refused = False
    #: the TCP peer counted under ``max_connections_per_ip`` (None once released)
    _peer_host: str | None = None
    #: the transport asked us to pause (its write buffer is full)
    _transport_busy = False
    #: arm the header deadline when the transport's buffer drains
    _deadline_after_flush = False
    #: at least one response was completed on this connection
    _served = False

    def connectionMade(self) -> None:  # noqa: N802 - Twisted hook
        super().connectionMade()
        self._release_with_transport()
        self._arm_header_deadline()

    def _release_with_transport(self) -> None:
        """Give the connection's place under the caps back when the *connection* ends.

        A websocket upgrade hands the transport over to another protocol
        (autobahn's ``WebSocketResource``): this channel then never sees
        ``connectionLost``, and its place would be held forever, until the
        per-peer and total caps refused everyone. The release therefore
        follows the transport, whichever protocol it serves by then.
        """
        transport: Any = self.transport
        original = getattr(transport, "connectionLost", None)
        if original is None:
            return
        site, channel = self.site, self

        def connection_lost(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            finally:
                site.connection_closed(channel)

        transport.connectionLost = connection_lost

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 - Twisted hook
        """A request line or header line over 16 KiB: 431 and close (Twisted would close without a word)."""
        self._cancel("_header_deadline")
        self.refuse(431, "header_too_large", "Request line or header field too large")

    def _arm_header_deadline(self) -> None:
        self._cancel("_header_deadline")
        self._header_deadline = self.callLater(self.site.header_timeout, self._headers_too_slow)

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None and call.active():
            call.cancel()
        setattr(self, name, None)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        self.site.slow_closed += 1
        transport: Any = self.transport
        if transport is None:
            return
        if self._served and not self.requests:
            # Idle between requests: close gracefully, so that what the last
            # response left in the kernel's buffers still reaches a slow reader
            # (an abort would discard it, an SSE stream's final notice included).
            transport.loseConnection()
        else:
            transport.abortConnection()

    def _body_too_slow(self) -> None:
        self._body_deadline = None
        self.site.slow_closed += 1
        self.refuse(408, "request_timeout", "The request body did not arrive in time")

    def refuse(self, code: int, word: str, message: str) -> None:
        """Answer with a bare error response and close, ignoring what follows."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        self.transport.write(raw_error_response(code, word, message))
        self.transport.loseConnection()

    def allHeadersReceived(self) -> None:  # noqa: N802 - Twisted hook
        self._cancel("_header_deadline")
        length = self.length
        if length is not None and length > self.site.max_body:
            self.refuse(413, "payload_too_large", f"Request body over {self.site.max_body} bytes")
            return
        super().allHeadersReceived()
        if length != 0:
            self._body_deadline = self.callLater(self.site.body_timeout, self._body_too_slow)

    def allContentReceived(self) -> None:  # noqa: N802 - Twisted hook
        self._cancel("_body_deadline")
        if self._refused:
            return
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:  # noqa: N802 - Twisted hook
        self._served = True
        super().requestDone(request)
        if self.persistent and self.transport is not None and not self._refused:
            if self._transport_busy:
                # The response is still being written to a slow reader: the
                # deadline for the next request starts once it is out, or a
                # long response (or an SSE stream's final notice) would be cut.
                self._deadline_after_flush = True
            else:
                self._arm_header_deadline()

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer (the transport's buffer is full)
        self._transport_busy = True
        super().pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 - IPushProducer (the transport's buffer drained)
        self._transport_busy = False
        super().resumeProducing()
        if self._deadline_after_flush:
            self._deadline_after_flush = False
            if self.transport is not None and not self._refused:
                self._arm_header_deadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted hook
        self._cancel("_header_deadline")
        self._cancel("_body_deadline")
        self.site.connection_closed(self)
        super().connectionLost(reason)


class ApiSite(Site):
    """The site serving the API.

    :param resource: the root resource.
    :param config: the API configuration (limits).
    :param reactor: the reactor (deadlines).
    """

    requestFactory = ApiRequest
    protocol = ApiChannel  # type: ignore[assignment]  # HTTPFactory types it as a zero-argument callable
    noisy = False
    _log = Logger(namespace="saltapi_twisted.access")

    def __init__(self, resource: Any, config: Any, reactor: Any = None) -> None:
        # Bodies are parsed by the API's own bounded loaders, never by
        # twisted.web (whose multipart parser answers bad bodies with a bare 400).
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.header_timeout = config.request_header_timeout
        self.body_timeout = config.request_body_timeout
        self.max_body = config.max_request_body_size
        self.max_connections = config.max_connections
        self.max_per_ip = config.max_connections_per_ip
        self.proxies = TrustedProxies(config.trusted_proxies)
        self.open_connections = 0
        self.per_ip: Counter[str] = Counter()
        self.refused_connections = 0
        self.slow_closed = 0
        # Twisted's idle timeout, for idle keep-alive connections.
        self.timeOut = max(self.header_timeout, 60)

    def buildProtocol(self, addr: IAddress | None) -> Any:  # noqa: N802 - Twisted hook
        """A channel, unless a connection cap is reached (then the connection is closed)."""
        host = str(getattr(addr, "host", "unix"))
        if self.open_connections >= self.max_connections or (self.max_per_ip and self.per_ip[host] >= self.max_per_ip):
            self.refused_connections += 1
            return None
        channel = super().buildProtocol(addr)
        if channel is not None:
            channel._peer_host = host
            self.open_connections += 1
            self.per_ip[host] += 1
        return channel

    def connection_closed(self, channel: ApiChannel) -> None:
        """Release a channel's place under the caps."""
        host = getattr(channel, "_peer_host", None)
        if host is None:
            return
        channel._peer_host = None
        self.open_connections -= 1
        self.per_ip[host] -= 1
        if self.per_ip[host] <= 0:
            del self.per_ip[host]

    def log(self, request: http.Request) -> None:
        """One access-log event per request, secrets redacted."""
        path = request.uri.decode("latin-1", "replace")
        self._log.info(
            '{client} {user} "{method} {path}" {status} {size} {duration:.3f}s',
            client=self.proxies.client_ip(request),
            user=getattr(request, "saltapi_user", None) or "-",
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
    api.worker = getattr(service, "worker", None)
    from .hosting import mount_hosting

    site = ApiSite(mount_hosting(api.resource(), service.config), service.config, reactor=service.reactor)
    api.site = site
    return site, api
