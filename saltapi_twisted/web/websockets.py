"""Websocket streams: ``/all_events/<token>``, ``/formatted_events/<token>``, ``/ws[/<token>]``.

The upgrade is checked before the handshake, over plain HTTP, so refusals
carry the usual ``{"status", "error", "return"}`` body:

* the token (path; for ``/ws`` also ``X-Auth-Token``, else the cookie) passes
  the format gate (401, no master round trip) and the master's check (401
  for unknown, expired or revoked tokens; 503 when the master cannot say);
* ``Origin``: absent is allowed (non-browser clients); ``null`` is refused;
  with ``cors_origin`` it must be allowed by it (or be our own origin),
  without it its host must equal ``Host``; a cookie-authenticated ``/ws``
  accepts only our own origin, whatever ``cors_origin`` says (403 ``origin``);
* a request without ``Upgrade: websocket`` gets 400.

Then an autobahn :class:`WebSocketResource` takes the connection over, with
frame and message caps (1009), no permessage-deflate, pings every
``ws_ping_interval`` and a 5 s opening-handshake timeout.

Wire formats (text frames). Nothing is sent before the client's text frame
``websocket client ready``; repeats are ignored::

    /all_events/<token>        {"data": {...}, "tag": "..."}          one per event
    /ws[/<token>]              data: {"data": {...}, "tag": "..."}\\n\\n
                               server received message                 reply to every
                                                                       other client text
    /formatted_events/<token>  {"minions": {<id>: {...}}}\\n\\n          see formatted_events
                               {"jobs": {<jid>: {...}}}\\n\\n
    /ws?format_events          the same, with "minions" as a list

Each connection is a :class:`~saltapi_twisted.streams.BoundedStream` fed by
the hub and registered as the transport's push producer: a client that stops
reading is queued for up to ``events_queue_max`` events, then closed 1013
``overflow``. Token expiry or logout closes 1008 ``token expired``, shutdown
1001, a failed start of a formatted stream 1008 with the reason.

``/all_events`` and ``/ws`` frames are prepared once per event and shared;
the frames of the events of one bus read go out in one write (the same
joined bytes for every unfiltered stream of a kind). Formatted streams send
one message per change, as without batches.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ..auth import SESSION_COOKIE
from ..cors import allow_origin
from ..errors import ApiError, unauthenticated
from ..formatted_events import Changes, FormattedView
from ..streams import BoundedStream, StreamEvent

if TYPE_CHECKING:
    from .app import SaltAPI

READY = b"websocket client ready"
REPLY = b"server received message"

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
#: ``BoundedStream.close`` reasons -> close codes (anything else: 1008)
CLOSE_CODES = {"token expired": CLOSE_POLICY, "shutdown": CLOSE_GOING_AWAY, "overflow": CLOSE_TRY_AGAIN}

OPEN_HANDSHAKE_TIMEOUT = 5.0
#: how long a client has to answer our close frame (it may first have to read what was queued)
CLOSE_HANDSHAKE_TIMEOUT = 5.0

KINDS = ("all_events", "formatted_events", "ws")

_log = Logger()


class _Context:
    """What the upgrade check learnt, handed to the connection's protocol."""

    __slots__ = ("api", "kind", "token", "expire", "formatted")

    def __init__(self, api: SaltAPI, kind: str, token: str, expire: float | None, formatted: bool) -> None:
        self.api = api
        self.kind = kind
        self.token = token
        self.expire = expire
        self.formatted = formatted


# ----------------------------------------------------------------------------
# the upgrade


def websocket_resource(api: SaltAPI, request: IRequest, kind: str, token: str | None) -> defer.Deferred[Any]:
    """Check the upgrade of *request*; a Deferred firing with the resource, or an error body.

    :param api: the application.
    :param request: the upgrade request.
    :param kind: ``all_events``, ``formatted_events`` or ``ws``.
    :param token: the path token, if the route has one.
    """
    from .app import STREAMED

    if kind not in KINDS:
        raise ValueError(f"unknown websocket kind {kind!r}")
    accepted: list[_Context] = []

    async def handler(request: IRequest) -> Any:
        accepted.append(await _check_upgrade(api, request, kind, token))
        return STREAMED

    def hand_over(body: bytes) -> Any:
        if not accepted:
            return body
        _access_log(request)
        return WebSocketResource(_factory(accepted[0]))

    return api._serve(request, handler).addCallback(hand_over)


