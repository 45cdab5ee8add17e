"""Lean real-socket clients for event streams, and a way to fire bus events."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from saltapi_twisted.master.framing import frame_for_fire
from saltapi_twisted.sandbox import SaltSandbox


def fire_events(sandbox: SaltSandbox, tag_prefix: str, count: int, data: dict[str, Any] | None = None) -> None:
    """Put *count* events ``<tag_prefix>/<n>`` on the master's bus, back to back."""
    frames = b"".join(
        frame_for_fire(f"{tag_prefix}/{n}", {"n": n, "sent": time.time(), **(data or {})}) for n in range(count)
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(sandbox.sock_dir / "master_event_pull.ipc"))
        sock.sendall(frames)
        time.sleep(0.2)  # let the master read before the socket closes


@dataclass
class SSEMessage:
    tag: str | None = None
    data: Any = None
    id: str | None = None
    comments: list[str] = field(default_factory=list)


class SSEClient:
    """An ``/events`` reader over a raw socket (HTTP/1.0: no chunked framing)."""

    def __init__(self, port: int, token: str | None, path: str = "/events", headers: dict[str, str] | None = None):
        self.port = port
        self.token = token
        self.path = path
        self.headers = headers or {}
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.messages: list[SSEMessage] = []
        self.comments: list[str] = []
        self.closed = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"GET {self.path} HTTP/1.0", "Host: 127.0.0.1", "Accept: text/event-stream"]
        if self.token:
            lines.append(f"X-Auth-Token: {self.token}")
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        status_line = await self._reader.readline()
        self.status = int(status_line.split()[1])
        while True:
            line = (await self._reader.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _sep, value = line.partition(":")
            self.response_headers[name.strip().lower()] = value.strip()

    async def read_until(self, predicate: Any, timeout: float) -> bool:
        """Read messages until ``predicate(self)`` or the timeout/close."""
        assert self._reader is not None
        deadline = time.monotonic() + timeout
        current = SSEMessage()
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                raw = await asyncio.wait_for(self._reader.readline(), remaining)
            except asyncio.TimeoutError:
                return False
            if not raw:
                self.closed = True
                return bool(predicate(self))
            line = raw.decode("utf-8").rstrip("\n")
            if line == "":
                if current.tag is not None or current.data is not None:
                    self.messages.append(current)
                current = SSEMessage()
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _sep, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "tag":
                    current.tag = value
                elif name == "data":
                    current.data = json.loads(value)
                elif name == "id":
                    current.id = value
        return True

    def tags(self, prefix: str = "") -> list[str]:
        return [m.tag for m in self.messages if m.tag and m.tag.startswith(prefix)]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
