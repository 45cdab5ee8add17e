"""Fan-out of bus events to streams (SSE, websockets), bounded and in order.

One :class:`EventHub` per process subscribes to the event bus once. Each
event is kept in a bounded replay ring and offered to every open stream. Its
encodings are computed once and shared by every stream (:class:`StreamEvent`).
Its SSE ``id`` is derived from its content (the first 20 hex digits of the
SHA-256 of its JSON, whose ``_stamp`` has microseconds), so every process
subscribed to the same master, a restarted one included, gives an event the
same id and can replay after a ``Last-Event-ID`` another process handed out.

The events of one read from the bus form a batch: the hub offers them to
each stream together, and a stream writes the frames of those it takes as
one write (SSE events and prepared websocket frames are self-delimiting).

Each stream (:class:`BoundedStream`) writes at once while its transport
accepts data and queues while the transport asks it to pause (Twisted's
push-producer flow control). Its queue is counted in events (and bytes),
however many writes carry them. A stream whose queue passes its cap is
closed with an explicit overflow notice: it never slows the others and never
loses events silently.

Token expiry and revocation: every stream knows its token and its
``expire``; the hub closes a stream within a second of either.
"""

from __future__ import annotations

import fnmatch
import hmac
import hashlib
import json
import re
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .auth import token_digest
from .master.eventbus import EventBus
from .negotiation import to_plain

#: The most bytes a stream may queue, whatever its event cap.
MAX_QUEUED_BYTES = 8 * 1024 * 1024
#: Hex digits in an event id.
EVENT_ID_LENGTH = 20
_EVENT_ID = re.compile(rf"[0-9a-f]{{{EVENT_ID_LENGTH}}}")
_TAG_UNSAFE = re.compile(r"[\r\n\x00]")


