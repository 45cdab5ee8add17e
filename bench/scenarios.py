"""The scenarios: each takes a server (or the no-HTTP reference) and returns its figures."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioload
import reference
from httpload import run_wrk
from servers import MINIONS, Server, Stack, http
from streamload import (
    Shared,
    SSEReader,
    WSReader,
    open_bus_readers,
    open_readers,
    sse_request,
    summarize,
    wait_deliveries,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.streamclients import fire_events  # noqa: E402 - the project's own event firing helper

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

LOGIN_BODY = {"username": "saltdev", "password": "saltdev", "eauth": "file"}
WS_READY = b"websocket client ready"


@dataclass
class Sizes:
    """Durations and counts; ``--quick`` uses the small ones."""

    quick: bool

    @property
    def short(self) -> float:  # login, jobs
        return 3 if self.quick else 5

    @property
    def long(self) -> float:  # ping_sync, minions
        return 5 if self.quick else 8

    @property
    def ping_cap(self) -> int:  # per connection at c>1
        return 8 if self.quick else 20

    @property
    def publish_cap(self) -> int:
        return 50 if self.quick else 100

    @property
    def publish_duration(self) -> float:
        return 6 if self.quick else 10

    @property
    def fanout_ns(self) -> list[int]:
        return [100, 500] if self.quick else [100, 500, 1000]

    events = 2000

    @property
    def idle_streams(self) -> int:
        return 2000 if self.quick else 10000

    @property
    def localclient_count(self) -> int:
        return 6 if self.quick else 10


def run_async(coro: Any) -> Any:
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


# ----------------------------------------------------------------------------
# request/response scenarios (wrk)


def login(server: Server, sizes: Sizes, concurrency: int) -> dict[str, Any]:
    return run_wrk(
        server.url, "POST", "/login", concurrency=concurrency, duration=sizes.short, body=LOGIN_BODY, checks=['"token"']
    )


PING_RE = [rf'"{m}"\s*:\s*true' for m in MINIONS]
GRAINS_RE = [rf'"{m}"\s*:\s*\{{' for m in MINIONS]


def _slow(server: Server, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """Requests that take up to seconds: the draining asyncio client (see aioload)."""
    return run_async(aioload.closed_loop(server.port, method, path, **kwargs))


def ping_sync(server: Server, sizes: Sizes, concurrency: int) -> dict[str, Any]:
    return _slow(
        server, "POST", "/", concurrency=concurrency, duration=sizes.long, token=server.token,
        body=[{"client": "local", "tgt": "*", "fun": "test.ping"}], checks=PING_RE,
        max_requests=sizes.ping_cap * concurrency if concurrency > 1 else sizes.ping_cap,
    )  # fmt: skip


def publish_async(server: Server, sizes: Sizes) -> dict[str, Any]:
    return _slow(
        server, "POST", "/", concurrency=16, duration=sizes.publish_duration, token=server.token,
        body=[{"client": "local_async", "tgt": "*", "fun": "test.ping"}], checks=[r'"jid"\s*:\s*"\d'],
        max_requests=sizes.publish_cap,
    )  # fmt: skip


def minions(server: Server, sizes: Sizes) -> dict[str, Any]:
    return _slow(server, "GET", "/minions", concurrency=4, duration=sizes.long, token=server.token, checks=GRAINS_RE)


def jobs(server: Server, sizes: Sizes) -> dict[str, Any]:
    return _slow(
        server,
        "GET",
        "/jobs",
        concurrency=4,
        duration=sizes.short,
        token=server.token,
        checks=['"return"', '"Function"'],
    )


# ----------------------------------------------------------------------------
# the job cache for /jobs: seeded once, restored before every /jobs run


class JobCache:
    def __init__(self, stack: Stack, snapshot: Path) -> None:
        self.jobs_dir = stack.sandbox.cachedir / "jobs"
        self.snapshot = snapshot
        self.restored = 0

    def seed(self, ret_port: int, count: int = 100) -> dict[str, Any]:
        token = reference.get_token(ret_port)
        result = reference.publish(ret_port, token, concurrency=4, duration=60, max_requests=count, tgt="minion-1")
        return result

    def save(self) -> int:
        shutil.rmtree(self.snapshot, ignore_errors=True)
        shutil.copytree(self.jobs_dir, self.snapshot, symlinks=True)
        return self.count()

    def restore(self) -> int:
        shutil.rmtree(self.jobs_dir, ignore_errors=True)
        shutil.copytree(self.snapshot, self.jobs_dir, symlinks=True)
        self.restored = self.count()
        return self.restored

    def count(self) -> int:
        return sum(1 for p in self.jobs_dir.glob("*/*") if p.is_dir())


# ----------------------------------------------------------------------------
# stream scenarios


def _flush_streams(stack: Stack, server: Server, deadline: float = 30.0) -> bool:
    """Fire a few events so that servers blocked on the bus notice closed clients; wait until it answers."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        fire_events(stack.sandbox, f"bench/flush/{uuid.uuid4().hex[:8]}", 3)
        try:
            status, _h, _b = http("GET", server.url + "/", timeout=2)
            if status < 500:
                return True
        except OSError:
            pass
    return False


