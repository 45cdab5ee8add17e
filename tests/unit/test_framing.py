"""Tests for :mod:`saltapi_twisted.master.framing` (no I/O, no reactor)."""

from __future__ import annotations

import struct
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saltapi_twisted.master.framing import (
    BusDecoder,
    FramingError,
    decode_event_body,
    encode_event,
    frame_for_fire,
    pack_request,
    unpack_reply,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies --------------------------------------------------------------

tags = st.text(min_size=1, max_size=80).filter(lambda t: "\n\n" not in t and "\x00" not in t and not t.endswith("\n"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
# JSON-like values: what Salt sends, and what survives a use_bin_type=False pack.
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=20), children, max_size=5),
    ),
    max_leaves=12,
)
# Event data also carries bytes (packed with use_bin_type=True, so they stay bytes).
event_values = st.recursive(
    st.one_of(scalars, st.binary(max_size=40)),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=20), children, max_size=5),
    ),
    max_leaves=10,
)
event_data = st.dictionaries(st.text(max_size=20), event_values, max_size=5)
events = st.lists(st.tuples(tags, event_data), min_size=1, max_size=5)


def stream_bytes(evs: list[tuple[str, dict[str, Any]]], framing: str) -> bytes:
    """The subscribe-side bytes a master of the given framing would send."""
    if framing == "stream":
        return b"".join(encode_event(tag, data) for tag, data in evs)
    return b"".join(frame_for_fire(tag, data) for tag, data in evs)


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    """*blob* cut at the given offsets (taken modulo its length)."""
    points = sorted({c % (len(blob) + 1) for c in cuts} | {0, len(blob)})
    return [blob[a:b] for a, b in zip(points, points[1:])]


def feed_all(decoder: BusDecoder, chunks: list[bytes]) -> list[tuple[str, dict[Any, Any]]]:
    out: list[tuple[str, dict[Any, Any]]] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def prefixed(frame: bytes) -> bytes:
    return struct.pack(">I", len(frame)) + frame


# -- request channel -----------------------------------------------------------


def test_pack_request_envelope() -> None:
    load = {"cmd": "mk_token", "eauth": "file", "username": "u", "password": "p"}
    frame = pack_request(load)
    assert frame == msgpack.packb({"enc": "clear", "load": load, "version": 3}, use_bin_type=True)
    assert msgpack.unpackb(frame, raw=False) == {"enc": "clear", "load": load, "version": 3}


@pytest.mark.parametrize("load", [["cmd", "ping"], "ping", None, {"cmd": object()}, {"x": 2**70}])
def test_pack_request_refuses_unpackable(load: Any) -> None:
    with pytest.raises(FramingError):
        pack_request(load)


@FAST
@given(load=st.dictionaries(st.text(max_size=20), json_values, max_size=6))
def test_request_round_trip(load: dict[str, Any]) -> None:
    # The master reads our frame; a reply packed Salt's way decodes to the same value.
    envelope = msgpack.unpackb(pack_request(load), raw=False)
    assert envelope["load"] == load and envelope["version"] == 3
    assert unpack_reply(msgpack.packb(load, use_bin_type=False)) == load


@FAST
@given(value=json_values)
def test_reply_round_trip_salt_packing(value: Any) -> None:
    assert unpack_reply(msgpack.packb(value, use_bin_type=False)) == value


def test_reply_unwraps_clear_envelope() -> None:
    load = {"jid": "20261127201231619010_208310", "minions": ["minion-1"], "missing": []}
    assert unpack_reply(msgpack.packb({"enc": "clear", "load": load})) == load
    assert unpack_reply(msgpack.packb({"enc": "clear", "load": None})) is None


@pytest.mark.parametrize(
    "reply",
    [
        "bad load",
        {},
        {"enc": "aes", "load": {"a": 1}},
        {"enc": "clear", "load": 1, "version": 3},
        {"enc": "clear"},
        {"error": {"name": "AuthenticationError", "message": "Authentication error occurred."}},
        [1, 2, 3],
    ],
)
def test_reply_returned_as_is(reply: Any) -> None:
    assert unpack_reply(msgpack.packb(reply, use_bin_type=False)) == reply


