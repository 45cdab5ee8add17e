"""Fixtures: a real salt-master with minions, and the API started with twistd.

The master and minions are session-scoped (they take seconds to start); a
test that needs to stop or restart a master starts its own sandbox.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from saltapi_twisted.sandbox import ADMIN_USER, LIMITED_USER, ApiProcess, SaltSandbox

urllib3.disable_warnings()

MINIONS = ["minion-1", "minion-2"]


@pytest.fixture(scope="session")
def salt_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaltSandbox]:
    """A real salt-master with two minions, the ``file`` eauth backend and real users."""
    sandbox = SaltSandbox(tmp_path_factory.mktemp("salt"), minion_ids=list(MINIONS))
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.stop()


def make_cert(directory: Path, days: int = 30, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (openssl)."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(  # noqa: S603
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(crt), "-days", str(days),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return crt, key


class Api:
    """A running API and a ``requests`` session helper bound to it."""

    def __init__(self, process: ApiProcess) -> None:
        self.process = process
        self.url = process.url

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("verify", False)
        return requests.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def login(self, user: tuple[str, str] = ADMIN_USER, **extra: Any) -> str:
        response = self.post(
            "/login", json={"username": user[0], "password": user[1], "eauth": "file", **extra}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["return"][0]["token"])

    def run(self, chunks: Any, token: str | None = None, path: str = "/", **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["X-Auth-Token"] = token
        return self.post(path, json=chunks, headers=headers, **kwargs)


@pytest.fixture(scope="session")
def api_process(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The API over plain HTTP on loopback, websockets on, started with twistd."""
    root = tmp_path_factory.mktemp("api")
    process = ApiProcess(
        root,
        salt_master,
        {"disable_ssl": True, "websockets": True, "events_keepalive": 1, "cors_origin": ["https://ui.example"], "metrics": True},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def api(api_process: ApiProcess) -> Api:
    """A client of the session's API."""
    return Api(api_process)


@pytest.fixture(scope="session")
def admin_token(api: Api) -> str:
    """A token of ``saltdev`` (everything allowed)."""
    return api.login(ADMIN_USER)


@pytest.fixture(scope="session")
def limited_token(api: Api) -> str:
    """A token of ``limited`` (``test.*`` only)."""
    return api.login(LIMITED_USER)


@pytest.fixture
def fresh_sandbox(tmp_path: Path) -> Iterator[SaltSandbox]:
    """A master of the test's own (one minion), for tests that stop or restart it."""
    sandbox = SaltSandbox(tmp_path / "salt", minion_ids=["solo-1"])
    try:
        yield sandbox
    finally:
        sandbox.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the fast in-memory tiers first."""
    order = {"unit": 0, "component": 1, "integration": 2, "security": 3}

    def rank(item: pytest.Item) -> int:
        parts = Path(str(item.fspath)).parts
        for name, value in order.items():
            if name in parts:
                return value
        return 4

    items.sort(key=lambda item: (item.get_closest_marker("after_everything") is not None, rank(item)))


os.environ.setdefault("SALTAPI_TESTS", "1")
