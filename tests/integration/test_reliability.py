"""Reliability against real masters: restarts under load, big returns, many jobs, no leaks.

Each test prints the figures it measured (``-s`` shows them). Timing targets
belong to the benchmarks (bench/); the bounds asserted here are hang and stall
detectors that hold on a loaded, shared machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox

from ..conftest import MINIONS, Api
from ..streamclients import SSEClient, WSClient, fire_events


def _stats(api: Api, token: str) -> dict:
    return api.get("/stats", headers={"X-Auth-Token": token}).json()["saltapi_twisted"]


async def _pump(client: SSEClient | WSClient) -> None:
    """Read *client* until it closes (answering websocket pings meanwhile)."""
    await client.read_until(lambda c: False, 24 * 3600)


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@dataclass
class _Load:
    """Requests sent back to back from a thread while the master restarts."""

    api: Api
    token: str
    results: list[tuple[float, float, str, int | str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 2:
                kind, method, body = "job", "POST", [{"client": "local_async", "tgt": "*", "fun": "test.ping"}]
            else:
                kind, method, body = "root", "GET", None
            started = time.monotonic()
            try:
                response = session.request(
                    method, self.api.url + "/", json=body, headers={"X-Auth-Token": self.token}, timeout=30
                )
                outcome: int | str = response.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            self.results.append((started, time.monotonic() - started, kind, outcome))
            time.sleep(0.1)


def test_master_restarts_under_load(fresh_sandbox: SaltSandbox, tmp_path: Path) -> None:
    sandbox = fresh_sandbox
    sandbox.start()
    block = {"disable_ssl": True, "events_keepalive": 1, "websockets": True, "ws_ping_interval": 10}
    # a request in flight when the master stops waits for its deadline (504): keep that short
    block["master_request_timeout"] = 10
    process = ApiProcess(tmp_path, sandbox, block)
    process.start()
    api = Api(process)
    port = process.block["port"]
    load: _Load | None = None
    try:
        token = api.login()
        prefix = f"test/restart/{uuid.uuid4().hex}"
        figures: list[str] = []
        timeline: list[tuple[float, str]] = []

        async def main() -> None:
            nonlocal load
            sse = [SSEClient(port, token, path=f"/events?tag={prefix}/") for _ in range(20)]
            wss = [WSClient(port, f"/all_events/{token}") for _ in range(5)]
            wss += [WSClient(port, f"/ws/{token}") for _ in range(5)]
            clients: list[SSEClient | WSClient] = [*sse, *wss]
            for client in clients:
                await client.connect()
            pumps = [asyncio.create_task(_pump(c)) for c in clients]

            def all_got(tag: str, count: int) -> Callable[[], bool]:
                return lambda: all(len(c.tags(tag)) >= count for c in clients)

            loop = asyncio.get_running_loop()
            # every stream delivers before the first restart (the websockets have said "ready")
            await loop.run_in_executor(None, lambda: fire_events(sandbox, f"{prefix}/warm", 3))
            assert await _until(all_got(f"{prefix}/warm/", 3), 30), [len(c.tags(prefix)) for c in clients]

            load = _Load(api, token)
            # two threads: one may wait on a request the stopping master took and never answered
            loaders = [threading.Thread(target=load.run, daemon=True) for _ in range(2)]
            for loader in loaders:
                loader.start()
            await asyncio.sleep(1)
            for round_ in range(2):
                for client in sse:
                    client.comments.clear()
                timeline.append((time.monotonic(), f"stop master {round_ + 1}"))
                await loop.run_in_executor(None, sandbox.stop_master)
                timeline.append((time.monotonic(), "master stopped"))
                # requests during the outage fail fast
                started = time.monotonic()
                response = await loop.run_in_executor(
                    None, lambda: api.run([{"client": "local_async", "tgt": "*", "fun": "test.ping"}], token)
                )
                failed_in = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "5"
                assert failed_in < 3.0
                await asyncio.sleep(2)  # the load keeps running against the stopped master
                timeline.append((time.monotonic(), f"start master {round_ + 1}"))
                await loop.run_in_executor(None, sandbox.start_master)
                master_back = time.monotonic()
                timeline.append((master_back, "master up"))
                # the API reconnects by itself: /health says 200
                health_at = None
                while time.monotonic() - master_back < 40:
                    health = await loop.run_in_executor(None, lambda: api.get("/health", timeout=10))
                    if health.status_code == 200:
                        health_at = time.monotonic()
                        break
                    await asyncio.sleep(0.1)
                assert health_at is not None, health.text
                timeline.append((health_at, "/health 200"))
                # the SSE streams stayed open and were told the bus came back
                assert await _until(lambda: all("bus-reconnected" in c.comments for c in sse), 30)
                bus_at = time.monotonic()
                # events fired now reach every SSE stream and every websocket
                fired = time.monotonic()
                await loop.run_in_executor(None, fire_events, sandbox, f"{prefix}/{round_}", 10)
                got = await _until(all_got(f"{prefix}/{round_}/", 10), 30)
                assert got, [len(c.tags(f"{prefix}/{round_}/")) for c in clients]
                delivered_in = time.monotonic() - fired
                closed = [(type(c).__name__, getattr(c, "close_code", None)) for c in clients if c.closed]
                assert not closed, closed
                figures.append(
                    f"restart {round_ + 1}: 503 in {failed_in * 1000:.0f} ms during the outage; master up -> "
                    f"/health 200 in {health_at - master_back:.2f} s, SSE bus-reconnected seen by all 20 at "
                    f"+{bus_at - master_back:.2f} s; 10 events fired and at all 20 SSE + 10 websockets "
                    f"in {delivered_in:.2f} s"
                )
                # a hang detector, not the 5 s target (the machine is shared; the figure is printed)
                assert health_at - master_back < 40
            load.stop.set()
            for loader in loaders:
                await loop.run_in_executor(None, loader.join)
            for task in pumps:
                task.cancel()
            for client in sse:
                client.close()
            for client in wss:
                await client.close()

        asyncio.run(main())
        # requests after the outage work (the token survives in the master's token store); the
        # minion reconnects in its own time, and Salt's minion sometimes does not after a second
        # restart (AsyncAuth InvalidStateError in its log): reported, not asserted
        deadline = time.monotonic() + 15
        while True:
            response = api.run([{"client": "local", "tgt": "*", "fun": "test.ping", "timeout": 5}], token)
            assert response.status_code == 200, response.text
            if response.json() == {"return": [{"solo-1": True}]} or time.monotonic() > deadline:
                break
            time.sleep(1)
        minion_back = response.json() == {"return": [{"solo-1": True}]}
        assert process.proc is not None and process.proc.poll() is None
        # the background load: only answers (no connection errors), 200 or a fast 503
        assert load is not None
        jobs = [r for r in load.results if r[2] == "job"]
        failed = [r for r in jobs if r[3] != 200]
        for line in figures:
            print(line)
        if not minion_back:
            print("  the minion did not answer within 15 s of the last restart (Salt minion re-auth)")
        print(
            f"load: {len(load.results)} requests during the restarts, {len(jobs)} local_async "
            f"({len(failed)} failed, slowest failure {max((r[1] for r in failed), default=0) * 1000:.0f} ms), "
            f"slowest GET / {max(r[1] for r in load.results if r[2] == 'root') * 1000:.0f} ms"
        )
        origin = timeline[0][0]
        events = [(round(t - origin, 2), what) for t, what in timeline]
        stopping = [(t, timeline[i + 1][0]) for i, (t, what) in enumerate(timeline) if what.startswith("stop master")]

        def in_flight_at_stop(started: float) -> bool:
            return any(begin - 0.5 <= started <= end for begin, end in stopping)

        # a request the master took but never answered (it was stopping) gets 504 at its deadline
        in_flight = [r for r in failed if r[3] == 504 and in_flight_at_stop(r[0])]
        if in_flight:
            print(f"  {len(in_flight)} request(s) in flight as the master stopped: 504 after "
                  + ", ".join(f"{r[1]:.1f} s" for r in in_flight))
        assert all(r[1] < block["master_request_timeout"] + 5 for r in in_flight), (in_flight, events)
        # every other request: 200, or a fast 503
        unexpected = [
            (round(r[0] - origin, 2), round(r[1], 2), r[3])
            for r in load.results
            if r[3] not in (200, 503) and r not in in_flight
        ]
        assert not unexpected, (unexpected, events)
        assert all(r[3] == 200 for r in load.results if r[2] == "root"), "GET / failed during the restarts"
        slow_failures = [(round(r[0] - origin, 2), round(r[1], 2), r[3]) for r in failed if r[3] == 503 and r[1] >= 3.0]
        assert not slow_failures, (slow_failures[:5], events)
        # once /health said 200 again, requests succeed
        recovered = timeline[-1][0]
        after = [(round(r[0] - origin, 2), round(r[1], 2), r[3]) for r in load.results if r[0] > recovered]
        assert all(r[2] == 200 for r in after), (after, events)
    finally:
        if load is not None:
            load.stop.set()
        process.stop()


def test_big_return_arrives_intact_without_blocking(api: Api, admin_token: str) -> None:
    size = 20 * 1024 * 1024
    command = f"python3 -c \"import sys; sys.stdout.write('a' * {size})\""
    before = _stats(api, admin_token)
    samples: list[float] = []
    probe_times: list[float] = []
    done = threading.Event()

    def probe() -> None:
        # while the job runs: the server's own lag figure, and how long a trivial request takes
        session = requests.Session()
        while not done.is_set():
            started = time.monotonic()
            stats = session.get(api.url + "/stats", headers={"X-Auth-Token": admin_token}, timeout=60)
            probe_times.append(time.monotonic() - started)
            samples.append(stats.json()["saltapi_twisted"]["reactor_lag_last_minute"])
            time.sleep(0.1)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.monotonic()
    try:
        response = api.run(
            [{"client": "local", "tgt": "minion-1", "fun": "cmd.run", "arg": [command],
              "kwarg": {"python_shell": True}, "timeout": 60}],
            admin_token,
            timeout=180,
        )
        elapsed = time.monotonic() - started
        time.sleep(0.5)
    finally:
        done.set()
        prober.join(60)
    assert response.status_code == 200
    output = response.json()["return"][0]["minion-1"]
    assert len(output) == size
    assert hashlib.sha256(output.encode()).hexdigest() == hashlib.sha256(b"a" * size).hexdigest()
    after = _stats(api, admin_token)
    # reactor_lag_max is the largest since start: if it grew, the new maximum happened during the job
    new_max = after["reactor_lag_max"] if after["reactor_lag_max"] > before["reactor_lag_max"] else None
    lag = max([*samples, after["reactor_lag_last_minute"]])
    print(
        f"20 MB return in {elapsed:.1f} s; reactor lag (50 ms LoopingCall probe) during it: "
        f"last-minute max {lag * 1000:.0f} ms (before: {before['reactor_lag_last_minute'] * 1000:.0f} ms), "
        f"lifetime max {'raised to ' + format(new_max * 1000, '.0f') + ' ms' if new_max else 'unchanged'}; "
        f"slowest of {len(probe_times)} /stats probes {max(probe_times, default=0) * 1000:.0f} ms"
    )
    # a stall detector: the 100 ms target is the benchmark's (the machine is shared)
    assert lag < 2.0, (before, after, samples)


def test_many_pings_every_return_arrives(api: Api, admin_token: str) -> None:
    count = 1000
    expected = {"return": [{m: True for m in MINIONS}]}

    def one(_: int) -> dict:
        response = api.run([{"client": "local", "tgt": "*", "fun": "test.ping", "timeout": 30}], admin_token)
        return response.json()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(count)))
    elapsed = time.monotonic() - started
    missing = [r for r in results if r != expected]
    print(f"{count} local test.ping requests (2 minions, 8 at a time): {elapsed:.1f} s, {count / elapsed:.1f}/s")
    assert len(results) == count
    assert not missing, (len(missing), missing[:3])


async def _sse_cycle(port: int, token: str) -> None:
    """Open ``/events``, read up to its ``retry:`` line, close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = "GET /events HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        writer.write(f"{request}X-Auth-Token: {token}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"retry:"), 30)
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head[:100]
    finally:
        writer.close()


