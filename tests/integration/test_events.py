"""``/events`` (SSE) and ``/hook`` against the real master, with real sockets."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox

from ..conftest import MINIONS, Api
from ..streamclients import SSEClient, fire_events


def port_of(api: Api) -> int:
    return int(api.process.block["port"])


def test_headers_and_retry(api: Api, admin_token: str) -> None:
    async def main() -> None:
        client = SSEClient(port_of(api), admin_token)
        await client.connect()
        assert client.status == 200
        assert client.response_headers["content-type"] == "text/event-stream"
        assert client.response_headers["cache-control"] == "no-cache"
        assert client.response_headers["x-accel-buffering"] == "no"
        # keep-alive comments arrive (events_keepalive: 1 in the test config)
        assert await client.read_until(lambda c: "keepalive" in c.comments, 10)
        client.close()

    asyncio.run(main())


def test_burst_reaches_every_client_in_order(api: Api, admin_token: str, salt_master: SaltSandbox) -> None:
    prefix = f"test/burst/{uuid.uuid4().hex}"
    count = 2000

    async def main() -> None:
        clients = [SSEClient(port_of(api), admin_token, path=f"/events?tag={prefix}/") for _ in range(3)]
        for client in clients:
            await client.connect()
        await asyncio.sleep(0.5)
        await asyncio.get_running_loop().run_in_executor(None, fire_events, salt_master, prefix, count)
        done = await asyncio.gather(*(c.read_until(lambda c: len(c.messages) >= count, 60) for c in clients))
        assert all(done), [len(c.messages) for c in clients]
        for client in clients:
            numbers = [m.data["data"]["n"] for m in client.messages]
            assert numbers == list(range(count))
            assert all(m.tag == f"{prefix}/{m.data['data']['n']}" for m in client.messages)
            client.close()

    asyncio.run(main())


def test_last_event_id_replays_exactly_the_missed_events(api: Api, admin_token: str, salt_master: SaltSandbox) -> None:
    prefix = f"test/replay/{uuid.uuid4().hex}"

    async def main() -> None:
        first = SSEClient(port_of(api), admin_token, path=f"/events?tag={prefix}/")
        await first.connect()
        await asyncio.sleep(0.3)
        fire_events(salt_master, prefix + "/a", 5)
        assert await first.read_until(lambda c: len(c.messages) >= 5, 20)
        last_id = first.messages[-1].id
        assert last_id
        first.close()
        fire_events(salt_master, prefix + "/b", 7)
        await asyncio.sleep(1.0)
        again = SSEClient(port_of(api), admin_token, path=f"/events?tag={prefix}/", headers={"Last-Event-ID": last_id})
        await again.connect()
        assert await again.read_until(lambda c: len(c.messages) >= 7, 20)
        await asyncio.sleep(0.5)
        assert [m.tag for m in again.messages] == [f"{prefix}/b/{n}" for n in range(7)]
        again.close()
        bogus = SSEClient(port_of(api), admin_token, headers={"Last-Event-ID": "../../x"})
        await bogus.connect()
        assert bogus.status == 200
        assert await bogus.read_until(lambda c: "replay-unavailable" in c.comments, 10)
        bogus.close()

    asyncio.run(main())


def test_last_event_id_from_one_process_is_replayed_by_another(
    api: Api, admin_token: str, salt_master: SaltSandbox, tmp_path: Path
) -> None:
    """Ids come from the events' content: a second API on the same master knows them too."""
    second = ApiProcess(tmp_path, salt_master, {"disable_ssl": True}, name="api-second")
    second.start()
    prefix = f"test/replay2/{uuid.uuid4().hex}"

    async def main() -> None:
        first = SSEClient(port_of(api), admin_token, path=f"/events?tag={prefix}/")
        await first.connect()
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, fire_events, salt_master, prefix + "/a", 5)
        await loop.run_in_executor(None, fire_events, salt_master, prefix + "/b", 4)
        assert await first.read_until(lambda c: len(c.messages) >= 9, 20)
        first.close()
        ids = [m.id for m in first.messages]
        assert all(ids) and len(set(ids)) == 9
        expected = [f"{prefix}/a/{n}" for n in (3, 4)] + [f"{prefix}/b/{n}" for n in range(4)]
        # the client had read up to a/2 on the first process, then reconnects to the second
        again = SSEClient(
            int(second.block["port"]), admin_token, path=f"/events?tag={prefix}/", headers={"Last-Event-ID": ids[2]}
        )
        await again.connect()
        assert again.status == 200
        assert await again.read_until(lambda c: len(c.messages) >= len(expected), 20)
        assert not await again.read_until(lambda c: len(c.messages) > len(expected), 1.0)
        assert [m.tag for m in again.messages] == expected
        assert [m.id for m in again.messages] == ids[3:]
        assert "replay-unavailable" not in again.comments
        again.close()
        # the newest id: nothing to replay, and no complaint
        newest = SSEClient(
            int(second.block["port"]), admin_token, path=f"/events?tag={prefix}/", headers={"Last-Event-ID": ids[-1]}
        )
        await newest.connect()
        assert newest.status == 200
        assert not await newest.read_until(lambda c: c.messages or "replay-unavailable" in c.comments, 1.5)
        newest.close()

    try:
        asyncio.run(main())
    finally:
        second.stop()


