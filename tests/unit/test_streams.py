"""The event hub and its bounded streams (spec §5.10), on a fake clock and bus."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from saltapi_twisted.streams import (
    MAX_QUEUED_BYTES,
    BoundedStream,
    EventHub,
    StreamEvent,
    tag_matcher,
)

EPOCH = 1_700_000_000.0
TOKEN_A = "a" * 64
TOKEN_B = "b" * 64


class FakeBus:
    """``subscribe(callback, on_state)``, ``connected`` and batches (``in_batch``, ``on_batch_end``)."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.subscribers: list[tuple[Callable[..., None], Callable[[bool], None] | None]] = []
        self.batch_listeners: list[Callable[[], None]] = []
        self.in_batch = False

    def subscribe(
        self, callback: Callable[..., None], on_state: Callable[[bool], None] | None = None
    ) -> Callable[[], None]:
        entry = (callback, on_state)
        self.subscribers.append(entry)
        return lambda: self.subscribers.remove(entry)

    def on_batch_end(self, callback: Callable[[], None]) -> Callable[[], None]:
        self.batch_listeners.append(callback)
        return lambda: self.batch_listeners.remove(callback)

    def fire(self, tag: str, data: dict[str, Any] | None = None) -> None:
        for callback, _state in list(self.subscribers):
            callback(tag, {} if data is None else data)

    def fire_batch(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """The events of one read, as ``_BusProtocol.dataReceived`` dispatches them."""
        self.in_batch = True
        try:
            for tag, data in events:
                self.fire(tag, data)
        finally:
            self.in_batch = False
            for listener in list(self.batch_listeners):
                listener()

    def state(self, up: bool) -> None:
        self.connected = up
        for _callback, on_state in list(self.subscribers):
            if on_state is not None:
                on_state(up)


class RecordingStream(BoundedStream):
    """Writes SSE frames to a list, as :class:`SSEStream` does to a request."""

    def __init__(self, hub: EventHub, with_id: bool = True, key: Any = None, **kwargs: Any) -> None:
        self.key = key
        kwargs.setdefault("token", TOKEN_A)
        kwargs.setdefault("expire", None)
        kwargs.setdefault("queue_max", 10)
        super().__init__(hub, **kwargs)
        self.with_id = with_id
        self.written: list[bytes] = []
        self.ended: list[str] = []
        self.pings = 0
        self.gaps = 0

    def encode(self, event: StreamEvent) -> bytes | None:
        return event.sse(self.with_id)

    def batch_key(self) -> Any:
        return None if self.key is None else (self.key, self.with_id)

    def write(self, data: bytes) -> None:
        self.last_write = self.hub.clock.seconds()
        self.written.append(data)

    def end(self, reason: str) -> None:
        self.ended.append(reason)

    def ping(self) -> None:
        self.pings += 1

    def gap(self) -> None:
        self.gaps += 1

    def tags(self) -> list[str]:
        return [event["tag"] for frame in self.written for event in parse_sse(frame)]

    def ids(self) -> list[str]:
        return [event["id"] for frame in self.written for event in parse_sse(frame)]


def make_hub(replay_size: int = 1000, connected: bool = True) -> tuple[EventHub, FakeBus, task.Clock]:
    clock = task.Clock()
    bus = FakeBus(connected)
    hub = EventHub(bus, clock, lambda: EPOCH + clock.seconds(), replay_size)  # type: ignore[arg-type]
    return hub, bus, clock


def open_stream(hub: EventHub, **kwargs: Any) -> RecordingStream:
    stream = RecordingStream(hub, **kwargs)
    hub.register(stream)
    stream.start()
    return stream


# ----------------------------------------------------------------------------
# an SSE parser after the WHATWG algorithm: lines end at CRLF, CR or LF only


def parse_sse(payload: bytes) -> list[dict[str, str]]:
    """The events of *payload*: each a dict of its fields (``data`` joined by LF)."""
    text = payload.decode("utf-8")
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if data or fields:
                event = dict(fields)
                if data:
                    event["data"] = "\n".join(data)
                events.append(event)
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


# ----------------------------------------------------------------------------
# content-derived ids and replay


def sha_id(event: StreamEvent) -> str:
    return hashlib.sha256(event.json.encode("utf-8")).hexdigest()[:20]


def fire_n(bus: FakeBus, n: int, prefix: str = "t") -> None:
    for k in range(n):
        bus.fire(f"{prefix}/{k}", {"n": k, "_stamp": f"2026-01-01T00:00:00.{k:06d}"})


def test_ids_are_derived_from_the_content() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    fire_n(bus, 3)
    assert hub.seq == 3
    events = [parse_sse(frame)[0] for frame in stream.written]
    assert [e["id"] for e in events] == [sha_id(e) for e in hub.replay]
    assert all(re.fullmatch(r"[0-9a-f]{20}", e["id"]) for e in events)
    assert len({e["id"] for e in events}) == 3
    assert [json.loads(e["data"]) for e in events] == [
        {"data": {"n": n, "_stamp": f"2026-01-01T00:00:00.{n:06d}"}, "tag": f"t/{n}"} for n in range(3)
    ]


def test_id_is_the_sha256_of_the_data_line() -> None:
    event = StreamEvent(1, "salt/job/1/new", {"_stamp": "2026-01-01T00:00:00.000001", "x": "\u00e9"})
    [parsed] = parse_sse(event.sse(True))
    assert parsed["id"] == hashlib.sha256(parsed["data"].encode("utf-8")).hexdigest()[:20]
    assert event.event_id is event.event_id  # computed once
    # neither the number nor the process matters; the content does
    assert StreamEvent(99, event.tag, dict(event.data)).event_id == event.event_id
    assert StreamEvent(1, event.tag, {**event.data, "_stamp": "2026-01-01T00:00:00.000002"}).event_id != event.event_id
    assert StreamEvent(1, "salt/job/2/new", event.data).event_id != event.event_id


def test_two_workers_give_the_same_ids_and_replay_each_others() -> None:
    """Two hubs (two worker processes) fed the same events in the same order."""
    hub_a, bus_a, _ = make_hub()
    hub_b, bus_b, _ = make_hub()
    stream_a = open_stream(hub_a)
    stream_b = open_stream(hub_b)
    events = [(f"w/{k}", {"k": k, "_stamp": f"2026-01-01T00:00:{k:02d}.123456"}) for k in range(12)]
    bus_a.fire_batch(events[:5])
    bus_a.fire_batch(events[5:])
    for tag, data in events:  # the other worker reads the bus in other chunks
        bus_b.fire(tag, data)
    assert stream_a.ids() == stream_b.ids()
    assert stream_a.written != [] and len(stream_a.ids()) == 12
    last_seen_on_a = stream_a.ids()[6]
    replayed = hub_b.events_after(last_seen_on_a)
    assert replayed is not None
    assert [e.tag for e in replayed] == [f"w/{k}" for k in range(7, 12)]
    assert [e.event_id for e in replayed] == stream_a.ids()[7:]
    # and the other way round
    assert [e.tag for e in hub_a.events_after(stream_b.ids()[0]) or []] == [f"w/{k}" for k in range(1, 12)]
    assert hub_b.events_after(stream_a.ids()[-1]) == []


def test_replay_ring_is_bounded() -> None:
    hub, bus, _clock = make_hub(replay_size=3)
    fire_n(bus, 5)
    assert [e.seq for e in hub.replay] == [3, 4, 5]


def test_events_after_valid_id() -> None:
    hub, bus, _clock = make_hub()
    fire_n(bus, 5)
    ids = [e.event_id for e in hub.replay]
    assert [e.seq for e in hub.events_after(ids[1]) or []] == [3, 4, 5]
    assert [e.seq for e in hub.events_after(ids[0]) or []] == [2, 3, 4, 5]


def test_events_after_the_newest_is_empty() -> None:
    hub, bus, _clock = make_hub()
    fire_n(bus, 3)
    assert hub.events_after(hub.replay[-1].event_id) == []


def test_events_after_the_last_event_with_that_id() -> None:
    """Two events with the same content have the same id: replay from the newest of them."""
    hub, bus, _clock = make_hub()
    bus.fire("dup", {"_stamp": "s"})
    bus.fire("t/1", {"_stamp": "s"})
    bus.fire("dup", {"_stamp": "s"})
    bus.fire("t/2", {"_stamp": "s"})
    dup = hub.replay[0].event_id
    assert hub.replay[2].event_id == dup
    assert [e.tag for e in hub.events_after(dup) or []] == ["t/2"]


def test_events_after_on_the_ring_edge() -> None:
    hub, bus, _clock = make_hub(replay_size=3)
    fire_n(bus, 2)
    gone = [e.event_id for e in hub.replay]
    fire_n(bus, 3, prefix="u")
    # only u/0..u/2 are kept: an id that left the ring cannot be replayed
    assert hub.events_after(gone[1]) is None
    assert hub.events_after(gone[0]) is None
    assert [e.tag for e in hub.events_after(hub.replay[0].event_id) or []] == ["u/1", "u/2"]


def test_replay_through_start() -> None:
    hub, bus, _clock = make_hub()
    fire_n(bus, 4)
    stream = RecordingStream(hub)
    hub.register(stream)
    stream.start(hub.events_after(hub.replay[1].event_id))
    assert len(stream.written) == 1  # the replay is one write
    bus.fire("t/live")
    assert stream.tags() == ["t/2", "t/3", "t/live"]


@pytest.mark.parametrize(
    "last_id",
    [
        None,
        "",
        "{id}\n",
        " {id}",
        "{id}0",  # 21 characters
        "{id_short}",  # 19
        "{ID}",  # uppercase hex is not ours
        "0123456789abcdef0123",  # well-formed, never seen
        "0123456789abcdef-1",  # the old <boot>-<seq> format
        "g123456789abcdef0123",
        "0123456789abcdef012\u0661",
        "\uff10123456789abcdef012",
        "x" * 65,
        "a" * 10240,
        "../../x",
    ],
)
def test_events_after_refuses(last_id: str | None) -> None:
    hub, bus, _clock = make_hub()
    fire_n(bus, 5)
    newest = hub.replay[-1].event_id
    assert hub.events_after(newest) == []
    value = None
    if last_id is not None:
        value = last_id.replace("{id}", newest).replace("{id_short}", newest[:19]).replace("{ID}", newest.upper())
    if value == newest.upper() and value == newest:  # all digits: put an uppercase letter in
        value = "A" + newest[1:]
    assert hub.events_after(value) is None


def test_replay_disabled() -> None:
    hub, bus, _clock = make_hub(replay_size=0)
    stream = open_stream(hub, with_id=False)
    bus.fire("t/1")
    event_id = StreamEvent(1, "t/1", {}).event_id
    assert hub.events_after(event_id) is None
    assert "id" not in parse_sse(stream.written[0])[0]


# ----------------------------------------------------------------------------
# batches: the events of one bus read, one write per stream


def batch(prefix: str, n: int, start: int = 0) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{prefix}/{k}", {"n": k}) for k in range(start, start + n)]


def test_a_batch_is_one_write_per_stream() -> None:
    hub, bus, _clock = make_hub()
    first, second = open_stream(hub), open_stream(hub, token=TOKEN_B)
    bus.fire_batch(batch("t", 300))
    assert len(first.written) == 1 and len(second.written) == 1
    assert first.written[0] == second.written[0]
    assert first.tags() == [f"t/{k}" for k in range(300)]
    assert first.written[0] == b"".join(e.sse(True) for e in hub.replay)
    bus.fire_batch(batch("t", 2, start=300))
    assert len(first.written) == 2
    assert first.tags() == [f"t/{k}" for k in range(302)]


def test_events_wait_for_the_end_of_their_batch() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    seen: list[int] = []

    def subscriber(tag: str, data: dict[str, Any]) -> None:
        seen.append(len(stream.written))

    bus.subscribe(subscriber)
    bus.fire_batch(batch("t", 3))
    assert seen == [0, 0, 0]  # nothing written while the batch was open
    assert stream.tags() == ["t/0", "t/1", "t/2"]
    assert [e.tag for e in hub.replay] == ["t/0", "t/1", "t/2"]


def test_an_event_outside_a_batch_is_delivered_at_once() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    bus.fire("t/0")
    assert stream.tags() == ["t/0"]
    bus.fire_batch([])
    assert len(stream.written) == 1


def test_a_batch_is_filtered_per_stream() -> None:
    hub, bus, _clock = make_hub()
    jobs = open_stream(hub, matcher=tag_matcher(["salt/job/"]))
    nothing = open_stream(hub, matcher=tag_matcher(["nope/"]))
    everything = open_stream(hub)
    bus.fire_batch([("salt/auth", {}), ("salt/job/1/new", {}), ("salt/key", {}), ("salt/job/1/ret/m", {})])
    assert jobs.tags() == ["salt/job/1/new", "salt/job/1/ret/m"] and len(jobs.written) == 1
    assert nothing.written == []
    assert len(everything.tags()) == 4 and len(everything.written) == 1


def test_a_batch_of_one_matching_event_is_written_as_it_is() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub, matcher=tag_matcher(["b"]))
    bus.fire_batch([("a", {}), ("b", {}), ("c", {})])
    assert stream.written == [hub.replay[1].sse(True)]
    assert stream.written[0] is hub.replay[1].sse(True)


