"""The security tier: the bad-input catalogue against the real master.

Every row of ``security-checklist.md`` §3 is refused, and three things are
checked around it (checklist §0):

* **nothing executed**: a watcher stream (``GET /events`` with the admin
  token, filtered to ``salt/job/*/new``, ``salt/run/*/new``,
  ``salt/wheel/*/new``, hook events and our own markers) is open before the
  request; a marker event fired onto the master's bus before and after the
  request brackets exactly the events the master published meanwhile, and
  none of them may announce a job. The sentinel path ``S`` stays absent and
  ``GET /`` still answers 200.
* **no master round trip** where the row says so: the API's own
  ``saltapi_master_requests_total`` (``/metrics``, health pings excluded)
  does not move, and the recording proxy below sees no frame.
* **the refusal shape**: the status, ``Content-Type: application/json``,
  ``X-Content-Type-Options: nosniff`` and the ``{"status", "error",
  "return"}`` body (HTTP-framing refusals may be a bare 400/431 + close,
  spec §3.4).

The main API of this tier (:func:`sec`) reaches the master through a
:class:`RecordingProxy`: a ZeroMQ ROUTER that forwards every request-channel
frame to the real master and keeps the decoded load, so tests can also assert
what the API sent (only ``username``/``password``/``eauth`` in ``mk_token``,
never a load without credentials, never an API-added ``jid``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import requests
import yaml
import zmq
from requests.structures import CaseInsensitiveDict

from saltapi_twisted.master.framing import BusDecoder, frame_for_fire
from saltapi_twisted.sandbox import ADMIN_USER, LIMITED_USER, ApiProcess, SaltSandbox

# ----------------------------------------------------------------------------
# tunables

#: Seconds the watcher keeps reading after a request that reached the master
#: with an executing command (publish/runner/wheel), before the closing marker.
QUIET = 1.0
#: The same when the request channel carried no executing command.
QUIET_SHORT = 0.3
#: Commands that can make the master execute something.
EXECUTING = frozenset({"publish", "runner", "wheel"})
#: Tags announcing that something ran.
JOB_NEW = re.compile(r"^salt/(job|run|wheel)/[^/]+/new$")
HOOK_PREFIX = "salt/netapi/hook"
MARKER_PREFIX = "saltsec/marker/"
ALLOWED_ORIGIN = "https://ui.example"
FOREIGN_ORIGIN = "https://evil.example"

#: Counters for the closing summary (rows tried, requests, 5xx, executed).
SUMMARY: dict[str, Any] = {"rows": set(), "requests": 0, "statuses": Counter(), "executed": 0, "5xx": []}


# ----------------------------------------------------------------------------
# the recording proxy


class RecordingProxy(threading.Thread):
    """Forwards request-channel frames to the master and records each load.

    The API's DEALER sockets send ``[b"", payload]``; the proxy's ROUTER sees
    ``[identity, b"", payload]`` and forwards the payload on a DEALER of its
    own per API socket (the 3008 pooled router routes on exactly one
    identity), so replies find their way back.
    """

    def __init__(self, master_port: int) -> None:
        super().__init__(name="recording-proxy", daemon=True)
        self.master = f"tcp://127.0.0.1:{master_port}"
        self.context = zmq.Context()
        self.front = self.context.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.port = self.front.bind_to_random_port("tcp://127.0.0.1")
        self.loads: list[tuple[float, Any]] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        backends: dict[bytes, zmq.Socket] = {}
        owners: dict[zmq.Socket, bytes] = {}
        try:
            while not self._stopping.is_set():
                for sock, _event in poller.poll(100):
                    if sock is self.front:
                        frames = self.front.recv_multipart()
                        identity, payload = frames[0], frames[-1]
                        self.loads.append((time.monotonic(), _decode_load(payload)))
                        backend = backends.get(identity)
                        if backend is None:
                            backend = self.context.socket(zmq.DEALER)
                            backend.setsockopt(zmq.LINGER, 0)
                            backend.connect(self.master)
                            backends[identity] = backend
                            owners[backend] = identity
                            poller.register(backend, zmq.POLLIN)
                        backend.send_multipart([b"", payload])
                    else:
                        frames = sock.recv_multipart()
                        self.front.send_multipart([owners[sock], b"", frames[-1]])
        finally:
            for backend in backends.values():
                backend.close(0)
            self.front.close(0)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
        self.context.term()

    def since(self, index: int, include_ping: bool = False) -> list[Any]:
        """The loads recorded after position *index* (health pings left out)."""
        loads = [load for _t, load in self.loads[index:]]
        if include_ping:
            return loads
        return [load for load in loads if not (isinstance(load, dict) and load.get("cmd") == "ping")]


def _decode_load(payload: bytes) -> Any:
    try:
        frame = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - recorded as it came
        try:
            frame = msgpack.unpackb(payload, raw=True, strict_map_key=False)
        except Exception:  # noqa: BLE001
            return {"undecodable": payload[:200]}
    if isinstance(frame, dict) and "load" in frame:
        return frame["load"]
    return {"unexpected_frame": frame}


# ----------------------------------------------------------------------------
# the event bus, straight from the master


def raw_fire_frame(tag: str, data: dict[str, Any]) -> bytes:
    """:func:`frame_for_fire` without its tag checks (for tags the API's own firer refuses, like NUL)."""
    body = tag.encode("utf-8") + b"\n\n" + msgpack.packb(data, use_bin_type=True)
    message = msgpack.packb({"head": {}, "body": body}, use_bin_type=True)
    return struct.pack(">I", len(message)) + message


def fire(sandbox: SaltSandbox, events: list[tuple[str, dict[str, Any]]], raw: bool = False) -> None:
    """Put *events* on the master's bus, back to back, in order."""
    encode = raw_fire_frame if raw else frame_for_fire
    payload = b"".join(encode(tag, data) for tag, data in events)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(sandbox.sock_dir / "master_event_pull.ipc"))
        sock.sendall(payload)


