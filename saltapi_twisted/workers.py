"""``processes: N``: N worker processes serving one set of listening sockets.

The supervisor (the process ``twistd saltapi`` starts) binds every listener,
then starts N workers: ``twistd -n saltapi … --worker I --adopt FD:FAMILY:TLS``.
Each worker adopts the listening sockets (the kernel hands each new
connection to one of them), opens its own master link and event bus
subscription, and serves requests alone. The supervisor accepts nothing.

Shared state, over a pipe pair per worker (JSON lines, worker fd 3 to the
supervisor, supervisor to worker fd 4):

* ``/logout`` in any worker sends ``{"revoke": <sha256 of the token>,
  "expire": <epoch>}``; the supervisor keeps it until it expires and passes
  it to every worker (and to a worker started later), which refuses the token
  and closes its streams.
* Event ids are derived from the event's content (:mod:`.streams`), and every
  worker reads the same bus in the same order, so ``Last-Event-ID`` replays
  on whichever worker the reconnecting client reaches.

A worker that exits unexpectedly is started again (1 s, then doubling up to
30 s while it keeps failing). A worker whose supervisor disappears (its pipe
closes) stops. SIGTERM to the supervisor stops the workers gracefully (SIGTERM,
then SIGKILL after ``STOP_GRACE`` seconds) and exits 0.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from .config import ApiConfig, ConfigError

#: Worker fds: the control pipes, then the listening sockets.
TO_SUPERVISOR_FD = 3
FROM_SUPERVISOR_FD = 4
FIRST_SOCKET_FD = 5
#: Seconds a stopping worker gets before SIGKILL.
STOP_GRACE = 15.0
#: Restart delays.
RESTART_MIN, RESTART_MAX = 1.0, 30.0
#: A worker that ran this long is healthy again (its next failure restarts it at once).
HEALTHY_AFTER = 30.0
MAX_LINE = 4096

_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}


@dataclass(frozen=True)
class InheritedSocket:
    """A listening socket a worker adopts: its fd, family name and whether we add TLS."""

    fd: int
    family: str
    tls: bool

    def argument(self) -> str:
        """``FD:FAMILY:TLS`` for ``--adopt``."""
        return f"{self.fd}:{self.family}:{int(self.tls)}"

    @classmethod
    def parse(cls, text: str) -> InheritedSocket:
        """The inverse of :meth:`argument`.

        :raises ValueError: anything else.
        """
        fd_text, family, tls = text.split(":")
        if family not in _FAMILIES or tls not in ("0", "1") or not fd_text.isdigit():
            raise ValueError(f"--adopt {text!r}: expected FD:inet|inet6|unix:0|1")
        return cls(int(fd_text), family, tls == "1")


# --------------------------------------------------------------------------
# Endpoint descriptions the supervisor binds itself.


def split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """``kind:arg:key=value…`` with Twisted's backslash escapes: (kind, args, kwargs)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    kind, rest = parts[0], parts[1:]
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if sep:
            kwargs[key] = value
        else:
            args.append(part)
    return kind, args, kwargs


def _int(value: str, what: str, description: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise ConfigError(f"processes: cannot listen on {description!r}: {what} must be a number from {low} to {high}")
    return int(value)


def bind_listener(description: str, default_backlog: int) -> tuple[socket.socket, str]:
    """Bind and listen as the endpoint *description* would: (socket, family name).

    ``tcp:`` (IPv4 or IPv6 ``interface``) and ``unix:`` (``mode``) are
    supported, and ``systemd:`` (``index=``: a socket systemd passed us).

    :raises ConfigError: another kind, bad values, or the bind failing.
    """
    kind, args, kwargs = split_description(description)
    backlog = _int(kwargs.get("backlog", str(default_backlog)), "backlog", description, 1, 65535)
    try:
        if kind == "tcp":
            port = _int(kwargs.get("port", args[0] if args else ""), "port", description, 0, 65535)
            interface = kwargs.get("interface", "")
            family_name = "inet6" if ":" in interface else "inet"
            sock = socket.socket(_FAMILIES[family_name], socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family_name == "inet6" and interface == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((interface, port))
        elif kind == "unix":
            path = kwargs.get("address", args[0] if args else "")
            if not path:
                raise ConfigError(f"processes: cannot listen on {description!r}: no socket path")
            family_name = "unix"
            if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket file from an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, int(kwargs.get("mode", "666"), 8))
        elif kind == "systemd":
            index = _systemd_index(description, kwargs)
            sock = socket.socket(fileno=3 + index)
            family_name = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}[sock.family]
            backlog = -1
        else:
            raise ConfigError(
                f"processes: cannot listen on {description!r}: with processes above 1 the listeners must be "
                "tcp:, unix: or systemd: endpoints (ssl: endpoints: use ssl_crt/ssl_key with a tcp: endpoint)"
            )
        if backlog > 0:
            sock.listen(backlog)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {description!r}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock, family_name