def test_queued_batches_count_events_against_queue_max() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub, queue_max=10)
    stream.pauseProducing()
    bus.fire_batch(batch("t", 4))
    bus.fire_batch(batch("t", 6, start=4))
    assert not stream.closed  # 10 events queued in 2 writes: at the cap, not past it
    assert stream._queued_events == 10
    stream.resumeProducing()
    assert stream.tags() == [f"t/{k}" for k in range(10)] and len(stream.written) == 2
    assert stream._queued_events == 0 and stream._queued_bytes == 0
    stream.pauseProducing()
    bus.fire_batch(batch("u", 10))
    assert not stream.closed
    bus.fire_batch(batch("v", 1))
    assert stream.closed and stream.ended == ["overflow"]
    assert hub.dropped == 1


def test_one_batch_past_queue_max_overflows_a_paused_stream_only() -> None:
    hub, bus, _clock = make_hub()
    paused = open_stream(hub, queue_max=5)
    reading = open_stream(hub, queue_max=5, token=TOKEN_B)
    paused.pauseProducing()
    bus.fire_batch(batch("t", 6))
    assert paused.closed and paused.ended == ["overflow"]
    assert not reading.closed and reading.tags() == [f"t/{k}" for k in range(6)]


def test_a_batch_queued_behind_others_stays_in_order() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub, queue_max=100)
    stream.pauseProducing()
    bus.fire_batch(batch("t", 3))
    stream.paused = False  # resumed, but the queue is not drained yet
    bus.fire_batch(batch("t", 2, start=3))
    stream.resumeProducing()
    assert stream.tags() == [f"t/{k}" for k in range(5)]