class RawBus(threading.Thread):
    """Every event the master publishes, read from its publisher socket."""

    def __init__(self, sandbox: SaltSandbox) -> None:
        super().__init__(name="raw-bus", daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(sandbox.sock_dir / "master_event_pub.ipc"))
        self.sock.settimeout(0.2)
        self.raw = bytearray()
        self.events: list[tuple[str, Any]] = []
        self._stopping = threading.Event()
        self.start()

    def run(self) -> None:
        decoder = BusDecoder()
        while not self._stopping.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.raw += data
            self.events.extend(decoder.feed(data))

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(tag, data) for tag, data in list(self.events)):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
        self.sock.close()


# ----------------------------------------------------------------------------
# raw HTTP


@dataclass
class RawResponse:
    """One HTTP response read off a raw socket (duck-types ``requests.Response``)."""

    status_code: int
    reason: str
    headers: CaseInsensitiveDict
    content: bytes
    chunked: bool = False

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class RawExchange:
    """What a raw connection got back: the responses, whether it closed, and when."""

    responses: list[RawResponse]
    closed: bool
    elapsed: float
    data: bytes
    error: str | None = None

    @property
    def first(self) -> RawResponse:
        assert self.responses, f"no response; closed={self.closed} error={self.error} data={self.data[:200]!r}"
        return self.responses[0]


def parse_responses(data: bytes) -> list[RawResponse]:
    """Every complete HTTP/1.x response in *data* (Content-Length, chunked, or up to the end)."""
    responses = []
    rest = data
    while rest.startswith(b"HTTP/"):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        headers: CaseInsensitiveDict = CaseInsensitiveDict()
        for line in lines[1:]:
            name, _c, value = line.partition(":")
            name = name.strip()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if chunked:
            body = bytearray()
            while True:
                size_line, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    rest = rest[2:] if rest.startswith(b"\r\n") else rest
                    break
                body += rest[:size]
                rest = rest[size + 2 :]
            content = bytes(body)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            content, rest = rest[:length], rest[length:]
        else:
            content, rest = rest, b""
        responses.append(RawResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, content, chunked))
    return responses


