"""The no-HTTP reference: what the master and minions allow without any API in front.

* raw request-channel rates with pyzmq (``mk_token``, ``ping``, ``publish``):
  closed loops over C DEALER sockets, one request in flight on each;
* a direct in-process ``salt.client.LocalClient(...).cmd('*', 'test.ping')``,
  run in a subprocess (``python reference.py localclient <conf_dir> <n> <budget>``)
  so that ``salt`` is never imported by the bench itself.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

try:  # the subprocess mode only needs salt; the bench mode needs pyzmq/msgpack
    import msgpack
    import zmq
except ImportError:  # pragma: no cover
    msgpack = zmq = None  # type: ignore[assignment]


def _frame(load: dict[str, Any]) -> bytes:
    return msgpack.packb({"enc": "clear", "load": load, "version": 3}, use_bin_type=True)


def _reply(frame: bytes) -> Any:
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except (ValueError, UnicodeDecodeError):
        value = msgpack.unpackb(frame, raw=True, strict_map_key=False)
    if isinstance(value, dict) and "load" in value and "enc" in value:
        return value["load"]
    return value


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def closed_loop(
    ret_port: int,
    make_load: Any,
    check: Any,
    *,
    concurrency: int,
    duration: float,
    max_requests: int = 0,
) -> dict[str, Any]:
    """C DEALER sockets, each sending its next request when the previous reply arrived."""
    ctx = zmq.Context.instance()
    sockets = []
    for _ in range(concurrency):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{ret_port}")
        sockets.append(sock)
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    started: dict[zmq.Socket, float] = {}
    latencies: list[float] = []
    ok = failed = issued = 0
    t0 = time.monotonic()
    deadline = t0 + duration

    def send(sock: zmq.Socket) -> None:
        nonlocal issued
        issued += 1
        started[sock] = time.monotonic()
        sock.send_multipart([b"", _frame(make_load())])

    for sock in sockets:
        if max_requests and issued >= max_requests:
            break
        send(sock)
    last = t0
    while started:
        events = poller.poll(timeout=max(0, int((deadline + 30 - time.monotonic()) * 1000)))
        if not events:
            break
        for sock, _ev in events:
            parts = sock.recv_multipart()
            now = time.monotonic()
            last = now
            latencies.append(now - started.pop(sock))
            if check(_reply(parts[-1])):
                ok += 1
            else:
                failed += 1
            if now < deadline and not (max_requests and issued >= max_requests):
                send(sock)
    for sock in sockets:
        sock.close()
    seconds = last - t0
    return {
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "seconds": round(seconds, 3),
        "rps": round(ok / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


def mk_token_load() -> dict[str, Any]:
    return {"cmd": "mk_token", "eauth": "file", "username": "saltdev", "password": "saltdev"}


def mk_token(ret_port: int, concurrency: int, duration: float) -> dict[str, Any]:
    return closed_loop(
        ret_port, mk_token_load, lambda r: isinstance(r, dict) and bool(r.get("token")),
        concurrency=concurrency, duration=duration,
    )  # fmt: skip


def ping(ret_port: int, concurrency: int, duration: float) -> dict[str, Any]:
    return closed_loop(
        ret_port, lambda: {"cmd": "ping", "n": time.monotonic()}, lambda r: isinstance(r, dict) and r.get("cmd") == "ping",
        concurrency=concurrency, duration=duration,
    )  # fmt: skip


def get_token(ret_port: int) -> str:
    result: dict[str, Any] = {}

    def check(reply: Any) -> bool:
        result["token"] = reply.get("token") if isinstance(reply, dict) else None
        return bool(result["token"])

    closed_loop(ret_port, mk_token_load, check, concurrency=1, duration=0, max_requests=1)
    return str(result["token"])


def publish(
    ret_port: int, token: str, concurrency: int, duration: float, max_requests: int, tgt: str = "*"
) -> dict[str, Any]:
    def load() -> dict[str, Any]:
        return {
            "cmd": "publish", "tgt": tgt, "fun": "test.ping", "arg": [], "tgt_type": "glob",
            "ret": "", "jid": "", "user": "saltdev", "kwargs": {"token": token},
        }  # fmt: skip

    return closed_loop(
        ret_port, load, lambda r: isinstance(r, dict) and bool(r.get("jid")) and bool(r.get("minions")),
        concurrency=concurrency, duration=duration, max_requests=max_requests,
    )  # fmt: skip


def local_client(python: str, conf_dir: str, count: int, budget: float, minions: int) -> dict[str, Any]:
    """Run the in-process LocalClient loop in a subprocess (salt is imported there only)."""
    result = subprocess.run(  # noqa: S603 - our own script
        [python, __file__, "localclient", conf_dir, str(count), str(budget), str(minions)],
        capture_output=True, text=True, timeout=budget + 120, check=False,
    )  # fmt: skip
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        return {"error": (result.stdout + result.stderr)[-600:]}
    return json.loads(line[len("BENCHJSON ") :])


def _local_client_main(conf_dir: str, count: int, budget: float, minions: int) -> None:
    import salt.client  # noqa: PLC0415 - only in this subprocess

    client = salt.client.LocalClient(c_path=f"{conf_dir}/master")
    client.cmd("*", "test.ping", timeout=30)  # warm-up (imports, connections)
    latencies: list[float] = []
    complete = 0
    deadline = time.monotonic() + budget
    t0 = time.monotonic()
    while len(latencies) < count and time.monotonic() < deadline:
        t = time.monotonic()
        ret = client.cmd("*", "test.ping", timeout=30)
        latencies.append(time.monotonic() - t)
        complete += int(len(ret) == minions and all(v is True for v in ret.values()))
    seconds = time.monotonic() - t0
    out = {
        "requests": len(latencies),
        "ok": complete,
        "failed": len(latencies) - complete,
        "seconds": round(seconds, 3),
        "rps": round(complete / seconds, 2) if seconds else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 2) if latencies else None,
    }
    print("BENCHJSON " + json.dumps(out), flush=True)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "localclient":
    _local_client_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
