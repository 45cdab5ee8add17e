"""The master's event bus, read inside the reactor and fanned out.

One connection per process to ``<sock_dir>/master_event_pub.ipc`` (or
``127.0.0.1:tcp_master_pub_port`` with ``ipc_mode: tcp``), kept up by a
:class:`~twisted.application.internet.ClientService` that reconnects with
backoff when the master restarts. Every event is decoded once, scrubbed of
credentials where the master repeats them (failed publishes), then handed to:

* the job index: recent ``salt/job/<jid>/ret/*`` events by jid, so a waiter
  that learns its jid only from the publish reply misses no early return;
* jid waiters (exact jid), which follow a job's returns;
* stream subscribers (SSE, websockets), each with its own bounded queue on
  their side: dispatch never waits for a subscriber.

Subscribers are told about connection gaps through ``on_state``. The events
of one read from the socket are dispatched as one batch (:attr:`EventBus.in_batch`
is true while they are); :meth:`EventBus.on_batch_end` callbacks run after
its last event, so a subscriber may buffer a batch and hand it on at once.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import Any
from collections.abc import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from .framing import BusDecoder, FramingError

Event = tuple[str, dict[str, Any]]
EventCallback = Callable[[str, dict[str, Any]], None]
StateCallback = Callable[[bool], None]
BatchCallback = Callable[[], None]

_JOB_TAG = re.compile(r"^(?:salt|syndic)/job/([^/]+)/")
_JOB_RET_TAG = re.compile(r"^(?:salt|syndic)/job/([^/]+)/ret/(.+)$")
_ERROR_TAG = re.compile(r"^salt/job/(?:[^/]+/)?error$")
_SECRET_KEYS = frozenset(("password", "token"))
REDACTED = "<redacted>"

#: Largest single frame accepted from the bus.
MAX_BUS_FRAME = 128 * 1024 * 1024


def scrub(value: Any) -> Any:
    """A copy of *value* whose ``password`` and ``token`` values are redacted, at any depth."""
    if isinstance(value, dict):
        return {k: (REDACTED if k in _SECRET_KEYS else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def scrub_event(tag: str, data: dict[str, Any]) -> dict[str, Any]:
    """Scrub the events in which the master repeats a request's credentials."""
    if _ERROR_TAG.match(tag):
        return scrub(data)
    return data


class JobIndex:
    """Recent job events by jid, bounded in age and count.

    :param clock: time source.
    :param max_age: seconds an entry is kept.
    :param max_jids: most jids kept.
    :param max_events_per_jid: most return events kept for one jid.
    """

    def __init__(
        self, clock: IReactorTime, max_age: float = 120.0, max_jids: int = 20000, max_events_per_jid: int = 10000
    ) -> None:
        self._clock = clock
        self._max_age = max_age
        self._max_jids = max_jids
        self._max_events = max_events_per_jid
        self._entries: OrderedDict[str, tuple[float, list[Event]]] = OrderedDict()

    def record(self, jid: str, tag: str, data: dict[str, Any], keep: bool) -> None:
        """Note that *jid* was seen; keep the event if it is a return."""
        now = self._clock.seconds()
        entry = self._entries.get(jid)
        if entry is None:
            entry = (now, [])
            self._entries[jid] = entry
        if keep and len(entry[1]) < self._max_events:
            entry[1].append((tag, data))
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._entries:
            jid, (first_seen, _events) = next(iter(self._entries.items()))
            if len(self._entries) > self._max_jids or now - first_seen > self._max_age:
                del self._entries[jid]
            else:
                break

    def returns(self, jid: str) -> list[Event]:
        """The recorded return events of *jid*."""
        entry = self._entries.get(jid)
        return list(entry[1]) if entry else []

    def seen(self, jid: str) -> bool:
        """Whether an event named *jid* recently."""
        return jid in self._entries


