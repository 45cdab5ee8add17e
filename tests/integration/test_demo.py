"""The demo command: a real master, minions and the API, a printed URL that answers, Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import requests

from saltapi_twisted.sandbox import free_port


def test_demo_prints_a_working_url_and_stops_everything() -> None:
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "saltapi_twisted.demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = ""
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while "Press Ctrl-C" not in output and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output += line
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)", output)
        assert match, output
        url = match.group(1)
        login = requests.post(url + "/login", data={"username": "saltdev", "password": "saltdev", "eauth": "file"},
                              timeout=30)
        token = login.json()["return"][0]["token"]
        ping = requests.post(url + "/", json=[{"client": "local", "tgt": "*", "fun": "test.ping"}],
                             headers={"X-Auth-Token": token}, timeout=60)
        assert ping.json() == {"return": [{"minion-1": True, "minion-2": True}]}
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0
    time.sleep(1)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
