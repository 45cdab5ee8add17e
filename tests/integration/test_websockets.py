"""Websockets against the real master: framing, auth, origins, limits, fan-out, cleanup.

Events are fired straight onto the master's pull socket (the same framing the
API's ``/hook`` uses), so hundreds can be sent back to back.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from websocket import ABNF

from saltapi_twisted.master.framing import frame_for_fire
from saltapi_twisted.sandbox import LIMITED_USER, ApiProcess, SaltSandbox

from ..conftest import MINIONS, Api, make_cert

READY = "websocket client ready"
REPLY = "server received message"
FOREIGN = "https://evil.example"
ALLOWED = "https://ui.example"  # the session API's cors_origin


# ----------------------------------------------------------------------------
# helpers


def ws_url(api: Api, path: str) -> str:
    return "ws" + api.url[len("http"):] + path


def connect(api: Api, path: str, **options: Any) -> websocket.WebSocket:
    options.setdefault("timeout", 30)
    return websocket.create_connection(ws_url(api, path), **options)


class Refusal:
    """An upgrade the API answered over plain HTTP."""

    def __init__(self, status_code: int, body: Any, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.body = body
        self.headers = headers


def refused(api: Api, path: str, origin: str | None = None, cookie: str | None = None,
            header: list[str] | None = None) -> Refusal:
    """Send an upgrade request that must be refused before the handshake; the answer."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    if origin is not None:
        headers["Origin"] = origin
    if cookie is not None:
        headers["Cookie"] = cookie
    for line in header or []:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    response = api.get(path, headers=headers, timeout=30, stream=True)
    try:
        assert response.status_code != 101, f"{path} was upgraded"
        body = response.json() if response.headers.get("Content-Type") == "application/json" else None
        return Refusal(response.status_code, body, dict(response.headers))
    finally:
        response.close()


def error_word(refusal: Refusal) -> str:
    body = refusal.body
    assert isinstance(body, dict) and set(body) == {"status", "error", "return"}, body
    assert refusal.headers.get("X-Content-Type-Options") == "nosniff"
    return str(body["error"])


def fire(sandbox: SaltSandbox, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Put *events* on the master's bus, back to back, in order."""
    payload = b"".join(frame_for_fire(tag, data) for tag, data in events)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(sandbox.sock_dir / "master_event_pull.ipc"))
        sock.sendall(payload)


def next_message(ws: websocket.WebSocket, deadline: float) -> str | None:
    """The next text message, or None when the server closed."""
    ws.settimeout(max(0.1, deadline - time.monotonic()))
    opcode, frame = ws.recv_data_frame()
    if opcode == ABNF.OPCODE_CLOSE:
        ws.close_frame = frame  # type: ignore[attr-defined]
        return None
    assert opcode == ABNF.OPCODE_TEXT, opcode
    return frame.data.decode("utf-8")


def wait_for(ws: websocket.WebSocket, predicate: Any, timeout: float = 60.0) -> tuple[str, list[str]]:
    """Read until a message satisfies *predicate*; it and everything read before it."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        message = next_message(ws, deadline)
        if message is None:
            raise AssertionError(f"closed {close_status(ws)} while waiting; got {seen[-5:]}")
        if predicate(message):
            return message, seen
        seen.append(message)
    raise AssertionError(f"no matching message in {timeout}s; got {seen[-5:]}")


def close_status(ws: websocket.WebSocket) -> tuple[int | None, str]:
    frame = getattr(ws, "close_frame", None)
    if frame is None or len(frame.data) < 2:
        return None, ""
    return struct.unpack("!H", frame.data[:2])[0], frame.data[2:].decode("utf-8", "replace")


def wait_close(ws: websocket.WebSocket, timeout: float = 30.0) -> tuple[int | None, str]:
    """Read (and drop) messages until the server's close frame; its code and reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = next_message(ws, deadline)
        except websocket.WebSocketTimeoutException:
            break
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return None, ""
        if message is None:
            return close_status(ws)
    raise AssertionError(f"the server did not close within {timeout}s")


def event_of(message: str) -> dict[str, Any]:
    event = json.loads(message)
    assert set(event) == {"data", "tag"}, event
    return event


def tagged(prefix: str) -> Any:
    return lambda message: json.loads(message.removeprefix("data: ")).get("tag", "").startswith(prefix)


def frames(message: str) -> dict[str, Any]:
    assert message.endswith("\n\n"), message[-20:]
    assert not message.startswith("data: ")
    return json.loads(message)


