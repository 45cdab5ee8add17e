"""The ``processes: N`` supervisor's pieces: binding, arguments, revocation sharing, restarts."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from saltapi_twisted.auth import Authenticator, token_digest
from saltapi_twisted.config import ConfigError
from saltapi_twisted.workers import (
    FROM_SUPERVISOR_FD,
    TO_SUPERVISOR_FD,
    InheritedSocket,
    WorkerControl,
    WorkerSupervisor,
    bind_listener,
    split_description,
    worker_command_line,
)


def test_split_description_with_escapes() -> None:
    assert split_description(r"tcp:port=8000:interface=\:\:1:backlog=5") == (
        "tcp",
        [],
        {"port": "8000", "interface": "::1", "backlog": "5"},
    )
    assert split_description("tcp:8000") == ("tcp", ["8000"], {})
    assert split_description(r"unix:/tmp/a\:b.sock") == ("unix", ["/tmp/a:b.sock"], {})


def test_bind_tcp_ipv4_and_ipv6() -> None:
    sock, family = bind_listener("tcp:port=0:interface=127.0.0.1", 16)
    try:
        assert family == "inet" and sock.getsockname()[0] == "127.0.0.1"
        client = socket.create_connection(sock.getsockname()[:2], timeout=5)  # it listens
        client.close()
    finally:
        sock.close()
    from saltapi_twisted.endpoints import ipv6_available

    if not ipv6_available():  # the host cannot bind ::1: the refusal is a clear ConfigError
        with pytest.raises(ConfigError, match="cannot listen on"):
            bind_listener(r"tcp:0:interface=\:\:1", 16)
        return
    sock, family = bind_listener(r"tcp:0:interface=\:\:1", 16)
    sock.close()
    assert family == "inet6"


def test_bind_unix_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    sock, family = bind_listener(f"unix:address={path}:mode=600", 16)
    try:
        assert family == "unix"
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ("ssl:8443:privateKey=k.pem", "must be tcp:, unix: or systemd:"),
        ("tcp:port=99999", "port must be a number"),
        ("tcp:port=0:backlog=0", "backlog must be a number"),
        ("systemd:domain=INET:index=0", "systemd passed no socket 0"),
        ("unix:", "no socket path"),
    ],
)
def test_bind_refusals(description: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bind_listener(description, 16)


def test_bind_systemd_socket_by_name_and_index(monkeypatch: pytest.MonkeyPatch) -> None:
    passed = socket.socket()
    passed.bind(("127.0.0.1", 0))
    passed.listen(4)
    spare = os.dup(passed.fileno())
    try:
        # systemd's fds start at 3: pretend ours is there by putting it at 3 + index
        target = 3 + 1
        saved = os.dup(target) if _fd_open(target) else None
        os.dup2(passed.fileno(), target)
        try:
            monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
            monkeypatch.setenv("LISTEN_FDS", "2")
            monkeypatch.setenv("LISTEN_FDNAMES", "other:saltapi")
            sock, family = bind_listener("systemd:domain=INET:name=saltapi", 16)
            assert family == "inet" and sock.fileno() == target
            sock.detach()
            with pytest.raises(ConfigError, match="no socket named"):
                bind_listener("systemd:domain=INET:name=missing", 16)
            with pytest.raises(ConfigError, match="no socket 2"):
                bind_listener("systemd:domain=INET:index=2", 16)
            monkeypatch.setenv("LISTEN_PID", "1")
            with pytest.raises(ConfigError, match="no socket named"):
                bind_listener("systemd:domain=INET:name=saltapi", 16)
        finally:
            if saved is not None:
                os.dup2(saved, target)
                os.close(saved)
            else:
                os.close(target)
    finally:
        os.close(spare)
        passed.close()


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_bind_failure_is_a_config_error() -> None:
    taken, _family = bind_listener("tcp:port=0:interface=127.0.0.1", 16)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen on"):
            bind_listener(f"tcp:port={port}:interface=127.0.0.1", 16)
    finally:
        taken.close()


@pytest.mark.parametrize("text", ["5:inet:1", "6:inet6:0", "7:unix:0"])
def test_inherited_socket_round_trip(text: str) -> None:
    assert InheritedSocket.parse(text).argument() == text


@pytest.mark.parametrize("text", ["x:inet:1", "5:ipx:0", "5:inet:2", "5:inet", "5:inet:1:9"])
def test_inherited_socket_refused(text: str) -> None:
    with pytest.raises(ValueError):
        InheritedSocket.parse(text)


def test_worker_command_line() -> None:
    command = worker_command_line("/etc/salt/master", "rest_tornado", {"logfile": "/var/log/salt/api", "logger": None})
    argv = command(2)
    assert argv[-6:] == ["-c", "/etc/salt/master", "--worker", "2", "--section", "rest_tornado"]
    assert "--logfile=/var/log/salt/api.worker-2" in argv
    assert "--nodaemon" in argv and "--pidfile=" in argv


# --------------------------------------------------------------------------
# revocations between workers


class _Transport:
    disconnecting = False

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 - Twisted's name
        self.written += b"".join(data)


class _Master:
    async def get_token(self, token: str) -> dict[str, Any]:
        return {"token": token, "expire": 4102444800.0, "name": "saltdev", "eauth": "file"}


TOKEN = "ab" * 32


def test_worker_control_shares_and_applies_revocations() -> None:
    auth = Authenticator(_Master(), 64)
    lost: list[bool] = []
    control = WorkerControl(auth, lambda: lost.append(True))
    transport = _Transport()
    control.makeConnection(transport)
    auth.revoke(TOKEN, 4102444800.0)
    assert json.loads(transport.written) == {"revoke": token_digest(TOKEN), "expire": 4102444800.0}

    other = "cd" * 32
    heard: list[str] = []
    auth.on_revoke_digest(heard.append)
    control.dataReceived(json.dumps({"revoke": token_digest(other), "expire": 4102444800.0}).encode() + b"\n")
    assert auth.is_revoked(other) and heard == [token_digest(other)]
    # garbage is ignored, never fatal
    control.dataReceived(b"not json\n" + json.dumps({"revoke": "x", "expire": 1}).encode() + b"\n")
    control.dataReceived(json.dumps({"revoke": "ef" * 32, "expire": 1.0}).encode() + b"\n")  # already expired
    assert not auth.is_revoked("ef" * 32)
    control.connectionLost(None)
    assert lost == [True]


class _ProcessTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.to_child: list[tuple[int, bytes]] = []
        self.signals: list[str] = []

    def writeToChild(self, fd: int, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.to_child.append((fd, data))

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(name)


class _Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict]] = []

    def spawnProcess(self, proto: Any, executable: str, args: list[str], env: Any = None, childFDs: Any = None) -> Any:  # noqa: N802, N803
        transport = _ProcessTransport(1000 + len(self.spawned))
        proto.makeConnection(transport)
        self.spawned.append((proto, args, childFDs))
        return transport


def _supervisor(reactor: _Reactor) -> WorkerSupervisor:
    from saltapi_twisted.config import ApiConfig, MasterSettings

    config = ApiConfig(
        master=MasterSettings(), block_name="rest_twisted", port=0, address="127.0.0.1", disable_ssl=True, processes=2
    )
    return WorkerSupervisor(config, reactor, lambda i: ["python", "--worker", str(i)])


def test_supervisor_spawns_shares_and_restarts() -> None:
    reactor = _Reactor()
    supervisor = _supervisor(reactor)
    try:
        supervisor.startService()
        assert len(reactor.spawned) == 2
        (first, args, fds), (second, _a, _f) = reactor.spawned
        assert args[:3] == ["python", "--worker", "1"] and args[3] == "--adopt" and args[4].endswith(":inet:0")
        assert fds[TO_SUPERVISOR_FD] == "r" and fds[FROM_SUPERVISOR_FD] == "w"
        assert fds[5] == supervisor.sockets[0][0].fileno()

        digest = token_digest(TOKEN)
        first.childDataReceived(TO_SUPERVISOR_FD, json.dumps({"revoke": digest, "expire": 4102444800.0}).encode())
        assert second.transport.to_child == []  # no newline yet: a partial line
        first.childDataReceived(TO_SUPERVISOR_FD, b"\n")
        assert [json.loads(d) for _fd, d in second.transport.to_child] == [{"revoke": digest, "expire": 4102444800.0}]
        assert first.transport.to_child == []  # not echoed to the sender

        # a worker that dies at once comes back after 1 s, then 2 s, ...; a new one hears old revocations
        first.processEnded(Failure(ProcessTerminated(exitCode=1)))
        assert len(reactor.spawned) == 2
        reactor.advance(1.0)
        assert len(reactor.spawned) == 3
        third = reactor.spawned[2][0]
        assert [json.loads(d) for _fd, d in third.transport.to_child] == [{"revoke": digest, "expire": 4102444800.0}]
        third.processEnded(Failure(ProcessTerminated(exitCode=1)))
        reactor.advance(1.0)
        assert len(reactor.spawned) == 3
        reactor.advance(1.0)
        assert len(reactor.spawned) == 4
        assert supervisor.restarts == 2

        # stopping: TERM to each worker, then KILL after the grace period
        d = supervisor.stopService()
        workers = [reactor.spawned[1][0], reactor.spawned[3][0]]
        assert all(w.transport.signals == ["TERM"] for w in workers)
        reactor.advance(25)
        assert all(w.transport.signals == ["TERM", "KILL"] for w in workers)
        for w in workers:
            w.processEnded(Failure(ProcessTerminated(signal=9)))
        assert d.called and supervisor.sockets == []
        assert len(reactor.spawned) == 4  # nothing restarted while stopping
    finally:
        supervisor._close_sockets()
