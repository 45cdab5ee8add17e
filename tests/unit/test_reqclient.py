"""The request channel against a fake master: a pyzmq ROUTER on loopback (local tier).

The fake master runs in a thread of its own with its own ZeroMQ context. It
answers ``[identity, b"", reply]`` the way the master's request server does,
can stay silent, and can send a late reply to a request that timed out.
The channel runs in the real reactor (pytest-twisted).
"""

from __future__ import annotations

import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import pytest_twisted
import zmq
from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure
from txzmq import ZmqFactory

from saltapi_twisted.master.exceptions import MasterTimeout, MasterUnavailable, ShuttingDown
from saltapi_twisted.master.reqclient import CONNECT_GRACE, RequestChannel


class FakeMaster:
    """A ROUTER socket on 127.0.0.1 serving from a thread.

    :param handler: ``load -> reply`` (``None``: stay silent).
    """

    def __init__(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        self.handler = handler
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.received: list[tuple[bytes, dict[str, Any]]] = []
        self.silent: list[bytes] = []
        self._outbox: queue.Queue[tuple[bytes, Any]] = queue.Queue()
        self._on_next: queue.Queue[tuple[bytes, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send_late(self, identity: bytes, reply: Any) -> None:
        """Send *reply* to *identity* from the master's thread."""
        self._outbox.put((identity, reply))

    def late_on_next(self, identity: bytes, reply: Any) -> None:
        """Send *reply* to *identity* when the next request arrives, before answering it."""
        self._on_next.put((identity, reply))

    def identities(self) -> set[bytes]:
        return {identity for identity, _load in self.received}

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            while not self._outbox.empty():
                identity, reply = self._outbox.get()
                self.socket.send_multipart([identity, b"", msgpack.packb(reply, use_bin_type=True)])
            if not poller.poll(10):
                continue
            batch = []
            while True:
                try:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                identity, delimiter, payload = frames
                assert delimiter == b""
                request = msgpack.unpackb(payload, raw=False)
                assert request["enc"] == "clear" and request["version"] == 3
                self.received.append((identity, request["load"]))
                batch.append((identity, request["load"]))
            while batch and not self._on_next.empty():
                identity, reply = self._on_next.get()
                self.socket.send_multipart([identity, b"", msgpack.packb(reply, use_bin_type=True)])
            random.shuffle(batch)  # answer out of order across connections
            for identity, load in batch:
                reply = self.handler(load)
                if reply is None:
                    self.silent.append(identity)
                    continue
                self.socket.send_multipart([identity, b"", msgpack.packb(reply, use_bin_type=True)])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close(0)
        self.context.term()


def echo(load: dict[str, Any]) -> Any:
    if load.get("cmd") == "silent":
        return None
    return {"n": load.get("n"), "cmd": load.get("cmd")}


@pytest.fixture
def master() -> Iterator[FakeMaster]:
    fake = FakeMaster(echo)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def factory() -> Iterator[ZmqFactory]:
    zmq_factory = ZmqFactory()
    zmq_factory.reactor = reactor
    try:
        yield zmq_factory
    finally:
        zmq_factory.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def outcome(d: defer.Deferred[Any]) -> Any:
    try:
        return await d
    except Exception:  # noqa: BLE001
        return Failure()


# ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_get_their_own_replies(master: FakeMaster, factory: ZmqFactory) -> None:
    channel = RequestChannel(factory, master.address, reactor, pool_size=4, timeout=4)
    try:
        requests = [channel.request({"cmd": "echo", "n": n}) for n in range(50)]
        assert channel.pending == 50
        replies = await defer.gatherResults(requests, consumeErrors=True)
        assert replies == [{"n": n, "cmd": "echo"} for n in range(50)]
        assert len(master.received) == 50
        assert len(master.identities()) <= 4  # never more sockets than the pool
        assert channel.pending == 0
        assert channel.requests_total == 50 and channel.errors_total == 0
        assert channel.recently_ok(reactor.seconds())
    finally:
        channel.close()


@pytest_twisted.ensureDeferred
async def test_unanswered_request_times_out_and_its_late_reply_is_never_taken(
    master: FakeMaster, factory: ZmqFactory
) -> None:
    channel = RequestChannel(factory, master.address, reactor, pool_size=1, timeout=4)
    try:
        assert await channel.request({"cmd": "echo", "n": 0}) == {"n": 0, "cmd": "echo"}
        assert channel.recently_ok(reactor.seconds())
        started = time.monotonic()
        failure = await outcome(channel.request({"cmd": "silent", "n": 1}, timeout=0.3))
        assert isinstance(failure, Failure)
        failure.trap(MasterTimeout)
        assert 0.25 <= time.monotonic() - started < 2
        assert channel.timeouts_total == 1
        assert not channel.recently_ok(reactor.seconds())
        [silent_identity] = master.silent
        # The master answers the request that timed out just before it
        # answers the next one: on a reused connection the late reply would
        # be taken for the next request's.
        master.late_on_next(silent_identity, {"late": True})
        assert await channel.request({"cmd": "echo", "n": 2}) == {"n": 2, "cmd": "echo"}
        # a late reply arriving on an idle connection is dropped as well
        master.send_late(silent_identity, {"late": True})
        await sleep(0.1)
        for n in range(3, 5):
            assert await channel.request({"cmd": "echo", "n": n}) == {"n": n, "cmd": "echo"}
        later = [identity for identity, load in master.received if load.get("n", 0) >= 2]
        assert silent_identity not in later  # the timed-out connection was discarded
        assert channel.recently_ok(reactor.seconds())
    finally:
        channel.close()


@pytest_twisted.ensureDeferred
async def test_cancelled_request_discards_its_connection(master: FakeMaster, factory: ZmqFactory) -> None:
    channel = RequestChannel(factory, master.address, reactor, pool_size=1, timeout=4)
    try:
        d = channel.request({"cmd": "silent", "n": 1})
        for _ in range(100):
            if master.silent:
                break
            await sleep(0.02)
        d.cancel()
        (await outcome(d)).trap(defer.CancelledError)
        master.late_on_next(master.silent[0], {"late": True})
        assert await channel.request({"cmd": "echo", "n": 2}) == {"n": 2, "cmd": "echo"}
        assert channel.pending == 0
    finally:
        channel.close()


@pytest_twisted.ensureDeferred
async def test_no_master_fails_fast_with_master_unavailable(factory: ZmqFactory) -> None:
    channel = RequestChannel(factory, f"tcp://127.0.0.1:{free_port()}", reactor, pool_size=2, timeout=10)
    try:
        started = time.monotonic()
        failure = await outcome(channel.request({"cmd": "ping"}))
        elapsed = time.monotonic() - started
        assert isinstance(failure, Failure)
        failure.trap(MasterUnavailable)
        assert CONNECT_GRACE <= elapsed + 0.05 and elapsed < 1.5
        assert not channel.recently_ok(reactor.seconds())
        assert channel.pending == 0
        # known down now: the next request fails after the short grace
        started = time.monotonic()
        (await outcome(channel.request({"cmd": "ping"}))).trap(MasterUnavailable)
        assert time.monotonic() - started < CONNECT_GRACE
    finally:
        channel.close()


@pytest_twisted.ensureDeferred
async def test_no_master_fails_every_waiting_request_fast(factory: ZmqFactory) -> None:
    channel = RequestChannel(factory, f"tcp://127.0.0.1:{free_port()}", reactor, pool_size=2, timeout=10)
    try:
        started = time.monotonic()
        requests = [channel.request({"cmd": "ping", "n": n}) for n in range(6)]
        failures = [await outcome(d) for d in requests]
        elapsed = time.monotonic() - started
        for failure in failures:
            assert isinstance(failure, Failure)
            failure.trap(MasterUnavailable)
        assert elapsed < 1.5, f"the last of 6 waiting requests failed after {elapsed:.2f}s"
        assert channel.pending == 0
    finally:
        channel.close()


@pytest_twisted.ensureDeferred
async def test_close_fails_pending_requests(master: FakeMaster, factory: ZmqFactory) -> None:
    channel = RequestChannel(factory, master.address, reactor, pool_size=1, timeout=10)
    inflight = channel.request({"cmd": "silent", "n": 1})
    queued = [channel.request({"cmd": "echo", "n": n}) for n in (2, 3)]
    for _ in range(100):
        if master.silent:
            break
        await sleep(0.02)
    assert master.silent
    channel.close()
    for d in [inflight, *queued]:
        failure = await outcome(d)
        assert isinstance(failure, Failure)
        failure.trap(ShuttingDown)
    assert channel.pending == 0
    (await outcome(channel.request({"cmd": "echo"}))).trap(ShuttingDown)
    master.send_late(master.silent[0], {"late": True})
    await sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_fail_inflight(master: FakeMaster, factory: ZmqFactory) -> None:
    channel = RequestChannel(factory, master.address, reactor, pool_size=2, timeout=10)
    try:
        d = channel.request({"cmd": "silent"})
        for _ in range(100):
            if master.silent:
                break
            await sleep(0.02)
        channel.fail_inflight(MasterUnavailable("the master went away"))
        (await outcome(d)).trap(MasterUnavailable)
        assert await channel.request({"cmd": "echo", "n": 9}) == {"n": 9, "cmd": "echo"}
    finally:
        channel.close()


@pytest_twisted.ensureDeferred
async def test_fail_stale_fails_only_old_requests(master: FakeMaster, factory: ZmqFactory) -> None:
    channel = RequestChannel(factory, master.address, reactor, pool_size=2, timeout=30)
    try:
        d = channel.request({"cmd": "silent"})
        for _ in range(100):
            if master.silent:
                break
            await sleep(0.02)
        assert channel.fail_stale(60.0, MasterUnavailable("gone")) == 0
        assert not d.called
        await sleep(0.1)
        assert channel.fail_stale(0.05, MasterUnavailable("gone")) == 1
        (await outcome(d)).trap(MasterUnavailable)
        assert await channel.request({"cmd": "echo", "n": 3}) == {"n": 3, "cmd": "echo"}
    finally:
        channel.close()


# ----------------------------------------------------------------------------
# recently_ok (no sockets)


@pytest.mark.parametrize(
    ("success", "failure", "now", "expected"),
    [
        (None, None, 100.0, False),
        (90.0, None, 100.0, True),
        (70.0, None, 100.0, True),  # exactly the window
        (69.9, None, 100.0, False),
        (90.0, 80.0, 100.0, True),
        (90.0, 90.0, 100.0, True),
        (90.0, 95.0, 100.0, False),  # failed since
        (None, 95.0, 100.0, False),
    ],
)
def test_recently_ok(success: float | None, failure: float | None, now: float, expected: bool) -> None:
    channel = RequestChannel(None, "tcp://127.0.0.1:1", task.Clock())
    channel.last_success, channel.last_failure = success, failure
    assert channel.recently_ok(now) is expected


def test_request_after_close_fails_at_once() -> None:
    clock = task.Clock()
    channel = RequestChannel(None, "tcp://127.0.0.1:1", clock)
    channel.close()
    results: list[Any] = []
    channel.request({"cmd": "ping"}).addErrback(results.append)
    results[0].trap(ShuttingDown)
    assert clock.getDelayedCalls() == []
