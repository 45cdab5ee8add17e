"""``python -m saltapi_twisted.demo``: the API in front of a throw-away master.

Starts a real ``salt-master`` and two ``salt-minion`` processes in a
temporary directory, then ``twistd -n saltapi`` against that master, prints
the URL, a login to try and a curl line, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from .sandbox import ADMIN_USER, ApiProcess, SaltSandbox, SandboxError, free_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one; 8000 if free)")
    parser.add_argument("--minions", type=int, default=2, help="how many minions to start")
    args = parser.parse_args(argv)

    port = args.port or _preferred_port()
    root = Path(tempfile.mkdtemp(prefix="saltapi-demo-"))
    sandbox = SaltSandbox(root, minion_ids=[f"minion-{i}" for i in range(1, args.minions + 1)])
    api = ApiProcess(root, sandbox, {"port": port, "address": "127.0.0.1", "disable_ssl": True, "websockets": True})
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"starting a salt-master and {args.minions} minions in {root} ...", flush=True)
        sandbox.start()
        api.start()
        user, password = ADMIN_USER
        print(
            f"""
saltapi_twisted is serving {api.url}  (plain HTTP on loopback, for the demo)

  login:    {user} / {password}  (eauth: file)
  try:
    curl -sS {api.url}/login -H 'Accept: application/json' \\
         -d username={user} -d password={password} -d eauth=file
    curl -sS {api.url}/ -H 'X-Auth-Token: <token from above>' \\
         -H 'Content-Type: application/json' \\
         -d '[{{"client": "local", "tgt": "*", "fun": "test.ping"}}]'
    curl -sS -N {api.url}/events -H 'X-Auth-Token: <token>'

Master config: {sandbox.master_config_path}   API log: {api.log_path}
Press Ctrl-C to stop everything.
""",
            flush=True,
        )
        while api.proc is not None and api.proc.poll() is None:
            time.sleep(0.5)
        print("the API exited:\n" + api.output(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except SandboxError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        api.stop()
        sandbox.stop()


def _preferred_port() -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 8000))
            return 8000
        except OSError:
            return free_port()


if __name__ == "__main__":
    sys.exit(main())