def api_pid(api: Api) -> int:
    proc = api.process.proc
    assert proc is not None
    return proc.pid


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stats(api: Api, token: str) -> dict[str, Any]:
    response = api.get("/stats", headers={"X-Auth-Token": token})
    assert response.status_code == 200, response.text
    return dict(response.json()["saltapi_twisted"])


@pytest.fixture(scope="module")
def api_nocors(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A second API: websockets, no cors_origin, a small queue for the overflow test."""
    process = ApiProcess(
        tmp_path_factory.mktemp("api_nocors"),
        salt_master,
        {"disable_ssl": True, "websockets": True, "events_queue_max": 20, "ws_max_message_size": 4096},
        name="nocors",
    )
    process.start()
    try:
        yield Api(process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api_star(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A third API with ``cors_origin: "*"``."""
    process = ApiProcess(
        tmp_path_factory.mktemp("api_star"),
        salt_master,
        {"disable_ssl": True, "websockets": True, "cors_origin": "*"},
        name="star",
    )
    process.start()
    try:
        yield Api(process)
    finally:
        process.stop()


# ----------------------------------------------------------------------------
# /all_events


def test_all_events_sends_nothing_before_ready(api: Api, admin_token: str, salt_master: SaltSandbox) -> None:
    run = uuid.uuid4().hex
    watcher = connect(api, f"/all_events/{admin_token}")
    quiet = connect(api, f"/all_events/{admin_token}")
    try:
        watcher.send(READY)
        # once the watcher has it, the API has offered it to every stream
        fire(salt_master, [(f"test/ws/{run}/before", {"n": 1})])
        wait_for(watcher, tagged(f"test/ws/{run}/before"))
        quiet.send(READY)
        quiet.send(READY)  # repeats are ignored
        quiet.send("anything")  # ignored, no reply
        fire(salt_master, [(f"test/ws/{run}/after", {"n": 2, "nested": {"k": ["v"]}})])
        message, before = wait_for(quiet, tagged(f"test/ws/{run}/after"))
        assert not any(f"test/ws/{run}/before" in m for m in before)
        assert not any(m == REPLY for m in before)
        event = event_of(message)
        assert event["tag"] == f"test/ws/{run}/after"
        assert event["data"]["n"] == 2 and event["data"]["nested"] == {"k": ["v"]}
    finally:
        watcher.close()
        quiet.close()


def test_all_events_without_origin_and_with_allowed_origin(api: Api, admin_token: str) -> None:
    for options in ({"suppress_origin": True}, {"origin": ALLOWED}, {}):
        ws = connect(api, f"/all_events/{admin_token}", **options)
        ws.close()


def test_plain_get_without_upgrade(api: Api, admin_token: str) -> None:
    response = api.get(f"/all_events/{admin_token}")
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    # the format gate comes first, upgrade or not
    assert api.get("/all_events/" + "a" * 63).status_code == 401
    assert api.get("/ws").status_code == 401


def test_permessage_deflate_is_declined(api: Api, admin_token: str) -> None:
    ws = connect(
        api,
        f"/all_events/{admin_token}",
        header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    )
    try:
        headers = {k.lower(): v for k, v in (ws.getheaders() or {}).items()}
        assert "sec-websocket-extensions" not in headers
    finally:
        ws.close()


# ----------------------------------------------------------------------------
# /ws


@pytest.mark.parametrize("how", ["cookie", "header", "path"])
def test_ws_framing_and_replies(api: Api, admin_token: str, salt_master: SaltSandbox, how: str) -> None:
    run = uuid.uuid4().hex
    if how == "cookie":
        ws = connect(api, "/ws", cookie=f"session_id={admin_token}")
    elif how == "header":
        ws = connect(api, "/ws", header=[f"X-Auth-Token: {admin_token}"], origin=ALLOWED)
    else:
        ws = connect(api, f"/ws/{admin_token}")
    try:
        ws.send("hello")
        assert wait_for(ws, lambda m: m == REPLY)[0] == REPLY
        ws.send(READY)
        fire(salt_master, [(f"test/ws/{run}", {"how": how})])
        message, _ = wait_for(ws, tagged(f"test/ws/{run}"))
        assert message.startswith("data: ") and message.endswith("\n\n")
        event = event_of(message[len("data: "):])
        assert event["data"]["how"] == how
        ws.send("another")
        wait_for(ws, lambda m: m == REPLY)
    finally:
        ws.close()


def test_ws_without_token_is_401(api: Api) -> None:
    exc = refused(api, "/ws")
    assert exc.status_code == 401
    assert error_word(exc) == "unauthenticated"


# ----------------------------------------------------------------------------
# formatted events


def _minions_with_grains(message: str) -> bool:
    frame = frames(message)
    minions = frame.get("minions")
    if isinstance(minions, list):
        minions = {m["id"]: m for m in minions}
    return isinstance(minions, dict) and all("grains" in minions.get(m, {}) for m in MINIONS)


def test_formatted_events_minions_then_jobs(api: Api, admin_token: str) -> None:
    ws = connect(api, f"/formatted_events/{admin_token}")
    try:
        ws.send(READY)
        message, _ = wait_for(ws, _minions_with_grains)
        minions = frames(message)["minions"]
        for mid in MINIONS:
            assert minions[mid]["id"] == mid
            assert minions[mid]["grains"]["id"] == mid
        response = api.run([{"client": "local_async", "tgt": "*", "fun": "test.ping"}], admin_token)
        jid = response.json()["return"][0]["jid"]

        def job_state(state: str) -> Any:
            def check(message: str) -> bool:
                job = frames(message).get("jobs", {}).get(jid)
                return job is not None and job["state"] == state

            return check

        running, _ = wait_for(ws, job_state("running"))
        job = frames(running)["jobs"][jid]
        assert job["fun"] == "test.ping" and job["tgt"] == "*" and job["tgt_type"] == "glob"
        assert set(job["minions"]) == set(MINIONS)
        complete, _ = wait_for(ws, job_state("complete"))
        job = frames(complete)["jobs"][jid]
        for mid in MINIONS:
            assert job["minions"][mid] == {"return": True, "retcode": 0, "success": True}
    finally:
        ws.close()


def test_ws_format_events_lists_minions(api: Api, admin_token: str) -> None:
    ws = connect(api, "/ws?format_events", header=[f"X-Auth-Token: {admin_token}"])
    try:
        ws.send(READY)
        message, _ = wait_for(ws, lambda m: m != REPLY and _minions_with_grains(m))
        minions = frames(message)["minions"]
        assert isinstance(minions, list)
        assert sorted(m["id"] for m in minions) == MINIONS
        ws.send("ping")
        wait_for(ws, lambda m: m == REPLY)
    finally:
        ws.close()


def test_formatted_events_start_failure_closes_1008(api: Api) -> None:
    token = api.login(LIMITED_USER)  # test.* only: grains.items is refused by the master
    ws = connect(api, f"/formatted_events/{token}")
    try:
        ws.send(READY)
        code, reason = wait_close(ws)
        assert code == 1008
        assert reason
    finally:
        ws.close()


# ----------------------------------------------------------------------------
# refusals at the upgrade (W1-W5)


def test_w1_revoked_and_unknown_tokens_are_401(api: Api) -> None:
    token = api.login()
    assert api.post("/logout", headers={"X-Auth-Token": token}).status_code == 200
    for path in (f"/all_events/{token}", f"/formatted_events/{token}", f"/ws/{token}", "/all_events/" + "0" * 64):
        exc = refused(api, path)
        assert exc.status_code == 401, path
        assert error_word(exc) == "unauthenticated"
    exc = refused(api, "/ws", header=[f"X-Auth-Token: {token}"])
    assert exc.status_code == 401
    assert exc.headers.get("WWW-Authenticate") == "Session"


@pytest.mark.parametrize(
    "path",
    ["/all_events/" + "a" * 63, "/all_events/../x", "/formatted_events/" + "g" * 64, "/ws/" + "A" * 64,
     "/all_events/" + "a" * 65, "/all_events/0x" + "a" * 62],
    ids=["63-hex", "dotdot", "non-hex", "uppercase", "65-hex", "0x"],
)
def test_w2_malformed_path_tokens(api: Api, path: str) -> None:
    exc = refused(api, path)
    assert exc.status_code in (401, 404)
    if exc.status_code == 401:
        assert error_word(exc) == "unauthenticated"


def test_w2_malformed_header_token_on_ws(api: Api) -> None:
    exc = refused(api, "/ws", header=["X-Auth-Token: ../../etc/passwd"])
    assert exc.status_code == 401


def test_w3_foreign_origin(api: Api, api_nocors: Api, admin_token: str) -> None:
    exc = refused(api, f"/all_events/{admin_token}", origin=FOREIGN)
    assert exc.status_code == 403
    assert error_word(exc) == "origin"
    token = api_nocors.login()
    exc = refused(api_nocors, f"/all_events/{token}", origin=FOREIGN)
    assert exc.status_code == 403
    # without cors_origin, cors-style allowed origins mean nothing: only Host counts
    assert refused(api_nocors, f"/formatted_events/{token}", origin=ALLOWED).status_code == 403
    connect(api_nocors, f"/all_events/{token}", origin=api_nocors.url).close()
    connect(api_nocors, f"/all_events/{token}", suppress_origin=True).close()


def test_w4_null_origin(api: Api, api_star: Api, admin_token: str) -> None:
    exc = refused(api, f"/all_events/{admin_token}", origin="null")
    assert exc.status_code == 403
    assert error_word(exc) == "origin"
    token = api_star.login()
    assert refused(api_star, f"/all_events/{token}", origin="null").status_code == 403


def test_w5_cookie_ws_refuses_foreign_origins(api: Api, api_star: Api, admin_token: str) -> None:
    for origin in (FOREIGN, ALLOWED):
        exc = refused(api, "/ws", cookie=f"session_id={admin_token}", origin=origin)
        assert exc.status_code == 403
        assert error_word(exc) == "origin"
    token = api_star.login()
    assert refused(api_star, "/ws", cookie=f"session_id={token}", origin=FOREIGN).status_code == 403
    # a token-authenticated websocket may come from anywhere cors_origin "*" allows
    connect(api_star, f"/ws/{token}", origin=FOREIGN).close()
    connect(api_star, "/ws", header=[f"X-Auth-Token: {token}"], origin=FOREIGN).close()
    connect(api_star, "/ws", cookie=f"session_id={token}", origin=api_star.url).close()


# ----------------------------------------------------------------------------
# limits (W6-W8)


def test_w6_oversized_message_closes_1009(api: Api, admin_token: str) -> None:
    ws = connect(api, f"/all_events/{admin_token}")
    try:
        ws.send("x" * (65536 + 1))
        code, _reason = wait_close(ws)
        assert code == 1009
    finally:
        ws.close()


def test_w6_huge_declared_frame_closes_1009(api_nocors: Api) -> None:
    token = api_nocors.login()
    ws = connect(api_nocors, f"/all_events/{token}")
    try:
        # FIN + text, masked, 64-bit length 2**62, mask key; no payload follows
        assert ws.sock is not None
        ws.sock.sendall(b"\x81\xff" + struct.pack("!Q", 2**62) + b"\x00\x00\x00\x00")
        code, _reason = wait_close(ws)
        assert code == 1009
    finally:
        ws.close()


def test_w8_invalid_utf8_closes_1007(api: Api, admin_token: str) -> None:
    ws = connect(api, f"/all_events/{admin_token}")
    try:
        ws.send_frame(ABNF.create_frame(b"\xff\xfe\xfd", ABNF.OPCODE_TEXT))
        code, _reason = wait_close(ws)
        assert code == 1007
    finally:
        ws.close()


# ----------------------------------------------------------------------------
# lifecycle


def test_logout_closes_open_websockets(api: Api, salt_master: SaltSandbox) -> None:
    token = api.login()
    events = connect(api, f"/all_events/{token}")
    idle = connect(api, f"/ws/{token}")  # never sent "ready": closed all the same
    try:
        events.send(READY)
        run = uuid.uuid4().hex
        fire(salt_master, [(f"test/ws/{run}", {})])
        wait_for(events, tagged(f"test/ws/{run}"))
        assert api.post("/logout", headers={"X-Auth-Token": token}).status_code == 200
        started = time.monotonic()
        assert wait_close(events, timeout=10) == (1008, "token expired")
        assert wait_close(idle, timeout=10) == (1008, "token expired")
        assert time.monotonic() - started < 1.5
    finally:
        events.close()
        idle.close()


def test_fan_out_2000_events_to_3_clients_in_order(api: Api, admin_token: str, salt_master: SaltSandbox) -> None:
    run = uuid.uuid4().hex
    prefix = f"test/ws/fanout/{run}/"
    clients = [
        connect(api, f"/all_events/{admin_token}"),
        connect(api, f"/ws/{admin_token}"),
        connect(api, f"/all_events/{admin_token}"),
    ]
    try:
        for ws in clients:
            ws.send(READY)
        # make sure every client is started before the burst
        fire(salt_master, [(prefix + "start", {})])
        for ws in clients:
            wait_for(ws, tagged(prefix + "start"))
        fire(salt_master, [(prefix + str(i), {"i": i}) for i in range(2000)])
        for ws in clients:
            got: list[int] = []
            deadline = time.monotonic() + 120
            while len(got) < 2000 and time.monotonic() < deadline:
                message = next_message(ws, deadline)
                assert message is not None, close_status(ws)
                event = json.loads(message.removeprefix("data: "))
                if event["tag"].startswith(prefix):
                    got.append(event["data"]["i"])
            assert got == list(range(2000))
    finally:
        for ws in clients:
            ws.close()


def test_slow_reader_is_closed_with_overflow(api_nocors: Api, salt_master: SaltSandbox) -> None:
    token = api_nocors.login()
    ws = connect(
        api_nocors,
        f"/all_events/{token}",
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),),
    )
    try:
        ws.send(READY)
        run = uuid.uuid4().hex
        fire(salt_master, [(f"test/ws/{run}/start", {})])
        wait_for(ws, tagged(f"test/ws/{run}/start"))
        # events far above ws_max_message_size (4096): that cap is for what clients send
        blob = "x" * 30000
        fire(salt_master, [(f"test/ws/{run}/{i}", {"blob": blob}) for i in range(150)])
        # the client reads only now: the API queued at most 20 events, then gave up
        received = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            message = next_message(ws, deadline)
            if message is None:
                break
            if event_of(message)["tag"].startswith(f"test/ws/{run}/"):
                received += 1
        assert close_status(ws) == (1013, "overflow")
        assert 0 < received < 150
    finally:
        ws.close()


