"""A throw-away Salt master with minions, for the demo and the test suite.

:class:`SaltSandbox` writes a master configuration and minion configurations
into a directory, starts a real ``salt-master`` and real ``salt-minion``
processes (from the ``salt`` package installed beside this one) on free
loopback ports, waits until every minion answers, and stops them again by
the PIDs it started.

It runs Salt's programs as subprocesses and never imports ``salt``: the
service stays independent of it, and Salt is only needed where a sandbox is
wanted (the ``demo`` and ``test`` extras).

Users of the ``file`` eauth backend:

* ``saltdev`` / ``saltdev``: ``['.*', '@runner', '@wheel', '@jobs']``;
* ``limited`` / ``limited``: ``['test.*']``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ADMIN_USER = ("saltdev", "saltdev")
LIMITED_USER = ("limited", "limited")
ALL_CLIENTS = [
    "local",
    "local_async",
    "local_batch",
    "local_subset",
    "runner",
    "runner_async",
    "wheel",
    "wheel_async",
]


class SandboxError(RuntimeError):
    """The sandbox could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on *host* that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def salt_program(name: str) -> str:
    """The path of a Salt program installed beside this Python."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SandboxError(f"{name} not found: install Salt (python scripts/install_salt.py)")
    return found


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class SaltSandbox:
    """A real master and minions in *root*.

    :param root: an empty directory owned by the caller.
    :param minion_ids: ids of the minions to start.
    :param api_block: the ``rest_twisted`` block written into the master config.
    :param master_options: extra master options (override the defaults).
    """

    root: Path
    minion_ids: list[str] = field(default_factory=lambda: ["minion-1", "minion-2"])
    api_block: dict[str, Any] | None = None
    master_options: dict[str, Any] = field(default_factory=dict)
    log_level: str = "warning"

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.conf_dir = self.root / "conf"
        self.master_config_path = self.conf_dir / "master"
        self.publish_port = free_port()
        self.ret_port = free_port()
        self.master_proc: subprocess.Popen[bytes] | None = None
        self.minion_procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sentinel = self.root / "SENTINEL"
        # Unix socket paths are limited to 107 bytes: keep sockets short.
        self.short_dir = Path(tempfile.mkdtemp(prefix="salt-sock-", dir="/tmp"))  # nosec B108 - mkdtemp: private, unique

    # ------------------------------------------------------------------
    # configuration

    @property
    def sock_dir(self) -> Path:
        return self.short_dir / "master"

    @property
    def cachedir(self) -> Path:
        return self.root / "master" / "cache"

    def master_config(self) -> dict[str, Any]:
        """The master options this sandbox writes."""
        users_file = self.conf_dir / "eauth_users.txt"
        options: dict[str, Any] = {
            "id": "sandbox-master",
            "user": _current_user(),
            "interface": "127.0.0.1",
            "publish_port": self.publish_port,
            "ret_port": self.ret_port,
            # no root_dir: Salt would prefix it to the short socket directory
            "pki_dir": str(self.root / "master" / "pki"),
            "cachedir": str(self.cachedir),
            "sock_dir": str(self.sock_dir),
            "pidfile": str(self.root / "master" / "salt-master.pid"),
            "log_file": str(self.root / "master" / "master.log"),
            "log_level_logfile": "info",
            "auto_accept": True,
            "file_roots": {"base": [str(self.root / "file_roots")]},
            "pillar_roots": {"base": [str(self.root / "pillar_roots")]},
            "external_auth": {
                "file": {
                    "^filename": str(users_file),
                    "^filetype": "text",
                    "^hashtype": "plaintext",
                    ADMIN_USER[0]: [".*", "@runner", "@wheel", "@jobs"],
                    LIMITED_USER[0]: ["test.*"],
                }
            },
            "netapi_enable_clients": list(ALL_CLIENTS),
            "worker_threads": 5,
            "enable_ssh_minions": False,
            "loop_interval": 5,
            # big job returns reach the event bus whole (the default trims at 1 MiB)
            "max_event_size": 128 * 1024 * 1024,
        }
        options.update(self.master_options)
        if self.api_block is not None:
            options["rest_twisted"] = self.api_block
        return options

    def minion_config(self, minion_id: str) -> dict[str, Any]:
        """The options of one minion."""
        base = self.root / "minions" / minion_id
        return {
            "id": minion_id,
            "user": _current_user(),
            "master": "127.0.0.1",
            "master_port": self.ret_port,
            "publish_port": self.publish_port,
            "pki_dir": str(base / "pki"),
            "cachedir": str(base / "cache"),
            "sock_dir": str(self.short_dir / minion_id),
            "pidfile": str(base / "salt-minion.pid"),
            "log_file": str(base / "minion.log"),
            "log_level_logfile": "info",
            "file_roots": {"base": [str(self.root / "file_roots")]},
            "acceptance_wait_time": 1,
            "acceptance_wait_time_max": 2,
            "random_reauth_delay": 0,
            "recon_default": 200,
            "recon_max": 1000,
            "recon_randomize": False,
            "auth_timeout": 5,
            "auth_tries": 20,
            "ping_interval": 0,
            "grains": {"sandbox": True},
            "max_event_size": 128 * 1024 * 1024,
        }

    def write_config(self) -> None:
        """Write every configuration file (idempotent)."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "master.d").mkdir(exist_ok=True)
        (self.root / "file_roots").mkdir(exist_ok=True)
        (self.root / "pillar_roots").mkdir(exist_ok=True)
        users = self.conf_dir / "eauth_users.txt"
        users.write_text(f"{ADMIN_USER[0]}:{ADMIN_USER[1]}\n{LIMITED_USER[0]}:{LIMITED_USER[1]}\n")
        users.chmod(0o600)
        self.master_config_path.write_text(yaml.safe_dump(self.master_config(), default_flow_style=False))
        for minion_id in self.minion_ids:
            directory = self.root / "minions" / minion_id / "conf"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "minion").write_text(yaml.safe_dump(self.minion_config(minion_id)))

    def set_api_block(self, block: dict[str, Any], name: str = "rest_twisted") -> None:
        """Replace the API block in the master config (for the API only)."""
        options = yaml.safe_load(self.master_config_path.read_text())
        options.pop("rest_twisted", None)
        options[name] = block
        self.master_config_path.write_text(yaml.safe_dump(options, default_flow_style=False))

    # ------------------------------------------------------------------
    # processes

    def _spawn(self, program: str, conf_dir: Path, log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.root / log_name, "ab")  # noqa: SIM115 - lives with the process
        try:
            return subprocess.Popen(  # noqa: S603 - fixed program, no shell
                [salt_program(program), "-c", str(conf_dir), "-l", self.log_level],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def start_master(self, timeout: float = 60.0) -> None:
        """Start the master and wait until its sockets are up."""
        self.write_config()
        self.master_proc = self._spawn("salt-master", self.conf_dir, "master.out")
        deadline = time.monotonic() + timeout
        pub = self.sock_dir / "master_event_pub.ipc"
        while time.monotonic() < deadline:
            if self.master_proc.poll() is not None:
                raise SandboxError(f"salt-master exited with {self.master_proc.returncode}: {self.tail('master.out')}")
            if pub.exists() and _port_open(self.ret_port) and _port_open(self.publish_port):
                return
            time.sleep(0.1)
        raise SandboxError(f"salt-master did not come up in {timeout:.0f}s: {self.tail('master.out')}")

    def start_minions(self, timeout: float = 90.0) -> None:
        """Start every minion and wait until all answer ``test.ping``."""
        for minion_id in self.minion_ids:
            conf = self.root / "minions" / minion_id / "conf"
            self.minion_procs[minion_id] = self._spawn("salt-minion", conf, f"{minion_id}.out")
        self.wait_minions(timeout)

    def wait_minions(self, timeout: float = 90.0) -> None:
        """Wait until every minion answers ``test.ping`` through the master."""
        deadline = time.monotonic() + timeout
        answered: set[str] = set()
        while time.monotonic() < deadline:
            for minion_id, proc in self.minion_procs.items():
                if proc.poll() is not None:
                    raise SandboxError(f"{minion_id} exited: {self.tail(minion_id + '.out')}")
            answered = set(self.salt_cli("*", "test.ping", timeout=5))
            if answered >= set(self.minion_ids):
                return
            time.sleep(0.5)
        missing = sorted(set(self.minion_ids) - answered)
        raise SandboxError(f"minions {missing} did not answer in {timeout:.0f}s")

    def salt_cli(self, target: str, fun: str, *args: str, timeout: int = 10) -> dict[str, Any]:
        """Run the ``salt`` CLI against this master; the JSON result per minion."""
        command = [
            salt_program("salt"),
            "-c",
            str(self.conf_dir),
            "--out=json",
            "--static",
            "-t",
            str(timeout),
            target,
            fun,
            *args,
        ]
        result = subprocess.run(  # noqa: S603 - fixed program, no shell
            command, capture_output=True, timeout=timeout + 60, check=False
        )
        try:
            parsed = json.loads(result.stdout or b"{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def start(self) -> SaltSandbox:
        """Start the master and the minions."""
        self.start_master()
        self.start_minions()
        return self

    def stop_master(self) -> None:
        """Stop the master (and its children) by the PID this sandbox started."""
        if self.master_proc is not None:
            _stop(self.master_proc)
            self.master_proc = None

    def restart_master(self) -> None:
        """Stop the master and start it again on the same ports."""
        self.stop_master()
        self.start_master()

    def stop(self) -> None:
        """Stop every process this sandbox started."""
        for proc in self.minion_procs.values():
            _stop(proc)
        self.minion_procs.clear()
        self.stop_master()
        shutil.rmtree(self.short_dir, ignore_errors=True)

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of one of the sandbox's output files."""
        try:
            text = (self.root / name).read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def job_cache_contains(self, needle: str) -> bool:
        """Whether any file in the master's job cache contains *needle*."""
        jobs = self.cachedir / "jobs"
        if not jobs.exists():
            return False
        raw = needle.encode()
        for path in jobs.rglob("*"):
            if path.is_file():
                try:
                    if raw in path.read_bytes():
                        return True
                except OSError:
                    continue
        return False


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop a process started in its own session, and everything it forked."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class ApiProcess:
    """``twistd -n saltapi`` started the way users start it, as a subprocess.

    :param root: a directory for its config copy and log.
    :param sandbox: the master it serves.
    :param block: the ``rest_twisted`` block.
    :param name: a name for its files.
    """

    def __init__(self, root: Path, sandbox: SaltSandbox, block: dict[str, Any], name: str = "api") -> None:
        self.root = Path(root) / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.sandbox = sandbox
        self.block = dict(block)
        self.block.setdefault("address", "127.0.0.1")
        self.block.setdefault("port", free_port())
        self.config_path = self.root / "master"
        self.log_path = self.root / "api.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "http" if self.block.get("disable_ssl") else "https"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.block['port']}"

    def write_config(self) -> None:
        """Copy the master's options and add this API block."""
        options = yaml.safe_load(self.sandbox.master_config_path.read_text())
        options.pop("rest_twisted", None)
        options.pop("rest_tornado", None)
        options["rest_twisted"] = self.block
        self.config_path.write_text(yaml.safe_dump(options, default_flow_style=False))

    def command(self) -> list[str]:
        return [
            salt_program("twistd"),
            "-n",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "saltapi",
            "-c",
            str(self.config_path),
        ]

    def start(self, timeout: float = 30.0, wait_master: bool = True) -> ApiProcess:
        """Start and wait until ``GET /`` answers (and the master link is up)."""
        self.write_config()
        out = open(self.root / "twistd.out", "ab")  # noqa: SIM115 - lives with the process
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed program, no shell
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(self.root)
            )
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SandboxError(f"the API exited with {self.proc.returncode}: {self.output()}")
            status = self._health()
            if status is not None and (not wait_master or status == 200):
                return self
            time.sleep(0.1)
        raise SandboxError(f"the API did not come up in {timeout:.0f}s: {self.output()}")

    def _health(self) -> int | None:
        import ssl
        import urllib.error
        import urllib.request

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2, context=context) as response:  # noqa: S310  # nosec B310 - our own http(s) URL
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def output(self) -> str:
        """The end of the API's own output and log."""
        parts = []
        for name in ("twistd.out", "api.log"):
            try:
                parts.append((self.root / name).read_text(errors="replace")[-3000:])
            except OSError:
                pass
        return "\n".join(parts)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                return None
        return proc.returncode
