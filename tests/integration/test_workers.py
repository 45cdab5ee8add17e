"""``processes: N``: workers behind one listening socket, against the real master.

Which worker answers a request is the kernel's choice: each check opens fresh
connections and asks ``/stats`` on the same keep-alive connection which worker
it reached, until every worker has been seen.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox

from ..conftest import MINIONS, Api, make_cert
from ..streamclients import fire_events

WORKERS = 2


@pytest.fixture(scope="module")
def workers_api(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    process = ApiProcess(
        tmp_path_factory.mktemp("workers"),
        salt_master,
        {"disable_ssl": True, "processes": WORKERS, "events_keepalive": 1, "max_connections_per_ip": 0},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _stats(session: requests.Session, url: str, token: str) -> dict[str, Any]:
    response = session.get(url + "/stats", headers={"X-Auth-Token": token}, timeout=30, verify=False)
    assert response.status_code == 200, response.text
    return dict(response.json()["saltapi_twisted"])


def _on_each_worker(url: str, token: str, action: Callable[[requests.Session, int], Any]) -> dict[int, Any]:
    """Run *action* on a connection to each worker (fresh connections until all were reached)."""
    results: dict[int, Any] = {}
    for _ in range(200):
        session = requests.Session()
        session.verify = False  # the tests' self-signed certificate
        worker = _stats(session, url, token)["worker"]
        if worker not in results:
            results[worker] = action(session, worker)
        else:
            session.close()
        if len(results) == WORKERS:
            return results
    raise AssertionError(f"reached only workers {sorted(results)} in 200 connections")


def test_workers_serve_one_socket(workers_api: ApiProcess) -> None:
    api = Api(workers_api)
    token = api.login()
    pids = _on_each_worker(api.url, token, lambda s, w: _stats(s, api.url, token)["pid"])
    assert set(pids) == set(range(1, WORKERS + 1))
    assert len(set(pids.values())) == WORKERS
    assert workers_api.proc is not None and workers_api.proc.pid not in pids.values()
    # every worker has its own master link and runs jobs
    returns = _on_each_worker(
        api.url,
        token,
        lambda s, w: s.post(
            api.url + "/",
            json=[{"client": "local", "tgt": "*", "fun": "test.ping"}],
            headers={"X-Auth-Token": token},
            timeout=60,
        ).json(),
    )
    assert all(r == {"return": [{m: True for m in MINIONS}]} for r in returns.values()), returns


def test_logout_in_one_worker_revokes_in_all(workers_api: ApiProcess) -> None:
    api = Api(workers_api)
    admin = api.login()
    victim = api.login()
    # every worker has validated (and cached) the token, and holds a stream opened with it
    streams = _on_each_worker(
        api.url,
        admin,
        lambda s, w: s.get(api.url + "/events", headers={"X-Auth-Token": victim}, stream=True, timeout=(10, 20)),
    )
    for response in streams.values():
        assert response.status_code == 200
        assert response.raw.read(5)  # the stream started
    logout = requests.post(api.url + "/logout", headers={"X-Auth-Token": victim}, timeout=30)
    assert logout.status_code == 200, logout.text
    # the streams of that token end in every worker
    for worker, response in streams.items():
        started = time.monotonic()
        while response.raw.read(4096):
            assert time.monotonic() - started < 15, f"worker {worker} kept the revoked token's stream open"
    # and every worker refuses the token at once
    codes = _on_each_worker(
        api.url, admin, lambda s, w: s.get(api.url + "/jobs", headers={"X-Auth-Token": victim}, timeout=30).status_code
    )
    assert codes == {w: 401 for w in range(1, WORKERS + 1)}
    # a worker started later learns the revocation from the supervisor
    pids = _on_each_worker(api.url, admin, lambda s, w: _stats(s, api.url, admin)["pid"])
    os.kill(pids[1], signal.SIGKILL)
    new_pid = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and new_pid is None:
        try:
            seen = _on_each_worker(api.url, admin, lambda s, w: _stats(s, api.url, admin)["pid"])
        except (AssertionError, requests.RequestException):
            time.sleep(0.5)
            continue
        if seen[1] != pids[1]:
            new_pid = seen[1]
    assert new_pid is not None, "the killed worker was not started again"
    codes = _on_each_worker(
        api.url, admin, lambda s, w: s.get(api.url + "/jobs", headers={"X-Auth-Token": victim}, timeout=30).status_code
    )
    assert codes == {w: 401 for w in range(1, WORKERS + 1)}


def test_tls_workers_and_sigterm(salt_master: SaltSandbox, tmp_path: Path) -> None:
    """Workers serve TLS on the adopted socket; SIGTERM to the supervisor stops them all, exit 0."""
    crt, key = make_cert(tmp_path)
    process = ApiProcess(
        tmp_path, salt_master, {"processes": WORKERS, "ssl_crt": str(crt), "ssl_key": str(key), "address": "127.0.0.1"}
    )
    process.start()
    try:
        assert process.proc is not None and process.url.startswith("https://")
        supervisor = psutil.Process(process.proc.pid)
        children = supervisor.children()
        assert len(children) == WORKERS, children
        token = Api(process).login()
        pids = _on_each_worker(process.url, token, lambda s, w: _stats(s, process.url, token)["pid"])
        assert sorted(pids.values()) == sorted(c.pid for c in children)
        assert process.stop() == 0, process.output()
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, alive
    finally:
        process.stop()  # a no-op once stopped; stops the supervisor and its workers when an assertion failed


def _sse_messages(
    response: requests.Response, want: Callable[[list[dict[str, str]]], bool], limit: float
) -> list[dict[str, str]]:
    """Read SSE messages (``tag``/``data``/``id`` fields) until *want* says enough."""
    messages: list[dict[str, str]] = []
    current: dict[str, str] = {}
    started = time.monotonic()
    for line in response.iter_lines(decode_unicode=True):
        if line:
            name, _sep, value = line.partition(": ")
            if name in ("tag", "data", "id"):
                current[name] = value
            continue
        if current:
            messages.append(current)
            current = {}
            if want(messages):
                return messages
        assert time.monotonic() - started < limit, messages
    raise AssertionError(f"the stream ended early: {messages}")


def test_last_event_id_replays_on_another_worker(workers_api: ApiProcess, salt_master: SaltSandbox) -> None:
    api = Api(workers_api)
    token = api.login()
    prefix = f"test/workers/{uuid.uuid4().hex}"

    def open_stream(session: requests.Session, extra: dict[str, str]) -> requests.Response:
        url = f"{api.url}/events?tag={prefix}/"
        return session.get(url, headers={"X-Auth-Token": token, **extra}, stream=True, timeout=(10, 30))

    # a client on worker 1 sees the first event, notes its id, and drops
    streams = _on_each_worker(api.url, token, lambda s, w: open_stream(s, {}))
    streams[2].close()
    time.sleep(0.5)  # the stream is subscribed
    fire_events(salt_master, f"{prefix}/before", 1)
    seen = _sse_messages(streams[1], lambda m: any("/before/" in x.get("tag", "") for x in m), 20)
    last_id = [m for m in seen if "/before/" in m.get("tag", "")][-1]["id"]
    streams[1].close()
    # events it missed, then a reconnect that reaches worker 2
    fire_events(salt_master, f"{prefix}/missed", 3)
    time.sleep(1.0)
    replayed = _on_each_worker(api.url, token, lambda s, w: open_stream(s, {"Last-Event-ID": last_id}))
    try:
        for worker in (2, 1):
            messages = _sse_messages(
                replayed[worker], lambda m: len([x for x in m if "/missed/" in x.get("tag", "")]) >= 3, 20
            )
            tags = [m["tag"] for m in messages if "tag" in m]
            assert tags[:3] == [f"{prefix}/missed/{n}" for n in range(3)], (worker, tags)
    finally:
        for response in replayed.values():
            response.close()