def test_a_failing_stream_does_not_stop_a_batch_for_the_others() -> None:
    hub, bus, _clock = make_hub()

    class Broken(RecordingStream):
        def write(self, data: bytes) -> None:
            raise RuntimeError("client gone")

    before = open_stream(hub)
    broken = Broken(hub)
    hub.register(broken)
    broken.start()
    after = open_stream(hub)
    bus.fire_batch(batch("t", 3))
    assert broken.closed and broken not in hub.streams
    assert before.tags() == after.tags() == ["t/0", "t/1", "t/2"]
    bus.fire_batch(batch("t", 1, start=3))
    assert after.tags()[-1] == "t/3"


def test_keepalive_clock_is_reset_by_a_batch() -> None:
    hub, bus, clock = make_hub()
    hub.start()
    stream = open_stream(hub)
    stream.keepalive = 2.0
    clock.advance(1.5)
    bus.fire_batch(batch("t", 5))
    assert stream.last_write == 1.5
    clock.advance(1.5)
    assert stream.pings == 0
    clock.advance(0.5)
    assert stream.pings == 1
    hub.stop()


def test_unfiltered_streams_of_one_key_share_one_joined_write() -> None:
    hub, bus, _clock = make_hub()
    a = open_stream(hub, key="sse", queue_max=100)
    b = open_stream(hub, key="sse", queue_max=100)
    no_id = open_stream(hub, key="sse", with_id=False, queue_max=100)
    filtered = open_stream(hub, key="sse", matcher=tag_matcher(["t/1"]), queue_max=100)
    own = open_stream(hub, queue_max=100)
    b.pauseProducing()
    bus.fire_batch(batch("t", 3))
    assert a.written[0] is b._queue[0][0]  # the same bytes object, queued
    assert b._queued_events == 3
    b.resumeProducing()
    assert a.written[0] is b.written[0]
    assert own.written[0] == a.written[0] and own.written[0] is not a.written[0]
    assert no_id.tags() == a.tags() == ["t/0", "t/1", "t/2"]
    assert "id" not in parse_sse(no_id.written[0])[0]
    assert filtered.tags() == ["t/1"]