def raw_exchange(
    port: int,
    data: bytes | list[bytes],
    *,
    timeout: float = 30.0,
    pause: float = 0.0,
    until_close: bool = True,
    expect: int = 1,
    host: str = "127.0.0.1",
) -> RawExchange:
    """Send *data* (pieces separated by *pause* seconds) and read until the server closes.

    Reading runs beside the writing, so a response sent while the client is
    still uploading (an early 413) is seen even if the upload then fails.
    With ``until_close=False`` reading stops once *expect* complete responses
    arrived.
    """
    pieces = [data] if isinstance(data, bytes) else list(data)
    sock = socket.create_connection((host, port), timeout=timeout)
    received = bytearray()
    closed = threading.Event()
    done = threading.Event()
    started = time.monotonic()
    result: dict[str, Any] = {}

    def reader() -> None:
        deadline = started + timeout
        try:
            while time.monotonic() < deadline and not done.is_set():
                readable, _w, _x = select.select([sock], [], [], 0.1)
                if not readable:
                    continue
                chunk = sock.recv(65536)
                if not chunk:
                    closed.set()
                    return
                received.extend(chunk)
                if not until_close and _complete(bytes(received), expect):
                    return
        except (OSError, ValueError) as exc:
            result["error"] = repr(exc)
            closed.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for index, piece in enumerate(pieces):
            if index and pause and closed.wait(pause):
                break
            if closed.is_set():
                break
            sock.sendall(piece)
    except OSError as exc:
        result["send_error"] = repr(exc)
    thread.join(max(0.0, started + timeout - time.monotonic()) + 1)
    done.set()
    thread.join(2)
    elapsed = time.monotonic() - started
    sock.close()
    return RawExchange(
        parse_responses(bytes(received)),
        closed.is_set(),
        elapsed,
        bytes(received),
        result.get("error") or result.get("send_error"),
    )


def _complete(data: bytes, expect: int) -> bool:
    responses = parse_responses(data)
    if len(responses) < expect:
        return False
    last = responses[expect - 1]
    if last.chunked:
        return data.rstrip().endswith(b"0")  # the terminal chunk arrived
    return "content-length" in last.headers