def test_connect_disconnect_cycles_leave_nothing_behind(api: Api, admin_token: str, salt_master: SaltSandbox) -> None:
    pid = api_pid(api)
    # warm up (lazy imports, caches), then take the baseline
    for _ in range(5):
        connect(api, f"/all_events/{admin_token}").close()

    def settled(predicate: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        current = stats(api, admin_token)
        while not predicate(current) and time.monotonic() < deadline:
            time.sleep(0.2)
            current = stats(api, admin_token)
        return current

    before = settled(lambda s: True)
    fds_before = open_fds(pid)
    # an open websocket is a stream of the hub, ready or not
    held = [connect(api, f"/all_events/{admin_token}"), connect(api, f"/ws/{admin_token}")]
    held[0].send(READY)
    during = settled(lambda s: s["streams"] >= before["streams"] + 2)
    assert during["streams"] == before["streams"] + 2
    for ws in held:
        ws.close()
    for i in range(200):
        if i % 20 == 1:  # a few formatted streams: their grains.items run is cancelled on close
            path = f"/formatted_events/{admin_token}"
        else:
            path = f"/ws/{admin_token}" if i % 3 == 0 else f"/all_events/{admin_token}"
        ws = connect(api, path)
        if i % 2:
            ws.send(READY)
        if i % 7 == 0:
            assert ws.sock is not None
            ws.sock.close()  # vanish without a close frame
            ws.sock = None
        else:
            ws.close()
    after = settled(
        lambda s: s["streams"] == before["streams"] and s["connections"]["open"] <= before["connections"]["open"]
    )
    assert after["streams"] == before["streams"]
    assert after["connections"]["open"] <= before["connections"]["open"], (before["connections"], after["connections"])
    deadline = time.monotonic() + 60
    fds = open_fds(pid)
    while fds > fds_before + 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        fds = open_fds(pid)
    assert fds <= fds_before + 3, (fds_before, fds)
    # the cancelled grains.items waits let go of their jobs
    assert settled(lambda s: s["jobs_watched"] <= before["jobs_watched"])["jobs_watched"] <= before["jobs_watched"]
    # and the API still streams
    run = uuid.uuid4().hex
    ws = connect(api, f"/all_events/{admin_token}")
    try:
        ws.send(READY)
        fire(salt_master, [(f"test/ws/{run}", {})])
        wait_for(ws, tagged(f"test/ws/{run}"))
    finally:
        ws.close()


def test_tls_stream_then_shutdown_closes_1001(salt_master: SaltSandbox, tmp_path: Any) -> None:
    crt, key = make_cert(tmp_path)
    process = ApiProcess(
        tmp_path, salt_master, {"websockets": True, "ssl_crt": str(crt), "ssl_key": str(key)}, name="tls"
    )
    process.start()
    try:
        api = Api(process)
        token = api.login()
        ws = connect(api, "/ws", header=[f"X-Auth-Token: {token}"], sslopt={"cert_reqs": ssl.CERT_NONE})
        idle = connect(api, f"/all_events/{token}", sslopt={"cert_reqs": ssl.CERT_NONE})
        ws.send(READY)
        run = uuid.uuid4().hex
        blob = "y" * 100000
        fire(salt_master, [(f"test/ws/{run}/{i}", {"i": i, "blob": blob}) for i in range(20)])
        for i in range(20):
            message, _ = wait_for(ws, tagged(f"test/ws/{run}/{i}"))
            assert event_of(message[len("data: "):])["data"]["blob"] == blob
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        assert wait_close(ws) == (1001, "shutdown")
        assert wait_close(idle) == (1001, "shutdown")
        ws.close()
        idle.close()
        assert process.proc.wait(timeout=30) == 0
    finally:
        process.stop()
