"""The service started the way users start it: twistd, config, TLS, shutdown."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox, free_port, salt_program

from ..conftest import Api, make_cert

TWISTD = salt_program("twistd")


def test_twistd_lists_the_plugin_from_any_directory(tmp_path: Path) -> None:
    result = subprocess.run([TWISTD, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "saltapi" in result.stdout


def test_plugin_help_names_the_config_option(tmp_path: Path) -> None:
    result = subprocess.run([TWISTD, "saltapi", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--config" in result.stdout and "--listen" in result.stdout


def test_root_over_plain_http(api: Api) -> None:
    response = api.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["return"] == "Welcome"
    assert body["clients"] == [
        "local", "local_async", "local_batch", "local_subset", "runner", "runner_async", "wheel", "wheel_async",
    ]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_root_over_tls_with_a_self_signed_certificate(salt_master: SaltSandbox, tmp_path: Path) -> None:
    crt, key = make_cert(tmp_path)
    process = ApiProcess(tmp_path, salt_master, {"ssl_crt": str(crt), "ssl_key": str(key)})
    process.start()
    try:
        response = requests.get(process.url + "/", verify=str(crt), timeout=30)
        assert response.status_code == 200
        assert response.json()["return"] == "Welcome"
        # TLS 1.2 and 1.3 only: an old protocol is refused.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        import socket

        with socket.create_connection(("127.0.0.1", process.block["port"]), timeout=10) as sock:
            with pytest.raises(ssl.SSLError):
                with context.wrap_socket(sock):
                    pass
    finally:
        assert process.stop() == 0


def test_key_inside_the_certificate_file(salt_master: SaltSandbox, tmp_path: Path) -> None:
    crt, key = make_cert(tmp_path)
    both = tmp_path / "both:pem.pem"  # a colon in the path must be quoted in the endpoint
    both.write_text(key.read_text() + crt.read_text())
    process = ApiProcess(tmp_path, salt_master, {"ssl_crt": str(both)})
    process.start()
    try:
        assert requests.get(process.url + "/", verify=False, timeout=30).status_code == 200
    finally:
        process.stop()


def _start_with(tmp_path: Path, salt_master: SaltSandbox, block: dict, raw: str | None = None) -> subprocess.CompletedProcess:
    options = yaml.safe_load(salt_master.master_config_path.read_text())
    options["rest_twisted"] = block
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    text = yaml.safe_dump(options) if raw is None else raw
    (conf / "master").write_text(text)
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "saltapi", "-c", str(conf)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"port": 1}, "ssl_crt: missing"),
        ({"port": 1, "ssl_crt": "/nonexistent/cert.pem"}, "ssl_crt: /nonexistent/cert.pem does not exist"),
        ({"port": "eighty", "disable_ssl": True}, "port: must be a whole number"),
        ({"port": 70000, "disable_ssl": True}, "port: must be a whole number"),
        ({"port": 8000, "address": "not-an-ip", "disable_ssl": True}, "is not an IP address"),
        ({"disable_ssl": True}, "port: missing"),
    ],
    ids=["missing-cert", "cert-not-found", "port-not-a-number", "port-out-of-range", "bad-address", "no-port"],
)
def test_bad_config_exits_with_one_line(salt_master: SaltSandbox, tmp_path: Path, block: dict, expected: str) -> None:
    result = _start_with(tmp_path, salt_master, block)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("saltapi:")]
    assert len(lines) == 1, result.stderr


def test_bad_yaml_names_the_file(salt_master: SaltSandbox, tmp_path: Path) -> None:
    result = _start_with(tmp_path, salt_master, {}, raw="rest_twisted: [unclosed\n")
    assert result.returncode != 0
    assert "invalid YAML" in result.stderr and "master" in result.stderr
    assert "Traceback" not in result.stderr


def test_rest_tornado_block_is_used_when_alone(salt_master: SaltSandbox, tmp_path: Path) -> None:
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True})
    process.write_config()
    options = yaml.safe_load(process.config_path.read_text())
    options["rest_tornado"] = options.pop("rest_twisted")
    process.write_config = lambda: process.config_path.write_text(yaml.safe_dump(options))  # type: ignore[method-assign]
    process.start()
    try:
        assert requests.get(process.url + "/", timeout=30).json()["return"] == "Welcome"
    finally:
        process.stop()


def test_sigterm_stops_gracefully(salt_master: SaltSandbox, tmp_path: Path) -> None:
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True})
    process.start()
    started = time.monotonic()
    code = process.stop(timeout=10)
    assert code == 0
    assert time.monotonic() - started < 10


def test_master_down_at_start_serves_root_and_health(tmp_path: Path) -> None:
    sandbox = SaltSandbox(tmp_path / "salt", minion_ids=[])
    sandbox.write_config()  # never started
    process = ApiProcess(tmp_path, sandbox, {"disable_ssl": True})
    process.start(wait_master=False)
    try:
        assert requests.get(process.url + "/", timeout=5).status_code == 200
        health = requests.get(process.url + "/health", timeout=5)
        assert health.status_code == 503
        assert health.json()["request_channel"] == "down"
        login = requests.post(
            process.url + "/login", json={"username": "saltdev", "password": "saltdev", "eauth": "file"}, timeout=10
        )
        assert login.status_code == 503
        assert login.headers["Retry-After"] == "5"
    finally:
        process.stop()
