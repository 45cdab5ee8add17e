"""The event hub and its bounded streams (spec §5.10), on a fake clock and bus."""

from __future__ import annotations

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
    """``subscribe(callback, on_state)`` and ``connected``."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.subscribers: list[tuple[Callable[..., None], Callable[[bool], None] | None]] = []

    def subscribe(
        self, callback: Callable[..., None], on_state: Callable[[bool], None] | None = None
    ) -> Callable[[], None]:
        entry = (callback, on_state)
        self.subscribers.append(entry)
        return lambda: self.subscribers.remove(entry)

    def fire(self, tag: str, data: dict[str, Any] | None = None) -> None:
        for callback, _state in list(self.subscribers):
            callback(tag, {} if data is None else data)

    def state(self, up: bool) -> None:
        self.connected = up
        for _callback, on_state in list(self.subscribers):
            if on_state is not None:
                on_state(up)


class RecordingStream(BoundedStream):
    """Writes SSE frames to a list, as :class:`SSEStream` does to a request."""

    def __init__(self, hub: EventHub, with_id: bool = True, **kwargs: Any) -> None:
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
        return [parse_sse(frame)[0]["tag"] for frame in self.written]


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
# numbering and replay


def test_events_are_numbered_in_order() -> None:
    hub, bus, _clock = make_hub()
    stream = open_stream(hub)
    for n in range(3):
        bus.fire(f"t/{n}", {"n": n})
    assert hub.seq == 3
    events = [parse_sse(frame)[0] for frame in stream.written]
    assert [e["id"] for e in events] == [f"{hub.boot}-1", f"{hub.boot}-2", f"{hub.boot}-3"]
    assert [json.loads(e["data"]) for e in events] == [{"data": {"n": n}, "tag": f"t/{n}"} for n in range(3)]
    assert re.fullmatch(r"[0-9a-f]{16}", hub.boot)


def test_boot_ids_differ_between_hubs() -> None:
    assert make_hub()[0].boot != make_hub()[0].boot


def test_replay_ring_is_bounded() -> None:
    hub, bus, _clock = make_hub(replay_size=3)
    for n in range(5):
        bus.fire(f"t/{n}")
    assert [e.seq for e in hub.replay] == [3, 4, 5]


def test_events_after_valid_id() -> None:
    hub, bus, _clock = make_hub()
    for n in range(5):
        bus.fire(f"t/{n}")
    assert [e.seq for e in hub.events_after(f"{hub.boot}-2") or []] == [3, 4, 5]
    assert [e.seq for e in hub.events_after(f"{hub.boot}-0") or []] == [1, 2, 3, 4, 5]


def test_events_after_the_last_seq_is_empty() -> None:
    hub, bus, _clock = make_hub()
    for n in range(3):
        bus.fire(f"t/{n}")
    assert hub.events_after(f"{hub.boot}-3") == []


def test_events_after_on_the_ring_edge() -> None:
    hub, bus, _clock = make_hub(replay_size=3)
    for n in range(5):
        bus.fire(f"t/{n}")
    # 3..5 are buffered: after 2 is complete, after 1 would miss 2
    assert [e.seq for e in hub.events_after(f"{hub.boot}-2") or []] == [3, 4, 5]
    assert hub.events_after(f"{hub.boot}-1") is None


def test_replay_through_start() -> None:
    hub, bus, _clock = make_hub()
    for n in range(4):
        bus.fire(f"t/{n}")
    stream = RecordingStream(hub)
    hub.register(stream)
    stream.start(hub.events_after(f"{hub.boot}-2"))
    bus.fire("t/live")
    assert stream.tags() == ["t/2", "t/3", "t/live"]


@pytest.mark.parametrize(
    "last_id",
    [
        None,
        "",
        "0123456789abcdef-1",  # foreign boot
        "{boot}",
        "{boot}-",
        "{boot}--1",
        "{boot}-x",
        "{boot}-1.0",
        "{boot}- 1",
        "{boot}-+1",
        "{boot}-99",  # from the future
        "{boot}-\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "{boot}-\u0661",  # ARABIC-INDIC DIGIT ONE
        "{boot}-\uff11",  # FULLWIDTH DIGIT ONE
        "{boot}-" + "1" * 60,  # over 64 characters
        "x" * 65,
    ],
)
def test_events_after_refuses(last_id: str | None) -> None:
    hub, bus, _clock = make_hub()
    for n in range(5):
        bus.fire(f"t/{n}")
    value = None if last_id is None else last_id.replace("{boot}", hub.boot)
    assert hub.events_after(value) is None


def test_events_after_too_old() -> None:
    hub, bus, _clock = make_hub(replay_size=2)
    for n in range(10):
        bus.fire(f"t/{n}")
    assert hub.events_after(f"{hub.boot}-3") is None
    assert [e.seq for e in hub.events_after(f"{hub.boot}-8") or []] == [9, 10]


def test_events_after_id_of_64_characters_is_read() -> None:
    hub, bus, _clock = make_hub()
    bus.fire("t/1")
    padded = f"{hub.boot}-{'0' * (64 - len(hub.boot) - 2)}1"
    assert len(padded) == 64
    assert hub.events_after(padded) == []


def test_replay_disabled() -> None:
    hub, bus, _clock = make_hub(replay_size=0)
    stream = open_stream(hub, with_id=False)
    bus.fire("t/1")
    assert hub.events_after(f"{hub.boot}-0") is None
    assert hub.events_after(f"{hub.boot}-1") is None
    assert "id" not in parse_sse(stream.written[0])[0]


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
    bus.fire("salt/auth", {})
    bus.fire("salt/job/1/new", {})
    stream = RecordingStream(hub, matcher=tag_matcher(["salt/job/"]))
    hub.register(stream)
    stream.start(hub.events_after(f"{hub.boot}-0"))
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
    event = StreamEvent(7, tag, data, "0123456789abcdef")
    frame = event.sse(with_id)
    events = parse_sse(frame)
    assert len(events) == 1
    [parsed] = events
    assert json.loads(parsed["data"]) == {"data": data, "tag": tag}
    expected_fields = {"tag", "data", "id"} if with_id else {"tag", "data"}
    assert set(parsed) == expected_fields
    if with_id:
        assert parsed["id"] == "0123456789abcdef-7"
    assert frame.endswith(b"\n\n")
    assert b"\r" not in frame
    # the data line is a single line of JSON
    data_lines = [line for line in frame.split(b"\n") if line.startswith(b"data:")]
    assert len(data_lines) == 1


def test_sse_fields_and_ascii_kept() -> None:
    event = StreamEvent(3, "salt/job/1/ret/m\u00e9", {"msg": "h\u00e9\u2028llo\nx"}, "0123456789abcdef")
    frame = event.sse(True)
    assert frame.startswith("tag: salt/job/1/ret/m\u00e9\ndata: {".encode())
    assert "h\u00e9".encode() in frame  # non-ASCII kept, not \u-escaped
    assert frame.endswith(b"\nid: 0123456789abcdef-3\n\n")
    assert event.sse(False) == frame.replace(b"id: 0123456789abcdef-3\n", b"")


def test_json_and_frames_are_computed_once() -> None:
    event = StreamEvent(1, "t", {"a": [1, 2]}, "0123456789abcdef")
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
    event = StreamEvent(1, "t", {"raw": b"ok\xff"}, "0123456789abcdef")
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