def test_a_shared_write_still_overflows_each_stream_on_its_own() -> None:
    hub, bus, _clock = make_hub()
    small = open_stream(hub, key="sse", queue_max=2)
    large = open_stream(hub, key="sse", queue_max=5)
    small.pauseProducing()
    large.pauseProducing()
    bus.fire_batch(batch("t", 3))
    assert small.closed and small.ended == ["overflow"]
    assert not large.closed
    large.resumeProducing()
    assert large.tags() == ["t/0", "t/1", "t/2"]


def test_hub_stop_unwatches_batches() -> None:
    hub, bus, _clock = make_hub()
    assert len(bus.batch_listeners) == 1
    hub.stop()
    assert bus.batch_listeners == [] and bus.subscribers == []


# ----------------------------------------------------------------------------
# unsafe tags


@pytest.mark.parametrize("tag", ["bad\rtag", "bad\ntag", "bad\x00tag", "\r\n", "a/b\n"])
def test_unsafe_tags_are_dropped_and_counted(tag: str) -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    bus.fire(tag, {"x": 1})
    bus.fire("good/tag", {"x": 2})
    assert hub.unsafe_tags == 1
    assert stream.tags() == ["good/tag"]
    assert hub.seq == 1
    assert [e.tag for e in hub.replay] == ["good/tag"]