async def _ws_cycle(port: int, path: str, polite: bool) -> None:
    """Open a websocket, say "ready", close it (with a close frame, or just drop it)."""
    client = WSClient(port, path)
    await asyncio.wait_for(client.connect(), 30)
    if polite:
        await client.close()
    else:
        assert client._writer is not None
        client._writer.close()


async def _stream_cycles(port: int, token: str, sse: int, ws: int, concurrency: int = 8) -> None:
    paths = [f"/all_events/{token}", f"/ws/{token}"]
    jobs: list[Callable[[], Awaitable[None]]] = [functools.partial(_sse_cycle, port, token) for _ in range(sse)]
    jobs += [functools.partial(_ws_cycle, port, paths[i % 2], polite=i % 3 != 0) for i in range(ws)]
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def test_descriptors_and_memory_return_to_baseline(api: Api, admin_token: str) -> None:
    proc = psutil.Process(api.process.proc.pid)  # type: ignore[union-attr]
    port = api.process.block["port"]
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

    # warm up every path once (lazy imports, caches, the first websocket factory)
    mixed(500)
    asyncio.run(_stream_cycles(port, admin_token, sse=50, ws=20))
    time.sleep(1)
    fds, rss = proc.num_fds(), proc.memory_info().rss
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        requests_done = [pool.submit(mixed, 2500) for _ in range(4)]
        # 1,000 stream cycles meanwhile: 800 SSE and 200 websockets (/all_events and /ws)
        asyncio.run(_stream_cycles(port, admin_token, sse=800, ws=200))
        peak_fds = proc.num_fds()
        for future in requests_done:
            future.result()
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.num_fds() > fds + 5:
        time.sleep(0.5)
    fds_after, rss_after = proc.num_fds(), proc.memory_info().rss
    stats = _stats(api, admin_token)
    print(
        f"10,000 mixed requests + 1,000 stream cycles in {elapsed:.1f} s: fds {fds} -> {fds_after} "
        f"(seen {peak_fds} mid-run), RSS {rss / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
        f"(+{(rss_after - rss) / 2**20:.1f}); open streams {stats['streams']}, "
        f"open connections {stats['connections']['open']}"
    )
    assert fds_after <= fds + 5
    assert rss_after < rss + 40 * 1024 * 1024
    assert stats["streams"] == 0