def test_reply_ext_datetime() -> None:
    frame = msgpack.packb({"when": msgpack.ExtType(78, b"20261127T20:12:31.619010")})
    assert unpack_reply(frame) == {"when": "2026-11-27T20:12:31.619010"}


def test_reply_ext_constant() -> None:
    inner = msgpack.packb(["SOME_CONSTANT", {"value": [1, 2]}])
    frame = msgpack.packb({"const": msgpack.ExtType(79, inner), "n": 1})
    assert unpack_reply(frame) == {"const": {"value": [1, 2]}, "n": 1}


def test_reply_ext_nested_inside_constant() -> None:
    stamp = msgpack.ExtType(78, b"20260101T00:00:00.000001")
    inner = msgpack.packb(["A", msgpack.ExtType(79, msgpack.packb(["B", stamp]))])
    assert unpack_reply(msgpack.packb([msgpack.ExtType(79, inner)])) == ["2026-01-01T00:00:00.000001"]


def test_reply_ext_as_top_level_and_in_enveloped_load() -> None:
    assert unpack_reply(msgpack.packb(msgpack.ExtType(79, msgpack.packb(["X", 7])))) == 7
    frame = msgpack.packb({"enc": "clear", "load": {"t": msgpack.ExtType(78, b"20260102T03:04:05.6")}})
    assert unpack_reply(frame) == {"t": "2026-01-02T03:04:05.600000"}


@pytest.mark.parametrize(
    "ext",
    [
        msgpack.ExtType(1, b"x"),
        msgpack.ExtType(77, b""),
        msgpack.ExtType(80, b"\x90"),
        msgpack.ExtType(78, b"not a date"),
        msgpack.ExtType(78, b"\xff\xfe"),
        msgpack.ExtType(78, b""),
        msgpack.ExtType(79, b""),
        msgpack.ExtType(79, b"\xc1"),
        msgpack.ExtType(79, msgpack.packb("not a pair")),
        msgpack.ExtType(79, msgpack.packb(["only name"])),
        msgpack.ExtType(79, msgpack.packb(["a", 1, 2])),
        msgpack.ExtType(79, msgpack.packb(["a", 1]) + b"\x00"),
        msgpack.ExtType(79, msgpack.packb(["a", msgpack.ExtType(5, b"")])),
    ],
)
def test_reply_bad_ext_raises(ext: msgpack.ExtType) -> None:
    with pytest.raises(FramingError):
        unpack_reply(msgpack.packb({"k": ext}))


def test_reply_deeply_nested_constants_refused() -> None:
    value = msgpack.packb(["leaf", 1])
    for _ in range(50):
        value = msgpack.packb(["c", msgpack.ExtType(79, value)])
    with pytest.raises(FramingError):
        unpack_reply(msgpack.packb(msgpack.ExtType(79, value)))


def test_reply_non_utf8_fallback() -> None:
    reply = {
        "ok": "café",
        "blob": b"\xff\x00\xfe",
        b"\xfekey": ["x", b"\x80", {"inner": b"\xc3\x28", "fine": "ü"}],
        "n": 3,
    }
    decoded = unpack_reply(msgpack.packb(reply, use_bin_type=False))
    assert decoded == {
        "ok": "café",
        "blob": b"\xff\x00\xfe",
        b"\xfekey": ["x", b"\x80", {"inner": b"\xc3\x28", "fine": "ü"}],
        "n": 3,
    }
    assert all(isinstance(k, (str, bytes)) for k in decoded)


def test_reply_non_utf8_fallback_keeps_envelope_unwrapping_and_ext() -> None:
    frame = msgpack.packb(
        {"enc": "clear", "load": {"out": b"\xff", "t": msgpack.ExtType(78, b"20260101T00:00:00.0")}},
        use_bin_type=False,
    )
    assert unpack_reply(frame) == {"out": b"\xff", "t": "2026-01-01T00:00:00"}


