"""Lean real-socket clients for event streams, and a way to fire bus events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
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


class WSClient:
    """A websocket reader (``/all_events/<token>``, ``/ws/<token>``) over asyncio streams.

    It sends ``websocket client ready`` after the handshake (unless told not
    to), answers pings, and keeps every text message it receives.
    """

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.path = path
        self.headers = headers or {}
        self.status: int | None = None
        self.messages: list[str] = []
        self.closed = False
        self.close_code: int | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._fragments: list[bytes] = []

    async def connect(self, ready: bool = True) -> None:
        """Open the connection; the handshake must answer 101."""
        key = base64.b64encode(os.urandom(16)).decode()
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {key}",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        status_line = await self._reader.readline()
        self.status = int(status_line.split()[1])
        accept = None
        while True:
            line = (await self._reader.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _sep, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-accept":
                accept = value.strip()
        assert self.status == 101, self.status
        expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()  # noqa: S324
        assert accept == expected, accept
        if ready:
            await self.send(1, b"websocket client ready")

    async def send(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame."""
        assert self._writer is not None
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._writer.write(header + mask + masked)
        await self._writer.drain()

    async def _frame(self) -> tuple[bool, int, bytes]:
        assert self._reader is not None
        first, second = await self._reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self._reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self._reader.readexactly(8))
        mask = await self._reader.readexactly(4) if second & 0x80 else b""
        payload = await self._reader.readexactly(size)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    async def read_until(self, predicate: Any, timeout: float) -> bool:
        """Read messages until ``predicate(self)`` or the timeout/close."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return bool(predicate(self))
            try:
                fin, opcode, payload = await asyncio.wait_for(self._frame(), remaining)
            except TimeoutError:
                return False
            except (asyncio.IncompleteReadError, ConnectionError):
                self.closed = True
                return bool(predicate(self))
            if opcode == 0x9:
                await self.send(0xA, payload)
            elif opcode == 0x8:
                self.closed = True
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            elif opcode in (0x1, 0x0):
                self._fragments.append(payload)
                if fin:
                    self.messages.append(b"".join(self._fragments).decode("utf-8"))
                    self._fragments = []
        return True

    def tags(self, prefix: str = "") -> list[str]:
        """The tags of the events received (``/all_events`` JSON or ``/ws`` ``data: `` lines)."""
        found = []
        for message in self.messages:
            text = message[len("data: "):] if message.startswith("data: ") else message
            try:
                tag = json.loads(text).get("tag")
            except (ValueError, AttributeError):
                continue
            if isinstance(tag, str) and tag.startswith(prefix):
                found.append(tag)
        return found

    async def close(self, code: int = 1000) -> None:
        """Send a close frame and close the connection (without waiting for the reply)."""
        if self._writer is not None:
            try:
                await self.send(0x8, struct.pack("!H", code))
            except (ConnectionError, RuntimeError):
                pass
            self._writer.close()
            self._writer = None


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
