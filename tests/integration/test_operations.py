"""Operations: metrics, socket activation, JSON logs, secrets kept out of logs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import requests

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox, free_port, salt_program

from ..conftest import Api


def test_metrics(api: Api, admin_token: str) -> None:
    api.get("/")
    assert api.get("/metrics").status_code == 401
    response = api.get("/metrics", headers={"X-Auth-Token": admin_token})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    for family in (
        "saltapi_http_requests_total",
        "saltapi_http_request_duration_seconds_bucket",
        "saltapi_open_connections",
        "saltapi_open_streams",
        "saltapi_events_received_total",
        "saltapi_master_up",
        "saltapi_master_requests_total",
        "saltapi_master_request_duration_seconds_bucket",
        "saltapi_logins_total",
    ):
        assert family in text, family
    assert 'saltapi_http_requests_total{code="200",method="GET",route="/"}' in text
    assert admin_token not in text


def test_socket_activation(salt_master: SaltSandbox, tmp_path: Path) -> None:
    """systemd hands over the listening socket; the API serves on it."""
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True})
    process.write_config()
    port = free_port()
    command = [
        "systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=saltapi",
        salt_program("twistd"), "-n", "--pidfile=", f"--logfile={tmp_path / 'act.log'}",
        "saltapi", "-c", str(process.config_path), "--listen", "systemd:domain=INET:index=0",
    ]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.2)
        assert answer is not None and answer.json()["return"] == "Welcome"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_json_log_lines_and_no_secrets(salt_master: SaltSandbox, tmp_path: Path) -> None:
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True})
    process.command = lambda: [  # type: ignore[method-assign]
        salt_program("twistd"), "-n", "--pidfile=", "--logger=saltapi_twisted.logobserver.json_debug_observer",
        "saltapi", "-c", str(process.config_path),
    ]
    process.start()
    try:
        api = Api(process)
        token = api.login()
        api.run([{"client": "local", "tgt": "minion-1", "fun": "test.ping"}], token)
        api.get(f"/events?token={token}")
        api.post("/login", json={"username": "saltdev", "password": "wrong-secret-pw", "eauth": "file"})
        api.get("/jobs", headers={"X-Auth-Token": token})
    finally:
        process.stop()
    output = (process.root / "twistd.out").read_text()
    lines = [line for line in output.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert events, output[-2000:]
    assert any(str(e.get("log_namespace", "")).endswith("ApiSite") and "/jobs" in str(e.get("path")) for e in events)
    assert token not in output
    assert "wrong-secret-pw" not in output
    assert "saltdev:saltdev" not in output
    assert os.path.getsize(process.root / "twistd.out") > 0