def test_reply_non_utf8_top_level_string() -> None:
    assert unpack_reply(msgpack.packb(b"\xff\xfe", use_bin_type=False)) == b"\xff\xfe"


def test_reply_integer_keys_accepted() -> None:
    assert unpack_reply(msgpack.packb({1: "a", 2: [None]})) == {1: "a", 2: [None]}


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        b"\x92\x01",  # truncated array
        b"\x81\xa1a",  # map without its value
        msgpack.packb({"a": 1}) + b"\x00",  # trailing data
        b"\xdb\xff\xff\xff\xff",  # str 32 declaring 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array 32 declaring 4 G elements
        b"\xdf\xff\xff\xff\xff",  # map 32 declaring 4 G pairs
        b"\x81\x91\x01\x02",  # unhashable (list) key
        b"\x91" * 5000 + b"\xc0",  # nesting deeper than msgpack's stack
        b"\xd6\xff\x00",  # truncated timestamp
        b"\xc7\x03\xff\x00\x00\x00",  # timestamp ext with a bad length
    ],
)
def test_reply_malformed_raises_framing_error(frame: bytes) -> None:
    with pytest.raises(FramingError):
        unpack_reply(frame)


def test_reply_size_limit() -> None:
    frame = msgpack.packb("x" * 1000)
    assert unpack_reply(frame, max_size=len(frame)) == "x" * 1000
    with pytest.raises(FramingError):
        unpack_reply(frame, max_size=len(frame) - 1)


def test_reply_not_bytes() -> None:
    with pytest.raises(FramingError):
        unpack_reply("text")  # type: ignore[arg-type]


@FAST
@given(frame=st.binary(max_size=200))
def test_reply_random_bytes_only_framing_error(frame: bytes) -> None:
    try:
        unpack_reply(frame)
    except FramingError:
        pass


@FAST
@given(value=json_values, data=st.data())
def test_reply_corrupted_only_framing_error(value: Any, data: st.DataObject) -> None:
    frame = bytearray(msgpack.packb(value, use_bin_type=False))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(frame) - 1))
        frame[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        unpack_reply(bytes(frame[:cut]))
    except FramingError:
        pass


# -- events ----------------------------------------------------------------


def test_encode_event_exact_bytes() -> None:
    data = {"_stamp": "2026-11-27T20:12:31.619010", "x": [1, "two", b"3"]}
    body = b"salt/netapi/hook/a\n\n" + msgpack.packb(data, use_bin_type=True)
    expected = msgpack.packb({"head": {}, "body": body}, use_bin_type=True)
    assert encode_event("salt/netapi/hook/a", data) == expected
    assert frame_for_fire("salt/netapi/hook/a", data) == struct.pack(">I", len(expected)) + expected


@pytest.mark.parametrize("tag", ["a\n\nb", "\n\n", "a\x00b", "\x00", "trailing\n", "x/\n"])
def test_encode_event_refuses_ambiguous_tags(tag: str) -> None:
    with pytest.raises(FramingError):
        encode_event(tag, {})
    with pytest.raises(FramingError):
        frame_for_fire(tag, {})


@pytest.mark.parametrize(
    ("tag", "data"),
    [
        (b"bytes/tag", {}),
        (None, {}),
        ("surrogate\udc80", {}),
        ("t", ["not", "a", "dict"]),
        ("t", None),
        ("t", {"obj": object()}),
        ("t", {"big": 2**64}),
        ("t", {"bad": "\udcff"}),
    ],
)
def test_encode_event_refuses_bad_input(tag: Any, data: Any) -> None:
    with pytest.raises(FramingError):
        encode_event(tag, data)


def test_encode_event_allows_single_newlines() -> None:
    assert decode_event_body(msgpack.unpackb(encode_event("a\nb", {"k": 1}))["body"]) == ("a\nb", {"k": 1})


@FAST
@given(tag=tags, data=event_data)
def test_event_body_round_trip(tag: str, data: dict[str, Any]) -> None:
    body = msgpack.unpackb(encode_event(tag, data), raw=False)["body"]
    assert decode_event_body(body) == (tag, data)


def test_decode_event_body_salt_packed_data() -> None:
    body = b"salt/job/1/ret/m\n\n" + msgpack.packb({"return": "ok", "n": b"\xff"}, use_bin_type=False)
    assert decode_event_body(body) == ("salt/job/1/ret/m", {"return": "ok", "n": b"\xff"})


def test_decode_event_body_ext_types() -> None:
    data = {"t": msgpack.ExtType(78, b"20260101T01:02:03.000004"), "c": msgpack.ExtType(79, msgpack.packb(["K", 2]))}
    assert decode_event_body(b"tag\n\n" + msgpack.packb(data)) == (
        "tag",
        {"t": "2026-01-01T01:02:03.000004", "c": 2},
    )


def test_decode_event_body_splits_on_first_delimiter() -> None:
    # The data part may itself contain "\n\n"; only the first one splits.
    data = {"text": "a\n\nb"}
    assert decode_event_body(b"t\n\n" + msgpack.packb(data)) == ("t", data)


def test_decode_event_body_non_utf8_tag_replaced() -> None:
    tag, data = decode_event_body(b"bad\xfftag\n\n" + msgpack.packb({}))
    assert tag == "bad\ufffdtag" and data == {}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no delimiter",
        msgpack.packb({"a": 1}),
        b"tag\n\n",
        b"tag\n\n\xc1",
        b"tag\n\n" + msgpack.packb([1, 2]),
        b"tag\n\n" + msgpack.packb("str"),
        b"tag\n\n" + msgpack.packb(None),
        b"tag\n\n" + msgpack.packb({}) + b"extra",
        b"tag\n\n" + msgpack.packb({"e": msgpack.ExtType(3, b"")}),
        "a str body\n\n",
        None,
    ],
)
def test_decode_event_body_malformed(body: Any) -> None:
    with pytest.raises(FramingError):
        decode_event_body(body)


