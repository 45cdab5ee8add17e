"""Lean asyncio stream clients: many SSE (HTTP/1.0, no chunking) or websocket readers.

Each reader only looks for ``"sent": <float>`` in what it receives (the stamp
the firing side put in every bench event) and keeps, per client, the count
and the delivery latencies (receive time minus ``sent``). Bus events without
``sent`` (auth, job events) are skipped by the same regular expression.

The websocket reader uses the ``websockets`` package's sans-I/O client
protocol (handshake, framing, ping/pong) under a bare asyncio protocol, so it
costs about 2 µs per message.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from collections.abc import Sequence
from typing import Any

SENT = re.compile(rb'"sent": ?([0-9]+(?:\.[0-9]+)?)')
#: SSE comment lines (": overflow", ": shutdown", ...), kept as the reason a stream ended
COMMENT = re.compile(rb"(?m)^: ?([^\n]*)$")

try:  # the websocket reader is optional: without the package only SSE runs
    from websockets.client import ClientProtocol
    from websockets.frames import Opcode
    from websockets.http11 import Response
    from websockets.protocol import State
    from websockets.uri import parse_uri
except ImportError:  # pragma: no cover
    ClientProtocol = None  # type: ignore[assignment,misc]


class Shared:
    """What all readers of one run update."""

    __slots__ = ("deliveries", "last_delivery")

    def __init__(self) -> None:
        self.deliveries = 0
        self.last_delivery = 0.0


class _Reader(asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.count = 0
        self.latencies = array("d")
        self.closed = False
        self.close_reason = ""

    def _found(self, chunk: bytes, now: float) -> None:
        sents = SENT.findall(chunk)
        if sents:
            n = len(sents)
            self.count += n
            self.shared.deliveries += n
            self.shared.last_delivery = now
            self.latencies.extend([now - float(s) for s in sents])

    def _ready(self, ok: bool) -> None:
        if not self.ready.done():
            self.ready.set_result(ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ready(False)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class SSEReader(_Reader):
    """``GET <path> HTTP/1.0``; the status line and headers, then raw ``data:`` lines."""

    def __init__(self, shared: Shared, request: bytes) -> None:
        super().__init__(shared)
        self.request = request
        self.head = b""
        self.tail = b""
        self.in_body = False
        self.body_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            self.in_body = True
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = 0
            self._ready(self.status == 200)
            if not data:
                return
        self.body_bytes += len(data)
        buf = self.tail + data if self.tail else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self.tail = buf
            return
        self.tail = buf[cut + 1 :]
        chunk = buf[:cut]
        self._found(chunk, now)
        if b"\n:" in chunk or chunk.startswith(b":"):
            for comment in COMMENT.findall(chunk):
                if comment and comment != b"keepalive":
                    self.close_reason = comment.decode("utf-8", "replace")[:100]


class WSReader(_Reader):
    """A websocket client: handshake, ``websocket client ready``, then text frames."""

    def __init__(self, shared: Shared, port: int, path: str, hello: bytes | None) -> None:
        super().__init__(shared)
        assert ClientProtocol is not None, "pip install websockets"
        self.ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"), max_size=None)
        self.hello = hello

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except Exception as exc:  # noqa: BLE001 - one broken client must not spam or stop the run
            self.close_reason = f"client error {exc!r}"[:200]
            self._ready(False)
            self.close()

    def _received(self, data: bytes) -> None:
        now = time.time()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                self.status = event.status_code
                if self.ws.state is State.OPEN:
                    if self.hello is not None:
                        self.ws.send_text(self.hello)
                    self._ready(True)
                else:
                    self._ready(False)
            elif event.opcode is Opcode.TEXT or event.opcode is Opcode.CONT:
                self._found(event.data, now)
            elif event.opcode is Opcode.CLOSE:
                self.close_reason = f"close {getattr(self.ws.close_rcvd, 'code', '?')}"
        self._flush()
        if self.ws.close_expected() and self.transport is not None:
            self.transport.close()


async def open_readers(
    factories: Sequence[Any],
    port: int,
    *,
    connect_concurrency: int = 200,
    ready_timeout: float = 15.0,
) -> tuple[list[_Reader], float]:
    """Open every reader (at most ``connect_concurrency`` TCP connects in flight) and wait for their headers.

    :return: the readers, and the seconds it took until all were ready (or the timeout).
    """
    loop = asyncio.get_running_loop()
    readers: list[_Reader] = []
    semaphore = asyncio.Semaphore(connect_concurrency)
    t0 = time.monotonic()

    async def one(factory: Any) -> None:
        async with semaphore:
            try:
                _t, proto = await asyncio.wait_for(loop.create_connection(factory, "127.0.0.1", port), 10)
            except (TimeoutError, OSError):
                return
            readers.append(proto)

    await asyncio.gather(*(one(f) for f in factories))
    pending = [r.ready for r in readers if not r.ready.done()]
    if pending:
        await asyncio.wait(pending, timeout=max(1.0, ready_timeout - (time.monotonic() - t0)))
    return readers, time.monotonic() - t0


def sse_request(path: str, token: str | None) -> bytes:
    """The request line and headers (``Accept: */*``: rest_tornado answers 406 to ``text/event-stream``)."""
    lines = [f"GET {path} HTTP/1.0", "Host: 127.0.0.1", "Accept: */*"]
    if token:
        lines.append(f"X-Auth-Token: {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def summarize(readers: list[_Reader], n: int, expected: int, shared: Shared, fire_started: float) -> dict[str, Any]:
    """Deliveries, loss and latency over all clients that were asked for (not only the connected ones)."""
    connected = [r for r in readers if r.ready.done() and r.ready.result()]
    counts = [r.count for r in connected] + [0] * (n - len(connected))
    total = sum(counts)
    lost = [max(0, expected - c) for c in counts]
    latencies = array("d")
    for r in connected:
        latencies.extend(r.latencies)
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000, 1)

    span = (shared.last_delivery - fire_started) if shared.last_delivery > fire_started else 0.0
    closed_early = sum(1 for r in connected if r.closed)
    lost_sorted = sorted(lost)
    return {
        "streams": n,
        "connected": len(connected),
        "closed_by_server": closed_early,
        "close_reasons": sorted({r.close_reason for r in connected if r.close_reason}),
        "deliveries": total,
        "expected": expected * n,
        "lost_pct": round(100.0 * (expected * n - total) / (expected * n), 2) if n else 0.0,
        "lost_per_client_median": lost_sorted[len(lost_sorted) // 2] if lost_sorted else None,
        "lost_per_client_max": max(lost) if lost else None,
        "clients_complete": sum(1 for c in counts if c >= expected),
        "deliveries_per_s": round(total / span, 1) if span > 0 else 0.0,
        "span_s": round(span, 3),
        "latency_p50_ms": pct(50),
        "latency_p99_ms": pct(99),
        "latency_max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
    }


async def wait_deliveries(shared: Shared, target: int, *, idle: float, cap: float) -> None:
    """Until ``target`` deliveries, or ``idle`` s without one, or ``cap`` s in all."""
    t0 = time.monotonic()
    last_seen = shared.deliveries
    last_change = time.monotonic()
    while shared.deliveries < target:
        await asyncio.sleep(0.05)
        now = time.monotonic()
        if shared.deliveries != last_seen:
            last_seen = shared.deliveries
            last_change = now
        if now - last_change > idle or now - t0 > cap:
            return


class BusReader(_Reader):
    """A raw subscriber of the master's event bus (``master_event_pub.ipc``): the no-HTTP reference.

    3007/3008 publish a plain stream of msgpack maps ``{"head", "body"}``
    with ``body = b"<tag>\\n\\n" + msgpack(data)``.
    """

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        import msgpack  # noqa: PLC0415

        self._msgpack = msgpack
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.status = 200
        self._ready(True)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.unpacker.feed(data)
        found = 0
        for message in self.unpacker:
            body = message.get("body") if isinstance(message, dict) else None
            if not isinstance(body, (bytes, bytearray)):
                continue
            _tag, sep, packed = bytes(body).partition(b"\n\n")
            if not sep or b"sent" not in packed:
                continue
            try:
                event = self._msgpack.unpackb(packed, raw=False, strict_map_key=False)
            except ValueError:
                continue
            sent = event.get("sent") if isinstance(event, dict) else None
            if isinstance(sent, float):
                found += 1
                self.latencies.append(now - sent)
        if found:
            self.count += found
            self.shared.deliveries += found
            self.shared.last_delivery = now


async def open_bus_readers(pub_path: str, n: int, shared: Shared) -> list[_Reader]:
    loop = asyncio.get_running_loop()
    readers: list[_Reader] = []
    for _ in range(n):
        _t, proto = await loop.create_unix_connection(lambda: BusReader(shared), pub_path)
        readers.append(proto)
    return readers
