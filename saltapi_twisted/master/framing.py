"""Bytes on the wire to and from the Salt master, with no I/O.

Three formats meet here (see ``salt-wire-protocol.md`` §2.2 and §3):

* the request channel: one msgpack frame
  ``{"enc": "clear", "load": LOAD, "version": 3}`` out, one msgpack reply in;
* firing an event: ``struct.pack(">I", len(m)) + m`` where ``m`` is the map
  ``{"head": {}, "body": b"<tag>\\n\\n" + msgpack(data)}``;
* reading the event bus: the same maps, either as a plain msgpack stream
  (3007, 3008) or each behind a 4-byte big-endian length (3006).

Everything that is malformed raises :class:`FramingError` and nothing else,
so callers need exactly one ``except`` clause. Every size is bounded before
any memory is committed to it: a header that declares a huge object fails at
once instead of waiting for bytes that will never come.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any
from collections.abc import Callable

import msgpack

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_REPLY_SIZE",
    "BusDecoder",
    "FramingError",
    "decode_event_body",
    "encode_event",
    "frame_for_fire",
    "pack_request",
    "unpack_reply",
]

#: Largest event-bus frame :class:`BusDecoder` accepts by default (64 MiB).
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024

#: Largest request-channel reply :func:`unpack_reply` accepts by default (256 MiB).
DEFAULT_MAX_REPLY_SIZE = 256 * 1024 * 1024

#: Separator between the tag and the packed data in an event body (Salt's TAGEND).
TAGEND = b"\n\n"

#: Salt's ext type for a datetime, packed as ``b"%Y%m%dT%H:%M:%S.%f"``.
EXT_DATETIME = 78

#: Salt's ext type for a constant, packed as ``msgpack([name, value])``.
EXT_CONSTANT = 79

_DATETIME_FORMAT = "%Y%m%dT%H:%M:%S.%f"

# Constants (ext 79) hold msgpack that may itself hold constants: bound the
# nesting so that a crafted reply cannot recurse through the C stack.
_MAX_EXT_DEPTH = 8

# Everything msgpack raises on bad input: ExtraData, FormatError, StackError,
# OutOfData, BufferFull and UnicodeDecodeError are ValueErrors; unhashable map
# keys raise TypeError.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    struct.error,
    msgpack.UnpackException,
)
_ENCODE_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OverflowError, RecursionError, struct.error)

_U32 = struct.Struct(">I")
_MAX_U32 = 0xFFFFFFFF


class FramingError(ValueError):
    """Input that is not a well-formed frame, reply or event (or cannot be encoded as one)."""


# ---------------------------------------------------------------------------
# Decoding helpers


def _text(value: Any) -> Any:
    """*value* decoded to ``str`` when it is UTF-8 ``bytes``; anything else unchanged."""
    if type(value) is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _text_map(obj: dict[Any, Any]) -> dict[Any, Any]:
    return {_text(key): _text(value) for key, value in obj.items()}


def _text_list(obj: list[Any]) -> list[Any]:
    return [_text(value) for value in obj]


def _ext_hook(depth: int) -> Callable[[int, bytes], Any]:
    """The msgpack ``ext_hook`` for Salt's ext types, at constant-nesting *depth*.

    :param depth: how many ext-79 constants enclose the data being decoded.
    :return: a hook that turns ext 78 into an ISO datetime string and ext 79
        into the constant's value, and refuses every other ext type.
    """

    def hook(code: int, data: bytes) -> Any:
        if code == EXT_DATETIME:
            try:
                return datetime.strptime(data.decode("ascii"), _DATETIME_FORMAT).isoformat()
            except ValueError as exc:  # includes UnicodeDecodeError
                raise FramingError(f"malformed datetime (ext {EXT_DATETIME}): {bytes(data)[:64]!r}") from exc
        if code == EXT_CONSTANT:
            if depth >= _MAX_EXT_DEPTH:
                raise FramingError(f"constants (ext {EXT_CONSTANT}) nested too deeply")
            pair = _loads(data, depth + 1)
            if not isinstance(pair, list) or len(pair) != 2:
                raise FramingError(f"malformed constant (ext {EXT_CONSTANT}): expected [name, value]")
            return pair[1]
        raise FramingError(f"unknown msgpack ext type {code}")

    return hook


def _loads(data: bytes | bytearray | memoryview, depth: int = 0) -> Any:
    """Unpack exactly one msgpack object the way Salt's peers expect.

    Strings are decoded as UTF-8 (``raw=False``). If one of them is not
    valid UTF-8 the whole object is unpacked again with ``raw=True`` and
    every ``bytes`` key or value that is valid UTF-8 becomes ``str``; the
    others stay ``bytes``. Container sizes are bounded by ``len(data)``
    (msgpack's default for one-shot unpacking).

    :param data: one complete msgpack object, no trailing bytes.
    :param depth: ext-79 nesting depth (internal).
    :raises FramingError: on any malformed input.
    """
    hook = _ext_hook(depth)
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=hook)
    except FramingError:
        raise
    except UnicodeDecodeError:
        pass
    except _DECODE_ERRORS as exc:
        raise FramingError(f"malformed msgpack: {exc}") from exc
    try:
        value = msgpack.unpackb(
            data,
            raw=True,
            strict_map_key=False,
            ext_hook=hook,
            object_hook=_text_map,
            list_hook=_text_list,
        )
    except FramingError:
        raise
    except _DECODE_ERRORS as exc:
        raise FramingError(f"malformed msgpack: {exc}") from exc
    return _text(value)


# ---------------------------------------------------------------------------
# Request channel


def pack_request(load: dict[str, Any]) -> bytes:
    """The one frame that carries *load* to the master's request channel.

    :param load: the clear load, for example ``{"cmd": "ping"}``.
    :return: ``msgpack({"enc": "clear", "load": load, "version": 3})``.
    :raises FramingError: when *load* is not a dict or holds values msgpack
        cannot pack.
    """
    if not isinstance(load, dict):
        raise FramingError(f"a request load must be a dict, not {type(load).__name__}")
    try:
        return msgpack.packb({"enc": "clear", "load": load, "version": 3}, use_bin_type=True)
    except _ENCODE_ERRORS as exc:
        raise FramingError(f"cannot pack the request load: {exc}") from exc


def unpack_reply(frame: bytes, *, max_size: int = DEFAULT_MAX_REPLY_SIZE) -> Any:
    """Decode one reply frame from the master's request channel.

    Ext type 78 (datetime) becomes its ISO 8601 string, ext type 79 (a Salt
    constant) becomes the constant's value. A reply wrapped as
    ``{"enc": "clear", "load": X}`` (``publish`` answers that way) is
    unwrapped to ``X``; every other reply is returned as it is.

    :param frame: the reply frame, without the empty DEALER delimiter.
    :param max_size: largest accepted frame, in bytes.
    :return: the decoded reply.
    :raises FramingError: when the frame is too large, is not exactly one
        msgpack object, or uses an unknown ext type.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise FramingError(f"a reply frame must be bytes, not {type(frame).__name__}")
    if len(frame) > max_size:
        raise FramingError(f"reply of {len(frame)} bytes exceeds the {max_size}-byte limit")
    reply = _loads(frame)
    if type(reply) is dict and len(reply) == 2 and reply.get("enc") == "clear" and "load" in reply:
        return reply["load"]
    return reply


# ---------------------------------------------------------------------------
# Events


def encode_event(tag: str, data: dict[str, Any]) -> bytes:
    """The event map ``{"head": {}, "body": tag + b"\\n\\n" + msgpack(data)}``, packed.

    :param tag: the event tag. It must not contain ``"\\n\\n"`` or NUL, nor end
        with ``"\\n"`` (the body would then split at the wrong place).
    :param data: the event data; Salt's consumers expect a ``_stamp`` key,
        which the master does not add.
    :return: the packed map, as published on the bus; see :func:`frame_for_fire`
        for what to write to the master's pull socket.
    :raises FramingError: for a refused tag, non-dict data, or data msgpack
        cannot pack.
    """
    if not isinstance(tag, str):
        raise FramingError(f"an event tag must be a str, not {type(tag).__name__}")
    if "\n\n" in tag or "\x00" in tag or tag.endswith("\n"):
        raise FramingError(f"refused event tag {tag[:128]!r}: it must not contain a blank line or NUL")
    if not isinstance(data, dict):
        raise FramingError(f"event data must be a dict, not {type(data).__name__}")
    try:
        body = tag.encode("utf-8") + TAGEND + msgpack.packb(data, use_bin_type=True)
        return msgpack.packb({"head": {}, "body": body}, use_bin_type=True)
    except _ENCODE_ERRORS as exc:
        raise FramingError(f"cannot pack event {tag[:128]!r}: {exc}") from exc


def frame_for_fire(tag: str, data: dict[str, Any]) -> bytes:
    """One length-prefixed event, ready for ``master_event_pull.ipc``.

    The pull side takes this framing on every supported version; an
    unprefixed write is silently dropped by the master.

    :param tag: the event tag (see :func:`encode_event`).
    :param data: the event data.
    :return: ``struct.pack(">I", len(m)) + m`` with ``m = encode_event(tag, data)``.
    :raises FramingError: as :func:`encode_event`, or when the event does not
        fit a 32-bit length.
    """
    message = encode_event(tag, data)
    if len(message) > _MAX_U32:
        raise FramingError(f"event {tag[:128]!r} is too large to fire ({len(message)} bytes)")
    return _U32.pack(len(message)) + message


def decode_event_body(body: bytes) -> tuple[str, dict[Any, Any]]:
    """Split an event body into its tag and its data.

    :param body: ``b"<tag>\\n\\n" + msgpack(data)``.
    :return: ``(tag, data)``; the tag is decoded as UTF-8 with replacement
        characters, the data as :func:`unpack_reply` decodes a reply.
    :raises FramingError: when there is no ``b"\\n\\n"``, the data part is not
        exactly one msgpack object, or it is not a dict.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise FramingError(f"an event body must be bytes, not {type(body).__name__}")
    split = body.find(TAGEND) if not isinstance(body, memoryview) else bytes(body).find(TAGEND)
    if split < 0:
        raise FramingError("event body without a tag delimiter")
    raw_tag = bytes(body[:split])
    # The data part is read in place (a big job return is not copied first).
    with memoryview(body) as view, view[split + len(TAGEND) :] as raw_data:
        data = _loads(raw_data)
    if not isinstance(data, dict):
        raise FramingError(f"event data is a {type(data).__name__}, not a dict")
    return raw_tag.decode("utf-8", errors="replace"), data


# ---------------------------------------------------------------------------
# Event bus subscribe stream

# How each leading byte of a msgpack object is laid out, for the extent
# scanner: (kind, header length, struct for the length field or None, length
# encoded in the leading byte).
_SCALAR, _PAYLOAD, _ARRAY, _MAP, _INVALID = range(5)
_U8, _U16 = struct.Struct(">B"), struct.Struct(">H")


_TYPED: dict[int, tuple[int, int, struct.Struct | None, int]] = {
    0xC0: (_SCALAR, 1, None, 0),  # nil
    0xC1: (_INVALID, 1, None, 0),  # never used
    0xC2: (_SCALAR, 1, None, 0),  # false
    0xC3: (_SCALAR, 1, None, 0),  # true
    0xC4: (_PAYLOAD, 2, _U8, 0),  # bin 8
    0xC5: (_PAYLOAD, 3, _U16, 0),  # bin 16
    0xC6: (_PAYLOAD, 5, _U32, 0),  # bin 32
    0xC7: (_PAYLOAD, 3, _U8, 0),  # ext 8 (length, type)
    0xC8: (_PAYLOAD, 4, _U16, 0),  # ext 16
    0xC9: (_PAYLOAD, 6, _U32, 0),  # ext 32
    0xCA: (_SCALAR, 5, None, 0),  # float 32
    0xCB: (_SCALAR, 9, None, 0),  # float 64
    0xCC: (_SCALAR, 2, None, 0),  # uint 8
    0xCD: (_SCALAR, 3, None, 0),  # uint 16
    0xCE: (_SCALAR, 5, None, 0),  # uint 32
    0xCF: (_SCALAR, 9, None, 0),  # uint 64
    0xD0: (_SCALAR, 2, None, 0),  # int 8
    0xD1: (_SCALAR, 3, None, 0),  # int 16
    0xD2: (_SCALAR, 5, None, 0),  # int 32
    0xD3: (_SCALAR, 9, None, 0),  # int 64
    0xD4: (_SCALAR, 3, None, 0),  # fixext 1
    0xD5: (_SCALAR, 4, None, 0),  # fixext 2
    0xD6: (_SCALAR, 6, None, 0),  # fixext 4
    0xD7: (_SCALAR, 10, None, 0),  # fixext 8
    0xD8: (_SCALAR, 18, None, 0),  # fixext 16
    0xD9: (_PAYLOAD, 2, _U8, 0),  # str 8
    0xDA: (_PAYLOAD, 3, _U16, 0),  # str 16
    0xDB: (_PAYLOAD, 5, _U32, 0),  # str 32
    0xDC: (_ARRAY, 3, _U16, 0),  # array 16
    0xDD: (_ARRAY, 5, _U32, 0),  # array 32
    0xDE: (_MAP, 3, _U16, 0),  # map 16
    0xDF: (_MAP, 5, _U32, 0),  # map 32
}


def _layout() -> tuple[tuple[int, int, struct.Struct | None, int], ...]:
    table: list[tuple[int, int, struct.Struct | None, int]] = []
    for lead in range(256):
        if lead <= 0x7F or lead >= 0xE0:  # positive / negative fixint
            table.append((_SCALAR, 1, None, 0))
        elif lead <= 0x8F:  # fixmap
            table.append((_MAP, 1, None, lead & 0x0F))
        elif lead <= 0x9F:  # fixarray
            table.append((_ARRAY, 1, None, lead & 0x0F))
        elif lead <= 0xBF:  # fixstr
            table.append((_SCALAR, 1 + (lead & 0x1F), None, 0))
        else:
            table.append(_TYPED[lead])
    return tuple(table)


_LAYOUT = _layout()

# First bytes that mean "a msgpack map": the plain stream of 3007 and 3008.
_STREAM_LEADS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class BusDecoder:
    """Incremental decoder for the master's event-bus subscribe stream.

    The framing is detected from the first byte received: a msgpack map
    (``0x80``-``0x8f``, ``0xde``, ``0xdf``) means a plain msgpack stream
    (3007, 3008); anything else means each map is preceded by a 4-byte
    big-endian length (3006).

    Object boundaries in the plain stream are found by scanning msgpack
    headers, without decoding, so the size an object declares is checked
    against *max_frame_size* as soon as its header arrives. Each complete
    frame is then decoded on its own: a frame that is not a map with a bytes
    ``body``, or whose body :func:`decode_event_body` rejects, is skipped
    and counted in :attr:`bad_frames`, and the events after it still come
    out. Input that cannot be resynchronised (a length or declared size over
    the limit, a byte that msgpack never uses) raises :class:`FramingError`;
    the decoder then stays failed until :meth:`reset`, and the caller is
    expected to reconnect with a fresh decoder. Events completed earlier in
    the same :meth:`feed` call are lost with it, as events are across any
    reconnection.

    :param max_frame_size: largest frame accepted, in bytes; in the plain
        stream this bounds a whole top-level object.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not isinstance(max_frame_size, int) or max_frame_size < 1:
            raise ValueError(f"max_frame_size must be a positive int, not {max_frame_size!r}")
        self.max_frame_size = max_frame_size
        #: ``"stream"``, ``"prefixed"``, or ``None`` before the first byte.
        self.framing: str | None = None
        #: Frames skipped because they were not valid events.
        self.bad_frames = 0
        self._buffer = bytearray()
        self._failure: str | None = None
        # Plain-stream scanner state, as offsets into _buffer: the start of
        # the current object, where scanning resumes, and how many objects
        # (elements, keys, values) are still to be read to complete it.
        self._start = 0
        self._scan = 0
        self._left = 1

    def reset(self) -> None:
        """Forget everything: buffered bytes, detected framing, failure and counters."""
        self.framing = None
        self.bad_frames = 0
        self._buffer = bytearray()
        self._failure = None
        self._start = 0
        self._scan = 0
        self._left = 1

    def feed(self, data: bytes) -> list[tuple[str, dict[Any, Any]]]:
        """Take the next bytes of the stream and return the events they complete.

        :param data: bytes as read from the socket, split anywhere.
        :return: ``(tag, data)`` for each event completed by *data*, in order.
        :raises FramingError: when the stream cannot be decoded any further.
        """
        if self._failure is not None:
            raise FramingError(self._failure)
        if not data:
            return []
        if self.framing is None:
            self.framing = "stream" if data[0] in _STREAM_LEADS else "prefixed"
        self._buffer += data
        events: list[tuple[str, dict[Any, Any]]] = []
        try:
            if self.framing == "stream":
                self._feed_stream(events)
            else:
                self._feed_prefixed(events)
        except FramingError as exc:
            self._failure = str(exc)
            self._buffer = bytearray()
            raise
        return events

    def _feed_prefixed(self, events: list[tuple[str, dict[Any, Any]]]) -> None:
        buffer = self._buffer
        end = len(buffer)
        pos = 0
        limit = self.max_frame_size
        while end - pos >= 4:
            (length,) = _U32.unpack_from(buffer, pos)
            if length > limit:
                raise FramingError(f"event frame declares {length} bytes, over the {limit}-byte limit")
            if end - pos - 4 < length:
                break
            self._emit(buffer[pos + 4 : pos + 4 + length], events)
            pos += 4 + length
        if pos:
            del buffer[:pos]

    def _feed_stream(self, events: list[tuple[str, dict[Any, Any]]]) -> None:
        buffer = self._buffer
        end = len(buffer)
        start, pos, left = self._start, self._scan, self._left
        limit = start + self.max_frame_size
        while True:
            while left and pos < end:
                kind, header, field, count = _LAYOUT[buffer[pos]]
                if kind == _INVALID:
                    raise FramingError(f"byte 0x{buffer[pos]:02x} at offset {pos - start} is not msgpack")
                if pos + header > end:
                    break
                if field is not None:
                    (count,) = field.unpack_from(buffer, pos + 1)
                left -= 1
                pos += header
                if kind == _PAYLOAD:
                    pos += count
                elif kind == _ARRAY:
                    left += count
                elif kind == _MAP:
                    left += 2 * count
                # Every object still to come takes at least one byte.
                if pos + left > limit:
                    raise FramingError(f"event object exceeds the {self.max_frame_size}-byte limit")
            if left or pos > end:
                break
            self._emit(buffer[start:pos], events)
            start, left = pos, 1
            limit = start + self.max_frame_size
        if start:
            del buffer[:start]
            pos -= start
            start = 0
        self._start, self._scan, self._left = start, pos, left

    def _emit(self, frame: bytearray, events: list[tuple[str, dict[Any, Any]]]) -> None:
        """Decode one complete frame into *events*, or count it as bad."""
        try:
            item = msgpack.unpackb(frame, raw=True, strict_map_key=False)
        except _DECODE_ERRORS:
            self.bad_frames += 1
            return
        body = item.get(b"body") if type(item) is dict else None
        if isinstance(body, str):
            body = body.encode("utf-8", errors="surrogateescape")
        if not isinstance(body, bytes):
            self.bad_frames += 1
            return
        try:
            events.append(decode_event_body(body))
        except FramingError:
            self.bad_frames += 1