async def _check_upgrade(api: SaltAPI, request: IRequest, kind: str, path_token: str | None) -> _Context:
    token = path_token
    from_cookie = False
    if token is None and kind == "ws":
        header = _header(request, b"x-auth-token")
        if header is not None:
            token = header
        else:
            cookie = request.getCookie(SESSION_COOKIE)
            if cookie is not None:
                token = cookie.decode("latin-1")
                from_cookie = True
    # the format gate first: junk never reaches the master, a cache or a log
    if token is None:
        raise unauthenticated()
    if not api.auth.well_formed(token):
        raise unauthenticated("Invalid token")
    upgrade = _header(request, b"upgrade")
    if upgrade is None or "websocket" not in [p.strip().lower() for p in upgrade.split(",")]:
        raise ApiError("bad_request", "This resource needs a websocket upgrade (Upgrade: websocket)")
    _check_origin(api, request, from_cookie)
    info = await api.auth.validate(token)
    try:
        expire: float | None = float(info.get("expire", 0)) or None
    except (TypeError, ValueError):
        expire = None
    formatted = kind == "formatted_events" or (kind == "ws" and "format_events" in _query(request))
    return _Context(api, kind, token, expire, formatted)


def _check_origin(api: SaltAPI, request: IRequest, from_cookie: bool) -> None:
    """403 unless the Origin may open this websocket (spec §6.1)."""
    origin = _header(request, b"origin")
    if origin is None:
        if from_cookie and (_header(request, b"sec-fetch-site") or "").lower() == "cross-site":
            raise ApiError("origin", "Cross-site websocket refused")
        return
    if origin.strip().lower() == "null":
        raise ApiError("origin", "Origin null is not allowed")
    same = _same_host(origin, _header(request, b"host"))
    if from_cookie:
        # cookie-authenticated: only our own origin, even with cors_origin "*"
        if not same or (_header(request, b"sec-fetch-site") or "").lower() == "cross-site":
            raise ApiError("origin", "Cross-site websocket refused: use a token in the path or X-Auth-Token")
        return
    cors_origin = api.config.cors_origin
    if cors_origin:
        if same or allow_origin(origin, cors_origin) is not None:
            return
        raise ApiError("origin", "Origin not allowed by cors_origin")
    if not same:
        raise ApiError("origin", "Origin does not match Host")


def _same_host(origin: str, host: str | None) -> bool:
    """Whether *origin*'s host (and port) is *host* (rest_tornado's check)."""
    if not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == host.strip().lower()


# ----------------------------------------------------------------------------
# autobahn factory and protocol


def _factory(context: _Context) -> WebSocketServerFactory:
    """A factory for one accepted upgrade (it carries the connection's context)."""
    config = context.api.config
    factory = _StreamFactory(server=None, reactor=context.api.clock)
    factory.context = context
    ping = float(config.ws_ping_interval or 0)
    factory.setProtocolOptions(
        # the Origin was checked before the handshake (with the JSON refusal)
        allowedOrigins=["*"],
        allowNullOrigin=False,
        webStatus=False,
        maxFramePayloadSize=config.ws_max_message_size,
        maxMessagePayloadSize=config.ws_max_message_size,
        autoPingInterval=ping,
        autoPingTimeout=ping,
        openHandshakeTimeout=OPEN_HANDSHAKE_TIMEOUT,
        closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
        # send close frames (1002/1007/1009) rather than dropping the TCP connection
        failByDrop=False,
        utf8validateIncoming=True,
        requireMaskedClientFrames=True,
        # permessage-deflate is declined whatever the client offers
        perMessageCompressionAccept=lambda offers: None,
    )
    return factory


class _StreamFactory(WebSocketServerFactory):
    context: _Context

    def buildProtocol(self, addr: Any) -> WebSocketServerProtocol:  # noqa: N802 - Twisted hook
        protocol = StreamProtocol()
        protocol.factory = self
        protocol.context = self.context
        return protocol


