"""The master's request channel over ZeroMQ, inside the reactor.

The master binds a ROUTER socket on ``ret_port``. Each request is one frame,
``msgpack({"enc": "clear", "load": ..., "version": 3})``; on a DEALER socket
it is sent behind an empty delimiter frame and the reply comes back the same
way. Replies carry no request id, so each connection has at most one request
in flight: the pool below holds several connections, queues requests when
all are busy, gives every request a deadline and throws away a connection
whose request timed out (its late reply must never answer the next request).

Sockets are created with ``ZMQ_IMMEDIATE``: while no connection to the
master is established a send fails at once, which is how a request learns
that the master is down without waiting for its deadline.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from collections.abc import Callable

import zmq
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType, ZmqFactory

from .exceptions import MasterTimeout, MasterUnavailable, ShuttingDown
from .framing import FramingError, pack_request, unpack_reply

#: Largest reply accepted from the master (a job return can be big).
MAX_REPLY_SIZE = 256 * 1024 * 1024
#: How long a request waits for a connection to the master before a 503.
CONNECT_GRACE = 0.75
#: The same while the master is known to be unreachable (the last request
#: failed so, and none succeeded since): fail at once, nearly.
DOWN_GRACE = 0.1


class DealerConnection(ZmqConnection):
    """One DEALER socket to the master: ``[b"", payload]`` out and in."""

    socketType = zmq.DEALER
    reconnectInterval = 100
    reconnectIntervalMax = 2000

    def __init__(self, factory: ZmqFactory, address: str, on_reply: Callable[[DealerConnection, bytes], None]) -> None:
        # txZMQ reads from the socket inside its constructor: the callback
        # must exist before it runs.
        self._on_reply = on_reply
        super().__init__(factory)
        self.socket.set(zmq.IMMEDIATE, 1)
        self.socket.set(zmq.MAXMSGSIZE, MAX_REPLY_SIZE)
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, address)])

    def messageReceived(self, message: list[bytes]) -> None:  # noqa: N802 - txZMQ hook
        """Hand the payload frame to the pool."""
        self._on_reply(self, message[-1])


class _Request:
    __slots__ = ("load", "deferred", "deadline", "timer", "connection", "first_attempt", "sent")

    def __init__(self, load: dict[str, Any], deferred: defer.Deferred[Any], deadline: float) -> None:
        self.load = load
        self.deferred = deferred
        self.deadline = deadline
        self.timer: IDelayedCall | None = None
        self.connection: DealerConnection | None = None
        self.first_attempt: float | None = None
        self.sent: float | None = None


class RequestChannel:
    """A pool of DEALER connections to the master's request server.

    :param factory: the txZMQ factory (owns the ZeroMQ context).
    :param address: ``tcp://host:port`` of the master's ``ret_port``.
    :param clock: the reactor's time interface (deadlines).
    :param pool_size: connections, i.e. requests in flight at once.
    :param timeout: default deadline of a request, in seconds.
    :param max_waiting: requests queued beyond the pool before 503s.
    """

    _log = Logger()

    def __init__(
        self,
        factory: ZmqFactory,
        address: str,
        clock: IReactorTime,
        pool_size: int = 8,
        timeout: float = 30.0,
        max_waiting: int = 10000,
    ) -> None:
        self._factory = factory
        self._address = address
        self._clock = clock
        self._pool_size = pool_size
        self._timeout = timeout
        self._max_waiting = max_waiting
        self._idle: deque[DealerConnection] = deque()
        self._connections: set[DealerConnection] = set()
        self._inflight: dict[DealerConnection, _Request] = {}
        self._waiting: deque[_Request] = deque()
        self._closed = False
        self._retry: IDelayedCall | None = None
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.requests_total = 0
        self.errors_total = 0
        self.timeouts_total = 0

    # ------------------------------------------------------------------

    def recently_ok(self, now: float, window: float = 30.0) -> bool:
        """Whether a round trip succeeded within *window* seconds and none failed since."""
        if self.last_success is None or now - self.last_success > window:
            return False
        return self.last_failure is None or self.last_failure <= self.last_success

    @property
    def pending(self) -> int:
        """Requests in flight or queued."""
        return len(self._inflight) + len(self._waiting)

    def request(self, load: dict[str, Any], timeout: float | None = None) -> defer.Deferred[Any]:
        """Send *load* to the master; a Deferred of the decoded reply.

        Fails with :class:`MasterUnavailable` when no connection to the
        master exists, :class:`MasterTimeout` past the deadline. Cancelling
        the Deferred discards the connection the request was sent on.
        """
        if self._closed:
            return defer.fail(ShuttingDown("The API is shutting down"))
        if len(self._waiting) >= self._max_waiting:
            return defer.fail(MasterUnavailable("Too many requests are waiting for the master"))
        self.requests_total += 1
        deadline = self._clock.seconds() + (timeout if timeout is not None else self._timeout)
        request = _Request(load, defer.Deferred(lambda d: self._cancel(request)), deadline)
        request.timer = self._clock.callLater(max(0.0, deadline - self._clock.seconds()), self._expire, request)
        self._waiting.append(request)
        self._pump()
        return request.deferred

    def _connection(self) -> DealerConnection | None:
        if self._idle:
            return self._idle.popleft()
        if len(self._connections) < self._pool_size:
            connection = DealerConnection(self._factory, self._address, self._reply)
            self._connections.add(connection)
            return connection
        return None

    def _pump(self) -> None:
        while self._waiting and not self._closed:
            connection = self._connection()
            if connection is None:
                return
            request = self._waiting.popleft()
            try:
                frame = pack_request(request.load)
                connection.send([b"", frame])
            except zmq.ZMQError as exc:
                # No established connection to the master (ZMQ_IMMEDIATE).
                # A fresh socket needs a moment to connect: retry for a
                # short grace period, then fail fast.
                self._idle.appendleft(connection)
                now = self._clock.seconds()
                if request.first_attempt is None:
                    request.first_attempt = now
                if now - request.first_attempt >= self._connect_grace():
                    self._finish(request, failure=MasterUnavailable(_unavailable_text(exc)))
                    continue
                # The requests queued behind it wait for the same connection:
                # their grace starts now too, so they fail together rather
                # than one grace period after another.
                for waiting in self._waiting:
                    if waiting.first_attempt is None:
                        waiting.first_attempt = now
                self._waiting.appendleft(request)
                if self._retry is None or not self._retry.active():
                    self._retry = self._clock.callLater(0.05, self._retry_pump)
                return
            except Exception as exc:  # noqa: BLE001 - an unpackable load is the caller's bug
                self._idle.appendleft(connection)
                self._finish(request, failure=exc)
                continue
            request.connection = connection
            request.sent = self._clock.seconds()
            self._inflight[connection] = request

    def _connect_grace(self) -> float:
        known_down = self.last_failure is not None and (
            self.last_success is None or self.last_failure > self.last_success
        )
        return DOWN_GRACE if known_down else CONNECT_GRACE

    def _retry_pump(self) -> None:
        self._retry = None
        self._pump()

    def warm_up(self) -> None:
        """Open every connection of the pool now, so they are connected when needed."""
        while len(self._connections) < self._pool_size:
            connection = DealerConnection(self._factory, self._address, self._reply)
            self._connections.add(connection)
            self._idle.append(connection)

    def _reply(self, connection: DealerConnection, payload: bytes) -> None:
        request = self._inflight.pop(connection, None)
        if request is None:
            # A reply on a connection with nothing in flight cannot be
            # matched to anything: drop the connection.
            self._discard(connection)
            self._pump()
            return
        self._idle.append(connection)
        try:
            reply = unpack_reply(payload)
        except FramingError as exc:
            self._finish(request, failure=exc)
        else:
            self.last_success = self._clock.seconds()
            self._finish(request, result=reply)
        self._pump()

    def _expire(self, request: _Request) -> None:
        request.timer = None
        self.timeouts_total += 1
        self.last_failure = self._clock.seconds()
        self._detach(request)
        self._finish(request, failure=MasterTimeout(f"The master did not answer {request.load.get('cmd')!r} in time"))
        self._pump()

    def _cancel(self, request: _Request) -> None:
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None
        self._detach(request)
        self._pump()

    def _detach(self, request: _Request) -> None:
        """Forget *request*; a connection it was sent on is discarded."""
        if request.connection is not None:
            connection = request.connection
            request.connection = None
            if self._inflight.get(connection) is request:
                del self._inflight[connection]
            self._discard(connection)
        else:
            try:
                self._waiting.remove(request)
            except ValueError:
                pass

    def _discard(self, connection: DealerConnection) -> None:
        self._connections.discard(connection)
        try:
            self._idle.remove(connection)
        except ValueError:
            pass
        if connection.socket is not None:
            connection.shutdown()

    def _finish(self, request: _Request, result: Any = None, failure: BaseException | None = None) -> None:
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None
        request.connection = None
        if request.deferred.called:
            return
        if failure is not None:
            self.errors_total += 1
            if isinstance(failure, MasterUnavailable):
                self.last_failure = self._clock.seconds()
            request.deferred.errback(failure)
        else:
            request.deferred.callback(result)

    def fail_inflight(self, reason: BaseException) -> None:
        """Fail every request in flight (the master went away) and reset.

        Their connections are discarded: replies from a restarted master
        never arrive on them anyway.
        """
        for connection, request in list(self._inflight.items()):
            del self._inflight[connection]
            self._discard(connection)
            self._finish(request, failure=reason)

    def fail_stale(self, age: float, reason: BaseException) -> int:
        """Fail the requests in flight for *age* seconds or more; how many.

        While the master's event bus is down the master is stopping or
        restarting: a request it took and will never answer is failed here
        instead of at its deadline.
        """
        now = self._clock.seconds()
        stale = [
            (connection, request)
            for connection, request in self._inflight.items()
            if request.sent is not None and now - request.sent >= age
        ]
        for connection, request in stale:
            del self._inflight[connection]
            self._discard(connection)
            self._finish(request, failure=reason)
        if stale:
            self._pump()
        return len(stale)

    def close(self) -> None:
        """Fail everything pending and close every socket."""
        self._closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        reason = ShuttingDown("The API is shutting down")
        while self._waiting:
            self._finish(self._waiting.popleft(), failure=reason)
        self.fail_inflight(reason)
        for connection in list(self._connections):
            self._discard(connection)


def _unavailable_text(exc: zmq.ZMQError) -> str:
    if exc.errno == zmq.EAGAIN:
        return "The Salt master is not reachable (no connection to its request server)"
    return f"The Salt master is not reachable: {exc}"
