"""The master link (request channel + event bus) in this test's reactor, against real masters."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import UNIXClientEndpoint
from txzmq import ZmqFactory

from saltapi_twisted.master.client import MasterClient
from saltapi_twisted.master.eventbus import EventBus
from saltapi_twisted.master.eventfire import EventFirer
from saltapi_twisted.master.exceptions import AuthenticationFailed, AuthorizationFailed, MasterUnavailable
from saltapi_twisted.master.framing import encode_event
from saltapi_twisted.master.reqclient import RequestChannel
from saltapi_twisted.sandbox import SaltSandbox

from ..conftest import MINIONS, Api


class Link:
    """A request channel, client, bus and firer for one master."""

    def __init__(self, sandbox: SaltSandbox, pool_size: int = 8, timeout: float = 10.0) -> None:
        self.factory = ZmqFactory()
        self.factory.reactor = reactor
        self.channel = RequestChannel(
            self.factory, f"tcp://127.0.0.1:{sandbox.ret_port}", reactor, pool_size=pool_size, timeout=timeout
        )
        self.master = MasterClient(self.channel)
        sock_dir = str(sandbox.sock_dir)
        self.bus = EventBus(UNIXClientEndpoint(reactor, os.path.join(sock_dir, "master_event_pub.ipc")), reactor)
        self.firer = EventFirer(UNIXClientEndpoint(reactor, os.path.join(sock_dir, "master_event_pull.ipc")), reactor)

    async def start(self) -> None:
        self.channel.warm_up()
        self.bus.start()
        self.firer.start()
        await self.bus.when_connected()

    async def stop(self) -> None:
        self.channel.close()
        await self.bus.stop()
        await self.firer.stop()
        self.factory.shutdown()


async def _sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def _until(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await _sleep(step)
    return bool(predicate())


@pytest_twisted.ensureDeferred
async def test_200_requests_in_flight_are_matched_to_their_callers(salt_master: SaltSandbox) -> None:
    link = Link(salt_master, pool_size=8)
    await link.start()
    try:
        ids = [uuid.uuid4().hex for _ in range(200)]
        replies = await defer.gatherResults(
            [defer.ensureDeferred(_echo(link, ident)) for ident in ids], consumeErrors=True
        )
        assert replies == ids
        assert link.channel.pending == 0
    finally:
        await link.stop()


async def _echo(link: Link, ident: str) -> str:
    reply = await link.channel.request({"cmd": "ping", "ident": ident})
    return str(reply["ident"])


@pytest_twisted.ensureDeferred
async def test_login_publish_and_typed_errors(salt_master: SaltSandbox) -> None:
    link = Link(salt_master)
    await link.start()
    try:
        token = (await link.master.mk_token("saltdev", "saltdev", "file"))["token"]
        assert (await link.master.get_token(token))["name"] == "saltdev"
        assert await link.master.get_token("ab" * 32) is None
        with pytest.raises(AuthenticationFailed):
            await link.master.mk_token("saltdev", "wrong", "file")
        limited = (await link.master.mk_token("limited", "limited", "file"))["token"]
        with pytest.raises(AuthorizationFailed):
            await link.master.publish(
                {"tgt": "*", "fun": "cmd.run", "arg": ["id"], "tgt_type": "glob", "ret": "", "user": "x",
                 "kwargs": {"token": limited}}
            )
        with pytest.raises(AuthorizationFailed):
            await link.master.runner({"fun": "jobs.list_jobs", "token": limited, "kwarg": {}})
        wheel = await link.master.wheel({"fun": "key.list_all", "token": token})
        assert sorted(wheel["data"]["return"]["minions"]) == MINIONS
    finally:
        await link.stop()


def test_long_job_returns_every_minion(api: Api, admin_token: str) -> None:
    """A 12 s job with a 30 s timeout: the wait follows find_job, past gather_job_timeout (10 s)."""
    started = time.monotonic()
    response = api.run(
        [{"client": "local", "tgt": "*", "fun": "test.sleep", "arg": [12], "timeout": 30}], admin_token
    )
    elapsed = time.monotonic() - started
    assert response.json() == {"return": [{m: True for m in MINIONS}]}
    assert 11 < elapsed < 40


def test_short_timeout_still_waits_while_minions_run(api: Api, admin_token: str) -> None:
    """timeout 3 s, job 7 s: find_job says the minions still run it, so the wait goes on."""
    response = api.run([{"client": "local", "tgt": "*", "fun": "test.sleep", "arg": [7], "timeout": 3}], admin_token)
    assert response.json() == {"return": [{m: True for m in MINIONS}]}


@pytest_twisted.ensureDeferred
async def test_master_restart_is_survived(fresh_sandbox: SaltSandbox) -> None:
    sandbox = fresh_sandbox
    sandbox.start()
    link = Link(sandbox, timeout=10)
    states: list[bool] = []
    received: list[str] = []
    link.bus.subscribe(lambda tag, data: received.append(tag), states.append)
    await link.start()
    try:
        token = (await link.master.mk_token("saltdev", "saltdev", "file"))["token"]
        await threads(sandbox.stop_master)
        assert await _until(lambda: not link.bus.connected, 10)
        started = time.monotonic()
        with pytest.raises(MasterUnavailable):
            await link.master.get_token(token)
        assert time.monotonic() - started < 2.0
        await threads(sandbox.start_master)
        assert await _until(lambda: link.bus.connected, 10)
        assert states[-2:] == [False, True]

        async def works() -> bool:
            try:
                return await link.master.ping(timeout=2)
            except Exception:  # noqa: BLE001
                return False

        deadline = time.monotonic() + 30
        ok = False
        while not ok and time.monotonic() < deadline:
            ok = await works()
        assert ok
        new_token = (await link.master.mk_token("saltdev", "saltdev", "file"))["token"]
        assert new_token
        assert await _until(lambda: link.firer.connected, 10)
        tag = f"test/after-restart/{uuid.uuid4().hex}"
        link.firer.fire(tag, {"x": 1})
        assert await _until(lambda: tag in received, 10)
    finally:
        await link.stop()


async def threads(function: Any) -> Any:
    from twisted.internet import threads as twisted_threads

    return await twisted_threads.deferToThread(function)


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_bus_is_survived(tmp_path: Path) -> None:
    """A fake publisher sends garbage, then valid events on the next connection."""
    path = str(tmp_path / "pub.ipc")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(5)
    good = encode_event("test/good", {"n": 1})
    payloads = [
        b"\xc1\xc1\xc1 not msgpack at all",
        b"\x00\x00\x00\x10" + b"\x92\x01\x02" + b"x" * 13 + good[:0] + (len(good)).to_bytes(4, "big") + good,
        good,
    ]

    def serve() -> None:
        for payload in payloads:
            conn, _ = server.accept()
            conn.sendall(payload)
            time.sleep(0.3)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    bus = EventBus(UNIXClientEndpoint(reactor, path), reactor)
    received: list[str] = []
    bus.subscribe(lambda tag, data: received.append(tag))
    bus.start()
    try:
        assert await _until(lambda: received.count("test/good") >= 2, 15)
        assert bus.bad_frames >= 1
    finally:
        await bus.stop()
        server.close()


@pytest_twisted.ensureDeferred
async def test_credentials_in_job_error_events_are_scrubbed(salt_master: SaltSandbox) -> None:
    """The master repeats a failed publish's whole load on the bus; subscribers never see the password."""
    link = Link(salt_master)
    seen: list[tuple[str, dict]] = []
    link.bus.subscribe(lambda tag, data: seen.append((tag, data)))
    await link.start()
    try:
        jid = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "000000_scrub"
        secret = f"pw-{uuid.uuid4().hex}"
        with pytest.raises(AuthenticationFailed):
            await link.master.publish(
                {"tgt": "*", "fun": "test.ping", "arg": [], "tgt_type": "glob", "ret": "", "user": "x", "jid": jid,
                 "kwargs": {"eauth": "file", "username": "saltdev", "password": secret}}
            )
        assert await _until(lambda: any(tag == f"salt/job/{jid}/error" for tag, _ in seen), 10)
        event = next(data for tag, data in seen if tag == f"salt/job/{jid}/error")
        assert event["kwargs"]["password"] == "<redacted>"
        assert secret not in repr(seen)
    finally:
        await link.stop()