# ----------------------------------------------------------------------------
# flow control


def test_writes_while_not_paused() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    bus.fire("t/1")
    assert stream.tags() == ["t/1"]


def test_not_started_stream_gets_nothing() -> None:
    hub, bus, _clock = make_hub()
    stream = RecordingStream(hub)
    hub.register(stream)
    bus.fire("t/1")
    assert stream.written == []


def test_queues_while_paused_and_flushes_in_order() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    bus.fire("t/0")
    stream.pauseProducing()
    for n in range(1, 6):
        bus.fire(f"t/{n}")
    assert stream.tags() == ["t/0"]
    stream.resumeProducing()
    assert stream.tags() == [f"t/{n}" for n in range(6)]
    bus.fire("t/6")
    assert stream.tags()[-1] == "t/6"
    assert not stream.closed


def test_pause_during_flush_keeps_the_rest_queued() -> None:
    hub, bus, _clock = make_hub()

    class PausingStream(RecordingStream):
        def write(self, data: bytes) -> None:
            super().write(data)
            if len(self.written) == 2:
                self.pauseProducing()

    stream = PausingStream(hub)
    hub.register(stream)
    stream.start()
    stream.pauseProducing()
    for n in range(4):
        bus.fire(f"t/{n}")
    stream.resumeProducing()
    assert stream.tags() == ["t/0", "t/1"]
    bus.fire("t/4")  # still queued behind the others, even if not paused
    stream.paused = False
    stream.resumeProducing()
    assert stream.tags() == [f"t/{n}" for n in range(5)]


