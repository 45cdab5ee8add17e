"""A lean closed-loop HTTP/1.1 client (asyncio, keep-alive) for slow requests.

wrk counts only the requests that complete before its duration ends, which
biases runs whose requests take seconds (a synchronous ``test.ping`` at c=8).
This client stops *issuing* at the deadline (or after ``max_requests``) and
waits for the requests in flight (drain), so the rate is completed requests
over the time to the last completion. At the rates these scenarios reach (a
few to a few hundred per second) a Python client costs nothing measurable;
the fast scenarios (``login``) use wrk.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any


class _Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, timeout: float) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=2**24)
        assert self.reader is not None
        self.writer.write(raw)
        return await asyncio.wait_for(self._response(), timeout)

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed before a response")
        status = int(status_line.split(b" ", 2)[1])
        length: int | None = None
        chunked = close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _sep, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and value == b"close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body = await self.reader.read()
            close = True
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def build_request(method: str, path: str, port: int, token: str | None, body: Any) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json"]
    payload = b""
    if token:
        lines.append(f"X-Auth-Token: {token}")
    if body is not None:
        payload = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def closed_loop(
    port: int,
    method: str,
    path: str,
    *,
    concurrency: int,
    duration: float,
    token: str | None = None,
    body: Any = None,
    checks: list[str] | None = None,
    max_requests: int = 0,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """C connections, each sending its next request when the previous response arrived."""
    raw = build_request(method, path, port, token, body)
    patterns = [re.compile(p.encode()) for p in checks or []]
    latencies: list[float] = []
    counts = {"ok": 0, "bad_status": 0, "bad_body": 0, "errors": 0, "issued": 0}
    t0 = time.monotonic()
    deadline = t0 + duration
    last = [t0]

    async def worker() -> None:
        conn = _Conn(port)
        try:
            while time.monotonic() < deadline and not (max_requests and counts["issued"] >= max_requests):
                counts["issued"] += 1
                t = time.monotonic()
                try:
                    status, response = await conn.request(raw, timeout)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    counts["errors"] += 1
                    conn.close()
                    continue
                now = time.monotonic()
                last[0] = max(last[0], now)
                latencies.append(now - t)
                if status != 200:
                    counts["bad_status"] += 1
                elif not all(p.search(response) for p in patterns):
                    counts["bad_body"] += 1
                else:
                    counts["ok"] += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = last[0] - t0
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "ok": counts["ok"],
        "failed": counts["bad_status"] + counts["bad_body"] + counts["errors"],
        "bad_body": counts["bad_body"],
        "bad_status": counts["bad_status"],
        "errors": counts["errors"],
        "seconds": round(seconds, 3),
        "rps": round(counts["ok"] / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
    }