def test_job_events_and_tag_filter(api: Api, admin_token: str) -> None:
    async def main() -> None:
        everything = SSEClient(port_of(api), admin_token)
        filtered = SSEClient(port_of(api), admin_token, path="/events?tag=salt/job/*/ret/*")
        await everything.connect()
        await filtered.connect()
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            None, lambda: api.run([{"client": "local_async", "tgt": "*", "fun": "test.ping"}], admin_token).json()
        )
        jid = result["return"][0]["jid"]
        assert await everything.read_until(
            lambda c: f"salt/job/{jid}/new" in c.tags() and len(c.tags(f"salt/job/{jid}/ret/")) == len(MINIONS), 30
        )
        assert await filtered.read_until(lambda c: len(c.tags(f"salt/job/{jid}/ret/")) == len(MINIONS), 30)
        assert all("/ret/" in tag for tag in filtered.tags())
        everything.close()
        filtered.close()

    asyncio.run(main())


def test_logout_closes_the_stream(api: Api) -> None:
    token = api.login()

    async def main() -> None:
        client = SSEClient(port_of(api), token)
        await client.connect()
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: api.post("/logout", headers={"X-Auth-Token": token}))
        started = time.monotonic()
        assert await client.read_until(lambda c: c.closed, 5)
        assert time.monotonic() - started < 2.0
        assert "token expired" in client.comments

    asyncio.run(main())


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/events", {}, 401),
        ("/events?token=" + "a" * 64, {}, 400),
        ("/events?salt_token=" + "a" * 64, {}, 400),
        ("/events?nope=1", {"X-Auth-Token": "ab" * 32}, 400),
        ("/events", {"X-Auth-Token": "ab" * 32}, 401),
        ("/events", {"Accept": "text/html"}, 406),
    ],
    ids=["no-token", "query-token", "query-salt-token", "unknown-param", "unknown-token", "accept-html"],
)
def test_refused_streams(api: Api, path: str, headers: dict, status: int) -> None:
    response = api.get(path, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]


def test_a_client_that_never_reads_is_dropped(api_factory_small_queue: ApiProcess, salt_master: SaltSandbox) -> None:
    process = api_factory_small_queue
    client_api = Api(process)
    token = client_api.login()
    prefix = f"test/slow/{uuid.uuid4().hex}"
    count = 1500

    async def main() -> None:
        import socket

        stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", process.block["port"]))
        stuck.sendall(
            f"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\nX-Auth-Token: {token}\r\n\r\n".encode()
        )
        others = [SSEClient(process.block["port"], token, path=f"/events?tag={prefix}/") for _ in range(200)]
        for client in others:
            await client.connect()
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        # 10 MB that only the stuck client subscribes to, then the burst for everyone
        for _ in range(10):  # in steps the master's publisher keeps up with
            await loop.run_in_executor(
                None, lambda: fire_events(salt_master, prefix + "-big", 100, {"pad": "x" * 10000})
            )
        await loop.run_in_executor(None, lambda: fire_events(salt_master, prefix, count, {"pad": "x" * 1000}))
        done = await asyncio.gather(
            *(client.read_until(lambda c: len(c.messages) >= count, 180) for client in others)
        )
        assert all(done), [len(c.messages) for c in others if len(c.messages) < count][:5]
        for client in others:
            assert [m.data["data"]["n"] for m in client.messages] == list(range(count))
            client.close()
        stats = client_api.get("/stats", headers={"X-Auth-Token": token}).json()["saltapi_twisted"]
        assert stats["streams_dropped"] >= 1
        stuck.close()

    asyncio.run(main())