class StreamProtocol(WebSocketServerProtocol):
    """One websocket connection: waits for "ready", then streams."""

    _log = Logger()
    context: _Context
    stream: WebsocketStream | None = None

    def onConnect(self, request: Any) -> None:  # noqa: N802 - autobahn hook
        """Accept (every check happened before the handshake); no subprotocol."""
        return None

    def onOpen(self) -> None:  # noqa: N802 - autobahn hook
        context = self.context
        api = context.api
        if context.formatted:
            stream: WebsocketStream = FormattedStream(self, context, minions_as_list=context.kind == "ws")
        else:
            stream = EventStream(self, context, prefix=context.kind == "ws")
        self.stream = stream
        # take the transport's producer slot from the HTTP channel we replaced
        # the HTTP channel we replaced is still the transport's producer
        transport: Any = self.transport
        transport.unregisterProducer()
        transport.registerProducer(stream, True)
        api.hub.register(stream)
        api.streams.add(stream)
        if api.shutting_down:
            stream.close("shutdown")
        elif api.auth.is_revoked(context.token):
            # logged out between the check and the handshake
            stream.close("token expired")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803 - autobahn hook
        stream = self.stream
        if stream is None or stream.closed or isBinary:
            return
        if payload == READY:
            if not stream.started:
                stream.ready()
            return
        if self.context.kind == "ws":
            self.send_text(REPLY)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
        self._release()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted hook
        try:
            super().connectionLost(reason)
        finally:
            self._release()

    def _release(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.release()
            self.context.api.streams.discard(stream)
            if not stream.finished.called:
                stream.finished.callback(None)

    def send_text(self, payload: bytes) -> None:
        """Send one text message of any size.

        autobahn applies ``maxMessagePayloadSize`` to both directions; the
        cap is for what clients send (1009), never for the events we relay.
        """
        limit = int(getattr(self, "maxMessagePayloadSize", 0))
        self.maxMessagePayloadSize = 0
        try:
            self.sendMessage(payload, isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit

    def close_with(self, code: int, reason: str, wait_reply: bool = True) -> None:
        """Start the closing handshake with *code* (1001/1008/1013 included).

        :param wait_reply: wait (up to the close-handshake timeout) for the
            client's close frame; otherwise close the TCP connection as soon
            as what is buffered (the close frame last) has been sent.
        """
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=_close_reason(reason), isReply=False)
            if not wait_reply and self.transport is not None:
                self.transport.loseConnection()
        elif self.state in (WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_PROXY_CONNECTING):
            self.dropConnection(abort=True)


# ----------------------------------------------------------------------------
# streams


class WebsocketStream(BoundedStream):
    """The part every websocket stream shares: writes, closes, cleanup."""

    kind = "websocket"
    _log = Logger()

    def __init__(self, protocol: StreamProtocol, context: _Context) -> None:
        super().__init__(
            context.api.hub,
            token=context.token,
            expire=context.expire,
            queue_max=context.api.config.events_queue_max,
        )
        self.protocol = protocol
        self.context = context
        #: fires once the connection is gone (shutdown may wait for it, bounded)
        self.finished: defer.Deferred[None] = defer.Deferred()

    def ready(self) -> None:
        """The client sent "ready": start delivering."""
        self.start()

    def write(self, data: bytes) -> None:
        self.last_write = self.hub.clock.seconds()
        if self.protocol.state != WebSocketProtocol.STATE_OPEN:
            return
        try:
            self.protocol.send_text(data)
        except Exception:  # noqa: BLE001 - one message must not end the stream silently
            self._log.failure("could not send a websocket message ({size} bytes)", size=len(data))

    def end(self, reason: str) -> None:
        self.context.api.streams.discard(self)
        # at shutdown nobody waits for the client's close frame
        self.protocol.close_with(CLOSE_CODES.get(reason, CLOSE_POLICY), reason, wait_reply=reason != "shutdown")

    def release(self) -> None:
        super().release()
        self.context.api.streams.discard(self)


class EventStream(WebsocketStream):
    """``/all_events`` (bare JSON) and ``/ws`` (``data: ...\\n\\n``)."""

    def __init__(self, protocol: StreamProtocol, context: _Context, prefix: bool) -> None:
        super().__init__(protocol, context)
        self.prefix = prefix
        self.kind = "ws" if prefix else "all_events"

    def encode(self, event: StreamEvent) -> bytes | None:
        """The complete websocket frame, built once per event and shared by every stream."""
        try:
            return event.encoded(("websocket", self.prefix), self._frame)
        except Exception:  # noqa: BLE001 - a malformed event never closes the connection
            self._log.warn("dropped an event that cannot be encoded as JSON ({tag!r})", tag=event.tag[:200])
            return None

    def batch_key(self) -> Hashable | None:
        return ("websocket", self.prefix)

    def _frame(self, event: StreamEvent) -> bytes:
        text = f"data: {event.json}\n\n" if self.prefix else event.json
        # Server frames are unmasked and never compressed: the same bytes suit every client.
        return bytes(PreparedMessage(text.encode("utf-8"), False, False, True).payloadHybi)

    def write(self, data: bytes) -> None:
        self.last_write = self.hub.clock.seconds()
        protocol = self.protocol
        if protocol.state == WebSocketProtocol.STATE_OPEN and protocol.transport is not None:
            # The frame is complete and shared: straight to the transport
            # (autobahn's sendData formats debug-log arguments for every frame).
            protocol.transport.write(data)


class FormattedStream(WebsocketStream):
    """``/formatted_events`` and ``/ws?format_events``: the minions/jobs view."""

    kind = "formatted_events"

    def __init__(self, protocol: StreamProtocol, context: _Context, minions_as_list: bool) -> None:
        super().__init__(protocol, context)
        self.view = FormattedView(minions_as_list=minions_as_list)
        self._pending: set[defer.Deferred[Any]] = set()

    def encode(self, event: StreamEvent) -> bytes | None:  # pragma: no cover - offer() is overridden
        return None

    def offer_batch(
        self, events: Sequence[StreamEvent], shared: dict[Hashable, tuple[bytes, int]] | None = None
    ) -> None:
        """Each event of a batch on its own: every change is its own message, as before batches."""
        for event in events:
            self.offer(event)

    def offer(self, event: StreamEvent) -> None:
        if self.closed or not self.started:
            return
        try:
            changes = self.view.process(event.tag, event.data)
        except Exception:  # noqa: BLE001 - a malformed event never closes the connection
            self._log.failure("the formatted view could not take an event ({tag!r})", tag=event.tag[:200])
            return
        self._send(changes)
        if changes.fetch_grains:
            self._fetch_grains(changes.fetch_grains)

    def _send(self, changes: Changes) -> None:
        for text in self.view.messages(changes):
            self.deliver((text + "\n\n").encode())

    def ready(self) -> None:
        """Start the view, then ask every minion for its grains (without waiting)."""
        self.start()
        api = self.context.api
        try:
            chunk = api._validate(
                [{"client": "local", "tgt": "*", "fun": "grains.items", "tgt_type": "glob"}], self.token
            )[0]
        except Exception as exc:  # noqa: BLE001 - e.g. local not enabled
            self.close(_reason(api, exc))
            return
        self._run(chunk, fatal=True)

    def _fetch_grains(self, minions: list[str]) -> None:
        api = self.context.api
        try:
            chunk = api._validate(
                [{"client": "local", "tgt": ",".join(minions), "fun": "grains.items", "tgt_type": "list"}], self.token
            )[0]
        except Exception as exc:  # noqa: BLE001
            self._log.info("cannot fetch grains of new minions: {error}", error=str(exc))
            return
        self._run(chunk, fatal=False)

    def _run(self, chunk: dict[str, Any], fatal: bool) -> None:
        api = self.context.api
        d = defer.ensureDeferred(api.runner.run(chunk))
        self._pending.add(d)

        def done(result: Any) -> None:
            self._pending.discard(d)
            if not self.closed and self.view.update_grains(result):
                self._send(Changes(minions=True))

        def failed(failure: Failure) -> None:
            self._pending.discard(d)
            if failure.check(defer.CancelledError) or self.closed:
                return
            reason = _reason(api, failure.value or Exception("unknown failure"))
            if fatal:
                self.close(reason)
            else:
                self._log.info("fetching grains failed: {error}", error=reason)

        d.addCallbacks(done, failed)

    def release(self) -> None:
        super().release()
        self._cancel_pending()

    def close(self, reason: str) -> None:
        super().close(reason)
        self._cancel_pending()

    def _cancel_pending(self) -> None:
        pending, self._pending = self._pending, set()
        for d in pending:
            d.cancel()


def _close_reason(reason: str) -> bytes:
    """*reason* as UTF-8, cut to the 123 bytes a close frame holds (on a character boundary)."""
    raw = reason.encode("utf-8")
    if len(raw) <= 123:
        return raw
    return raw[:123].decode("utf-8", "ignore").encode("utf-8")


def _reason(api: SaltAPI, exc: BaseException) -> str:
    """A close reason for a failed master call (no token, no traceback)."""
    if isinstance(exc, ApiError):
        return exc.message
    try:
        return api._to_api_error(exc).message
    except Exception:  # noqa: BLE001
        return "An unexpected error occurred"


# ----------------------------------------------------------------------------
# helpers


def _access_log(request: IRequest) -> None:
    """One access-log line for an accepted upgrade (the request never "finishes")."""
    site = getattr(getattr(request, "channel", None), "site", None)
    log = getattr(site, "log", None)
    if log is None:
        return
    request.setResponseCode(101)
    try:
        log(request)
    except Exception:  # noqa: BLE001 - logging must not break the upgrade
        _log.failure("access log of a websocket upgrade failed")


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value if isinstance(value, str) else value.decode("latin-1")


def _query(request: IRequest) -> dict[str, list[str]]:
    from .app import query_args

    return query_args(request)


__all__ = ["websocket_resource", "StreamProtocol", "EventStream", "FormattedStream"]