# -- bus decoder -------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["stream", "prefixed"])
def test_bus_decoder_detects_framing(framing: str) -> None:
    decoder = BusDecoder()
    assert decoder.framing is None
    assert decoder.feed(b"") == []
    assert decoder.framing is None
    blob = stream_bytes([("a/b", {"x": 1})], framing)
    assert decoder.feed(blob) == [("a/b", {"x": 1})]
    assert decoder.framing == framing
    assert decoder.bad_frames == 0


def test_bus_decoder_detects_observed_first_bytes() -> None:
    # §3.1: 3008/3007 start with 0x82 ('head', 'body'), 3006 with 0x00.
    assert encode_event("x", {})[0] == 0x82
    assert frame_for_fire("x", {})[0] == 0x00
    for lead in (0xDE, 0xDF):
        decoder = BusDecoder()
        decoder.feed(bytes([lead]))
        assert decoder.framing == "stream"
    decoder = BusDecoder()
    decoder.feed(b"\x00")
    assert decoder.framing == "prefixed"


def test_bus_decoder_map16_and_map32_stream() -> None:
    body = b"t\n\n" + msgpack.packb({"k": "v"})
    map16 = b"\xde\x00\x02" + msgpack.packb("head") + b"\x80" + msgpack.packb("body") + msgpack.packb(body)
    map32 = b"\xdf\x00\x00\x00\x02" + msgpack.packb("body") + msgpack.packb(body) + msgpack.packb("head") + b"\x80"
    for blob in (map16 + map32, map32 + map16):
        decoder = BusDecoder()
        assert feed_all(decoder, [blob[i : i + 1] for i in range(len(blob))]) == [("t", {"k": "v"})] * 2
        assert decoder.framing == "stream"