@pytest.fixture
def api_factory_small_queue(salt_master: SaltSandbox, tmp_path: Path):  # type: ignore[no-untyped-def]
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True, "events_queue_max": 2000})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_connect_disconnect_cycles_release_everything(api: Api, admin_token: str) -> None:
    proc = psutil.Process(api.process.proc.pid)  # type: ignore[union-attr]

    async def cycle(n: int) -> None:
        for _ in range(n):
            client = SSEClient(port_of(api), admin_token)
            await client.connect()
            client.close()

    def streams() -> int:
        return int(api.get("/stats", headers={"X-Auth-Token": admin_token}).json()["saltapi_twisted"]["streams"])

    asyncio.run(cycle(50))
    time.sleep(1)
    baseline_fds = proc.num_fds()
    baseline_streams = streams()
    baseline_rss = proc.memory_info().rss
    asyncio.run(cycle(1000))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (proc.num_fds() > baseline_fds + 5 or streams() > baseline_streams):
        time.sleep(0.5)
    assert proc.num_fds() <= baseline_fds + 5
    assert streams() <= baseline_streams
    assert proc.memory_info().rss < baseline_rss + 20 * 1024 * 1024


# ----------------------------------------------------------------------------
# /hook


def test_hook_fires_an_event_without_credentials(api: Api, admin_token: str) -> None:
    async def main() -> None:
        client = SSEClient(port_of(api), admin_token, path="/events?tag=salt/netapi/hook/")
        await client.connect()
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(
            None,
            lambda: api.post(
                "/hook/my_service/?x=1",
                json={"a": 1},
                headers={"X-Auth-Token": admin_token, "Authorization": "Basic dTpw"},
                cookies={"session_id": admin_token},
            ),
        )
        assert response.status_code == 200 and response.json() == {"success": True}
        assert await client.read_until(lambda c: len(c.messages) >= 1, 10)
        message = client.messages[0]
        assert message.tag == "salt/netapi/hook/my_service/"
        data = message.data["data"]
        assert data["post"] == {"a": 1}
        assert data["get"] == {"x": "1"}
        assert data["body"] == '{"a": 1}'
        for header in ("X-Auth-Token", "Cookie", "Authorization"):
            assert data["headers"][header] == "<redacted>"
        assert admin_token not in str(message.data)
        client.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "path",
    [
        "/hook/x%0D%0Ddata:%20%7B%22forged%22:true%7D%0D%0D",
        "/hook/x%0A%0Ainjected",
        "/hook/..%2F..%2Fsalt%2Fjob%2F1%2Fret%2Fm",
        "/hook//x",
        "/hook/" + "a" * 201,
    ],
    ids=["cr", "lf", "dotdot", "empty-segment", "too-long"],
)
def test_hook_refuses_bad_paths(api: Api, admin_token: str, path: str) -> None:
    response = api.post(path, data=b"", headers={"X-Auth-Token": admin_token})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_hook_needs_a_token_by_default(api: Api) -> None:
    assert api.post("/hook/x", data=b"").status_code == 401


def test_hook_with_auth_disabled(salt_master: SaltSandbox, tmp_path: Path) -> None:
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True, "webhook_disable_auth": True})
    process.start()
    try:
        response = requests.post(process.url + "/hook/open", data=b"", timeout=10)
        assert response.status_code == 200
        big = requests.post(
            process.url + "/hook/big", data=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "text/plain"}, timeout=30
        )
        assert big.status_code == 413
    finally:
        process.stop()
