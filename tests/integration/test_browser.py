"""A real headless Chromium (Debian ``chromium``) against the API."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox

from ..conftest import MINIONS
from ..streamclients import fire_events

PAGES = Path(__file__).parent / "webpages"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def hosted_api(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    root = tmp_path_factory.mktemp("hosted")
    static = root / "static"
    shutil.copytree(PAGES, static)
    process = ApiProcess(
        root, salt_master, {"disable_ssl": True, "websockets": True, "static": str(static), "app": str(static / "console.html")}
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_page_logs_in_and_runs_test_ping(browser: Browser, hosted_api: ApiProcess) -> None:
    page = browser.new_page()
    page.goto(hosted_api.url + "/app")
    page.fill("#username", "saltdev")
    page.fill("#password", "saltdev")
    page.click("#go")
    page.wait_for_selector("#ping:not([disabled])", timeout=30000)
    assert page.text_content("#status") == "logged in as saltdev"
    page.click("#ping")
    page.wait_for_function("document.getElementById('result').textContent.length > 0", timeout=60000)
    assert page.text_content("#result") == "{" + ",".join(f'"{m}":true' for m in MINIONS) + "}"


def test_eventsource_and_websocket_receive_a_fired_event(
    browser: Browser, hosted_api: ApiProcess, salt_master: SaltSandbox
) -> None:
    import requests

    token = requests.post(
        hosted_api.url + "/login", json={"username": "saltdev", "password": "saltdev", "eauth": "file"}, timeout=30
    ).json()["return"][0]["token"]
    tag = f"test/browser/{uuid.uuid4().hex}"
    page = browser.new_page()
    page.goto(hosted_api.url + "/static/streams.html")
    assert page.evaluate("([token, tag]) => window.startStreams(token, tag)", [token, tag]) == "ready"
    time.sleep(0.5)
    fire_events(salt_master, tag, 3)
    page.wait_for_function("window.received.sse.length >= 3 && window.received.ws.length >= 3", timeout=30000)
    received = page.evaluate("window.received")
    assert received["sse"] == [f"{tag}/{n}" for n in range(3)]
    assert received["ws"] == [f"{tag}/{n}" for n in range(3)]
