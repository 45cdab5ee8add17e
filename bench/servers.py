"""The processes under test: one master with minions, our API, rest_tornado, rest_cherrypy.

Every process is started here as a subprocess and stopped by the PID it was
given (``salt-api`` runs in its own session, so its forked netapi child is
stopped with it by process group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from saltapi_twisted.sandbox import ADMIN_USER, ApiProcess, SaltSandbox, SandboxError, free_port, salt_program

MINIONS = [f"minion-{n}" for n in range(1, 6)]


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request (setup only, never measured)."""
    data = None
    hdrs = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    request = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (empty if it is gone)."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Server:
    """One API server under test."""

    key: str  # "ours", "tornado", "cherrypy"
    label: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    api: ApiProcess | None = None
    token: str = ""
    salt_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.api is not None and self.api.proc is not None:
            return self.api.proc.pid
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_path(self) -> str | None:
        return "/all_events/" if self.key in ("ours", "tornado") else None

    def serving_process(self) -> psutil.Process | None:
        """The process that listens on the port (salt-api forks one per netapi module)."""
        for proc in tree(self.pid):
            try:
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.port:
                        return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return None

    def rss(self) -> int:
        """RSS in bytes of the serving process."""
        proc = self.serving_process()
        try:
            return proc.memory_info().rss if proc else 0
        except psutil.NoSuchProcess:
            return 0

    def alive(self) -> bool:
        if self.api is not None:
            return self.api.proc is not None and self.api.proc.poll() is None
        return self.proc is not None and self.proc.poll() is None

    def login(self) -> None:
        status, headers, body = http(
            "POST", self.url + "/login", {"username": ADMIN_USER[0], "password": ADMIN_USER[1], "eauth": "file"}
        )
        if status != 200:
            raise SandboxError(f"{self.label}: login gave {status}: {body[:300]!r}")
        entry = json.loads(body)["return"][0]
        self.token = entry["token"]
        # rest_cherrypy's token is its session id; the websocket path of rest_tornado takes the salt token
        self.salt_token = entry["token"]


def salt_api_config(sandbox: SaltSandbox, root: Path, name: str, block: dict[str, Any]) -> Path:
    """A copy of the master config with one netapi block and salt-api's own files."""
    root.mkdir(parents=True, exist_ok=True)
    options = yaml.safe_load(sandbox.master_config_path.read_text())
    for other in ("rest_twisted", "rest_tornado", "rest_cherrypy", "rest_wsgi"):
        options.pop(other, None)
    options[name] = block
    options["api_pidfile"] = str(root / "salt-api.pid")
    options["api_logfile"] = str(root / "api.log")
    options["log_file"] = str(root / "api.log")
    # salt-api as shipped logs at warning
    options["log_level_logfile"] = "warning"
    (root / "master").write_text(yaml.safe_dump(options, default_flow_style=False))
    return root


def start_salt_api(
    sandbox: SaltSandbox, root: Path, key: str, label: str, name: str, block_extra: dict[str, Any]
) -> Server:
    port = free_port()
    if name == "rest_tornado":
        block = {"port": port, "address": "127.0.0.1", "disable_ssl": True, "websockets": True, **block_extra}
    else:
        block = {"port": port, "host": "127.0.0.1", "disable_ssl": True, **block_extra}
    salt_api_config(sandbox, root, name, block)
    server = Server(key=key, label=label, port=port, root=root)
    spawn_salt_api(server)
    return server


def spawn_salt_api(server: Server) -> None:
    """``salt-api -c <its config copy>`` in its own session; wait until it answers."""
    root = server.root
    out = open(root / "salt-api.out", "ab")  # noqa: SIM115 - lives with the process
    try:
        server.proc = subprocess.Popen(  # noqa: S603 - fixed program
            [salt_program("salt-api"), "-c", str(root), "-l", "warning"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()
    proc = server.proc
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(
                f"{server.label} exited with {proc.returncode}: {(root / 'salt-api.out').read_text()[-2000:]}"
            )
        try:
            status, _h, _b = http("GET", server.url + "/", timeout=2)
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SandboxError(f"{server.label} did not answer in 60 s")


def restart_server(server: Server) -> None:
    """Stop by PID and start again on the same port with the same config; log in again."""
    stop_server(server)
    if server.api is not None:
        server.api.start(timeout=60)
    else:
        spawn_salt_api(server)
    server.login()


def start_ours(sandbox: SaltSandbox, root: Path) -> Server:
    port = free_port()
    block = {
        "port": port, "address": "127.0.0.1", "disable_ssl": True, "websockets": True,
        # every bench connection comes from 127.0.0.1: lift the per-peer cap (default 1000) and make room
        # for idle_streams' 10,000 streams (default max_connections 10000); the peers have no such caps
        "max_connections": 20000, "max_connections_per_ip": 0,
    }  # fmt: skip
    api = ApiProcess(root, sandbox, block, name="ours")
    api.start(timeout=60)
    return Server(key="ours", label="saltapi_twisted", port=port, root=root / "ours", api=api)


def stop_server(server: Server) -> None:
    """Stop by the PID we started (SIGTERM, then SIGKILL of its process group)."""
    if server.api is not None:
        server.api.stop()
        return
    proc = server.proc
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked netapi child, if it outlived its parent
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class Stack:
    """The master, 5 minions and the three servers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sandbox = SaltSandbox(root / "salt", minion_ids=list(MINIONS))
        self.servers: list[Server] = []

    def start(self, log: Any = print) -> None:
        t0 = time.monotonic()
        self.sandbox.start()
        log(f"master + {len(MINIONS)} minions up in {time.monotonic() - t0:.1f}s")
        self.servers.append(start_ours(self.sandbox, self.root / "servers"))
        self.servers.append(
            start_salt_api(
                self.sandbox, self.root / "servers" / "tornado", "tornado", "rest_tornado", "rest_tornado", {}
            )
        )
        self.servers.append(
            start_salt_api(
                self.sandbox, self.root / "servers" / "cherrypy", "cherrypy", "rest_cherrypy", "rest_cherrypy", {}
            )
        )
        for server in self.servers:
            server.login()
        log("servers: " + ", ".join(f"{s.label} {s.url} pid {s.pid}" for s in self.servers))

    def stop(self) -> None:
        for server in self.servers:
            try:
                stop_server(server)
            except Exception as exc:  # noqa: BLE001 - stop the rest anyway
                print(f"stopping {server.label}: {exc}")
        self.sandbox.stop()

    # process groups for CPU accounting ----------------------------------

    def master_pid(self) -> int:
        assert self.sandbox.master_proc is not None
        return self.sandbox.master_proc.pid

    def minion_pids(self) -> list[int]:
        return [proc.pid for proc in self.sandbox.minion_procs.values()]
