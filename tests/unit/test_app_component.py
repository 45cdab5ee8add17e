"""The REST routes through the real resource tree, in memory (``StubTreq``).

``SaltAPI`` is built as :mod:`saltapi_twisted.service` builds it, with the
real :class:`Authenticator` and :class:`ClientRunner`, over a fake master
client and a fake event bus. The fake master records every call, so a test
can prove that a refused request never reached the master.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.python.failure import Failure

from saltapi_twisted.auth import Authenticator
from saltapi_twisted.clients import ClientRunner
from saltapi_twisted.config import ApiConfig, MasterSettings
from saltapi_twisted.master.exceptions import (
    AuthenticationFailed,
    AuthorizationFailed,
    MasterTimeout,
    MasterUnavailable,
)
from saltapi_twisted.web.app import SaltAPI

BASE = "http://saltapi.test"
TOKEN = "0123456789abcdef" * 4
JID = "20250101000000000042"
ENABLED = ("local", "local_async", "runner", "wheel", "ssh", "local_batch")
EXTERNAL_AUTH = {"file": {"saltdev": [".*", "@runner"], "*": ["test.ping"], "admins%": ["@wheel"]}}


class FakeBus:
    """The event bus surface the app, the hub and the runner use."""

    def __init__(self) -> None:
        self.connected = True
        self.connected_since: float | None = 0.0
        self.events_received = 0
        self.reconnects = 0
        self.recorded: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.watchers: dict[str, list[Callable[[str, dict[str, Any]], None]]] = {}
        self.subscribers: list[Any] = []
        self.in_batch = False

    def on_batch_end(self, callback: Any) -> Callable[[], None]:
        return lambda: None

    def subscribe(self, callback: Any, on_state: Any = None) -> Callable[[], None]:
        entry = (callback, on_state)
        self.subscribers.append(entry)
        return lambda: self.subscribers.remove(entry)

    def watch_jid(self, jid: str, callback: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        self.watchers.setdefault(jid, []).append(callback)
        for tag, data in list(self.recorded.get(jid, ())):
            callback(tag, data)

        def stop() -> None:
            callbacks = self.watchers.get(jid, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self.watchers.pop(jid, None)

        return stop

    def emit(self, jid: str, tag: str, data: dict[str, Any]) -> None:
        self.recorded.setdefault(jid, []).append((tag, data))
        for callback in list(self.watchers.get(jid, ())):
            callback(tag, data)

    def jid_seen(self, jid: str) -> bool:
        return jid in self.recorded

    @property
    def subscriber_count(self) -> int:
        return len(self.subscribers)

    @property
    def watch_count(self) -> int:
        return len(self.watchers)


class FakeMaster:
    """The master client surface, recording every call.

    ``publish_results`` is consumed in order: an exception is raised, a
    dict is returned; when empty every publish gets a new jid for ``m1``
    and ``m2``, whose returns are put on the bus at once.
    """

    def __init__(self, bus: FakeBus) -> None:
        self.bus = bus
        self.calls: list[tuple[str, Any]] = []
        self.tokens: dict[str, dict[str, Any]] = {}
        self.token_error: BaseException | None = None
        self.mint_error: BaseException | None = None
        self.publish_results: list[Any] = []
        self.runner_result: Any = None
        self._jids = 0

    def add_token(self, token: str = TOKEN, **extra: Any) -> dict[str, Any]:
        info = {
            "token": token,
            "expire": time.time() + 3600,
            "start": time.time(),
            "name": "saltdev",
            "eauth": "file",
            **extra,
        }
        self.tokens[token] = info
        return info

    def names(self) -> list[str]:
        return [name for name, _arg in self.calls]

    async def ping(self, timeout: float | None = None) -> bool:
        self.calls.append(("ping", None))
        return True

    async def get_token(self, token: str) -> dict[str, Any] | None:
        self.calls.append(("get_token", token))
        if self.token_error is not None:
            raise self.token_error
        return self.tokens.get(token)

    async def mk_token(
        self, username: str, password: str, eauth: str, token_expire: float | None = None
    ) -> dict[str, Any]:
        self.calls.append(("mk_token", (username, password, eauth, token_expire)))
        if self.mint_error is not None:
            raise self.mint_error
        return self.add_token(TOKEN, name=username, eauth=eauth, groups=["admins"])

    async def publish(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.calls.append(("publish", load))
        if self.publish_results:
            result = self.publish_results.pop(0)
            if isinstance(result, BaseException):
                raise result
            return dict(result)
        self._jids += 1
        jid = f"2025010100000000{self._jids:04d}"
        for minion in ("m1", "m2"):
            self.bus.emit(jid, f"salt/job/{jid}/ret/{minion}", {"id": minion, "jid": jid, "return": True})
        return {"jid": jid, "minions": ["m1", "m2"]}

    async def runner(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.calls.append(("runner", load))
        jid = "20250101000000009999"
        self.bus.emit(jid, f"salt/run/{jid}/ret", {"return": self.runner_result, "success": True})
        return {"tag": f"salt/run/{jid}", "jid": jid}

    async def wheel(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.calls.append(("wheel", load))
        return {"tag": "salt/wheel/1", "data": {"return": {"minions": ["m1"]}, "success": True}}


class Harness:
    def __init__(self, **config: Any) -> None:
        settings = MasterSettings(netapi_enable_clients=ENABLED, external_auth=EXTERNAL_AUTH)
        self.config = ApiConfig(master=settings, block_name="rest_twisted", port=1, disable_ssl=True, **config)
        self.clock = task.Clock()
        self.bus = FakeBus()
        self.master = FakeMaster(self.bus)
        self.auth = Authenticator(self.master, self.config.master.token_length, 5.0)  # type: ignore[arg-type]
        self.runner = ClientRunner(self.master, self.bus, self.clock, self.config)  # type: ignore[arg-type]
        self.api = SaltAPI(self.config, self.master, self.bus, self.auth, self.runner, self.clock)  # type: ignore[arg-type]
        self.stub = StubTreq(self.api.resource())

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
    ) -> Response:
        sent = dict(headers or {})
        if token is not None:
            sent["X-Auth-Token"] = token
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and content_type is not None:
            sent.setdefault("Content-Type", content_type)
        d = self.stub.request(method, BASE + path, data=data, headers=sent)
        self.stub.flush()
        response = fired(d)
        content = fired(self.stub.content(response))
        return Response(response, content)


class Response:
    def __init__(self, response: Any, content: bytes) -> None:
        self.code = response.code
        self.headers = response.headers
        self.content = content

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if values is None else ", ".join(values)

    def json(self) -> Any:
        return json.loads(self.content)


def fired(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the request did not complete"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


@pytest.fixture
def h() -> Harness:
    return Harness()


def error_of(response: Response, code: int, word: str) -> str:
    assert response.code == code, response.content
    assert response.header("Content-Type") == "application/json"
    body = response.json()
    assert set(body) == {"status", "error", "return"}
    assert body["status"].startswith(f"{code} ")
    assert body["error"] == word
    return str(body["return"])


# ----------------------------------------------------------------------------
# routing and negotiation


def test_root_lists_the_enabled_implemented_clients(h: Harness) -> None:
    response = h.request("GET", "/")
    assert response.code == 200
    assert response.json() == {
        "return": "Welcome",
        "clients": ["local", "local_async", "local_batch", "runner", "wheel"],
    }
    assert response.header("Content-Type") == "application/json"
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert h.master.calls == []


def test_root_in_yaml(h: Harness) -> None:
    response = h.request("GET", "/", headers={"Accept": "application/x-yaml"})
    assert response.code == 200
    assert response.header("Content-Type") == "application/x-yaml"
    assert b"Welcome" in response.content


def test_unknown_path_is_404_json(h: Harness) -> None:
    response = h.request("GET", "/nope")
    assert error_of(response, 404, "not_found") == "Not found"
    assert response.json()["status"] == "404 Not Found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/run", "OPTIONS, POST"),
        ("POST", "/jobs", "GET, HEAD, OPTIONS"),
        ("GET", "/logout", "OPTIONS, POST"),
        ("POST", "/events", "GET, HEAD, OPTIONS"),
        ("DELETE", "/", "GET, HEAD, OPTIONS, POST"),
    ],
)
def test_wrong_method_is_405_with_allow(h: Harness, method: str, path: str, allow: str) -> None:
    response = h.request(method, path)
    assert error_of(response, 405, "method_not_allowed") == f"Method {method} not allowed"
    assert response.header("Allow") == allow
    assert h.master.calls == []


def test_unacceptable_accept_is_406_in_json(h: Harness) -> None:
    response = h.request("GET", "/", headers={"Accept": "text/html"})
    error_of(response, 406, "not_acceptable")


def test_options_is_204(h: Harness) -> None:
    response = h.request("OPTIONS", "/login", headers={"Access-Control-Request-Headers": "X-Auth-Token"})
    assert response.code == 204
    assert response.content == b""
    assert response.header("Access-Control-Allow-Methods") == "OPTIONS, GET, POST"
    assert response.header("Access-Control-Allow-Headers") == "X-Auth-Token"


@pytest.mark.parametrize("content_type", ["application/xml", "text/csv", "application/octet-stream", None])
def test_unsupported_body_type_is_415(h: Harness, content_type: str | None) -> None:
    h.master.add_token()
    raw = b'[{"client": "local_async", "tgt": "*", "fun": "test.ping"}]'
    response = h.request("POST", "/", raw=raw, token=TOKEN, content_type=content_type)
    error_of(response, 415, "unsupported_media_type")
    assert "publish" not in h.master.names()


def test_multipart_body_is_415(h: Harness) -> None:
    h.master.add_token()
    raw = b'--x\r\nContent-Disposition: form-data; name="client"\r\n\r\nlocal_async\r\n--x--\r\n'
    response = h.request("POST", "/", raw=raw, token=TOKEN, content_type="multipart/form-data; boundary=x")
    error_of(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("raw", [b"", b"   \n"])
def test_empty_body_is_400(h: Harness, raw: bytes) -> None:
    h.master.add_token()
    response = h.request("POST", "/", raw=raw, token=TOKEN)
    assert error_of(response, 400, "bad_request") == "The request body is empty"
    assert "publish" not in h.master.names()


def test_invalid_json_is_400(h: Harness) -> None:
    h.master.add_token()
    response = h.request("POST", "/", raw=b'[{"client": ', token=TOKEN)
    error_of(response, 400, "bad_request")


# ----------------------------------------------------------------------------
# /login


def test_login(h: Harness) -> None:
    response = h.request("POST", "/login", {"username": "saltdev", "password": "secret", "eauth": "file"})
    assert response.code == 200, response.content
    [entry] = response.json()["return"]
    assert entry["token"] == TOKEN
    assert entry["user"] == "saltdev" and entry["eauth"] == "file"
    assert isinstance(entry["expire"], float) and isinstance(entry["start"], float)
    assert entry["perms"] == [".*", "@runner", "@wheel", "test.ping"]
    assert set(entry) == {"token", "expire", "start", "user", "eauth", "perms"}
    assert h.master.calls == [("mk_token", ("saltdev", "secret", "file", None))]
    assert response.header("X-Auth-Token") == TOKEN
    assert response.header("Cache-Control") == "no-store"
    cookie = response.header("Set-Cookie")
    assert cookie is not None
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0] == f"session_id={TOKEN}"
    attributes = {p.split("=", 1)[0].lower(): (p.split("=", 1) + [""])[1] for p in parts[1:]}
    assert attributes.keys() == {"path", "max-age", "httponly", "samesite"}  # no Secure over plain HTTP
    assert attributes["path"] == "/"
    assert attributes["samesite"] == "Strict"
    assert 3590 <= int(attributes["max-age"]) <= 3600


def test_login_accepts_a_one_element_list_and_token_expire(h: Harness) -> None:
    body = [{"username": "saltdev", "password": "pw", "eauth": "file", "token_expire": 60, "service": "login"}]
    response = h.request("POST", "/login", body)
    assert response.code == 200
    assert h.master.calls == [("mk_token", ("saltdev", "pw", "file", 60.0))]


@pytest.mark.parametrize(
    "body",
    [
        {"username": "saltdev", "password": "pw"},
        {"username": "saltdev", "eauth": "file"},
        {"username": "", "password": "pw", "eauth": "file"},
        ["saltdev", "pw", "file"],
        "saltdev",
    ],
)
def test_login_without_credentials_is_400_before_the_master(h: Harness, body: Any) -> None:
    response = h.request("POST", "/login", body)
    error_of(response, 400, "bad_request")
    assert h.master.calls == []


def test_login_with_bad_credentials_is_401_without_cookie(h: Harness) -> None:
    h.master.mint_error = AuthenticationFailed("Authentication failed")
    response = h.request("POST", "/login", {"username": "saltdev", "password": "wrong", "eauth": "file"})
    error_of(response, 401, "unauthenticated")
    assert response.header("Set-Cookie") is None
    assert response.header("X-Auth-Token") is None
    assert response.header("WWW-Authenticate") == "Session"


def test_login_with_an_unconfigured_eauth_is_401_before_minting(h: Harness) -> None:
    response = h.request("POST", "/login", {"username": "saltdev", "password": "pw", "eauth": "ldap"})
    error_of(response, 401, "unauthenticated")
    assert h.master.calls == []
    assert response.header("Set-Cookie") is None


def test_get_login_introspects_a_valid_token(h: Harness) -> None:
    h.master.add_token()
    response = h.request("GET", "/login", token=TOKEN)
    assert response.code == 200
    assert response.json()["return"][0]["token"] == TOKEN
    assert response.header("Cache-Control") == "no-store"
    assert error_of(h.request("GET", "/login"), 401, "unauthenticated") == "Please log in"


def test_logout_revokes_everywhere(h: Harness) -> None:
    h.master.add_token()
    response = h.request("POST", "/logout", token=TOKEN)
    assert response.code == 200
    assert response.json() == {"return": "Your token has been cleared"}
    assert "Max-Age=0" in (response.header("Set-Cookie") or "")
    calls = len(h.master.calls)
    error_of(h.request("GET", "/login", token=TOKEN), 401, "unauthenticated")
    chunk = {"client": "local_async", "tgt": "*", "fun": "test.ping"}
    error_of(h.request("POST", "/", [chunk], token=TOKEN), 401, "unauthenticated")
    assert len(h.master.calls) == calls


# ----------------------------------------------------------------------------
# tokens


@pytest.mark.parametrize(
    "bad",
    [
        "ABC",
        TOKEN.upper(),
        TOKEN[:-1],
        TOKEN + "0",
        "0x" + TOKEN[2:],
        TOKEN[:32] + " " + TOKEN[33:],
    ],
)
@pytest.mark.parametrize("where", ["header", "cookie"])
def test_malformed_token_is_401_without_a_master_call(h: Harness, bad: str, where: str) -> None:
    h.master.add_token()
    headers = {"Cookie": f"session_id={bad}"} if where == "cookie" else {"X-Auth-Token": bad}
    chunk = [{"client": "local_async", "tgt": "*", "fun": "test.ping"}]
    for method, path, body in [
        ("POST", "/", chunk),
        ("GET", "/login", None),
        ("POST", "/minions", chunk),
        ("GET", "/jobs", None),
        ("POST", "/run", chunk),
    ]:
        response = h.request(method, path, body, headers=headers)
        error_of(response, 401, "unauthenticated")
        assert response.header("WWW-Authenticate") == "Session"
    assert h.master.calls == []


def test_malformed_chunk_token_on_run_is_401_without_a_master_call(h: Harness) -> None:
    chunks = [{"client": "local_async", "tgt": "*", "fun": "test.ping", "token": "not-a-token"}]
    error_of(h.request("POST", "/run", chunks), 401, "unauthenticated")
    assert h.master.calls == []


def test_unknown_token_is_401(h: Harness) -> None:
    chunk = [{"client": "local_async", "tgt": "*", "fun": "test.ping"}]
    error_of(h.request("POST", "/", chunk, token=TOKEN), 401, "unauthenticated")
    assert h.master.names() == ["get_token"]


def test_no_token_is_401_before_the_body_is_read(h: Harness) -> None:
    response = h.request("POST", "/", raw=b"not json at all", content_type="application/xml")
    error_of(response, 401, "unauthenticated")
    assert h.master.calls == []


# ----------------------------------------------------------------------------
# lowstate


def test_local_async(h: Harness) -> None:
    h.master.add_token()
    chunk = {"client": "local_async", "tgt": "*", "fun": "test.ping"}
    response = h.request("POST", "/", [chunk], token=TOKEN)
    assert response.code == 200
    [entry] = response.json()["return"]
    assert entry["minions"] == ["m1", "m2"] and re.fullmatch(r"[0-9]{20}", entry["jid"])
    [(name, load)] = [c for c in h.master.calls if c[0] == "publish"]
    assert "jid" not in load
    assert load["kwargs"] == {"token": TOKEN}


def test_local_waits_for_the_returns(h: Harness) -> None:
    h.master.add_token()
    response = h.request("POST", "/", {"client": "local", "tgt": "*", "fun": "test.ping"}, token=TOKEN)
    assert response.code == 200
    assert response.json() == {"return": [{"m1": True, "m2": True}]}
    assert h.bus.watchers == {}
    assert h.clock.getDelayedCalls() == []


def test_local_with_no_match(h: Harness) -> None:
    h.master.add_token()
    h.master.publish_results = [{"jid": None, "minions": []}]
    response = h.request("POST", "/", {"client": "local", "tgt": "nobody", "fun": "test.ping"}, token=TOKEN)
    assert response.json() == {
        "return": ["No minions matched the target. No command was sent, no jid was assigned."]
    }


def test_runner(h: Harness) -> None:
    h.master.add_token()
    h.master.runner_result = {"jobs": 3}
    response = h.request("POST", "/", {"client": "runner", "fun": "jobs.list_jobs"}, token=TOKEN)
    assert response.json() == {"return": [{"jobs": 3}]}


@pytest.mark.parametrize(
    ("second", "code", "word"),
    [
        ({"client": "nope", "tgt": "*", "fun": "test.ping"}, 400, "invalid_client"),
        ({"client": "local_subset", "tgt": "*", "fun": "test.ping"}, 400, "client_disabled"),
        ({"client": "local_async", "tgt": "*", "fun": "test.ping", "cmd": "x"}, 400, "reserved_key"),
        ({"client": "local_async", "tgt": "*", "fun": "test.ping", "evil": 1}, 400, "unknown_key"),
        ({"client": "local_async", "tgt": "*", "fun": "bad fun!"}, 400, "invalid_value"),
        ({"client": "local_async", "tgt": "*", "fun": "test.ping", "token": "x"}, 401, "unauthenticated"),
        ("not a chunk", 400, "invalid_client"),
    ],
)
def test_every_chunk_is_validated_before_any_runs(h: Harness, second: Any, code: int, word: str) -> None:
    h.master.add_token()
    chunks = [{"client": "local_async", "tgt": "*", "fun": "test.ping"}, second]
    error_of(h.request("POST", "/", chunks, token=TOKEN), code, word)
    assert "publish" not in h.master.names()


def test_master_refusing_permission_is_403(h: Harness) -> None:
    h.master.add_token()
    h.master.publish_results = [AuthorizationFailed("denied")]
    response = h.request("POST", "/", {"client": "local_async", "tgt": "*", "fun": "cmd.run"}, token=TOKEN)
    error_of(response, 403, "forbidden")


def test_master_refusing_the_token_at_publish_is_401(h: Harness) -> None:
    h.master.add_token()
    h.master.publish_results = [AuthenticationFailed("nope")]
    response = h.request("POST", "/", {"client": "local_async", "tgt": "*", "fun": "test.ping"}, token=TOKEN)
    error_of(response, 401, "unauthenticated")


@pytest.mark.parametrize("error", [AuthenticationFailed("nope"), AuthorizationFailed("denied")])
def test_auth_failure_after_the_first_chunk_stops_processing(h: Harness, error: Exception) -> None:
    h.master.add_token()
    h.master.publish_results = [{"jid": JID, "minions": ["m1"]}, error]
    chunk = {"client": "local_async", "tgt": "*", "fun": "test.ping"}
    response = h.request("POST", "/", [chunk, chunk, chunk], token=TOKEN)
    assert response.code == 200
    assert response.json() == {"return": [{"jid": JID, "minions": ["m1"]}, "Failed to authenticate"]}
    assert h.master.names().count("publish") == 2  # the third chunk never ran


def test_other_failure_after_the_first_chunk_is_an_entry(h: Harness) -> None:
    h.master.add_token()
    h.master.publish_results = [{"jid": JID, "minions": ["m1"]}, MasterTimeout("slow"), {"jid": JID, "minions": []}]
    chunk = {"client": "local_async", "tgt": "*", "fun": "test.ping"}
    response = h.request("POST", "/", [chunk, chunk, chunk], token=TOKEN)
    assert response.code == 200
    first, second, third = response.json()["return"]
    assert first == {"jid": JID, "minions": ["m1"]}
    assert second.startswith("Unexpected exception while handling request: ")
    assert third == {"jid": JID, "minions": []}


# ----------------------------------------------------------------------------
# the master unavailable


def test_master_unavailable_validating_the_token_is_503(h: Harness) -> None:
    h.master.token_error = MasterUnavailable("The Salt master is not reachable")
    response = h.request("POST", "/", {"client": "local_async", "tgt": "*", "fun": "test.ping"}, token=TOKEN)
    error_of(response, 503, "master_unavailable")
    assert response.header("Retry-After") == "5"
    # nothing was cached: the next request asks again
    h.master.token_error = None
    h.master.add_token()
    assert h.request("GET", "/login", token=TOKEN).code == 200


def test_master_unavailable_at_the_first_chunk_is_503(h: Harness) -> None:
    h.master.add_token()
    h.master.publish_results = [MasterUnavailable("down")]
    response = h.request("POST", "/", {"client": "local_async", "tgt": "*", "fun": "test.ping"}, token=TOKEN)
    error_of(response, 503, "master_unavailable")
    assert response.header("Retry-After") == "5"


def test_master_timeout_at_the_first_chunk_is_504(h: Harness) -> None:
    h.master.add_token()
    h.master.publish_results = [MasterTimeout("slow")]
    response = h.request("POST", "/", {"client": "local_async", "tgt": "*", "fun": "test.ping"}, token=TOKEN)
    error_of(response, 504, "master_timeout")


# ----------------------------------------------------------------------------
# /minions


def test_post_minions_is_202_with_location(h: Harness) -> None:
    h.master.add_token()
    h.master.publish_results = [{"jid": JID, "minions": ["m1", "m2"]}]
    response = h.request("POST", "/minions", [{"tgt": "*", "fun": "test.ping"}], token=TOKEN)
    assert response.code == 202, response.content
    assert response.header("Location") == f"/jobs/{JID}"
    assert response.json() == {
        "return": [{"jid": JID, "minions": ["m1", "m2"]}],
        "_links": {"jobs": [{"href": f"/jobs/{JID}"}]},
    }


def test_post_minions_with_another_client_is_400_before_anything_runs(h: Harness) -> None:
    h.master.add_token()
    chunks = [{"tgt": "*", "fun": "test.ping"}, {"client": "local", "tgt": "*", "fun": "test.ping"}]
    response = h.request("POST", "/minions", chunks, token=TOKEN)
    assert error_of(response, 400, "wrong_client") == "We don't serve your kind here"
    assert "publish" not in h.master.names()


def test_get_minions(h: Harness) -> None:
    h.master.add_token()
    response = h.request("GET", "/minions/m1", token=TOKEN)
    assert response.code == 200
    [(_name, load)] = [c for c in h.master.calls if c[0] == "publish"]
    assert load["tgt"] == "m1" and load["fun"] == "grains.items"


# ----------------------------------------------------------------------------
# cross-site requests


def test_cookie_only_post_from_a_foreign_origin_is_403(h: Harness) -> None:
    h.master.add_token()
    headers = {"Cookie": f"session_id={TOKEN}", "Origin": "https://evil.example"}
    response = h.request("POST", "/", {"client": "local_async", "tgt": "*", "fun": "test.ping"}, headers=headers)
    error_of(response, 403, "csrf")
    assert "publish" not in h.master.names()


def test_cookie_post_from_the_own_origin_runs(h: Harness) -> None:
    h.master.add_token()
    headers = {"Cookie": f"session_id={TOKEN}", "Origin": "http://saltapi.test"}
    response = h.request("POST", "/", {"client": "local_async", "tgt": "*", "fun": "test.ping"}, headers=headers)
    assert response.code == 200


def test_cors_headers_on_errors_too() -> None:
    h = Harness(cors_origin=("https://ui.example",))
    response = h.request("GET", "/nope", headers={"Origin": "https://ui.example"})
    assert response.code == 404
    assert response.header("Access-Control-Allow-Origin") == "https://ui.example"
    assert response.header("Vary") == "Origin"
    assert response.header("Access-Control-Allow-Credentials") is None
