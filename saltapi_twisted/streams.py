"""Fan-out of bus events to streams (SSE, websockets), bounded and in order.

One :class:`EventHub` per process subscribes to the event bus once. Each
event is numbered (its SSE ``id`` is ``<boot>-<seq>``), kept in a bounded
replay ring, and offered to every open stream. Its encodings are computed
once and shared by every stream (:class:`StreamEvent`).

Each stream (:class:`BoundedStream`) writes at once while its transport
accepts data and queues while the transport asks it to pause (Twisted's
push-producer flow control). A stream whose queue passes its cap is closed
with an explicit overflow notice: it never slows the others and never loses
events silently.

Token expiry and revocation: every stream knows its token and its
``expire``; the hub closes a stream within a second of either.
"""

from __future__ import annotations

import fnmatch
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .master.eventbus import EventBus
from .negotiation import to_plain

#: The most bytes a stream may queue, whatever its event cap.
MAX_QUEUED_BYTES = 8 * 1024 * 1024
_TAG_UNSAFE = re.compile(r"[\r\n\x00]")


class StreamEvent:
    """One bus event, numbered, with its encodings computed once.

    :param seq: its number in this process.
    :param tag: the event tag.
    :param data: the event data.
    :param boot: this process's boot id.
    """

    __slots__ = ("seq", "tag", "data", "boot", "_json", "_sse", "_frames")

    def __init__(self, seq: int, tag: str, data: dict[str, Any], boot: str) -> None:
        self.seq = seq
        self.tag = tag
        self.data = data
        self.boot = boot
        self._json: str | None = None
        self._sse: dict[bool, bytes] = {}
        self._frames: dict[Any, bytes] | None = None

    def encoded(self, key: Any, build: Callable[[StreamEvent], bytes]) -> bytes:
        """Another encoding of this event (e.g. a websocket frame), built once and shared."""
        if self._frames is None:
            self._frames = {}
        frame = self._frames.get(key)
        if frame is None:
            frame = build(self)
            self._frames[key] = frame
        return frame

    @property
    def event_id(self) -> str:
        """``<boot>-<seq>``."""
        return f"{self.boot}-{self.seq}"

    @property
    def json(self) -> str:
        """``{"data": ..., "tag": ...}`` as one line of JSON (rest_tornado's frame)."""
        if self._json is None:
            self._json = json.dumps(
                {"data": to_plain(self.data), "tag": self.tag}, ensure_ascii=False, separators=(", ", ": ")
            )
        return self._json

    def sse(self, with_id: bool) -> bytes:
        """The SSE frame: ``tag:``, ``data:`` and, with replay on, ``id:`` lines.

        JSON never holds a raw CR or LF (they are escaped), and tags with CR,
        LF or NUL never reach this point, so no field can break out of its
        event.
        """
        frame = self._sse.get(with_id)
        if frame is None:
            text = f"tag: {self.tag}\ndata: {self.json}\n"
            if with_id:
                text += f"id: {self.event_id}\n"
            frame = (text + "\n").encode("utf-8")
            self._sse[with_id] = frame
        return frame


def tag_matcher(patterns: Iterable[str]) -> Callable[[str], bool] | None:
    """A predicate for ``?tag=`` filters: globs (``*?[``) on the whole tag, else prefixes."""
    globs: list[re.Pattern[str]] = []
    prefixes: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            globs.append(re.compile(fnmatch.translate(pattern)))
        else:
            prefixes.append(pattern)
    compiled: list[Callable[[str], bool]] = []
    if globs:
        compiled.append(lambda tag: any(regex.match(tag) is not None for regex in globs))
    if prefixes:
        starts = tuple(prefixes)
        compiled.append(lambda tag: tag.startswith(starts))
    if not compiled:
        return None
    return lambda tag: any(match(tag) for match in compiled)


class BoundedStream:
    """A per-client queue with flow control; subclasses write and close.

    :param hub: the hub that feeds it.
    :param token: the token that opened it (expiry and revocation).
    :param expire: the token's expiry, epoch seconds.
    :param queue_max: events queued at most while paused.
    :param matcher: an optional tag filter.
    """

    kind = "stream"
    _log = Logger()

    def __init__(
        self,
        hub: EventHub,
        token: str | None,
        expire: float | None,
        queue_max: int,
        matcher: Callable[[str], bool] | None = None,
    ) -> None:
        self.hub = hub
        self.token = token
        self.expire = expire
        self.queue_max = queue_max
        self.matcher = matcher
        self.paused = False
        self.started = False
        self.closed = False
        self.keepalive = 0.0
        self.last_write = hub.clock.seconds()
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0

    # subclass hooks ------------------------------------------------------

    def encode(self, event: StreamEvent) -> bytes | None:
        """The bytes this stream writes for *event* (None: skip it)."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Write to the client."""
        raise NotImplementedError

    def end(self, reason: str) -> None:
        """Tell the client why the stream ends, and end it."""
        raise NotImplementedError

    def gap(self) -> None:
        """The bus reconnected (events may have been missed)."""

    def ping(self) -> None:
        """Keep an idle stream open (called after ``keepalive`` s of silence)."""

    # flow ---------------------------------------------------------------

    def offer(self, event: StreamEvent) -> None:
        """Deliver *event* (or queue it while paused)."""
        if self.closed or not self.started:
            return
        if self.matcher is not None and not self.matcher(event.tag):
            return
        data = self.encode(event)
        if data is None:
            return
        self.deliver(data)

    def deliver(self, data: bytes) -> None:
        """Write *data* now, or queue it while the client is not reading (overflow closes)."""
        if self.closed:
            return
        if self.paused or self._queue:
            self._queue.append(data)
            self._queued_bytes += len(data)
            if len(self._queue) > self.queue_max or self._queued_bytes > MAX_QUEUED_BYTES:
                self.hub.dropped += 1
                self.close("overflow")
            return
        self.write(data)

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.paused = False
        while self._queue and not self.paused and not self.closed:
            data = self._queue.popleft()
            self._queued_bytes -= len(data)
            self.write(data)

    def stopProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.release()

    def start(self, replay: list[StreamEvent] | None = None) -> None:
        """Begin delivery (after any replayed events)."""
        self.started = True
        for event in replay or ():
            self.offer(event)

    def close(self, reason: str) -> None:
        """End the stream with *reason* and release everything."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self.hub.unregister(self)
        try:
            self.end(reason)
        except Exception:  # noqa: BLE001 - the client may be gone already
            self._log.debug("could not tell the client why its stream ended ({reason})", reason=reason)

    def release(self) -> None:
        """The client went away: release without writing."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self.hub.unregister(self)