@FAST
@given(evs=events, framing=st.sampled_from(["stream", "prefixed"]), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_bus_round_trip_arbitrary_chunks(evs: list[tuple[str, dict[str, Any]]], framing: str, cuts: list[int]) -> None:
    blob = stream_bytes(evs, framing)
    decoder = BusDecoder()
    assert feed_all(decoder, split(blob, cuts)) == evs
    assert decoder.framing == framing
    assert decoder.bad_frames == 0


@settings(max_examples=50, deadline=None)
@given(evs=events, framing=st.sampled_from(["stream", "prefixed"]))
def test_bus_round_trip_one_byte_chunks(evs: list[tuple[str, dict[str, Any]]], framing: str) -> None:
    blob = stream_bytes(evs, framing)
    decoder = BusDecoder()
    chunks = [blob[i : i + 1] for i in range(len(blob))]
    assert feed_all(decoder, chunks) == evs
    assert decoder.bad_frames == 0


@pytest.mark.parametrize("framing", ["stream", "prefixed"])
def test_bus_one_byte_chunks_large_event(framing: str) -> None:
    evs = [("big", {"blob": b"\x01" * 70_000, "s": "é" * 300}), ("after", {"n": 1})]
    blob = stream_bytes(evs, framing)
    decoder = BusDecoder()
    out: list[tuple[str, dict[Any, Any]]] = []
    for i in range(len(blob)):
        out.extend(decoder.feed(blob[i : i + 1]))
    assert out == evs


@pytest.mark.parametrize("framing", ["stream", "prefixed"])
def test_bus_accepts_bytearray_and_memoryview(framing: str) -> None:
    blob = stream_bytes([("a", {}), ("b", {"x": None})], framing)
    decoder = BusDecoder()
    assert decoder.feed(bytearray(blob[:5])) + decoder.feed(memoryview(blob)[5:]) == [("a", {}), ("b", {"x": None})]


def test_bus_stream_salt_style_packing() -> None:
    # A map packed with use_bin_type=False puts the body in the str type,
    # holding msgpack that is not UTF-8; it must still decode.
    data = {"blob": b"\xff\xfe", "x": 1}
    body = b"t\n\n" + msgpack.packb(data, use_bin_type=True)
    frame = msgpack.packb({"head": {}, "body": body}, use_bin_type=False)
    for blob in (frame, prefixed(frame)):
        assert BusDecoder().feed(blob) == [("t", data)]


def test_bus_prefixed_bad_frames_are_skipped() -> None:
    good = encode_event("good/1", {"a": 1})
    bad_frames = [
        b"",  # empty frame
        b"\xc1\xc1\xc1",  # not msgpack
        msgpack.packb({"a": 1}) + b"junk",  # trailing bytes inside the frame
        msgpack.packb([1, 2, 3]),  # not a map
        msgpack.packb({"head": {}}),  # no body
        msgpack.packb({"head": {}, "body": 5}),  # body not bytes
        msgpack.packb({"head": {}, "body": b"no delimiter"}),
        msgpack.packb({"head": {}, "body": b"t\n\n" + msgpack.packb([1])}),  # data not a dict
        msgpack.packb({"head": {}, "body": b"t\n\n\xc1"}),  # data not msgpack
        b"\x81\x91\x01\x02",  # unhashable key
        b"\x92\x01",  # truncated inside its frame
    ]
    blob = prefixed(good) + b"".join(prefixed(f) + prefixed(good) for f in bad_frames)
    decoder = BusDecoder()
    out = feed_all(decoder, [blob[i : i + 7] for i in range(0, len(blob), 7)])
    assert out == [("good/1", {"a": 1})] * (len(bad_frames) + 1)
    assert decoder.bad_frames == len(bad_frames)
    assert decoder.framing == "prefixed"


def test_bus_prefixed_bad_first_frame_then_good() -> None:
    blob = prefixed(b"\xc1") + prefixed(encode_event("ok", {}))
    decoder = BusDecoder()
    assert decoder.feed(blob) == [("ok", {})]
    assert decoder.bad_frames == 1


def test_bus_stream_malformed_objects_skipped() -> None:
    good = encode_event("good", {"z": [1]})
    bad_objects = [
        msgpack.packb({"head": {}}),  # map without body
        msgpack.packb({"head": {}, "body": 1}),
        msgpack.packb({"head": {}, "body": b"no delimiter"}),
        msgpack.packb({"head": {}, "body": b"t\n\n\x92"}),  # truncated data
        msgpack.packb({"body": b"t\n\n" + msgpack.packb({"e": msgpack.ExtType(9, b"")})}),  # unknown ext
        msgpack.packb(42),  # a non-map object between maps
        msgpack.packb(["head", "body"]),
        b"\x81\x91\x01\x02",  # map with an unhashable key: one complete object
        b"\x91" * 2000 + b"\xc0",  # deeper than msgpack's stack, still one object
    ]
    blob = good + b"".join(bad + good for bad in bad_objects)
    decoder = BusDecoder()
    out = feed_all(decoder, [blob[i : i + 3] for i in range(0, len(blob), 3)])
    assert out == [("good", {"z": [1]})] * (len(bad_objects) + 1)
    assert decoder.bad_frames == len(bad_objects)


def test_bus_stream_first_object_bad_map() -> None:
    blob = msgpack.packb({"head": {}}) + encode_event("ok", {})
    decoder = BusDecoder()
    assert decoder.feed(blob) == [("ok", {})]
    assert decoder.framing == "stream" and decoder.bad_frames == 1


def _prompt(decoder: BusDecoder, blob: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(FramingError):
        decoder.feed(blob)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "header",
    [
        b"\x80\x00\x00\x00",  # 2 GiB
        b"\xff\xff\xff\xff",  # 4 GiB - 1
        struct.pack(">I", 64 * 1024 * 1024 + 1),  # one byte over the default limit
    ],
)
def test_bus_prefixed_huge_length_raises_promptly(header: bytes) -> None:
    decoder = BusDecoder()
    assert decoder.feed(prefixed(encode_event("first", {}))) == [("first", {})]
    _prompt(decoder, header)


def test_bus_prefixed_huge_first_frame_raises_promptly() -> None:
    _prompt(BusDecoder(), b"\x7f\xff\xff\xff")
    decoder = BusDecoder()
    assert decoder.feed(b"\x7f") == []  # incomplete header: nothing to say yet
    _prompt(decoder, b"\xff\xff\xff")


@pytest.mark.parametrize(
    "tail",
    [
        b"\xc6\x80\x00\x00\x00",  # body: bin 32 declaring 2 GiB
        b"\xdb\x80\x00\x00\x00",  # body: str 32 declaring 2 GiB
        b"\xc9\x80\x00\x00\x00\x4e",  # body: ext 32 declaring 2 GiB
        b"\xdd\x80\x00\x00\x00",  # body: array 32 declaring 2 G elements
        b"\xdf\x40\x00\x00\x00",  # body: map 32 declaring 1 G pairs
    ],
)
def test_bus_stream_huge_declared_size_raises_promptly(tail: bytes) -> None:
    header = b"\x82\xa4head\x80\xa4body" + tail
    decoder = BusDecoder()
    _prompt(decoder, header)
    # Same when it arrives a byte at a time after good events.
    decoder = BusDecoder()
    assert decoder.feed(encode_event("first", {})) == [("first", {})]
    with pytest.raises(FramingError):
        for i in range(len(header)):
            decoder.feed(header[i : i + 1])


@pytest.mark.parametrize("framing", ["stream", "prefixed"])
def test_bus_max_frame_size(framing: str) -> None:
    small = encode_event("s", {"x": "y" * 10})
    big = encode_event("b", {"x": "y" * 500})
    decoder = BusDecoder(max_frame_size=len(big))
    wrap = prefixed if framing == "prefixed" else (lambda m: m)
    assert decoder.feed(wrap(small) + wrap(big)) == [("s", {"x": "y" * 10}), ("b", {"x": "y" * 500})]
    decoder = BusDecoder(max_frame_size=len(big) - 1)
    assert decoder.feed(wrap(small)) == [("s", {"x": "y" * 10})]
    with pytest.raises(FramingError):
        decoder.feed(wrap(big)[:40])  # refused from the header alone


def test_bus_max_frame_size_validated() -> None:
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ValueError):
            BusDecoder(max_frame_size=bad)  # type: ignore[arg-type]


