"""The OpenAPI description (issue 8, item 3) against the real server.

* ``GET /openapi.json`` is a valid OpenAPI 3.1 document that lists every REST
  route and method of the klein app, and nothing the app does not serve.
* schemathesis runs against an API of this module's own, authenticated as
  ``limited`` (ACL ``test.*``), with every check on: no 5xx, no schema
  violation, no schema-valid request refused, no schema-invalid one accepted.
  Meanwhile the master's bus is watched: nothing but ``test.*`` functions (and
  the ``saltutil.find_job`` the synchronous wait sends) may be published, and
  no runner or wheel job may start.

Left out of the fuzzing: ``POST /logout`` (it would revoke the fuzzing token),
``/hook`` (it fires events), ``GET /events`` (an endless stream) and ``POST
/minions/`` (the same handler as ``POST /minions``). The media-type aliases of
the request bodies (``text/plain`` for JSON, ``application/yaml`` and
``text/yaml`` for YAML) are dropped from the copy schemathesis reads: they
reach the same parsers and would double the run. ``SALTAPI_FUZZ_EXAMPLES``
sets the examples per operation (default 20); ``SALTAPI_FUZZ_SEED`` the seed
(fixed by default, so a run is repeatable: set another to explore further).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from openapi_spec_validator import OpenAPIV31SpecValidator

from saltapi_twisted.lowstate import LOCAL_ALLOWED_KEYS
from saltapi_twisted.sandbox import ADMIN_USER, LIMITED_USER, ApiProcess, SaltSandbox
from saltapi_twisted.web.app import SaltAPI

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("SALTAPI_FUZZ_EXAMPLES", "20"))
FUZZ_SEED = int(os.environ.get("SALTAPI_FUZZ_SEED", "20261128"))
#: Request media types that reach the same parser as one already fuzzed.
MEDIA_ALIASES = ("text/plain", "application/yaml", "text/yaml")
#: Routes served outside the REST description (websocket upgrades).
WEBSOCKET_PREFIXES = ("/all_events/", "/formatted_events/", "/ws")
#: What the master may publish during the run: what the limited user's ACL
#: (``test.*``, a regex to Salt) allows, and the find_job rounds of the
#: synchronous ``local`` wait.
ALLOWED_FUN = re.compile(r"test.*|saltutil\.find_job")
WATCHED_TAGS = ("salt/job/*/new", "salt/wheel/*/new", "salt/run/*/new")


@pytest.fixture(scope="module")
def fuzz_api(salt_master: SaltSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """An API of this module's own: plain HTTP, no rate limits to trip over, metrics on."""
    process = ApiProcess(
        tmp_path_factory.mktemp("openapi"),
        salt_master,
        {
            "disable_ssl": True,
            "login_rate_limit": 0,
            "webhook_rate_limit": 0,
            "webhook_disable_auth": False,
            "metrics": True,
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def description(fuzz_api: ApiProcess) -> dict[str, Any]:
    response = requests.get(fuzz_api.url + "/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def _login(url: str, user: tuple[str, str]) -> str:
    response = requests.post(
        url + "/login", json={"username": user[0], "password": user[1], "eauth": "file"}, timeout=60
    )
    assert response.status_code == 200, response.text
    return str(response.json()["return"][0]["token"])


def _openapi_path(rule: str) -> str:
    """``/minions/<mid>`` -> ``/minions/{mid}``, ``/hook/<anypath:suffix>`` -> ``/hook/{suffix}``."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_description_is_valid_openapi_3_1(description: dict[str, Any]) -> None:
    assert description["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(description).validate()
    ids = [op["operationId"] for item in description["paths"].values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_description_lists_every_rest_route(description: dict[str, Any]) -> None:
    url_map = SaltAPI.app.url_map
    served: set[tuple[str, str]] = set()
    aliases: set[tuple[str, str]] = set()
    for rule in url_map.iter_rules():
        if rule.rule.startswith(WEBSOCKET_PREFIXES):
            continue
        for method in rule.methods or ():
            if method == "HEAD":  # werkzeug adds HEAD to every GET rule
                continue
            served.add((_openapi_path(rule.rule), method.lower()))
            if not url_map.strict_slashes and not rule.rule.endswith("/"):
                # "/x" also answers "/x/": the description may name such an alias (POST /minions/).
                aliases.add((_openapi_path(rule.rule) + "/", method.lower()))
    described = {
        (path, method)
        for path, item in description["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch", "options")
    }
    assert served - described == set(), "routes missing from the description"
    assert described - served - aliases == set(), "described operations the app does not serve"


def test_chunk_allowlists_match_the_validator(description: dict[str, Any]) -> None:
    schemas = description["components"]["schemas"]
    kinds = (("LocalChunk", "local"), ("LocalBatchChunk", "local_batch"), ("LocalSubsetChunk", "local_subset"))
    for name, client in kinds:
        assert schemas[name]["additionalProperties"] == {"type": "null"}
        # A caller's jid is accepted only under conditions a schema cannot state.
        assert set(schemas[name]["properties"]) == LOCAL_ALLOWED_KEYS[client] - {"jid"}, name


class BusWatcher(threading.Thread):
    """Collects ``/new`` events from ``GET /events`` (HTTP/1.0, read raw) until stopped."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.token = token
        self.events: list[tuple[str, Any]] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._stop_reading = threading.Event()

    def stop(self) -> None:
        self._stop_reading.set()
        self.join(timeout=10)

    def run(self) -> None:
        query = "&".join("tag=" + quote(tag, safe="") for tag in WATCHED_TAGS)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(
                    (
                        f"GET /events?{query} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                        f"X-Auth-Token: {self.token}\r\n\r\n"
                    ).encode()
                )
                sock.settimeout(0.5)
                self._read(sock)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.ready.set()

    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        headers_done = False
        while not self._stop_reading.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                self.comments.append("closed by the server")
                return
            buffer += data
            if not headers_done:
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.status = int(head.split(b" ", 2)[1])
                headers_done = True
                if self.status != 200:
                    return
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                self._message(block.decode("utf-8", "replace"))

    def _message(self, block: str) -> None:
        tag = None
        data = None
        for line in block.split("\n"):
            if line.startswith("retry:"):
                self.ready.set()
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line.startswith("tag: "):
                tag = line[5:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if tag is not None and data is not None:
            self.events.append((tag, data.get("data")))


def _fuzz_schema(description: dict[str, Any], path: Path) -> Path:
    """The description without the media-type aliases of request bodies."""
    document = json.loads(json.dumps(description))
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                for alias in MEDIA_ALIASES:
                    operation["requestBody"]["content"].pop(alias, None)
    path.write_text(json.dumps(document))
    return path


def _figures(output: str) -> str:
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    cases = re.search(r"\n\s*(\d+) generated, ([^\n]*)", output)
    seed = re.search(r"Seed: (\d+)", output)
    parts = []
    if selected:
        parts.append(f"{selected.group(1)} of {selected.group(2)} operations")
    if cases:
        parts.append(f"{cases.group(1)} test cases: {cases.group(2).strip()}")
    if seed:
        parts.append(f"seed {seed.group(1)}")
    return "; ".join(parts) or "no summary"


def _job_functions(url: str, token: str) -> dict[str, Any]:
    response = requests.get(url + "/jobs", headers={"X-Auth-Token": token}, timeout=120)
    assert response.status_code == 200, response.text
    jobs: dict[str, Any] = response.json()["return"][0]
    return {jid: job.get("Function") for jid, job in jobs.items()}


def _allowed(fun: Any) -> bool:
    functions = fun if isinstance(fun, list) else [fun]
    return bool(functions) and all(isinstance(f, str) and ALLOWED_FUN.fullmatch(f) for f in functions)


def test_schemathesis_finds_nothing(fuzz_api: ApiProcess, description: dict[str, Any], tmp_path: Path) -> None:
    url = fuzz_api.url
    token = _login(url, LIMITED_USER)
    admin = _login(url, ADMIN_USER)
    schema = _fuzz_schema(description, tmp_path / "openapi.json")
    jobs_before = _job_functions(url, admin)

    watcher = BusWatcher(int(fuzz_api.block["port"]), admin)
    watcher.start()
    assert watcher.ready.wait(30), "the event stream did not start"
    assert watcher.error is None and watcher.status == 200, (watcher.status, watcher.error)

    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        str(schema),
        "--url",
        url,
        "--header",
        f"X-Auth-Token: {token}",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        "--max-response-time",
        "30",
        "--request-timeout",
        "60",
        "--exclude-path",
        "/logout",
        "--exclude-path-regex",
        "^/hook",
        "--exclude-operation-id",
        "events_get",
        "--exclude-operation-id",
        "minions_slash_post",
        "--no-color",
        "--seed",
        str(FUZZ_SEED),
    ]
    started = time.monotonic()
    try:
        run = subprocess.run(  # noqa: S603 - fixed program, no shell
            command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False
        )
    finally:
        time.sleep(2)  # the last jobs' events
        watcher.stop()
    output = run.stdout + run.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    figures = _figures(output)
    print(f"\nschemathesis: {figures}; {time.monotonic() - started:.0f} s")  # noqa: T201 - the run's figures

    assert run.returncode == 0, f"schemathesis failed ({figures}):\n{output[-20000:]}"
    assert "No issues found" in output or re.search(r"\d+ generated, \d+ passed", output), output[-5000:]

    # Nothing but test.* ran, and no runner or wheel job started.
    assert watcher.error is None, watcher.error
    assert "overflow" not in watcher.comments, "the bus watcher fell behind: events were not all seen"
    wheel = [tag for tag, _data in watcher.events if tag.startswith("salt/wheel/")]
    runner = [tag for tag, _data in watcher.events if tag.startswith("salt/run/")]
    published = [(tag, data) for tag, data in watcher.events if tag.startswith("salt/job/")]
    assert wheel == [], wheel
    assert runner == [], runner
    refused = [(tag, data.get("fun")) for tag, data in published if not _allowed(data.get("fun"))]
    assert refused == [], refused
    assert published, "the run published no test.* job: the description's examples were not executed"

    jobs_after = _job_functions(url, admin)
    new_jobs = {jid: fun for jid, fun in jobs_after.items() if jid not in jobs_before}
    assert {jid: fun for jid, fun in new_jobs.items() if not _allowed(fun) and fun != "runner.jobs.list_jobs"} == {}


# --------------------------------------------------------------------------
# Requests schemathesis found the server mishandling, kept as regression cases.
# Each reason names the change that fixed it.

BIG = "1" + "0" * 20  # past msgpack's 64-bit integers
LIMITED = "limited"  # the request carries a fresh ``limited`` token in X-Auth-Token
COOKIE = "cookie"  # ... in the session cookie only, with a foreign Origin

REGRESSIONS = [
    (
        "login_token_expire_overflow",
        "POST",
        "/login",
        None,
        '{"username": "x", "password": "y", "eauth": "file", "token_expire": 1' + "0" * 400 + "}",
        400,
        "app.py _credentials_from_body: float() OverflowError -> 500",
    ),
    (
        "login_lone_surrogate",
        "POST",
        "/login",
        None,
        '{"username": "\\ud800", "password": "y", "eauth": "file"}',
        400,
        "app.py _credentials_from_body: an unpackable username -> 500",
    ),
    (
        "chunk_integer_beyond_64_bits",
        "POST",
        "/",
        LIMITED,
        '{"client": "local", "tgt": "*", "fun": "test.arg", "arg": [' + BIG + "]}",
        400,
        "lowstate.py: a value msgpack cannot carry -> 500 (FramingError)",
    ),
    (
        "chunk_lone_surrogate",
        "POST",
        "/",
        LIMITED,
        '{"client": "local", "tgt": "*", "fun": "test.arg", "kwarg": {"\\udc00": 1}}',
        400,
        "lowstate.py: a value msgpack cannot carry -> 500 (FramingError)",
    ),
    (
        "hook_integer_beyond_64_bits",
        "POST",
        "/hook/openapi-regression",
        LIMITED,
        '{"a": ' + BIG + "}",
        400,
        "hook.py: a body msgpack cannot carry -> 500",
    ),
    (
        "wheel_fun_without_module",
        "POST",
        "/",
        LIMITED,
        '{"client": "wheel", "fun": "key"}',
        400,
        "lowstate.py: runner/wheel fun must be <module>.<function>; the master's SaltInvocationError -> 502",
    ),
    (
        "runner_fun_without_module",
        "POST",
        "/",
        LIMITED,
        '{"client": "runner", "fun": "jobs"}',
        400,
        "lowstate.py: runner/wheel fun must be <module>.<function>; the master's SaltInvocationError -> 502",
    ),
    (
        "wheel_tiny_timeout",
        "POST",
        "/",
        LIMITED,
        '{"client": "wheel", "fun": "key.list_all", "timeout": 5e-324}',
        (200, 403),
        "reqclient.py: callLater(negative delay) -> 500; clients.py: the chunk's own wait deadline -> 504",
    ),
    (
        "jid_trailing_newline",
        "GET",
        "/jobs/20240101120000123456%0A",
        LIMITED,
        None,
        400,
        "app.py: _JID_RE.match lets a trailing newline through",
    ),
    (
        "options_openapi_json",
        "OPTIONS",
        "/openapi.json",
        None,
        None,
        204,
        "app.py REST_PATHS lacks /openapi.json: 405 although Allow lists OPTIONS",
    ),
    ("logout_cross_site_cookie", "POST", "/logout", COOKIE, None, 403, "app.py logout: no CSRF check (spec §3.7)"),
    (
        "logout_trailing_slash",
        "POST",
        "/logout/",
        LIMITED,
        None,
        404,
        "app.py strict_slashes=False: /logout/ (and /login/, /run/...) answer although paths match exactly (spec §2)",
    ),
    (
        "runner_fun_with_two_dots",
        "POST",
        "/",
        LIMITED,
        '{"client": "runner", "fun": "jobs.list.jobs"}',
        400,
        "app.py _validate: the master wants exactly one dot (spec_check splits on '.'): 'a.b.c' -> 502",
    ),
    (
        "batch_integral_float",
        "POST",
        "/",
        LIMITED,
        '{"client": "local_batch", "tgt": "nomatch", "fun": "test.ping", "batch": 2.0}',
        200,
        "lowstate.py _positive_int: JSON does not tell 2.0 from 2 (schema `integer` admits it) -> 400",
    ),
    (
        "full_return_integral_float",
        "POST",
        "/",
        LIMITED,
        '{"client": "local", "tgt": "nomatch", "fun": "test.ping", "full_return": 1.0}',
        200,
        "lowstate.py _to_bool: JSON does not tell 1.0 from 1 (schema `enum: [0, 1]` admits it) -> 400",
    ),
    (
        "batch_wait_past_a_day",
        "POST",
        "/",
        LIMITED,
        '{"client": "local_batch", "tgt": "nomatch", "fun": "test.ping", "batch": 1, "batch_wait": 7.2e16}',
        400,
        "lowstate.py: batch_wait capped at 86400 s like timeout, and the description says so",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "auth", "body", "expected"),
    [
        pytest.param(method, path, auth, body, expected, id=name)  # reason: what was fixed
        for name, method, path, auth, body, expected, reason in REGRESSIONS
    ],
)
def test_regression_cases(
    fuzz_api: ApiProcess, method: str, path: str, auth: str | None, body: str | None, expected: int | tuple[int, ...]
) -> None:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if auth == LIMITED:
        headers["X-Auth-Token"] = _login(fuzz_api.url, LIMITED_USER)
    elif auth == COOKIE:
        headers["Cookie"] = "session_id=" + _login(fuzz_api.url, LIMITED_USER)
        headers["Origin"] = "https://attacker.example"
    response = requests.request(
        method, fuzz_api.url + path, data=body.encode() if body is not None else None, headers=headers, timeout=60
    )
    assert response.status_code in (expected if isinstance(expected, tuple) else (expected,)), response.text
