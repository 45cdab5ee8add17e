"""``GET /events``: Server-Sent Events.

Wire format (rest_tornado compatible, plus ``id:`` and comments)::

    retry: 400\\n\\n                       once, first
    tag: <event tag>\\n                  per event
    data: {"data": <event data>, "tag": <event tag>}\\n
    id: <20 hex digits>\\n               when events_replay_buffer > 0
    \\n
    : keepalive\\n\\n                      after events_keepalive s of silence
    : replay-unavailable\\n\\n             Last-Event-ID could not be honoured
    : bus-reconnected\\n\\n                the master's bus came back
    : token expired\\n\\n / : overflow\\n\\n / : shutdown\\n\\n   then the response ends

The ``id`` is derived from the event's content (the first 20 hex digits of
the SHA-256 of its ``data:`` JSON), so every API process on the same master
gives an event the same id: a client may reconnect to another process (or a
restarted one) with ``Last-Event-ID`` and get what it missed, as far as that
process's replay ring reaches. The events of one bus read are written in one
write.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.web.iweb import IRequest

from ..errors import ApiError
from ..negotiation import JSON, choose_output
from ..streams import BoundedStream, EventHub, StreamEvent, tag_matcher

if TYPE_CHECKING:
    from .app import SaltAPI

SSE = "text/event-stream"
MAX_TAG_PATTERNS = 10
MAX_TAG_PATTERN_LENGTH = 256


class SSEStream(BoundedStream):
    """One ``/events`` response."""

    kind = "sse"

    def __init__(self, request: Any, hub: EventHub, with_id: bool, **kwargs: Any) -> None:
        super().__init__(hub, **kwargs)
        self.request = request
        self.with_id = with_id
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def encode(self, event: StreamEvent) -> bytes | None:
        return event.sse(self.with_id)

    def batch_key(self) -> Hashable | None:
        return ("sse", self.with_id)

    def write(self, data: bytes) -> None:
        self.last_write = self.hub.clock.seconds()
        self.request.write(data)

    def comment(self, text: str) -> None:
        """Write an SSE comment line (ignored by EventSource)."""
        if not self.closed and not self.paused and not self._queue:
            self.write(f": {text}\n\n".encode())

    def ping(self) -> None:
        self.comment("keepalive")

    def gap(self) -> None:
        self.comment("bus-reconnected")

    def end(self, reason: str) -> None:
        try:
            self.request.write(f": {reason}\n\n".encode())
            self.request.unregisterProducer()
        finally:
            if not self.done.called:
                self.done.callback(b"")


async def serve_events(api: SaltAPI, request: Any) -> bytes:
    """Validate, then stream events until the client leaves or the stream ends."""
    hub: EventHub = api.hub
    config = api.config
    media = choose_output(_header(request, b"accept"), offers=(SSE, JSON, "application/x-yaml"))
    if media is None:
        raise ApiError("not_acceptable", "None of the types in Accept can be served: text/event-stream")
    query = _query(request)
    for key in query:
        if key in ("token", "salt_token"):
            raise ApiError("bad_request", "use X-Auth-Token or the session cookie")
        if key not in ("tag", "last_event_id"):
            raise ApiError("bad_request", f"Unknown query parameter: {key}")
    patterns = query.get("tag", [])
    if len(patterns) > MAX_TAG_PATTERNS or any(len(p) > MAX_TAG_PATTERN_LENGTH or not p for p in patterns):
        raise ApiError(
            "bad_request", f"At most {MAX_TAG_PATTERNS} tag patterns of 1 to {MAX_TAG_PATTERN_LENGTH} characters"
        )
    token, info = await api._require_token(request)

    last_ids = query.get("last_event_id") or []
    last_id = _header(request, b"last-event-id") or (last_ids[-1] if last_ids else None)
    stream = SSEStream(
        request,
        hub,
        with_id=hub.replay_enabled,
        token=token,
        expire=float(info.get("expire", 0)) or None,
        queue_max=config.events_queue_max,
        matcher=tag_matcher(patterns),
    )
    stream.keepalive = config.events_keepalive
    request.setHeader(b"Content-Type", SSE.encode())
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"Connection", b"keep-alive")
    request.setHeader(b"X-Accel-Buffering", b"no")
    request.write(b"retry: 400\n\n")
    replay: list[StreamEvent] | None = []
    if last_id is not None:
        replay = hub.events_after(last_id)
        if replay is None:
            request.write(b": replay-unavailable\n\n")
            replay = []
    request.registerProducer(stream, True)
    hub.register(stream)
    api.streams.add(stream)
    try:
        stream.start(replay)
        return await stream.done
    finally:
        api.streams.discard(stream)
        stream.release()


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value if isinstance(value, str) else value.decode("latin-1")


def _query(request: IRequest) -> dict[str, list[str]]:
    from .app import query_args

    return query_args(request)