def test_bus_stream_invalid_byte_raises_and_latches() -> None:
    decoder = BusDecoder()
    good = encode_event("ok", {})
    with pytest.raises(FramingError):
        decoder.feed(good + b"\xc1" + good)
    # Once failed, the decoder refuses further input until reset().
    with pytest.raises(FramingError):
        decoder.feed(good)
    decoder.reset()
    assert decoder.framing is None and decoder.bad_frames == 0
    assert decoder.feed(prefixed(good)) == [("ok", {})]
    assert decoder.framing == "prefixed"


def test_bus_failure_after_good_chunk() -> None:
    decoder = BusDecoder()
    good = encode_event("ok", {})
    assert decoder.feed(good) == [("ok", {})]
    with pytest.raises(FramingError):
        decoder.feed(b"\xc1")


def test_bus_reset_clears_partial_frame() -> None:
    decoder = BusDecoder()
    blob = encode_event("a", {"k": "v"})
    assert decoder.feed(blob[:10]) == []
    decoder.reset()
    assert decoder.feed(blob) == [("a", {"k": "v"})]


@FAST
@given(blob=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_bus_random_bytes_only_framing_error(blob: bytes, cuts: list[int]) -> None:
    decoder = BusDecoder(max_frame_size=1 << 20)
    try:
        for chunk in split(blob, cuts):
            for tag, data in decoder.feed(chunk):
                assert isinstance(tag, str) and isinstance(data, dict)
    except FramingError:
        pass


@FAST
@given(
    lead=st.sampled_from([b"\x82", b"\x00", b"\xde", b"\xdf", b"\x80"]),
    blob=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_bus_random_bytes_each_framing_only_framing_error(lead: bytes, blob: bytes, cuts: list[int]) -> None:
    decoder = BusDecoder(max_frame_size=4096)
    try:
        for chunk in split(lead + blob, cuts):
            decoder.feed(chunk)
    except FramingError:
        pass


@FAST
@given(evs=events, framing=st.sampled_from(["stream", "prefixed"]), data=st.data())
def test_bus_corrupted_stream_only_framing_error(
    evs: list[tuple[str, dict[str, Any]]], framing: str, data: st.DataObject
) -> None:
    blob = bytearray(stream_bytes(evs, framing))
    for _ in range(data.draw(st.integers(1, 5))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=6))
    decoder = BusDecoder(max_frame_size=1 << 20)
    try:
        feed_all(decoder, split(bytes(blob), cuts))
    except FramingError:
        pass


@FAST
@given(
    items=st.lists(
        st.one_of(
            st.tuples(tags, event_data),
            st.binary(max_size=60).map(lambda b: ("corrupt", b)),
        ),
        min_size=1,
        max_size=8,
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
def test_bus_prefixed_resyncs_after_any_bad_frame(items: list[tuple[str, Any]], cuts: list[int]) -> None:
    # In the prefixed framing every frame's extent is known: garbage inside a
    # frame costs that frame only.
    blob = b""
    expected = []
    for tag, payload in items:
        if isinstance(payload, bytes):
            blob += prefixed(payload)
        else:
            blob += frame_for_fire(tag, payload)
            expected.append((tag, payload))
    if blob[0] in range(0x80, 0x90) or blob[0] in (0xDE, 0xDF):  # pragma: no cover - lengths are small
        return
    decoder = BusDecoder()
    out = feed_all(decoder, split(blob, cuts))
    garbage = [payload for tag, payload in items if isinstance(payload, bytes)]
    # A random payload might, rarely, be a valid event itself.
    assert [e for e in out if e in expected] == expected
    assert len(out) - len(expected) + decoder.bad_frames == len(garbage)