class _BusProtocol(Protocol):
    _log = Logger()

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.decoder = BusDecoder(max_frame_size=MAX_BUS_FRAME)
        self._bad_seen = 0

    def connectionMade(self) -> None:  # noqa: N802 - Twisted hook
        self.bus._connected(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted hook
        try:
            events = self.decoder.feed(data)
        except FramingError as exc:
            self.bus.bad_frames += 1
            self._log.warn("dropping the event bus connection after an undecodable frame: {error}", error=str(exc))
            if self.transport is not None:
                self.transport.loseConnection()
            return
        if self.decoder.bad_frames != self._bad_seen:
            self.bus.bad_frames += self.decoder.bad_frames - self._bad_seen
            self._bad_seen = self.decoder.bad_frames
            self._log.warn("skipped {count} undecodable event frame(s)", count=self.bus.bad_frames)
        if not events:
            return
        self.bus.begin_batch()
        try:
            for tag, data_ in events:
                self.bus.dispatch(tag, data_)
        finally:
            self.bus.end_batch()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted hook
        self.bus._disconnected(self)


class EventBus:
    """The single reader of the master's event bus.

    :param endpoint: where the master publishes events.
    :param clock: time source.
    """

    _log = Logger()

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime) -> None:
        self._clock = clock
        self._endpoint = endpoint
        factory = Factory.forProtocol(lambda: _BusProtocol(self))
        self._service = ClientService(
            endpoint, factory, retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0, factor=1.6), clock=clock
        )
        self.index = JobIndex(clock)
        self._jid_waiters: dict[str, set[EventCallback]] = {}
        self._subscribers: dict[int, EventCallback] = {}
        self._state_listeners: dict[int, StateCallback] = {}
        self._batch_listeners: dict[int, BatchCallback] = {}
        self._batch_depth = 0
        self._next_id = 0
        self.protocol: _BusProtocol | None = None
        self.connected_since: float | None = None
        self.ever_connected = False
        self.events_received = 0
        self.bad_frames = 0
        self.reconnects = 0
        self._connected_waiters: list[defer.Deferred[None]] = []

    # ------------------------------------------------------------------
    # lifecycle

    def start(self) -> None:
        """Connect, and keep reconnecting until :meth:`stop`."""
        self._service.startService()

    def stop(self) -> defer.Deferred[None]:
        """Disconnect and stop reconnecting."""
        return self._service.stopService()

    @property
    def connected(self) -> bool:
        """Whether the bus is connected now."""
        return self.protocol is not None

    def when_connected(self) -> defer.Deferred[None]:
        """A Deferred that fires once the bus is connected."""
        if self.connected:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._connected_waiters.append(d)
        return d

    def _connected(self, protocol: _BusProtocol) -> None:
        self.protocol = protocol
        self.connected_since = self._clock.seconds()
        if self.ever_connected:
            self.reconnects += 1
            self._log.info("event bus reconnected")
        self.ever_connected = True
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._notify_state(True)

    def _disconnected(self, protocol: _BusProtocol) -> None:
        if self.protocol is protocol:
            self.protocol = None
            self.connected_since = None
            self._log.warn("event bus connection lost; reconnecting")
            self._notify_state(False)

    def _notify_state(self, up: bool) -> None:
        for listener in list(self._state_listeners.values()):
            try:
                listener(up)
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                self._log.failure("event bus state listener failed")

    # ------------------------------------------------------------------
    # fan-out

    def dispatch(self, tag: str, data: dict[str, Any]) -> None:
        """Deliver one event from the master to everything that waits for it."""
        self.events_received += 1
        if not isinstance(data, dict):
            data = {"data": data}
        data = scrub_event(tag, data)
        match = _JOB_TAG.match(tag)
        if match:
            jid = match.group(1)
            is_return = _JOB_RET_TAG.match(tag) is not None
            self.index.record(jid, tag, data, keep=is_return)
            for waiter in list(self._jid_waiters.get(jid, ())):
                try:
                    waiter(tag, data)
                except Exception:  # noqa: BLE001
                    self._log.failure("job waiter failed")
        elif tag.startswith("salt/run/") or tag.startswith("salt/wheel/"):
            jid = tag.split("/")[2]
            is_return = tag.endswith("/ret")
            self.index.record(jid, tag, data, keep=is_return)
            for waiter in list(self._jid_waiters.get(jid, ())):
                try:
                    waiter(tag, data)
                except Exception:  # noqa: BLE001
                    self._log.failure("runner waiter failed")
        for subscriber in list(self._subscribers.values()):
            try:
                subscriber(tag, data)
            except Exception:  # noqa: BLE001
                self._log.failure("event subscriber failed")

    @property
    def in_batch(self) -> bool:
        """Whether the events being dispatched belong to a batch (one read) not yet ended."""
        return self._batch_depth > 0

    def begin_batch(self) -> None:
        """Open a batch: the events dispatched until :meth:`end_batch` came in one read."""
        self._batch_depth += 1

    def end_batch(self) -> None:
        """Close the batch; when the outermost one ends, run the batch-end callbacks."""
        self._batch_depth = max(self._batch_depth - 1, 0)
        if self._batch_depth:
            return
        for listener in list(self._batch_listeners.values()):
            try:
                listener()
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                self._log.failure("event bus batch listener failed")

    def on_batch_end(self, callback: BatchCallback) -> Callable[[], None]:
        """Call *callback* after the last event of every batch.

        :returns: a function that stops the calls.
        """
        key = self._next_id
        self._next_id += 1
        self._batch_listeners[key] = callback

        def stop() -> None:
            self._batch_listeners.pop(key, None)

        return stop

    def watch_jid(self, jid: str, callback: EventCallback) -> Callable[[], None]:
        """Call *callback* for every event of *jid*, recorded returns first.

        :returns: a function that stops the watch.
        """
        self._jid_waiters.setdefault(jid, set()).add(callback)
        for tag, data in self.index.returns(jid):
            callback(tag, data)

        def stop() -> None:
            waiters = self._jid_waiters.get(jid)
            if waiters is not None:
                waiters.discard(callback)
                if not waiters:
                    del self._jid_waiters[jid]

        return stop

    def subscribe(self, callback: EventCallback, on_state: StateCallback | None = None) -> Callable[[], None]:
        """Call *callback* for every event; *on_state* on (dis)connection.

        :returns: a function that ends the subscription.
        """
        key = self._next_id
        self._next_id += 1
        self._subscribers[key] = callback
        if on_state is not None:
            self._state_listeners[key] = on_state

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)
            self._state_listeners.pop(key, None)

        return unsubscribe

    @property
    def subscriber_count(self) -> int:
        """Stream subscribers right now."""
        return len(self._subscribers)

    @property
    def watch_count(self) -> int:
        """Jids being watched right now."""
        return len(self._jid_waiters)

    def jid_seen(self, jid: str) -> bool:
        """Whether *jid* appeared on the bus recently."""
        return self.index.seen(jid)


def wall_clock() -> float:
    """Seconds since the epoch (tokens' ``expire`` is wall-clock time)."""
    return time.time()
