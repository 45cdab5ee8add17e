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
    # Prometheus' own ``authorization`` setting: a bearer token
    assert api.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200
    for header in (f"Basic {admin_token}", "Bearer", "Bearer " + "0" * 64, admin_token):
        assert api.get("/metrics", headers={"Authorization": header}).status_code == 401, header


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


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_log_format_json_and_trusted_proxies(salt_master: SaltSandbox, tmp_path: Path) -> None:
    """``log_format: json`` writes JSON lines to --logfile; X-Forwarded-For counts only from trusted proxies."""
    block = {"disable_ssl": True, "log_format": "json", "trusted_proxies": ["127.0.0.1"], "login_rate_limit": 2}
    process = ApiProcess(tmp_path, salt_master, block)
    process.start()
    try:
        api = Api(process)
        token = api.login()
        api.get("/jobs", headers={"X-Auth-Token": token, "X-Forwarded-For": "198.51.100.1, 203.0.113.9"})

        def bad_login(client: str) -> int:
            body = {"username": f"user-{client}", "password": "wrong", "eauth": "file"}
            return api.post("/login", json=body, headers={"X-Forwarded-For": client}).status_code

        # the limit counts per forwarded client: one client's failures do not lock out another
        assert [bad_login("203.0.113.50") for _ in range(3)] == [401, 401, 429]
        assert bad_login("203.0.113.51") == 401
        # a cookie from a proxy that terminated TLS is Secure
        login = api.post(
            "/login",
            json={"username": "saltdev", "password": "saltdev", "eauth": "file"},
            headers={"X-Forwarded-For": "203.0.113.52", "X-Forwarded-Proto": "https"},
        )
        assert login.status_code == 200
        assert "Secure" in login.headers["Set-Cookie"]
    finally:
        process.stop()
    events = _json_lines(process.log_path.read_text())
    assert events, process.output()
    access = [e for e in events if str(e.get("log_namespace", "")).endswith("ApiSite")]
    jobs = [e for e in access if str(e.get("path", "")).startswith("/jobs")]
    assert jobs and jobs[0]["client"] == "203.0.113.9" and jobs[0]["user"] == "saltdev", jobs
    assert not [e for e in events if e.get("log_level", {}).get("name") == "debug"]


def test_untrusted_forwarded_for_is_ignored_and_debug_logs(salt_master: SaltSandbox, tmp_path: Path) -> None:
    """Without trusted_proxies the peer is the client; ``debug: True`` raises the level to DEBUG."""
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True, "debug": True, "login_rate_limit": 2})
    process.start()
    try:
        api = Api(process)
        body = {"username": "saltdev", "password": "wrong", "eauth": "file"}
        codes = [
            api.post("/login", json=body, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(3)
        ]
        assert codes == [401, 401, 429]  # every attempt counted against 127.0.0.1
    finally:
        process.stop()
    text = process.log_path.read_text()
    assert "master mk_token request" in text, text[-3000:]
    assert '127.0.0.1 - "POST /login" 429' in text, text[-3000:]
