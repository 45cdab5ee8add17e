"""Closed-loop HTTP load with wrk (one thread; a Lua script sets method, body, token and checks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "request.lua"


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str,
    method: str,
    path: str,
    *,
    concurrency: int,
    duration: float,
    token: str | None = None,
    body: Any = None,
    checks: list[str] | None = None,
    max_requests: int = 0,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """One wrk run; requests/s, latency percentiles (ms) and how many responses failed the checks.

    ``max_requests`` stops the run after that many requests were issued (the
    run ends at ``duration`` otherwise); the rate is completed requests over
    the elapsed time either way.
    """
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (bench/run.sh installs it with apt-get)")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        bodyfile = checkfile = "-"
        if body is not None:
            bodyfile = str(Path(tmp) / "body.json")
            Path(bodyfile).write_text(json.dumps(body))
        if checks:
            checkfile = str(Path(tmp) / "checks.txt")
            Path(checkfile).write_text("\n".join(checks) + "\n")
        command = [
            wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", f"--timeout={int(timeout)}s",
            "-s", str(LUA), url, "--",
            method, path, token or "-", bodyfile, checkfile, str(max_requests),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=duration + timeout + 30, check=False)  # noqa: S603
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout[-800:]} {result.stderr[-800:]}")
    raw = json.loads(line[len("BENCHJSON ") :])
    seconds = raw["duration_us"] / 1e6
    completed = raw["requests"]
    if completed == 0:  # wrk reports 0 for percentiles of nothing
        for key in ("p50_us", "p90_us", "p99_us", "max_us"):
            raw[key] = None
    return {
        "requests": completed,
        "ok": raw["ok"],
        "failed": raw["bad_body"] + raw["bad_status"] + raw["err_timeout"] + raw["err_read"] + raw["err_connect"],
        "bad_body": raw["bad_body"],
        "bad_status": raw["bad_status"],
        "errors": {k[4:]: v for k, v in raw.items() if k.startswith("err_") and v},
        "seconds": round(seconds, 3),
        "rps": round(raw["ok"] / seconds, 2) if seconds > 0 else 0.0,
        **{
            f"{k}_ms": (round(raw[f"{k}_us"] / 1000, 2) if raw[f"{k}_us"] is not None else None)
            for k in ("p50", "p90", "p99", "max")
        },
    }