def test_overflow_past_queue_max() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub, queue_max=3)
    other = open_stream(hub, token=TOKEN_B)
    stream.pauseProducing()
    for n in range(3):
        bus.fire(f"t/{n}")
    assert not stream.closed
    bus.fire("t/3")
    assert stream.closed and stream.ended == ["overflow"]
    assert hub.dropped == 1
    assert stream not in hub.streams
    assert other.tags() == [f"t/{n}" for n in range(4)]  # the others are unaffected
    stream.resumeProducing()
    assert stream.written == []
    bus.fire("t/4")
    assert stream.written == [] and stream.ended == ["overflow"]


def test_overflow_past_eight_mebibytes() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub, queue_max=1_000_000)
    stream.pauseProducing()
    blob = "x" * (1024 * 1024)
    for n in range(7):
        bus.fire(f"t/{n}", {"blob": blob})
    assert not stream.closed
    assert sum(len(stream.encode(e)) for e in hub.replay) < MAX_QUEUED_BYTES
    bus.fire("t/7", {"blob": blob})
    bus.fire("t/8", {"blob": blob})
    assert stream.closed and stream.ended == ["overflow"]
    assert hub.dropped == 1


def test_tag_filter_applies_to_live_and_replayed_events() -> None:
    hub, bus, _clock = make_hub()
    bus.fire("salt/job/0/new", {})
    bus.fire("salt/auth", {})
    bus.fire("salt/job/1/new", {})
    stream = RecordingStream(hub, matcher=tag_matcher(["salt/job/"]))
    hub.register(stream)
    stream.start(hub.events_after(hub.replay[0].event_id))
    bus.fire("salt/key", {})
    bus.fire("salt/job/2/ret/m", {})
    assert stream.tags() == ["salt/job/1/new", "salt/job/2/ret/m"]


def test_a_failing_stream_is_released_and_the_others_go_on() -> None:
    hub, bus, _clock = make_hub()

    class Broken(RecordingStream):
        def write(self, data: bytes) -> None:
            raise RuntimeError("client gone")

    broken = Broken(hub)
    hub.register(broken)
    broken.start()
    good = open_stream(hub)
    bus.fire("t/1")
    assert broken.closed and broken not in hub.streams
    assert good.tags() == ["t/1"]


# ----------------------------------------------------------------------------
# expiry, revocation, keep-alive, reconnect, release


def test_expiry_closes_within_a_tick() -> None:
    hub, bus, clock = make_hub()
    hub.start()
    stream = open_stream(hub, expire=EPOCH + 10.2)
    forever = open_stream(hub, expire=None, token=TOKEN_B)
    clock.advance(10.0)
    assert not stream.closed
    clock.advance(0.5)
    assert stream.closed and stream.ended == ["token expired"]
    assert stream not in hub.streams
    assert not forever.closed
    hub.stop()
    assert clock.getDelayedCalls() == []
    assert bus.subscribers == []


def test_expired_at_open_closes_on_the_first_tick() -> None:
    hub, _bus, clock = make_hub()
    hub.start()
    stream = open_stream(hub, expire=EPOCH - 1)
    clock.advance(0.5)
    assert stream.ended == ["token expired"]
    hub.stop()


def test_revoked_closes_only_the_streams_of_that_token() -> None:
    hub, bus, _clock = make_hub()
    a1 = open_stream(hub, token=TOKEN_A)
    a2 = open_stream(hub, token=TOKEN_A)
    b = open_stream(hub, token=TOKEN_B)
    anonymous = open_stream(hub, token=None)
    hub.revoked(TOKEN_A)
    assert a1.ended == ["token expired"] and a2.ended == ["token expired"]
    assert not b.closed and not anonymous.closed
    assert hub.streams == {b, anonymous}
    bus.fire("t/1")
    assert a1.written == [] and b.tags() == ["t/1"]


