"""Checklist §5.1 "Secrets in logs": no token or password in any log line, at any level.

One API of this test's own runs with ``debug: True`` and is fed every way a
token can arrive (header, cookie, the refused ``?token=`` query, websocket
paths, SSE) and a failed login with a unique password; its log must hold
neither. Then, after every other test of the session, every log the session's
APIs wrote (``api.log*``, ``twistd.out``) is searched for anything shaped
like a token (64 lowercase hex characters): there must be none.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
import websocket

from saltapi_twisted.sandbox import ApiProcess, SaltSandbox

from ..conftest import Api

TOKEN_SHAPE = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def _api_logs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and (p.name.startswith("api.log") or p.name == "twistd.out"))


def test_debug_log_holds_no_token_or_password(salt_master: SaltSandbox, tmp_path: Path) -> None:
    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True, "debug": True, "websockets": True})
    process.start()
    canary = "canary-" + secrets.token_hex(12)
    try:
        api = Api(process)
        token = api.login()
        header = {"X-Auth-Token": token}
        assert api.run([{"client": "local", "tgt": "*", "fun": "test.ping"}], token).status_code == 200
        assert api.get("/jobs", headers=header).status_code == 200
        assert api.get("/login", cookies={"session_id": token}).status_code == 200
        assert api.get(f"/jobs?token={token}", headers=header).status_code == 400
        assert api.get(f"/events?token={token}").status_code in (400, 401)
        with api.get("/events", headers=header, stream=True, timeout=(10, 10)) as stream:
            assert stream.status_code == 200
        ws = websocket.create_connection(f"ws://127.0.0.1:{process.block['port']}/all_events/{token}", timeout=10)
        ws.close()
        failed = api.post("/login", json={"username": "saltdev", "password": canary, "eauth": "file"})
        assert failed.status_code == 401
        assert api.post("/logout", headers=header).status_code == 200
    finally:
        process.stop()
    logs = _api_logs(tmp_path)
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert "debug" in text.lower() or "master mk_token request" in text, "the debug level was not on"
    assert "/all_events/" in text and "/logout" in text, "the access log did not record the requests"
    assert token not in text
    assert canary not in text


@pytest.mark.after_everything
def test_no_token_shaped_string_in_any_api_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.getbasetemp()
    logs = _api_logs(root)
    assert logs, f"no API log under {root}"
    leaks = []
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if TOKEN_SHAPE.search(line):
                leaks.append(f"{path.relative_to(root)}:{number}: {TOKEN_SHAPE.sub('<64 hex>', line)[:300]}")
    assert leaks == [], "\n".join(leaks[:20])