def _systemd_index(description: str, kwargs: dict[str, str]) -> int:
    """Which of the sockets systemd passed (``index=`` or ``name=``, as ``FileDescriptorName=``)."""
    passed = os.environ.get("LISTEN_PID") == str(os.getpid())
    count = int(os.environ.get("LISTEN_FDS", "0") or 0) if passed else 0
    if "name" in kwargs:
        names = os.environ.get("LISTEN_FDNAMES", "").split(":") if passed else []
        if kwargs["name"] not in names[:count]:
            raise ConfigError(f"processes: cannot listen on {description!r}: systemd passed no socket named it")
        return names.index(kwargs["name"])
    index = _int(kwargs.get("index", "0"), "index", description, 0, 1000)
    if index >= count:
        raise ConfigError(f"processes: cannot listen on {description!r}: systemd passed no socket {index}")
    return index


# --------------------------------------------------------------------------
# The worker's side.


class AdoptedPort(Service):
    """Serve *factory* on a listening socket inherited from the supervisor."""

    def __init__(self, reactor: Any, inherited: InheritedSocket, factory: Any) -> None:
        self.reactor = reactor
        self.inherited = inherited
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:  # noqa: N802 - Twisted hook
        super().startService()
        self.port = self.reactor.adoptStreamPort(self.inherited.fd, _FAMILIES[self.inherited.family], self.factory)
        os.close(self.inherited.fd)  # the port holds its own duplicate

    def stopService(self) -> Any:  # noqa: N802 - Twisted hook
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class WorkerControl(LineOnlyReceiver):
    """A worker's pipe pair to its supervisor.

    :param auth: the :class:`~saltapi_twisted.auth.Authenticator` (shares and
        receives revocations).
    :param on_lost: called when the supervisor goes away.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    _log = Logger()

    def __init__(self, auth: Any, on_lost: Any) -> None:
        self.auth = auth
        self.on_lost = on_lost
        auth.share_revocations(self.send_revocation)

    def send_revocation(self, digest: str, expire: float) -> None:
        if self.transport is not None:
            self.sendLine(json.dumps({"revoke": digest, "expire": expire}).encode("ascii"))

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted hook
        try:
            message = json.loads(line)
        except ValueError:
            self._log.warn("ignored an unreadable message from the supervisor")
            return
        if isinstance(message, dict) and "revoke" in message:
            self.auth.revoke_digest(message.get("revoke"), message.get("expire"))

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted hook
        self.on_lost()


def connect_control(reactor: Any, auth: Any) -> WorkerControl:
    """Wire a worker's control pipes; the worker stops when the supervisor goes away."""
    from twisted.internet import stdio

    def lost() -> None:
        if reactor.running and not getattr(reactor, "_stopped", False):
            WorkerControl._log.warn("the supervisor went away; stopping")
            reactor.stop()

    control = WorkerControl(auth, lost)
    stdio.StandardIO(control, stdin=FROM_SUPERVISOR_FD, stdout=TO_SUPERVISOR_FD, reactor=reactor)  # type: ignore[call-arg]
    return control


# --------------------------------------------------------------------------
# The supervisor.


class _WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = supervisor.reactor.seconds()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted hook
        for digest, expire in self.supervisor.revocations().items():
            self.send({"revoke": digest, "expire": expire})

    def send(self, message: dict[str, Any]) -> None:
        try:
            cast(Any, self.transport).writeToChild(FROM_SUPERVISOR_FD, json.dumps(message).encode("ascii") + b"\n")
        except (KeyError, OSError, error.ProcessDone):
            pass

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802 - Twisted hook
        if fd != TO_SUPERVISOR_FD:
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
        for line in lines:
            self.supervisor.message(self.index, line)

    def processEnded(self, reason: Any) -> None:  # noqa: N802 - Twisted hook
        self.supervisor.ended(self, reason)
        self.ended.callback(None)