class EventHub:
    """The single subscriber of the bus that feeds every stream.

    :param bus: the event bus.
    :param clock: time source.
    :param now: wall-clock time (token expiry).
    :param replay_size: events kept for ``Last-Event-ID`` (0: no ids, no replay).
    """

    _log = Logger()

    def __init__(self, bus: EventBus, clock: IReactorTime, now: Callable[[], float], replay_size: int = 1000) -> None:
        self.bus = bus
        self.clock = clock
        self.now = now
        self.boot = secrets.token_hex(8)
        self.seq = 0
        self.replay: deque[StreamEvent] = deque(maxlen=max(replay_size, 1))
        self.replay_enabled = replay_size > 0
        self.streams: set[BoundedStream] = set()
        self.dropped = 0
        self.unsafe_tags = 0
        self._unsubscribe = bus.subscribe(self._on_event, self._on_state)
        self._expiry = task.LoopingCall(self._tick)
        self._expiry.clock = clock
        self._was_up = bus.connected

    def start(self) -> None:
        """Start the expiry checks (twice a second)."""
        if not self._expiry.running:
            self._expiry.start(0.5, now=False)

    def stop(self) -> None:
        """Stop the expiry checks and the bus subscription."""
        if self._expiry.running:
            self._expiry.stop()
        self._unsubscribe()

    # --------------------------------------------------------------------

    def _on_event(self, tag: str, data: dict[str, Any]) -> None:
        if _TAG_UNSAFE.search(tag):
            self.unsafe_tags += 1
            if self.unsafe_tags <= 10 or self.unsafe_tags % 1000 == 0:
                self._log.warn(
                    "dropped an event whose tag holds CR, LF or NUL ({count} so far)", count=self.unsafe_tags
                )
            return
        self.seq += 1
        event = StreamEvent(self.seq, tag, data, self.boot)
        if self.replay_enabled:
            self.replay.append(event)
        for stream in list(self.streams):
            try:
                stream.offer(event)
            except Exception:  # noqa: BLE001 - one broken stream must not stop the others
                self._log.failure("stream failed; closing it")
                stream.release()

    def _on_state(self, up: bool) -> None:
        if up and not self._was_up:
            for stream in list(self.streams):
                stream.gap()
        self._was_up = up

    def _tick(self) -> None:
        """Twice a second: close expired streams, keep idle ones alive."""
        now = self.now()
        clock_now = self.clock.seconds()
        for stream in list(self.streams):
            if stream.expire is not None and stream.expire <= now:
                stream.close("token expired")
            elif (
                stream.keepalive > 0
                and stream.started
                and not stream.paused
                and clock_now - stream.last_write >= stream.keepalive
            ):
                stream.last_write = clock_now
                stream.ping()

    def revoked(self, token: str) -> None:
        """Close every stream opened with *token* (logout)."""
        for stream in list(self.streams):
            if stream.token is not None and stream.token == token:
                stream.close("token expired")

    def register(self, stream: BoundedStream) -> None:
        """Start feeding *stream*."""
        self.streams.add(stream)

    def unregister(self, stream: BoundedStream) -> None:
        """Stop feeding *stream*."""
        self.streams.discard(stream)

    def events_after(self, last_event_id: str | None) -> list[StreamEvent] | None:
        """The buffered events after *last_event_id*; None when that id cannot be replayed."""
        if not self.replay_enabled or not last_event_id or len(last_event_id) > 64:
            return None
        boot, _sep, seq_text = last_event_id.partition("-")
        if boot != self.boot or not (seq_text.isascii() and seq_text.isdigit()):
            return None
        seq = int(seq_text)
        if seq > self.seq:
            return None
        if seq == self.seq:
            return []
        if not self.replay or self.replay[0].seq > seq + 1:
            return None
        return [event for event in self.replay if event.seq > seq]

    def close_all(self, reason: str) -> None:
        """End every stream (shutdown)."""
        for stream in list(self.streams):
            stream.close(reason)