def test_revoked_digest_closes_only_the_streams_of_that_token() -> None:
    from saltapi_twisted.auth import token_digest

    hub, _bus, _clock = make_hub()
    a = open_stream(hub, token=TOKEN_A)
    b = open_stream(hub, token=TOKEN_B)
    anonymous = open_stream(hub, token=None)
    hub.revoked_digest(token_digest(TOKEN_A))
    assert a.ended == ["token expired"]
    assert hub.streams == {b, anonymous}


def test_keepalive_after_idle() -> None:
    hub, bus, clock = make_hub()
    hub.start()
    stream = open_stream(hub)
    stream.keepalive = 2.0
    clock.advance(1.5)
    assert stream.pings == 0
    clock.advance(0.5)
    assert stream.pings == 1
    clock.advance(1.0)
    bus.fire("t/1")  # writing at 3.0 resets the idle timer
    clock.advance(1.5)
    assert stream.pings == 1
    clock.advance(0.5)
    assert stream.pings == 2
    hub.stop()


def test_no_keepalive_while_paused_or_disabled() -> None:
    hub, _bus, clock = make_hub()
    hub.start()
    paused = open_stream(hub)
    paused.keepalive = 1.0
    paused.pauseProducing()
    disabled = open_stream(hub)
    clock.advance(5)
    assert paused.pings == 0 and disabled.pings == 0
    paused.resumeProducing()
    clock.advance(0.5)
    assert paused.pings == 1
    hub.stop()


def test_gap_on_bus_reconnect() -> None:
    hub, bus, _clock = make_hub(connected=True)
    stream = open_stream(hub)
    bus.state(True)  # no change: no gap
    assert stream.gaps == 0
    bus.state(False)
    assert stream.gaps == 0
    bus.state(True)
    assert stream.gaps == 1
    assert not stream.closed


def test_stream_opened_while_the_bus_is_down_gets_a_gap_when_it_comes_up() -> None:
    hub, bus, _clock = make_hub(connected=False)
    stream = open_stream(hub)
    bus.state(True)
    assert stream.gaps == 1
    bus.state(False)
    bus.state(True)
    assert stream.gaps == 2


def test_release_unregisters_without_writing() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    stream.pauseProducing()
    bus.fire("t/1")
    stream.release()
    assert stream.closed and stream not in hub.streams
    assert stream.ended == [] and stream.written == []
    stream.resumeProducing()
    stream.close("later")
    assert stream.ended == [] and stream.written == []


def test_stop_producing_releases() -> None:
    hub, _bus, _clock = make_hub()
    stream = open_stream(hub)
    stream.stopProducing()
    assert stream.closed and stream not in hub.streams and stream.ended == []


def test_close_is_idempotent_and_survives_a_failing_end() -> None:
    hub, _bus, _clock = make_hub()

    class Failing(RecordingStream):
        def end(self, reason: str) -> None:
            super().end(reason)
            raise RuntimeError("transport gone")

    stream = Failing(hub)
    hub.register(stream)
    stream.close("shutdown")
    stream.close("again")
    assert stream.ended == ["shutdown"] and stream not in hub.streams


def test_close_all() -> None:
    hub, _bus, _clock = make_hub()
    streams = [open_stream(hub) for _ in range(3)]
    hub.close_all("shutdown")
    assert all(s.ended == ["shutdown"] for s in streams)
    assert hub.streams == set()


# ----------------------------------------------------------------------------
# SSE framing