class StreamEvent:
    """One bus event, numbered, with its id and encodings computed once.

    :param seq: its number in this process (ordering only; never sent).
    :param tag: the event tag.
    :param data: the event data.
    """

    __slots__ = ("seq", "tag", "data", "_id", "_json", "_sse", "_frames")

    def __init__(self, seq: int, tag: str, data: dict[str, Any]) -> None:
        self.seq = seq
        self.tag = tag
        self.data = data
        self._id: str | None = None
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
        """The first 20 hex digits of the SHA-256 of :attr:`json` (UTF-8): the same in every process."""
        if self._id is None:
            self._id = hashlib.sha256(self.json.encode("utf-8")).hexdigest()[:EVENT_ID_LENGTH]
        return self._id

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
        #: queued writes, each with the number of events it carries
        self._queue: deque[tuple[bytes, int]] = deque()
        self._queued_events = 0
        self._queued_bytes = 0

    # subclass hooks ------------------------------------------------------

    def encode(self, event: StreamEvent) -> bytes | None:
        """The bytes this stream writes for *event* (None: skip it)."""
        raise NotImplementedError

    def batch_key(self) -> Hashable | None:
        """A key shared by the streams whose :meth:`encode` gives the same bytes for any event.

        Unfiltered streams with the same key share one joined write per
        batch. None (the default): this stream joins its own.
        """
        return None

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
        self.offer_batch((event,))

    def offer_batch(
        self, events: Sequence[StreamEvent], shared: dict[Hashable, tuple[bytes, int]] | None = None
    ) -> None:
        """Deliver the *events* this stream takes as one write (or queue them while paused).

        :param shared: the joined writes of this batch by :meth:`batch_key`,
            filled and reused by the unfiltered streams of each key.
        """
        if self.closed or not self.started:
            return
        key = self.batch_key() if self.matcher is None else None
        if shared is None or key is None:
            data, count = self._join(events)
        else:
            entry = shared.get(key)
            if entry is None:
                entry = shared[key] = self._join(events)
            data, count = entry
        if count:
            self.deliver(data, count)

    def _join(self, events: Sequence[StreamEvent]) -> tuple[bytes, int]:
        """The frames of the *events* this stream takes, joined, and how many they are."""
        matcher = self.matcher
        encode = self.encode
        frames: list[bytes] = []
        for event in events:
            if matcher is not None and not matcher(event.tag):
                continue
            data = encode(event)
            if data is not None:
                frames.append(data)
        if len(frames) == 1:
            return frames[0], 1
        return b"".join(frames), len(frames)

    def deliver(self, data: bytes, events: int = 1) -> None:
        """Write *data* (carrying *events* events) now, or queue it while the client is not reading.

        The queue is capped at ``queue_max`` events and :data:`MAX_QUEUED_BYTES`;
        past either the stream is closed with an overflow notice.
        """
        if self.closed:
            return
        if self.paused or self._queue:
            self._queue.append((data, events))
            self._queued_events += events
            self._queued_bytes += len(data)
            if self._queued_events > self.queue_max or self._queued_bytes > MAX_QUEUED_BYTES:
                self.hub.dropped += 1
                self.close("overflow")
            return
        self.write(data)

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.paused = False
        while self._queue and not self.paused and not self.closed:
            data, events = self._queue.popleft()
            self._queued_events -= events
            self._queued_bytes -= len(data)
            self.write(data)

    def stopProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.release()

    def start(self, replay: list[StreamEvent] | None = None) -> None:
        """Begin delivery (after any replayed events)."""
        self.started = True
        if replay:
            self.offer_batch(replay)

    def close(self, reason: str) -> None:
        """End the stream with *reason* and release everything."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._queued_events = 0
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
        self._queued_events = 0
        self._queued_bytes = 0
        self.hub.unregister(self)


class EventHub:
    """The single subscriber of the bus that feeds every stream.

    :param bus: the event bus.
    :param clock: time source.
    :param now: wall-clock time (token expiry).
    :param replay_size: events kept for ``Last-Event-ID`` (0: no ids, no replay).

    The events of one bus batch (one read; see :meth:`EventBus.on_batch_end`)
    are held until the batch ends, then go into the replay ring and to each
    stream together (:meth:`BoundedStream.offer_batch`: one write per stream).
    An event dispatched outside a batch is delivered at once.
    """

    _log = Logger()

    def __init__(self, bus: EventBus, clock: IReactorTime, now: Callable[[], float], replay_size: int = 1000) -> None:
        self.bus = bus
        self.clock = clock
        self.now = now
        self.seq = 0
        self.replay: deque[StreamEvent] = deque(maxlen=max(replay_size, 1))
        self.replay_enabled = replay_size > 0
        self.streams: set[BoundedStream] = set()
        self.dropped = 0
        self.unsafe_tags = 0
        self._pending: list[StreamEvent] = []
        self._unsubscribe = bus.subscribe(self._on_event, self._on_state)
        self._unwatch_batches: Callable[[], None] | None = bus.on_batch_end(self._flush)
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
        if self._unwatch_batches is not None:
            self._unwatch_batches()
            self._unwatch_batches = None
        self._flush()

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
        event = StreamEvent(self.seq, tag, data)
        if self.bus.in_batch:
            self._pending.append(event)
            return
        self._deliver([event])

    def _flush(self) -> None:
        """The bus batch ended: deliver the events it brought."""
        if self._pending:
            events, self._pending = self._pending, []
            self._deliver(events)

    def _deliver(self, events: list[StreamEvent]) -> None:
        if self.replay_enabled:
            self.replay.extend(events)
        shared: dict[Hashable, tuple[bytes, int]] = {}
        for stream in list(self.streams):
            try:
                stream.offer_batch(events, shared)
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
            if stream.token is not None and hmac.compare_digest(stream.token, token):
                stream.close("token expired")

    def revoked_digest(self, digest: str) -> None:
        """Close every stream whose token has this SHA-256 *digest* (another worker's logout)."""
        for stream in list(self.streams):
            if stream.token is not None and hmac.compare_digest(token_digest(stream.token), digest):
                stream.close("token expired")

    def register(self, stream: BoundedStream) -> None:
        """Start feeding *stream*."""
        self.streams.add(stream)

    def unregister(self, stream: BoundedStream) -> None:
        """Stop feeding *stream*."""
        self.streams.discard(stream)

    def events_after(self, last_event_id: str | None) -> list[StreamEvent] | None:
        """The buffered events after the last one whose id is *last_event_id*.

        ``[]`` when it is the newest event; None when the id cannot be
        replayed: replay off, not 20 lowercase hex digits, or no such event
        in the ring (too old, or never seen). Ids are content-derived, so an
        id handed out by another process on the same master works here too.
        """
        if not self.replay_enabled or last_event_id is None or _EVENT_ID.fullmatch(last_event_id) is None:
            return None
        replay = self.replay
        for back, event in enumerate(reversed(replay)):
            if event.event_id == last_event_id:
                return list(replay)[len(replay) - back :]
        return None

    def close_all(self, reason: str) -> None:
        """End every stream (shutdown)."""
        for stream in list(self.streams):
            stream.close(reason)