async def _fanout(stack: Stack, server: Server, kind: str, n: int, events: int, cap: float) -> dict[str, Any]:
    shared = Shared()
    if kind == "sse":
        request = sse_request("/events", server.token)
        factories = [lambda: SSEReader(shared, request)] * n
    else:
        path = f"{server.ws_path}{server.salt_token}"
        factories = [lambda: WSReader(shared, server.port, path, WS_READY)] * n
    rss_before = server.rss()
    readers, connect_s = await open_readers(factories, server.port, ready_timeout=10.0)
    await asyncio.sleep(0.5)  # the websocket "ready" messages, the last SSE registrations
    connected = sum(1 for r in readers if r.ready.done() and r.ready.result())
    rss_streams = server.rss()
    prefix = f"bench/fanout/{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    fire_started = time.time()
    await loop.run_in_executor(None, fire_events, stack.sandbox, prefix, events)
    # idle 10 s: a server whose reactor is busy for seconds must not be cut short
    await wait_deliveries(shared, connected * events, idle=10.0, cap=cap)
    rss_peak = server.rss()
    result = summarize(readers, n, events, shared, fire_started)
    statuses = sorted({r.status for r in readers if r.status is not None and r.status not in (101, 200)})
    for reader in readers:
        reader.close()
    await asyncio.sleep(0.2)
    result.update(
        {
            "connect_s": round(connect_s, 2),
            "bad_statuses": statuses,
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_streams_mb": round(rss_streams / 2**20, 1),
            "rss_peak_mb": round(rss_peak / 2**20, 1),
            "rss_per_stream_kb": round((rss_streams - rss_before) / 1024 / connected, 1) if connected else None,
        }
    )
    if connected == 0 and kind == "ws" and statuses:
        result["error"] = f"no websocket opened (HTTP {statuses})"
    return result


def fanout(stack: Stack, server: Server, kind: str, n: int, sizes: Sizes) -> dict[str, Any]:
    result = run_async(_fanout(stack, server, kind, n, sizes.events, cap=20.0 if sizes.quick else 30.0))
    t0 = time.monotonic()
    result["responsive_after"] = _flush_streams(stack, server)
    time.sleep(1.0)
    result["rss_after_mb"] = round(server.rss() / 2**20, 1)
    result["flush_s"] = round(time.monotonic() - t0, 1)
    return result