_NO_SURROGATES = st.characters(blacklist_categories=("Cs",))
_TAGS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=40
)
_TEXT = st.text(alphabet=_NO_SURROGATES, max_size=20) | st.sampled_from(
    ["a\rb", "a\nb", "a\r\nb", "\u2028", "\u2029", "\x85", "line\u2028sep", "data: x\n\nid: 9", "\x00"]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(tag=_TAGS, data=st.dictionaries(_TEXT, _JSON, max_size=4), with_id=st.booleans())
def test_sse_frame_is_exactly_one_event(tag: str, data: dict[str, Any], with_id: bool) -> None:
    event = StreamEvent(7, tag, data)
    frame = event.sse(with_id)
    events = parse_sse(frame)
    assert len(events) == 1
    [parsed] = events
    assert json.loads(parsed["data"]) == {"data": data, "tag": tag}
    expected_fields = {"tag", "data", "id"} if with_id else {"tag", "data"}
    assert set(parsed) == expected_fields
    if with_id:
        assert parsed["id"] == hashlib.sha256(parsed["data"].encode("utf-8")).hexdigest()[:20]
    assert frame.endswith(b"\n\n")
    assert b"\r" not in frame
    # the data line is a single line of JSON
    data_lines = [line for line in frame.split(b"\n") if line.startswith(b"data:")]
    assert len(data_lines) == 1


def test_sse_fields_and_ascii_kept() -> None:
    event = StreamEvent(3, "salt/job/1/ret/m\u00e9", {"msg": "h\u00e9\u2028llo\nx"})
    frame = event.sse(True)
    assert frame.startswith("tag: salt/job/1/ret/m\u00e9\ndata: {".encode())
    assert "h\u00e9".encode() in frame  # non-ASCII kept, not \u-escaped
    id_line = f"id: {event.event_id}\n".encode()
    assert frame.endswith(b"\n" + id_line + b"\n")
    assert event.sse(False) == frame.replace(id_line, b"")


def test_json_and_frames_are_computed_once() -> None:
    event = StreamEvent(1, "t", {"a": [1, 2]})
    assert event.json is event.json
    assert event.sse(True) is event.sse(True)
    assert event.sse(False) is event.sse(False)
    assert event.sse(True) is not event.sse(False)


def test_json_is_shared_by_every_stream() -> None:
    hub, bus, _clock = make_hub()
    first, second = open_stream(hub), open_stream(hub)
    bus.fire("t/1", {"x": 1})
    assert first.written[0] is second.written[0]


def test_bytes_in_event_data_become_text() -> None:
    event = StreamEvent(1, "t", {"raw": b"ok\xff"})
    assert json.loads(parse_sse(event.sse(False))[0]["data"]) == {"data": {"raw": "ok\ufffd"}, "tag": "t"}


# ----------------------------------------------------------------------------
# tag filters


@pytest.mark.parametrize(
    ("patterns", "tag", "expected"),
    [
        (["salt/job/"], "salt/job/1/new", True),
        (["salt/job/"], "salt/jobs", False),
        (["salt/auth"], "salt/authority", True),  # a prefix is a prefix
        (["salt/auth"], "xsalt/auth", False),
        (["salt/job/*/ret/*"], "salt/job/1/ret/m1", True),
        (["salt/job/*/ret/*"], "salt/job/1/new", False),
        (["salt/job/*/ret/*"], "xsalt/job/1/ret/m1", False),  # globs match the whole tag
        (["salt/*/new"], "salt/job/1/new", True),  # * crosses /
        (["salt/*/new"], "salt/job/1/new/more", False),
        (["salt/JOB/*"], "salt/job/1", False),  # case-sensitive
        (["salt/job/?/new"], "salt/job/1/new", True),
        (["salt/job/?/new"], "salt/job/12/new", False),
        (["salt/[jk]*"], "salt/key", True),
        (["salt/[jk]*"], "salt/auth", False),
        (["salt/auth", "salt/key"], "salt/key/x", True),
        (["salt/auth", "salt/key"], "salt/job", False),
        (["salt.job"], "saltxjob", False),  # no regex meaning
        (["salt/job/(1)"], "salt/job/(1)/new", True),
    ],
)
def test_tag_matcher(patterns: list[str], tag: str, expected: bool) -> None:
    matcher = tag_matcher(patterns)
    assert matcher is not None
    assert matcher(tag) is expected


def test_no_patterns_no_matcher() -> None:
    assert tag_matcher([]) is None