def http_request(
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """The bytes of one request (headers given as-is, latin-1)."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _v in items}
    if "host" not in names:
        items.insert(0, ("Host", "127.0.0.1"))
    if content_length and body and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
    return head.encode("latin-1") + body


# ----------------------------------------------------------------------------
# an SSE reader on a raw socket (HTTP/1.1, chunked; WHATWG line rules)


@dataclass
class SSEEvent:
    tag: str | None
    data: str | None
    id: str | None


class StreamWatcher:
    """``GET /events`` read in a thread; events parsed the way ``EventSource`` parses them.

    Lines end at CRLF, LF or CR; a blank line dispatches. ``tag:`` is kept
    although EventSource ignores it.
    """

    def __init__(
        self,
        port: int,
        token: str | None,
        path: str = "/events",
        headers: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        self.port = port
        self.token = token
        self.path = path
        self.headers = headers or {}
        self.tls = tls
        self.status: int | None = None
        self.response_headers: CaseInsensitiveDict = CaseInsensitiveDict()
        self.events: list[SSEEvent] = []
        self.comments: list[str] = []
        self.fields: list[tuple[str, str]] = []
        self.raw_text = bytearray()
        self.body = b""
        self.ended = False  # terminal chunk
        self.closed = False
        self.closed_at: float | None = None
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, timeout: float = 30.0) -> StreamWatcher:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        self.sock = sock
        headers = {"Accept": "text/event-stream", **self.headers}
        if self.token:
            headers["X-Auth-Token"] = self.token
        sock.sendall(http_request("GET", self.path, headers))
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        head, _sep, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _c, value = line.partition(":")
            self.response_headers[name.strip()] = value.strip()
        chunked = "chunked" in self.response_headers.get("transfer-encoding", "").lower()
        if self.status != 200:
            self.body = rest
            sock.close()
            self.closed = True
            return self
        self._thread = threading.Thread(target=self._read, args=(rest, chunked), daemon=True)
        self._thread.start()
        return self

    def _read(self, initial: bytes, chunked: bool) -> None:
        assert self.sock is not None
        self.sock.settimeout(0.2)
        wire = bytearray(initial)
        text = bytearray()
        state: dict[str, Any] = {"tag": None, "data": None, "id": None}
        while True:
            if chunked:
                while True:
                    line_end = wire.find(b"\r\n")
                    if line_end < 0:
                        break
                    size = int(bytes(wire[:line_end]).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.ended = True
                        del wire[:]
                        break
                    if len(wire) < line_end + 2 + size + 2:
                        break
                    text += wire[line_end + 2 : line_end + 2 + size]
                    self.raw_text += wire[line_end + 2 : line_end + 2 + size]
                    del wire[: line_end + 2 + size + 2]
            else:
                text += wire
                self.raw_text += wire
                del wire[:]
            self._parse(text, state, final=self.ended)
            if self.ended or self._stopping.is_set():
                break
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._parse(text, state, final=True)
                break
            wire += chunk
        self.closed = True
        self.closed_at = time.monotonic()

    def _parse(self, text: bytearray, state: dict[str, Any], final: bool) -> None:
        while True:
            match = re.search(rb"\r\n|\r|\n", text)
            if match is None:
                return
            if match.group() == b"\r" and match.end() == len(text) and not final:
                return  # maybe the first half of a CRLF
            line = bytes(text[: match.start()]).decode("utf-8", "replace")
            del text[: match.end()]
            if line == "":
                if state["data"] is not None or state["tag"] is not None:
                    self.events.append(SSEEvent(state["tag"], state["data"], state["id"]))
                state.update(tag=None, data=None)
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            self.fields.append((name, value))
            if name == "data":
                state["data"] = value if state["data"] is None else state["data"] + "\n" + value
            elif name == "tag":
                state["tag"] = value
            elif name == "id":
                state["id"] = value

    def tags(self) -> list[str]:
        return [e.tag for e in self.events if e.tag is not None]

    def wait(self, predicate: Any, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            if self.closed:
                return bool(predicate(self))
            time.sleep(0.02)
        return bool(predicate(self))

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()


# ----------------------------------------------------------------------------
# a raw websocket client (frames built by hand: oversize, unmasked, bad opcodes)


def upgrade_request(path: str, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a websocket upgrade request for *path*."""
    base = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    return http_request("GET", path, {**base, **(headers or {})})


class RawWebSocket:
    """One websocket connection over a plain socket."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(upgrade_request(path, headers))
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        head, _sep, self.buffer = buffer.partition(b"\r\n\r\n")
        self.response = parse_responses(head + b"\r\n\r\n" + (b"" if b"101" in head.split(b"\r\n")[0] else self.buffer))
        self.status = self.response[0].status_code if self.response else 0
        self.headers = self.response[0].headers if self.response else CaseInsensitiveDict()

    def send_frame(
        self,
        opcode: int,
        payload: bytes,
        *,
        fin: bool = True,
        rsv1: bool = False,
        mask: bool = True,
        declared: int | None = None,
    ) -> None:
        """Send one frame; *declared* overrides the length in the header (the payload is sent as given)."""
        length = len(payload) if declared is None else declared
        first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        mask_bit = 0x80 if mask else 0
        if length < 126:
            header = struct.pack("!BB", first, mask_bit | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, length)
        if mask:
            key = b"\x01\x02\x03\x04"
            header += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if len(payload) < 1 << 16 else _mask(
                payload, key
            )
        try:
            self.sock.sendall(header + payload)
        except OSError:
            pass  # the server may close before the payload is in

    def close_code(self, timeout: float = 15.0) -> tuple[int | None, str]:
        """Read frames until the server's close frame: its code and reason (None on a bare close)."""
        deadline = time.monotonic() + timeout
        data = bytearray(self.buffer)
        while time.monotonic() < deadline:
            while len(data) >= 2:
                opcode = data[0] & 0x0F
                length = data[1] & 0x7F
                offset = 2
                if length == 126:
                    if len(data) < 4:
                        break
                    length = struct.unpack("!H", data[2:4])[0]
                    offset = 4
                elif length == 127:
                    if len(data) < 10:
                        break
                    length = struct.unpack("!Q", data[2:10])[0]
                    offset = 10
                if len(data) < offset + length:
                    break
                payload = bytes(data[offset : offset + length])
                del data[: offset + length]
                if opcode == 0x8:
                    if len(payload) >= 2:
                        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
                    return None, ""
            remaining = deadline - time.monotonic()
            readable, _w, _x = select.select([self.sock], [], [], max(0.0, min(remaining, 0.2)))
            if not readable:
                continue
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None, "reset"
            if not chunk:
                return None, "eof"
            data += chunk
        raise AssertionError(f"no close frame within {timeout}s")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _mask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


# ----------------------------------------------------------------------------
# API processes


class SecApiProcess(ApiProcess):
    """An :class:`ApiProcess` whose copy of the master config can be changed."""

    def __init__(
        self,
        root: Path,
        sandbox: SaltSandbox,
        block: dict[str, Any],
        name: str,
        master_overrides: dict[str, Any] | None = None,
        master_drop: tuple[str, ...] = (),
    ) -> None:
        super().__init__(root, sandbox, block, name=name)
        self.master_overrides = dict(master_overrides or {})
        self.master_drop = master_drop

    def write_config(self) -> None:
        options = yaml.safe_load(self.sandbox.master_config_path.read_text())
        for key in ("rest_twisted", "rest_tornado", *self.master_drop):
            options.pop(key, None)
        options.update(self.master_overrides)
        options["rest_twisted"] = self.block
        self.config_path.write_text(yaml.safe_dump(options, default_flow_style=False))


def count_request(response: Any) -> None:
    """Add one response to the tier's summary (and remember a 5xx)."""
    SUMMARY["requests"] += 1
    status = int(getattr(response, "status_code", 0) or 0)
    SUMMARY["statuses"][status] += 1
    if status >= 500:
        SUMMARY["5xx"].append(status)


class Api:
    """A running API of this tier and a ``requests`` helper bound to it."""

    def __init__(self, process: ApiProcess) -> None:
        self.process = process
        self.url = process.url
        self.port = int(process.block["port"])

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("verify", False)
        response = requests.request(method, self.url + path, **kwargs)  # noqa: S113 - timeout set above
        count_request(response)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def run(self, chunks: Any, token: str | None = None, path: str = "/", **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["X-Auth-Token"] = token
        return self.post(path, json=chunks, headers=headers, **kwargs)

    def raw(self, data: bytes | list[bytes], **kwargs: Any) -> RawExchange:
        exchange = raw_exchange(self.port, data, **kwargs)
        for response in exchange.responses:
            count_request(response)
        return exchange

    def login(self, user: tuple[str, str] = ADMIN_USER, **extra: Any) -> str:
        response = self.post("/login", json={"username": user[0], "password": user[1], "eauth": "file", **extra})
        assert response.status_code == 200, response.text
        return str(response.json()["return"][0]["token"])

    def master_requests(self) -> Counter[str]:
        """``saltapi_master_requests_total`` by ``cmd``, health pings left out."""
        response = requests.get(self.url + "/metrics", timeout=30, verify=False)
        assert response.status_code == 200, response.text
        counts: Counter[str] = Counter()
        for line in response.text.splitlines():
            if not line.startswith("saltapi_master_requests_total{"):
                continue
            labels, _sep, value = line.rpartition(" ")
            cmd = re.search(r'cmd="([^"]*)"', labels)
            name = cmd.group(1) if cmd else "?"
            if name != "ping":
                counts[name] += int(float(value))
        return counts

    def log(self) -> str:
        try:
            return self.process.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return True
            time.sleep(0.1)
        return needle in self.log()


# common to every API of the tier: metrics readable without a token
BASE_BLOCK: dict[str, Any] = {
    "disable_ssl": True,
    "metrics": True,
    "metrics_disable_auth": True,
    "events_keepalive": 1,
    "login_rate_limit": 10000,
}


def start_api(
    sandbox: SaltSandbox, root: Path, name: str, block: dict[str, Any], **kwargs: Any
) -> Iterator[Api]:
    process = SecApiProcess(root, sandbox, {**BASE_BLOCK, **block}, name=name, **kwargs)
    process.start(timeout=60)
    try:
        yield Api(process)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def proxy(salt_master: SaltSandbox) -> Iterator[RecordingProxy]:
    recorder = RecordingProxy(salt_master.ret_port)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()


@pytest.fixture(scope="session")
def sec(salt_master: SaltSandbox, proxy: RecordingProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The tier's main API: plain HTTP, websockets, ``cors_origin`` a list, via the recording proxy."""
    yield from start_api(
        salt_master,
        tmp_path_factory.mktemp("sec"),
        "sec",
        {"websockets": True, "cors_origin": [ALLOWED_ORIGIN]},
        master_overrides={"ret_port": proxy.port},
    )


@pytest.fixture(scope="session")
def hook_api(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Hooks without auth, tight limits and deadlines, no ``cors_origin``."""
    yield from start_api(
        salt_master,
        tmp_path_factory.mktemp("hookapi"),
        "hookapi",
        {
            "websockets": True,
            "webhook_disable_auth": True,
            "webhook_rate_limit": 5,
            "request_header_timeout": 2,
            "request_body_timeout": 3,
            "max_connections_per_ip": 60,
            "events_queue_max": 100,
        },
    )


@pytest.fixture(scope="session")
def star_api(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The risky-config API (G1, G2, G5, G6): all interfaces without TLS, ``cors_origin: "*"``
    with websockets, no ``netapi_enable_clients``, a misspelt key."""
    yield from start_api(
        salt_master,
        tmp_path_factory.mktemp("starapi"),
        "starapi",
        {"address": "0.0.0.0", "websockets": True, "cors_origin": "*", "webhook_disable_auht": True},  # noqa: S104
        master_drop=("netapi_enable_clients",),
    )


def make_rsa_cert(directory: Path, *, expired: bool = False, name: str = "rsa") -> tuple[Path, Path]:
    """A self-signed RSA certificate for 127.0.0.1 (static-RSA suites become possible, so T2 means something)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired else (
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=30),
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    crt_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return crt_path, key_path


@pytest.fixture(scope="session")
def tls_api(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """TLS with an RSA certificate that has expired (T6) and a key readable by others (G3)."""
    root = tmp_path_factory.mktemp("tlsapi")
    crt, key = make_rsa_cert(root, expired=True)
    key.chmod(0o644)
    block = {**BASE_BLOCK, "ssl_crt": str(crt), "ssl_key": str(key), "request_header_timeout": 2}
    block.pop("disable_ssl")
    process = SecApiProcess(root, salt_master, block, name="tlsapi")
    process.start(timeout=60)
    try:
        yield Api(process)
    finally:
        process.stop()


# ----------------------------------------------------------------------------
# tokens


@dataclass
class Tokens:
    admin: str  # A
    limited: str  # T


@pytest.fixture(scope="session")
def tokens(sec: Api) -> Tokens:
    return Tokens(admin=sec.login(ADMIN_USER), limited=sec.login(LIMITED_USER))


def forge_token(sandbox: SaltSandbox, template: str, expire_in: float) -> str:
    """A new token of *template*'s user, expiring *expire_in* seconds from now.

    Written into the master's token store (``cachedir/tokens/<token>.p``), the
    way ``mk_token`` writes it; the master's ``token_expire`` cannot be
    lowered per user without ``token_expire_user_override``.
    """
    bank = sandbox.cachedir / "tokens"
    raw = msgpack.unpackb((bank / f"{template}.p").read_bytes(), raw=False)
    data = raw["data"] if isinstance(raw, dict) and "data" in raw else raw
    token = uuid.uuid4().hex + uuid.uuid4().hex
    now = time.time()
    data = {**data, "token": token, "start": now, "expire": now + expire_in}
    envelope = {"data": data, "_expires": int(now + 3600)} if "_expires" in raw else data
    path = bank / f"{token}.p"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgpack.packb(envelope, use_bin_type=True))
    os.replace(tmp, path)
    return token


# ----------------------------------------------------------------------------
# the nothing-executed guard


@pytest.fixture(scope="session")
def watcher_state(sec: Api, tokens: Tokens) -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"watcher": None}
    yield state
    if state["watcher"] is not None:
        state["watcher"].close()


WATCH_PATH = (
    "/events?tag=salt/job/*/new&tag=salt/run/*/new&tag=salt/wheel/*/new"
    f"&tag={HOOK_PREFIX}&tag={MARKER_PREFIX}"
)


@dataclass
class GuardResult:
    """What happened on the bus and the request channel during a guarded block."""

    tags: list[str] = field(default_factory=list)
    loads: list[Any] = field(default_factory=list)
    master_delta: Counter[str] = field(default_factory=Counter)

    @property
    def hook_tags(self) -> list[str]:
        return [t for t in self.tags if t.startswith(HOOK_PREFIX)]


class Ctx:
    """Per-test helpers: the APIs, tokens, guard and refusal checks."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.salt_master: SaltSandbox = request.getfixturevalue("salt_master")
        self.sec: Api = request.getfixturevalue("sec")
        self.proxy: RecordingProxy = request.getfixturevalue("proxy")
        self.tokens: Tokens = request.getfixturevalue("tokens")
        self._watch: dict[str, Any] = request.getfixturevalue("watcher_state")
        self.sentinel: Path = self.salt_master.sentinel
        self.guards = 0
        self.apis_used: set[Api] = set()

    # fixtures on demand (each starts a process the first time)
    def api(self, name: str) -> Api:
        api: Api = self._request.getfixturevalue(name)
        self.apis_used.add(api)
        return api

    @property
    def A(self) -> str:  # noqa: N802 - the checklist's names
        return self.tokens.admin

    @property
    def T(self) -> str:  # noqa: N802
        return self.tokens.limited

    def tmp_path(self) -> Path:
        return Path(self._request.getfixturevalue("tmp_path"))

    # -- watcher -----------------------------------------------------------------

    def watcher(self) -> StreamWatcher:
        current: StreamWatcher | None = self._watch["watcher"]
        if current is None or current.closed:
            if current is not None:
                current.close()
            current = StreamWatcher(self.sec.port, self.A, WATCH_PATH).start()
            assert current.status == 200, f"the watcher stream could not open: {current.status}"
            self._watch["watcher"] = current
        return current

    def mark(self) -> int:
        """Fire a marker onto the master's bus; once the watcher has it, its index."""
        watcher = self.watcher()
        tag = MARKER_PREFIX + uuid.uuid4().hex
        fire(self.salt_master, [(tag, {})])
        assert watcher.wait(lambda w: tag in w.tags(), 20), f"the watcher did not see the marker {tag}"
        return watcher.tags().index(tag)

    @contextlib.contextmanager
    def guard(
        self, api: Api | None = None, *, round_trip: bool | str = True, hooks: bool = False, control: bool = False
    ) -> Iterator[GuardResult]:
        """Around a refused request: nothing executed, S absent, and the round trips allowed.

        :param round_trip: ``True`` (any), ``False`` (none at all) or ``"auth"``
            (only ``get_token``: the token check of an authenticated route).
        :param hooks: hook events may be fired.
        :param control: the block is expected to execute (checks the guard itself).
        """
        api = api or self.sec
        result = GuardResult()
        first = self.mark()
        before = api.master_requests()
        proxied = len(self.proxy.loads)
        yield result
        result.loads = self.proxy.since(proxied)
        result.master_delta = api.master_requests() - before
        # Only a publish, runner or wheel request can start anything: without
        # one, a short wait is enough for the closing marker to be meaningful.
        executing = any(cmd in EXECUTING for cmd in result.master_delta) or any(
            isinstance(load, dict) and load.get("cmd") in EXECUTING for load in result.loads
        )
        time.sleep(QUIET if executing else QUIET_SHORT)
        last = self.mark()
        result.tags = [t for t in self.watcher().tags()[first + 1 : last] if not t.startswith(MARKER_PREFIX)]
        result.master_delta = api.master_requests() - before
        self.guards += 1
        executed = [t for t in result.tags if JOB_NEW.match(t)]
        if control:
            assert executed, "the guard did not see a job that ran"
            return
        SUMMARY["executed"] += len(executed)
        assert not executed, f"something executed: {executed}"
        if not hooks:
            assert not result.hook_tags, f"hook events fired: {result.hook_tags}"
        assert not self.sentinel.exists(), "the sentinel S was created"
        if round_trip is False:
            assert not result.master_delta, f"master round trips: {dict(result.master_delta)}"
            if api is self.sec:
                assert not result.loads, f"frames sent to the master: {result.loads}"
        elif round_trip == "auth":
            assert set(result.master_delta) <= {"get_token"}, f"master round trips: {dict(result.master_delta)}"
            if api is self.sec:
                cmds = {load.get("cmd") if isinstance(load, dict) else None for load in result.loads}
                assert cmds <= {"get_token"}, f"frames sent to the master: {result.loads}"

    # -- checks --------------------------------------------------------------------

    def refused(
        self, response: Any, status: int | tuple[int, ...], word: str | None = None, *, bare: bool = False
    ) -> Any:
        """The refusal shape: status, JSON error body, Content-Type and nosniff (bare: framing refusals)."""
        statuses = (status,) if isinstance(status, int) else status
        code = response.status_code
        assert code in statuses, f"{code} not in {statuses}: {response.text[:500]}"
        assert code < 500
        content_type = response.headers.get("Content-Type")
        if bare and not content_type:
            return None
        assert content_type == "application/json", content_type
        assert response.headers.get("X-Content-Type-Options") == "nosniff"
        body = response.json()
        assert set(body) == {"status", "error", "return"}, body
        assert body["status"].startswith(f"{code} "), body
        assert isinstance(body["return"], str) and body["return"]
        if word is not None:
            assert body["error"] == word, body
        return body

    def alive(self) -> None:
        """``GET /`` still answers 200 on every API the test used."""
        for api in {self.sec, *self.apis_used}:
            response = api.get("/")
            assert response.status_code == 200, (api.url, response.status_code)
            assert api.process.proc is not None and api.process.proc.poll() is None


@pytest.fixture
def ctx(request: pytest.FixtureRequest) -> Iterator[Ctx]:
    context = Ctx(request)
    yield context


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SUMMARY["rows"] and not SUMMARY["requests"]:
        return
    statuses = SUMMARY["statuses"]
    terminalreporter.write_sep("-", "security tier")
    terminalreporter.write_line(
        f"catalogue rows tried: {len(SUMMARY['rows'])}; requests sent: {SUMMARY['requests']}; "
        f"executed: {SUMMARY['executed']}; 5xx: {len(SUMMARY['5xx'])}; "
        f"statuses: {dict(sorted(statuses.items()))}"
    )


__all__ = [
    "ALLOWED_ORIGIN",
    "FOREIGN_ORIGIN",
    "Api",
    "Ctx",
    "RawBus",
    "RawResponse",
    "RawWebSocket",
    "StreamWatcher",
    "fire",
    "forge_token",
    "http_request",
    "make_rsa_cert",
    "parse_responses",
    "raw_exchange",
    "upgrade_request",
]
