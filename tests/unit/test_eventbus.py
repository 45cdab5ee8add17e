"""The event bus's batches: the events of one read are dispatched as one batch.

A real :class:`EventBus` and its protocol, fed bytes by hand (no socket), and
a real :class:`EventHub` behind it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task

from saltapi_twisted.master.eventbus import EventBus, _BusProtocol
from saltapi_twisted.master.framing import frame_for_fire
from saltapi_twisted.streams import BoundedStream, EventHub, StreamEvent


class RecordingStream(BoundedStream):
    """Records its writes (SSE frames with ids)."""

    def __init__(self, hub: EventHub) -> None:
        super().__init__(hub, token=None, expire=None, queue_max=1000)
        self.written: list[bytes] = []

    def encode(self, event: StreamEvent) -> bytes | None:
        return event.sse(True)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def end(self, reason: str) -> None:
        pass

    def tags(self) -> list[str]:
        return [line[5:] for frame in self.written for line in frame.decode().split("\n") if line.startswith("tag: ")]


class _Transport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:  # noqa: N802 - Twisted's name
        self.lost = True


def make_bus() -> tuple[EventBus, _BusProtocol, task.Clock]:
    clock = task.Clock()
    bus = EventBus(None, clock)  # type: ignore[arg-type] # never started: no endpoint needed
    protocol = _BusProtocol(bus)
    protocol.transport = _Transport()  # type: ignore[assignment]
    protocol.connectionMade()
    return bus, protocol, clock


def frames(prefix: str, n: int, start: int = 0) -> bytes:
    return b"".join(frame_for_fire(f"{prefix}/{k}", {"n": k}) for k in range(start, start + n))


def test_one_read_is_one_batch() -> None:
    bus, protocol, _clock = make_bus()
    log: list[Any] = []
    bus.subscribe(lambda tag, data: log.append((tag, bus.in_batch)))
    bus.on_batch_end(lambda: log.append("end"))
    assert not bus.in_batch
    protocol.dataReceived(frames("t", 3))
    assert log == [("t/0", True), ("t/1", True), ("t/2", True), "end"]
    assert not bus.in_batch
    assert bus.events_received == 3


def test_a_read_without_a_whole_event_is_no_batch() -> None:
    bus, protocol, _clock = make_bus()
    ends: list[int] = []
    bus.on_batch_end(lambda: ends.append(1))
    blob = frames("t", 2)
    protocol.dataReceived(blob[:5])
    assert ends == []
    protocol.dataReceived(blob[5:])
    assert ends == [1]


def test_an_undecodable_read_is_no_batch() -> None:
    bus, protocol, _clock = make_bus()
    ends: list[int] = []
    bus.on_batch_end(lambda: ends.append(1))
    protocol.dataReceived(b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1")
    assert ends == [] and not bus.in_batch
    assert bus.bad_frames == 1


def test_a_failing_subscriber_still_ends_the_batch() -> None:
    bus, protocol, _clock = make_bus()
    ends: list[str] = []

    def broken(tag: str, data: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    def broken_end() -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.on_batch_end(broken_end)
    bus.on_batch_end(lambda: ends.append("second"))
    protocol.dataReceived(frames("t", 2))
    assert ends == ["second"]
    assert not bus.in_batch


def test_nested_batches_end_once() -> None:
    bus, _protocol, _clock = make_bus()
    ends: list[int] = []
    stop = bus.on_batch_end(lambda: ends.append(1))
    bus.begin_batch()
    bus.begin_batch()
    bus.end_batch()
    assert ends == [] and bus.in_batch
    bus.end_batch()
    assert ends == [1] and not bus.in_batch
    bus.end_batch()  # unbalanced: harmless
    assert not bus.in_batch
    stop()
    bus.begin_batch()
    bus.end_batch()
    assert ends == [1, 1]


def test_the_hub_writes_each_read_once_per_stream() -> None:
    bus, protocol, clock = make_bus()
    hub = EventHub(bus, clock, lambda: 0.0, 1000)
    streams = [RecordingStream(hub) for _ in range(3)]
    for stream in streams:
        hub.register(stream)
        stream.start()
    protocol.dataReceived(frames("t", 300))
    protocol.dataReceived(frames("t", 5, start=300))
    for stream in streams:
        assert len(stream.written) == 2
        assert stream.tags() == [f"t/{k}" for k in range(305)]
    assert [e.seq for e in hub.replay] == list(range(1, 306))
    # an event dispatched outside a read goes out at once
    bus.dispatch("t/direct", {})
    assert all(len(s.written) == 3 for s in streams)
    hub.stop()
    protocol.dataReceived(frames("t", 1, start=305))
    assert all(len(s.written) == 3 for s in streams)
