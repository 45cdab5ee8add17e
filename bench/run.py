#!/usr/bin/env python
"""Benchmarks: saltapi_twisted against rest_tornado and rest_cherrypy on the same master.

    .venv/bin/python bench/run.py [--quick] [--rounds N] [--only SCENARIO ...]

Starts one master with 5 minions, our API (twistd), rest_tornado and
rest_cherrypy (``salt-api``), runs every scenario against each in
alternation (A B C [reference] per scenario, for N rounds), prints one table
of medians and ratios and writes it to ``bench/results/latest.md`` (and the
raw figures to ``bench/results/latest.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import psutil  # noqa: E402

import scenarios as S  # noqa: E402
from httpload import wrk_path  # noqa: E402
from procstats import CpuMeter, self_cpu, tree_cpu  # noqa: E402
from servers import Server, Stack, http, restart_server  # noqa: E402

KEYS = ["ours", "tornado", "cherrypy"]
LABELS = {"ours": "saltapi_twisted", "tornado": "rest_tornado", "cherrypy": "rest_cherrypy", "ref": "no-HTTP reference"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard != resource.RLIM_INFINITY and hard < 65536:
        try:  # as root the hard limit can go up too
            resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
            return resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ValueError, OSError):
            target = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# ----------------------------------------------------------------------------
# the plan: (scenario, variant, {target: callable}) -- target "ref" is the no-HTTP reference


def build_plan(
    stack: Stack, sizes: S.Sizes, jobcache: S.JobCache
) -> list[tuple[str, str, dict[str, Callable[[], dict[str, Any]]]]]:
    servers = {s.key: s for s in stack.servers}
    plan: list[tuple[str, str, dict[str, Callable[[], dict[str, Any]]]]] = []

    def each(fn: Callable[[Server], dict[str, Any]], keys: list[str] = KEYS) -> dict[str, Callable[[], dict[str, Any]]]:
        return {k: (lambda s=servers[k]: fn(s)) for k in keys}

    plan.append(
        ("login", "c=1", {**each(lambda s: S.login(s, sizes, 1)), "ref": lambda: S.ref_mk_token(stack, sizes, 1)})
    )
    plan.append(
        ("login", "c=16", {**each(lambda s: S.login(s, sizes, 16)), "ref": lambda: S.ref_mk_token(stack, sizes, 16)})
    )
    plan.append(
        (
            "ping_sync",
            "c=1",
            {**each(lambda s: S.ping_sync(s, sizes, 1)), "ref": lambda: S.ref_local_client(stack, sizes)},
        )
    )
    plan.append(("ping_sync", "c=8", each(lambda s: S.ping_sync(s, sizes, 8))))
    plan.append(
        (
            "publish_async",
            "c=16",
            {**each(lambda s: S.publish_async(s, sizes)), "ref": lambda: S.ref_publish(stack, sizes)},
        )
    )
    plan.append(("minions", "c=4", each(lambda s: S.minions(s, sizes))))

    def jobs(s: Server) -> dict[str, Any]:
        result = S.jobs(s, sizes)
        result["jobs_in_cache"] = jobcache.restored
        return result

    plan.append(("jobs", "c=4", each(jobs)))
    plan.append(("request_channel", "ping c=1", {"ref": lambda: S.ref_ping(stack, sizes, 1)}))
    plan.append(("request_channel", "ping c=16", {"ref": lambda: S.ref_ping(stack, sizes, 16)}))
    for n in sizes.fanout_ns:
        targets = each(lambda s, n=n: S.fanout(stack, s, "sse", n, sizes))
        if n == sizes.fanout_ns[0]:
            targets["ref"] = lambda: S.ref_bus(stack, sizes, 1)
        plan.append(("sse_fanout", f"N={n}", targets))
    for n in sizes.fanout_ns:
        plan.append(("ws_fanout", f"N={n}", each(lambda s, n=n: ws_or_na(stack, s, n, sizes), ["ours", "tornado"])))
    # last in every round, on a freshly restarted API (see main): 10,000 streams leave a high-water mark
    plan.append(("idle_streams", f"N={sizes.idle_streams}", each(lambda s: S.idle_streams(s, sizes), ["ours"])))
    return plan


def ws_or_na(stack: Stack, server: Server, n: int, sizes: S.Sizes) -> dict[str, Any]:
    """Our websockets may not be there yet: report n/a instead of failing."""
    if server.key == "ours" and not websockets_available(server):
        return {"na": "no /all_events websocket in this build"}
    return S.fanout(stack, server, "ws", n, sizes)


_WS_PROBE: dict[str, bool] = {}


def websockets_available(server: Server) -> bool:
    """Whether ``/all_events/<token>`` answers a websocket upgrade with 101 (a raw socket probe)."""
    if server.key not in _WS_PROBE:
        import socket  # noqa: PLC0415

        request = (
            f"GET /all_events/{server.salt_token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ).encode()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(request)
                status_line = sock.recv(4096).split(b"\r\n", 1)[0]
            _WS_PROBE[server.key] = status_line.split()[1:2] == [b"101"]
        except (OSError, IndexError):
            _WS_PROBE[server.key] = False
    return _WS_PROBE[server.key]


# ----------------------------------------------------------------------------
# quiet between runs, lag probe


def settle(stack: Stack, max_wait: float = 120.0, threshold: float = 0.25) -> tuple[float, bool]:
    """Wait until master, minions and servers together use < threshold of a core for 2 s.

    :return: the seconds waited and whether it got quiet (a flood of minion
        jobs after ``publish_async`` can take a minute to drain).
    """
    pids = [stack.master_pid(), *stack.minion_pids(), *(s.pid for s in stack.servers)]
    t0 = time.monotonic()
    quiet = 0
    while time.monotonic() - t0 < max_wait:
        a = sum(tree_cpu(p) for p in pids)
        time.sleep(1.0)
        b = sum(tree_cpu(p) for p in pids)
        quiet = quiet + 1 if b - a < threshold else 0
        if quiet >= 2:
            return time.monotonic() - t0, True
    return time.monotonic() - t0, False


def find_lag(value: Any) -> float | None:
    """The largest number under a key containing "lag" in our /stats (None if there is none)."""
    found: list[float] = []

    def walk(v: Any, key: str = "") -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(sub, str(k))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and "lag" in key.lower():
            found.append(float(v))

    walk(value)
    return max(found) if found else None


def stats_lag(server: Server) -> float | None:
    """Our ``reactor_lag_max`` (the largest lag since start; any "lag" number if that key is absent)."""
    try:
        status, _h, body = http("GET", server.url + "/stats", headers={"X-Auth-Token": server.token}, timeout=30)
        if status != 200:
            return None
        stats = json.loads(body)
        exact = stats.get("saltapi_twisted", {}).get("reactor_lag_max")
        return float(exact) if isinstance(exact, (int, float)) else find_lag(stats)
    except (OSError, ValueError, AttributeError):
        return None


# ----------------------------------------------------------------------------
# aggregation and the table


def median(values: list[Any]) -> Any:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return None
    return statistics.median(nums)


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if digits == 0 and abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{max(digits, 1) if abs(value) < 100 else 0}f}"


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return "–"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


# per scenario: the metrics shown (key in the result, label, higher is better?)
ROWS: dict[str, list[tuple[str, str]]] = {
    "login": [("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")],
    "ping_sync": [("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("failed", "incomplete/failed")],
    "publish_async": [("rps", "req/s"), ("p50_ms", "p50 ms"), ("failed", "failed")],
    "minions": [("rps", "req/s"), ("p50_ms", "p50 ms"), ("failed", "failed")],
    "jobs": [("rps", "req/s"), ("p50_ms", "p50 ms"), ("failed", "failed")],
    "request_channel": [("rps", "req/s"), ("p50_ms", "p50 ms")],
    "sse_fanout": [
        ("connected", "streams connected"),
        ("closed_by_server", "streams closed by the server"),
        ("deliveries_per_s", "deliveries/s"),
        ("lost_pct", "events lost %"),
        ("lost_per_client_median", "lost per client (median)"),
        ("latency_p50_ms", "latency p50 ms"),
        ("latency_p99_ms", "latency p99 ms"),
        ("rss_per_stream_kb", "RSS KB/stream"),
        ("rss_peak_mb", "RSS peak MB"),
        ("rss_after_mb", "RSS after MB"),
    ],  # fmt: skip
    "idle_streams": [
        ("connected", "streams connected"),
        ("rss_per_stream_kb", "RSS KB/stream (2nd half)"),
        ("rss_per_stream_total_kb", "RSS KB/stream (all)"),
        ("rss_before_mb", "RSS before MB"),
        ("rss_streams_mb", "RSS with streams MB"),
        ("rss_closed_mb", "RSS after close MB"),
        ("connect_s", "connect s"),
        ("health_ms_with_streams", "GET /health ms"),
    ],  # fmt: skip
}
ROWS["ws_fanout"] = ROWS["sse_fanout"]
REF_RATIO = {"rps", "p50_ms", "p99_ms", "deliveries_per_s", "latency_p50_ms", "latency_p99_ms"}
REF_NOTES = {
    ("login", "c=1"): "master mk_token, 1 socket",
    ("login", "c=16"): "master mk_token, 16 sockets",
    ("ping_sync", "c=1"): "in-process LocalClient.cmd",
    ("publish_async", "c=16"): "master publish, 16 sockets",
    ("request_channel", "ping c=1"): "master ping, 1 socket",
    ("request_channel", "ping c=16"): "master ping, 16 sockets",
    ("sse_fanout", "N=100"): "1 raw bus subscriber",
}


def aggregate(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        grouped.setdefault((rec["scenario"], rec["variant"], rec["target"]), []).append(rec)
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, recs in grouped.items():
        metrics: dict[str, Any] = {}
        names = {k for r in recs for k in r["result"]}
        for name in names:
            values = [r["result"].get(name) for r in recs]
            m = median(values)
            metrics[name] = m if m is not None else next((v for v in values if v is not None), None)
        cpu_names = {k for r in recs for k in r["cpu"]}
        metrics["_cpu"] = {n: median([r["cpu"].get(n) for r in recs]) for n in cpu_names}
        metrics["_rounds"] = len(recs)
        metrics["_errors"] = [r["result"]["error"] for r in recs if "error" in r["result"]]
        raised = [r["lag_raised_to_s"] for r in recs if r.get("lag_raised_to_s") is not None]
        metrics["_lag_raised"] = max(raised) if raised else None
        metrics["_lag_after"] = max(
            (r["lag_max_after_s"] for r in recs if r.get("lag_max_after_s") is not None), default=None
        )
        out[key] = metrics
    return out


def render(
    agg: dict[tuple[str, str, str], dict[str, Any]], plan_order: list[tuple[str, str]], meta: dict[str, Any]
) -> str:
    lines = [
        f"# Benchmark: saltapi_twisted vs rest_tornado vs rest_cherrypy ({meta['mode']})",
        "",
        f"{meta['date']} · {meta['machine']} · medians of {meta['rounds']} round(s), servers run in alternation "
        f"(A B C [ref] per scenario) · 1 master, {meta['minions']} minions, Salt {meta['salt']} · load: wrk {meta['wrk']} "
        f"(1 thread) and a uvloop asyncio stream client · total {meta['elapsed_min']:.1f} min · our code: {meta.get('code', '?')} "
        f"(as it was when the run started)",
        "",
        "Ratios are ours / theirs: above 1 is better for req/s and deliveries/s, below 1 is better for latency, loss and memory.",
        "",
        "| scenario | metric | saltapi_twisted | rest_tornado | rest_cherrypy | ours/tornado | ours/cherrypy | no-HTTP reference | ours/ref |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, variant in plan_order:
        rows = ROWS.get(scenario, [])
        ref = agg.get((scenario, variant, "ref"))
        for metric, label in rows:
            cells = []
            vals = {}
            for key in KEYS:
                entry = agg.get((scenario, variant, key))
                if entry is None:
                    cells.append("–" if scenario != "ws_fanout" or key != "cherrypy" else "n/a")
                    vals[key] = None
                    continue
                if "na" in entry:
                    cells.append("n/a")
                    vals[key] = None
                    continue
                v = entry.get(metric)
                vals[key] = v
                cells.append(fmt(v, 1))
            ref_val = ref.get(metric) if ref else None
            ref_cell = fmt(ref_val, 1) if ref_val is not None else ""
            if ref_cell and metric == "rps" and (scenario, variant) in REF_NOTES:
                ref_cell += f" ({REF_NOTES[(scenario, variant)]})"
            if ref_cell and metric == "deliveries_per_s" and (scenario, variant) in REF_NOTES:
                ref_cell += f" ({REF_NOTES[(scenario, variant)]})"
            if ref_cell and metric == "p50_ms" and (scenario, variant) == ("ping_sync", "c=1"):
                ref_cell += f" ({REF_NOTES[(scenario, variant)]})"
            lines.append(
                f"| {scenario} {variant} | {label} | {cells[0]} | {cells[1]} | {cells[2]} | "
                f"{ratio(vals['ours'], vals['tornado'])} | {ratio(vals['ours'], vals['cherrypy'])} | {ref_cell} | "
                f"{ratio(vals['ours'], ref_val) if ref_val is not None and metric in REF_RATIO else ''} |"
            )
    lines += [
        "",
        "## Server RSS (MB): idle at the start of a round → after its request and stream scenarios (median over rounds)",
        "",
        "Every round starts from freshly started servers; `idle_streams` runs after this reading, on a restarted API.",
        "",
        "| server | start | end | end / start |",
        "|---|---|---|---|",
    ]
    for key in KEYS:
        start, end = median(meta["rss_start"].get(key, [])), median(meta["rss_end"].get(key, []))
        lines.append(f"| {LABELS[key]} | {fmt(start, 1)} | {fmt(end, 1)} | {ratio(end, start)} |")
    lines += [
        "",
        "## CPU per scenario (median % of one core over the run's wall time)",
        "",
        "server = the API under test (all its processes); others = the two idle APIs; loadgen = wrk or the bench's "
        "own stream client. 2 cores = 200%.",
        "",
        "| scenario | target | wall s | server | others | master | minions | loadgen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, variant in plan_order:
        for key in [*KEYS, "ref"]:
            entry = agg.get((scenario, variant, key))
            if entry is None or "na" in entry:
                continue
            cpu = entry["_cpu"]
            wall = cpu.get("_wall") or 0
            if not wall:
                continue

            def pct(name: str) -> str:
                v = cpu.get(name)
                return "–" if v is None else f"{100 * v / wall:.0f}%"

            lines.append(
                f"| {scenario} {variant} | {LABELS[key]} | {wall:.1f} | {pct('server')} | {pct('others')} | "
                f"{pct('master')} | {pct('minions')} | {pct('loadgen')} |"
            )
    lines += ["", "## Reactor lag of saltapi_twisted", ""]
    if not meta.get("lag_exposed"):
        lines.append("n/a: our /stats does not expose a reactor lag.")
    else:
        lines += [
            "Our /stats keeps `reactor_lag_max` (the worst delay of a 50 ms timer since start), read before and after every run: "
            "a run is listed when it raised that maximum (during another server's run our API still receives every bus event).",
            "",
            "| scenario | during the run of | max lag raised to (ms) |",
            "|---|---|---|",
        ]
        for scenario, variant in plan_order:
            for key in [*KEYS, "ref"]:
                entry = agg.get((scenario, variant, key))
                if entry is not None and entry.get("_lag_raised") is not None:
                    lines.append(f"| {scenario} {variant} | {LABELS[key]} | {entry['_lag_raised'] * 1000:.0f} |")
        final = max((e.get("_lag_after") or 0 for e in agg.values()), default=0)
        lines += ["", f"Maximum over the whole run: {final * 1000:.0f} ms (target: never above 100 ms)."]
    noisy = meta.get("not_quiet") or []
    if noisy:
        lines += [
            "",
            "## Runs that started on a busy system",
            "",
            "The master, minions and servers had not become quiet within 120 s (minion jobs still draining):",
            "",
        ]
        lines += [f"* {n}" for n in noisy]
    errors = [(k, e["_errors"]) for k, e in agg.items() if e["_errors"]]
    if errors:
        lines += ["", "## Errors", ""]
        for (scenario, variant, key), errs in errors:
            lines.append(f"* {scenario} {variant} {LABELS[key]}: {errs[0][:300]}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, smaller counts")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run (default: all)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = S.Sizes(quick=args.quick)
    nofile = raise_nofile()
    log(f"RLIMIT_NOFILE {nofile}; {'quick' if args.quick else 'full'} run, {rounds} round(s)")
    if not wrk_path():
        log("wrk is missing: run bench/run.sh (it installs wrk), or apt-get install wrk")
        return 2
    repo = HERE.parent
    commit = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()  # noqa: S607
    dirty = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(repo), "diff", "--quiet", "HEAD", "--", "saltapi_twisted"],
        capture_output=True,
        check=False,
    ).returncode  # noqa: S607
    code = f"{commit or '?'}{' + uncommitted changes in saltapi_twisted/' if dirty == 1 else ''}"
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="saltapi-bench-"))
    stack = Stack(root)
    records: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"rss_start": {}, "rss_end": {}, "code_at_start": code}
    plan_order: list[tuple[str, str]] = []
    try:
        stack.start(log)
        jobcache = S.JobCache(stack, root / "jobs-snapshot")
        seeded = jobcache.seed(stack.sandbox.ret_port, 100)
        settle(stack)
        log(
            f"seeded jobs: {seeded['ok']} published; job cache holds {jobcache.save()} jobs (restored before every /jobs run)"
        )
        ours = next(s for s in stack.servers if s.key == "ours")
        lag_exposed = stats_lag(ours) is not None
        meta["lag_exposed"] = lag_exposed
        log(
            f"our /stats reactor lag: {'exposed' if lag_exposed else 'not exposed (skipped)'}; our websockets: {websockets_available(ours)}"
        )
        plan = build_plan(stack, sizes, jobcache)
        if args.only:
            plan = [p for p in plan if p[0] in args.only]
        plan_order = [(s, v) for s, v, _t in plan]
        for rnd in range(1, rounds + 1):
            if rnd > 1:  # every round starts from freshly started servers (same master and minions)
                for server in stack.servers:
                    restart_server(server)
                log(f"round {rnd}: servers restarted: " + ", ".join(f"{s.label} pid {s.pid}" for s in stack.servers))
            settle(stack)
            for server in stack.servers:
                meta["rss_start"].setdefault(server.key, []).append(round(server.rss() / 2**20, 1))
            rss_end_taken = False
            for scenario, variant, targets in plan:
                if scenario == "idle_streams" and not rss_end_taken:
                    rss_end_taken = True
                    settle(stack, 60)
                    for server in stack.servers:
                        meta["rss_end"].setdefault(server.key, []).append(round(server.rss() / 2**20, 1))
                    # a fresh API: RSS per idle stream from a clean baseline, not the fan-outs' high-water mark
                    restart_server(ours)
                    log(f"{ours.label} restarted for idle_streams (pid {ours.pid})")
                for key in [*KEYS, "ref"]:
                    if key not in targets:
                        continue
                    server = next((s for s in stack.servers if s.key == key), None)
                    others = [s for s in stack.servers if s is not server]
                    meter = CpuMeter(
                        {
                            "server": (lambda s=server: tree_cpu(s.pid)) if server else (lambda: 0.0),
                            "others": lambda o=others: sum(tree_cpu(s.pid) for s in o),
                            "master": lambda: tree_cpu(stack.master_pid()),
                            "minions": lambda: sum(tree_cpu(p) for p in stack.minion_pids()),
                            "loadgen": self_cpu,
                        }
                    )
                    if scenario == "jobs":
                        jobcache.restore()  # the same ~100 jobs for every /jobs run, outside the timing
                    waited, quiet = settle(stack)
                    if not quiet:
                        log(f"not quiet after {waited:.0f} s; running {scenario} {variant} {LABELS[key]} anyway")
                        meta.setdefault("not_quiet", []).append(f"round {rnd}: {scenario} {variant} {LABELS[key]}")
                    lag_before = stats_lag(ours) if lag_exposed else None
                    before = meter.snapshot()
                    try:
                        result = targets[key]()
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                        traceback.print_exc()
                    cpu = CpuMeter.delta(before, meter.snapshot())
                    lag_after = stats_lag(ours) if lag_exposed else None
                    # /stats keeps the maximum since start: a run "owns" a lag only if it raised that maximum
                    lag = (
                        lag_after
                        if lag_after is not None and lag_before is not None and lag_after > lag_before + 1e-9
                        else None
                    )
                    records.append(
                        {
                            "round": rnd,
                            "scenario": scenario,
                            "variant": variant,
                            "target": key,
                            "result": result,
                            "cpu": cpu,
                            "lag_raised_to_s": lag,
                            "lag_max_after_s": lag_after,
                            "settle_s": round(waited, 1),
                            "quiet_before": quiet,
                        }
                    )
                    brief = {
                        k: result[k]
                        for k in (
                            "rps",
                            "p50_ms",
                            "p99_ms",
                            "failed",
                            "connected",
                            "deliveries_per_s",
                            "lost_pct",
                            "latency_p99_ms",
                            "rss_per_stream_kb",
                            "na",
                            "error",
                        )
                        if k in result
                    }
                    log(
                        f"round {rnd} {scenario} {variant} {LABELS[key]}: {brief} cpu { ({k: v for k, v in cpu.items()}) }"
                    )
                    if server is not None and not server.alive():
                        log(f"{server.label} died; its output: {server.root}")
            if not rss_end_taken:
                settle(stack, 60)
                for server in stack.servers:
                    meta["rss_end"].setdefault(server.key, []).append(round(server.rss() / 2**20, 1))
            log(f"round {rnd} done ({(time.monotonic() - started) / 60:.1f} min)")
    finally:
        stack.stop()
        if args.keep:
            log(f"kept {root} (configs and logs of every process)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = (time.monotonic() - started) / 60
    wrk_version = (
        subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split(" [")[0].strip()
    )  # noqa: S607
    salt_version = next(
        (
            p.split("==")[1]
            for p in subprocess.run(
                [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=False
            ).stdout.split()
            if p.lower().startswith("salt==")
        ),
        "?",
    )  # noqa: S603
    meta.update(
        {
            "code": code,
            "mode": "quick" if args.quick else "full",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{psutil.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}",
            "rounds": rounds,
            "minions": len(stack.sandbox.minion_ids),
            "salt": salt_version,
            "wrk": wrk_version.replace("wrk ", ""),
            "elapsed_min": elapsed,
        }
    )
    agg = aggregate(records)
    table = render(agg, plan_order, meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(table)
    (out / "latest.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "records": records,
                "medians": [{"scenario": s, "variant": v, "target": k, **m} for (s, v, k), m in agg.items()],
            },
            indent=1,
            default=str,
        )
    )
    readme = HERE / "README.md"
    if readme.exists() and args.out == str(HERE / "results"):
        text = readme.read_text()
        start, end = "<!-- latest:start -->", "<!-- latest:end -->"
        if start in text and end in text:
            head, _sep, rest = text.partition(start)
            _old, _sep, tail = rest.partition(end)
            body = table.replace("# Benchmark:", "### Benchmark:", 1).replace("\n## ", "\n#### ")
            readme.write_text(f"{head}{start}\n{body}{end}{tail}")
    print()
    print(table)
    log(f"wrote {out / 'latest.md'} and {out / 'latest.json'} ({elapsed:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