class WorkerSupervisor(Service):
    """Binds the listeners and keeps N workers running.

    :param config: the API block (``processes``).
    :param reactor: spawns and times the workers.
    :param worker_command: the command line of worker I without ``--adopt``
        (a callable of I).
    :param listen: ``--listen`` descriptions replacing the configured ones.
    """

    _log = Logger()

    def __init__(self, config: ApiConfig, reactor: Any, worker_command: Any, listen: list[str] | None = None) -> None:
        from .endpoints import listener_plan, tls_options

        self.config = config
        self.reactor = reactor
        self.worker_command = worker_command
        self.count = config.processes
        plan = listener_plan(config, listen)
        if any(tls for _d, tls in plan):
            tls_options(config)  # refuse bad TLS material here, before any worker starts
        self.sockets: list[tuple[socket.socket, str, bool]] = []
        try:
            for description, tls in plan:
                sock, family = bind_listener(description, config.backlog)
                self.sockets.append((sock, family, tls))
        except ConfigError:
            self._close_sockets()
            raise
        self.workers: dict[int, _WorkerProcess] = {}
        self.failures: dict[int, int] = {}
        self.restarts = 0
        self._revoked: dict[str, float] = {}
        self._stopping = False
        self._pending: dict[int, Any] = {}

    # revocations -----------------------------------------------------------

    def revocations(self) -> dict[str, float]:
        now = time.time()
        for digest, expire in list(self._revoked.items()):
            if expire <= now:
                del self._revoked[digest]
        return dict(self._revoked)

    def message(self, index: int, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self._log.warn("worker {index}: unreadable control message", index=index)
            return
        if not isinstance(message, dict):
            return
        digest, expire = message.get("revoke"), message.get("expire")
        if (
            isinstance(digest, str)
            and len(digest) == 64
            and isinstance(expire, (int, float))
            and len(self._revoked) < 10**6
        ):
            self._revoked[digest] = float(expire)
            for worker in list(self.workers.values()):
                if worker.index != index:
                    worker.send({"revoke": digest, "expire": expire})

    # workers ---------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        if self._stopping:
            return
        adopt: list[str] = []
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2, TO_SUPERVISOR_FD: "r", FROM_SUPERVISOR_FD: "w"}
        for offset, (sock, family, tls) in enumerate(self.sockets):
            fd = FIRST_SOCKET_FD + offset
            child_fds[fd] = sock.fileno()
            adopt += ["--adopt", InheritedSocket(fd, family, tls).argument()]
        command = [*self.worker_command(index), *adopt]
        worker = _WorkerProcess(self, index)
        self.workers[index] = worker
        self.reactor.spawnProcess(worker, command[0], command, env=dict(os.environ), childFDs=child_fds)
        self._log.info("worker {index} started (pid {pid})", index=index, pid=cast(Any, worker.transport).pid)

    def ended(self, worker: _WorkerProcess, reason: Any) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self._stopping:
            return
        lived = self.reactor.seconds() - worker.started
        failures = 0 if lived >= HEALTHY_AFTER else self.failures.get(worker.index, 0) + 1
        self.failures[worker.index] = failures
        delay = 0.0 if failures <= 1 and lived >= HEALTHY_AFTER else min(RESTART_MAX, RESTART_MIN * 2 ** (failures - 1))
        self.restarts += 1
        self._log.warn(
            "worker {index} ended ({reason}); starting it again in {delay:.0f} s",
            index=worker.index,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        self._pending[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    def startService(self) -> None:  # noqa: N802 - Twisted hook
        super().startService()
        for index in range(1, self.count + 1):
            self._spawn(index)
        self._log.info(
            "saltapi_twisted supervising {count} workers on {listeners} listening sockets",
            count=self.count,
            listeners=len(self.sockets),
        )

    async def _stop(self) -> None:
        self._stopping = True
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        workers = list(self.workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        ended = defer.DeferredList([w.ended for w in workers])
        timer = self.reactor.callLater(STOP_GRACE, _signal_all, workers, "KILL")
        await ended
        if timer.active():
            timer.cancel()
        self._close_sockets()

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802 - Twisted hook
        super().stopService()
        return defer.ensureDeferred(self._stop())

    def _close_sockets(self) -> None:
        for sock, _family, _tls in self.sockets:
            sock.close()
        self.sockets = []


def _signal_all(workers: list[_WorkerProcess], name: str) -> None:
    for worker in workers:
        _signal(worker, name)


def _signal(worker: _WorkerProcess, name: str) -> None:
    try:
        cast(Any, worker.transport).signalProcess(name)
    except (error.ProcessExitedAlready, OSError, AttributeError):
        pass


def worker_command_line(config_path: str, section: str | None, twistd_options: dict[str, Any]) -> Any:
    """The twistd command line of worker I (a callable of I)."""

    def command(index: int) -> list[str]:
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile="]
        if twistd_options.get("logger"):
            argv.append(f"--logger={twistd_options['logger']}")
        logfile = twistd_options.get("logfile")
        if logfile and logfile != "-":
            argv.append(f"--logfile={logfile}.worker-{index}")
        argv += ["saltapi", "-c", config_path, "--worker", str(index)]
        if section:
            argv += ["--section", section]
        return argv

    return command