async def _idle(server: Server, n: int) -> dict[str, Any]:
    """N idle SSE streams, opened in two halves: RSS per stream is the second half's increase.

    The first half absorbs the allocator's warm-up and any garbage left by
    earlier scenarios; ``rss_per_stream_total_kb`` is (RSS with N − RSS before) / N.
    """
    shared = Shared()
    request = sse_request("/events", server.token)
    rss_before = server.rss()
    readers: list[Any] = []
    connected = still_open = 0
    connect_s = health_ms = 0.0
    status: Any = None
    rss_half = rss_streams = rss_before
    half = n // 2
    try:
        first, t1 = await open_readers(
            [lambda: SSEReader(shared, request)] * half, server.port, connect_concurrency=200, ready_timeout=120.0
        )
        readers += first
        await asyncio.sleep(2.0)
        rss_half = server.rss()
        second, t2 = await open_readers(
            [lambda: SSEReader(shared, request)] * (n - half), server.port, connect_concurrency=200, ready_timeout=120.0
        )
        readers += second
        connect_s = t1 + t2
        connected = sum(1 for r in readers if r.ready.done() and r.ready.result())
        connected_second = sum(1 for r in second if r.ready.done() and r.ready.result())
        await asyncio.sleep(2.0)
        rss_streams = server.rss()
        loop = asyncio.get_running_loop()
        t = time.monotonic()
        try:
            status, _h, _b = await loop.run_in_executor(None, lambda: http("GET", server.url + "/health", timeout=30))
        except OSError as exc:
            status = f"{type(exc).__name__}"
        health_ms = (time.monotonic() - t) * 1000
        still_open = sum(1 for r in readers if not r.closed)
    finally:
        for reader in readers:
            reader.close()
    await asyncio.sleep(3.0)
    rss_closed = server.rss()
    return {
        "streams": n,
        "connected": connected,
        "still_open": still_open,
        "connect_s": round(connect_s, 2),
        "health_ms_with_streams": round(health_ms, 1),
        "health_status": status,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_half_mb": round(rss_half / 2**20, 1),
        "rss_streams_mb": round(rss_streams / 2**20, 1),
        "rss_closed_mb": round(rss_closed / 2**20, 1),
        "rss_per_stream_kb": round((rss_streams - rss_half) / 1024 / connected_second, 2) if connected_second else None,
        "rss_per_stream_total_kb": round((rss_streams - rss_before) / 1024 / connected, 2) if connected else None,
    }


def idle_streams(server: Server, sizes: Sizes) -> dict[str, Any]:
    return run_async(_idle(server, sizes.idle_streams))


# ----------------------------------------------------------------------------
# the no-HTTP reference


def ref_mk_token(stack: Stack, sizes: Sizes, concurrency: int) -> dict[str, Any]:
    return reference.mk_token(stack.sandbox.ret_port, concurrency, sizes.short)


def ref_ping(stack: Stack, sizes: Sizes, concurrency: int) -> dict[str, Any]:
    return reference.ping(stack.sandbox.ret_port, concurrency, sizes.short)


def ref_publish(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    token = reference.get_token(stack.sandbox.ret_port)
    return reference.publish(stack.sandbox.ret_port, token, 16, sizes.publish_duration, sizes.publish_cap)


def ref_local_client(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    return reference.local_client(
        sys.executable, str(stack.sandbox.conf_dir), sizes.localclient_count, 30.0, len(MINIONS)
    )


async def _bus_fanout(stack: Stack, n: int, events: int, cap: float) -> dict[str, Any]:
    """N raw subscribers of the master's event bus: what the master delivers with no API at all."""
    shared = Shared()
    readers = await open_bus_readers(str(stack.sandbox.sock_dir / "master_event_pub.ipc"), n, shared)
    await asyncio.sleep(0.5)
    prefix = f"bench/fanout/{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    fire_started = time.time()
    await loop.run_in_executor(None, fire_events, stack.sandbox, prefix, events)
    await wait_deliveries(shared, n * events, idle=3.0, cap=cap)
    result = summarize(readers, n, events, shared, fire_started)
    for reader in readers:
        reader.close()
    return result


def ref_bus(stack: Stack, sizes: Sizes, n: int = 1) -> dict[str, Any]:
    return run_async(_bus_fanout(stack, n, sizes.events, cap=20.0 if sizes.quick else 30.0))
