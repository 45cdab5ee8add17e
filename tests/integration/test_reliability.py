"""Reliability against real masters: restarts under load, big returns, many jobs, no leaks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
import uuid
from pathlib import Path

import psutil
import requests

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox

from ..conftest import MINIONS, Api
from ..streamclients import SSEClient, fire_events


def _stats(api: Api, token: str) -> dict:
    return api.get("/stats", headers={"X-Auth-Token": token}).json()["saltapi_twisted"]


def test_master_restarts_under_load(fresh_sandbox: SaltSandbox, tmp_path: Path) -> None:
    sandbox = fresh_sandbox
    sandbox.start()
    process = ApiProcess(tmp_path, sandbox, {"disable_ssl": True, "events_keepalive": 1})
    process.start()
    api = Api(process)
    try:
        token = api.login()
        prefix = f"test/restart/{uuid.uuid4().hex}"

        async def main() -> None:
            clients = [SSEClient(process.block["port"], token, path=f"/events?tag={prefix}/") for _ in range(20)]
            for client in clients:
                await client.connect()
            loop = asyncio.get_running_loop()
            for round_ in range(2):
                await loop.run_in_executor(None, sandbox.stop_master)
                # requests during the outage fail fast
                started = time.monotonic()
                response = await loop.run_in_executor(
                    None, lambda: api.run([{"client": "local_async", "tgt": "*", "fun": "test.ping"}], token)
                )
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "5"
                assert time.monotonic() - started < 3.0
                await loop.run_in_executor(None, sandbox.start_master)
                master_back = time.monotonic()
                # the API reconnects by itself
                while time.monotonic() - master_back < 40:
                    health = await loop.run_in_executor(None, lambda: api.get("/health"))
                    if health.status_code == 200:
                        break
                    await asyncio.sleep(0.2)
                assert health.status_code == 200, health.text
                assert time.monotonic() - master_back < 40  # a hang detector; the benchmark machine is shared
                # streams stayed open and resume
                await asyncio.gather(*(c.read_until(lambda c: "bus-reconnected" in c.comments, 10) for c in clients))
                for client in clients:
                    client.comments.clear()
                await loop.run_in_executor(None, lambda: fire_events(sandbox, f"{prefix}/{round_}", 10))
                done = await asyncio.gather(
                    *(c.read_until(lambda c, r=round_: len(c.tags(f"{prefix}/{r}/")) >= 10, 20) for c in clients)
                )
                assert all(done)
                assert not any(c.closed for c in clients)
            for client in clients:
                client.close()

        asyncio.run(main())
        # requests after the outage work (the token survives in the master's token store)
        response = api.run([{"client": "local", "tgt": "*", "fun": "test.ping"}], token)
        assert response.status_code == 200
        assert process.proc is not None and process.proc.poll() is None
    finally:
        process.stop()


def test_big_return_arrives_intact_without_blocking(api: Api, admin_token: str) -> None:
    size = 20 * 1024 * 1024
    command = f"python3 -c \"import sys; sys.stdout.write('a' * {size})\""
    before = _stats(api, admin_token)["reactor_lag_last_minute"]
    response = api.run(
        [{"client": "local", "tgt": "minion-1", "fun": "cmd.run", "arg": [command], "kwarg": {"python_shell": True},
          "timeout": 60}],
        admin_token,
        timeout=180,
    )
    assert response.status_code == 200
    output = response.json()["return"][0]["minion-1"]
    assert len(output) == size
    assert hashlib.sha256(output.encode()).hexdigest() == hashlib.sha256(b"a" * size).hexdigest()
    lag = _stats(api, admin_token)["reactor_lag_last_minute"]
    # informational: the benchmark reports lag; here it must stay well below a stall
    assert lag < 2.0, (before, lag)


def test_many_pings_every_return_arrives(api: Api, admin_token: str) -> None:
    count = 300

    def one(_: int) -> dict:
        return api.run([{"client": "local", "tgt": "*", "fun": "test.ping", "timeout": 30}], admin_token).json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(one, range(count)))
    missing = [r for r in results if r != {"return": [{m: True for m in MINIONS}]}]
    assert not missing, missing[:3]


def test_descriptors_and_memory_return_to_baseline(api: Api, admin_token: str) -> None:
    proc = psutil.Process(api.process.proc.pid)  # type: ignore[union-attr]
    session = requests.Session()

    def mixed(n: int) -> None:
        for i in range(n):
            kind = i % 4
            if kind == 0:
                session.get(api.url + "/", timeout=30)
            elif kind == 1:
                session.get(api.url + "/login", headers={"X-Auth-Token": admin_token}, timeout=30)
            elif kind == 2:
                session.post(api.url + "/", data=b"{bad", headers={"X-Auth-Token": admin_token,
                                                                  "Content-Type": "application/json"}, timeout=30)
            else:
                requests.get(api.url + "/minions/x", headers={"X-Auth-Token": "z" * 64}, timeout=30)

    mixed(500)
    time.sleep(1)
    fds, rss = proc.num_fds(), proc.memory_info().rss
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(mixed, [2500] * 4))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.num_fds() > fds + 5:
        time.sleep(0.5)
    assert proc.num_fds() <= fds + 5
    assert proc.memory_info().rss < rss + 40 * 1024 * 1024
