"""The REST API against the real master: every route, client, format and error."""

from __future__ import annotations

import time
import uuid

import pytest
import yaml

from saltapi_twisted.sandbox import LIMITED_USER, SaltSandbox

from ..conftest import MINIONS, Api

JSON_HEADERS = {"Accept": "application/json"}


# ----------------------------------------------------------------------------
# login, tokens, logout


def test_login_json(api: Api) -> None:
    response = api.post("/login", json={"username": "saltdev", "password": "saltdev", "eauth": "file"})
    assert response.status_code == 200
    entry = response.json()["return"][0]
    assert len(entry["token"]) == 64
    assert entry["user"] == "saltdev" and entry["eauth"] == "file"
    assert entry["perms"] == [".*", "@jobs", "@runner", "@wheel"]
    assert entry["expire"] > entry["start"]
    assert response.headers["X-Auth-Token"] == entry["token"]
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"session_id={entry['token']}")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie
    assert "Secure" not in cookie  # plain HTTP


def test_login_form_and_yaml(api: Api) -> None:
    form = api.post("/login", data={"username": "saltdev", "password": "saltdev", "eauth": "file"})
    assert form.status_code == 200
    body = yaml.safe_dump({"username": "saltdev", "password": "saltdev", "eauth": "file"})
    yml = api.post(
        "/login",
        data=body,
        headers={"Content-Type": "application/x-yaml", "Accept": "application/x-yaml"},
    )
    assert yml.status_code == 200
    assert yml.headers["Content-Type"] == "application/x-yaml"
    assert yaml.safe_load(yml.text)["return"][0]["user"] == "saltdev"


def test_login_one_element_list(api: Api) -> None:
    response = api.post("/login", json=[{"username": "saltdev", "password": "saltdev", "eauth": "file"}])
    assert response.status_code == 200


def test_limited_user_perms(api: Api) -> None:
    response = api.post("/login", json={"username": "limited", "password": "limited", "eauth": "file"})
    assert response.json()["return"][0]["perms"] == ["test.*"]


@pytest.mark.parametrize(
    "body",
    [
        {"username": "saltdev", "password": "wrong", "eauth": "file"},
        {"username": "nobody", "password": "x", "eauth": "file"},
        {"username": "saltdev", "password": "saltdev", "eauth": "pam"},
    ],
    ids=["wrong-password", "unknown-user", "eauth-not-configured"],
)
def test_login_refused(api: Api, body: dict) -> None:
    response = api.post("/login", json=body, headers={"X-Forwarded-For": str(uuid.uuid4())})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b"", "application/json"), (b"[]", "application/json"), (b'"x"', "application/json"),
     (b"username=u&password=p", "application/x-www-form-urlencoded"),
     (b'{"username": "u", "eauth": "auto"}', "application/json")],
    ids=["empty", "list", "scalar", "form-without-eauth", "no-password"],
)
def test_login_bad_bodies(api: Api, data: bytes, content_type: str) -> None:
    response = api.post("/login", data=data, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_get_login_introspects_a_token(api: Api, admin_token: str) -> None:
    assert api.get("/login").status_code == 401
    assert api.get("/login").headers["WWW-Authenticate"] == "Session"
    response = api.get("/login", headers={"X-Auth-Token": admin_token})
    assert response.status_code == 200
    assert response.json()["return"][0]["token"] == admin_token


def test_token_endpoint_returns_a_bare_list(api: Api) -> None:
    response = api.post("/token", json={"username": "saltdev", "password": "saltdev", "eauth": "file"})
    assert response.status_code == 200
    entry = response.json()[0]
    assert set(entry) == {"token", "start", "expire", "name", "eauth"}
    missing = api.post("/token", json={"username": "saltdev"})
    assert missing.status_code == 400
    assert missing.json()["return"] == 'Require "username", "password", and "eauth" params'


def test_token_expire_is_passed_to_the_master(api: Api) -> None:
    response = api.post(
        "/login", json={"username": "saltdev", "password": "saltdev", "eauth": "file", "token_expire": 10**12}
    )
    entry = response.json()["return"][0]
    # the master does not let users override token_expire by default
    assert abs(entry["expire"] - entry["start"] - 43200) < 5


def test_cookie_auth_works(api: Api, admin_token: str) -> None:
    response = api.get("/minions/minion-1", cookies={"session_id": admin_token})
    assert response.status_code == 200


def test_logout_revokes_the_token(api: Api) -> None:
    token = api.login()
    assert api.get("/jobs", headers={"X-Auth-Token": token}).status_code == 200
    response = api.post("/logout", headers={"X-Auth-Token": token})
    assert response.status_code == 200
    assert response.json() == {"return": "Your token has been cleared"}
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert api.get("/jobs", headers={"X-Auth-Token": token}).status_code == 401
    assert api.post("/logout").status_code == 401
    assert api.get("/logout").status_code == 405


@pytest.mark.parametrize(
    "token",
    ["../jobs/ab/cdef/.load", "a" * 63, "a" * 65, "0x" + "a" * 62, "a" * 32 + " " + "a" * 31, "A" * 64, "１" * 64],
    ids=["path", "63-hex", "65-hex", "0x", "space", "uppercase", "fullwidth"],
)
def test_malformed_tokens_are_refused(api: Api, token: str) -> None:
    response = api.get("/minions", headers={"X-Auth-Token": token.encode("utf-8")})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_unknown_well_formed_token(api: Api) -> None:
    response = api.get("/jobs", headers={"X-Auth-Token": "ab" * 32})
    assert response.status_code == 401


# ----------------------------------------------------------------------------
# lowstate clients


def test_local_test_ping(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "local", "tgt": "*", "fun": "test.ping"}], admin_token)
    assert response.status_code == 200, response.text
    assert response.json() == {"return": [{m: True for m in MINIONS}]}


def test_local_with_args_and_kwargs(api: Api, admin_token: str) -> None:
    response = api.run(
        [{"client": "local", "tgt": "minion-1", "fun": "test.arg", "arg": ["a", 1], "kwarg": {"k": "v"}}], admin_token
    )
    ret = response.json()["return"][0]["minion-1"]
    assert ret["args"] == ["a", 1]
    assert ret["kwargs"]["k"] == "v"


def test_local_no_minions_matched(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "local", "tgt": "nosuch*", "fun": "test.ping"}], admin_token)
    assert response.json()["return"] == [
        "No minions matched the target. No command was sent, no jid was assigned."
    ]


def test_local_async_and_jobs(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "local_async", "tgt": "*", "fun": "test.ping"}], admin_token)
    entry = response.json()["return"][0]
    assert sorted(entry["minions"]) == MINIONS
    jid = entry["jid"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{jid}", headers={"X-Auth-Token": admin_token}).json()["return"][0]
        if len(job.get("Result", {})) == len(MINIONS):
            break
        time.sleep(0.5)
    assert set(job["Result"]) == set(MINIONS)
    assert job["Function"] == "test.ping"
    cherry = api.get(f"/jobs/{jid}?format=cherrypy", headers={"X-Auth-Token": admin_token}).json()
    assert cherry["return"] == [{m: True for m in MINIONS}]
    assert cherry["info"][0]["Function"] == "test.ping"
    listing = api.get("/jobs", headers={"X-Auth-Token": admin_token}).json()["return"][0]
    assert jid in listing


def test_jobs_bad_jid(api: Api, admin_token: str) -> None:
    response = api.get("/jobs/..%2F..%2Fetc%2Fpasswd", headers={"X-Auth-Token": admin_token})
    assert response.status_code in (400, 404)


def test_runner_and_runner_async(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "runner", "fun": "test.arg", "arg": ["a1"], "kwarg": {"k": "v"}}], admin_token)
    assert response.status_code == 200, response.text
    ret = response.json()["return"][0]
    assert ret["args"] == ["a1"] and ret["kwargs"]["k"] == "v"
    full = api.run([{"client": "runner", "fun": "test.arg", "full_return": True}], admin_token).json()["return"][0]
    assert full["tag"].startswith("salt/run/") and full["data"]["success"] is True
    async_ = api.run([{"client": "runner_async", "fun": "test.arg"}], admin_token).json()["return"][0]
    assert async_["tag"] == f"salt/run/{async_['jid']}"


def test_unknown_runner_times_out_cleanly(api: Api, admin_token: str) -> None:
    started = time.monotonic()
    response = api.run([{"client": "runner", "fun": "nosuch.function", "timeout": 3}], admin_token)
    assert response.status_code == 200
    entry = response.json()["return"][0]
    # 3008's runner process dies without a return event (the wait's deadline ends it);
    # 3006/3007 send the runner's own error as the return
    assert entry.startswith("Unexpected exception while handling request:") or "is not available" in entry
    assert time.monotonic() - started < 20


def test_wheel_and_keys(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "wheel", "fun": "key.list_all"}], admin_token)
    entry = response.json()["return"][0]
    assert entry["tag"].startswith("salt/wheel/")
    assert sorted(entry["data"]["return"]["minions"]) == MINIONS
    assert entry["data"]["success"] is True
    keys = api.get("/keys", headers={"X-Auth-Token": admin_token}).json()["return"]
    assert sorted(keys["minions"]) == MINIONS
    finger = api.get("/keys/minion-1", headers={"X-Auth-Token": admin_token}).json()["return"]
    assert "minion-1" in str(finger)
    wheel_async = api.run([{"client": "wheel_async", "fun": "key.list_all"}], admin_token).json()["return"][0]
    assert wheel_async["tag"] == f"salt/wheel/{wheel_async['jid']}"


def test_local_batch(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "local_batch", "tgt": "*", "fun": "test.ping", "batch": "1"}], admin_token)
    assert response.status_code == 200, response.text
    entries = response.json()["return"]
    assert sorted(entries, key=lambda e: list(e)[0]) == [{m: True} for m in MINIONS]


def test_local_subset(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "local_subset", "tgt": "*", "fun": "test.ping", "subset": 1}], admin_token)
    result = response.json()["return"][0]
    assert len(result) == 1 and list(result.values()) == [True]


def test_run_with_eauth_credentials(api: Api) -> None:
    response = api.run(
        [{"client": "local", "tgt": "minion-1", "fun": "test.ping", "username": "saltdev", "password": "saltdev",
          "eauth": "file"}],
        path="/run",
    )
    assert response.json() == {"return": [{"minion-1": True}]}


def test_run_without_credentials_is_401(api: Api) -> None:
    response = api.run([{"client": "local", "tgt": "*", "fun": "test.ping"}], path="/run")
    assert response.status_code == 401


def test_run_with_wrong_password_is_401(api: Api) -> None:
    response = api.run(
        [{"client": "local", "tgt": "*", "fun": "test.ping", "username": "saltdev", "password": "bad",
          "eauth": "file"}],
        path="/run",
    )
    assert response.status_code == 401


def test_restricted_user(api: Api, limited_token: str) -> None:
    allowed = api.run([{"client": "local", "tgt": "*", "fun": "test.ping"}], limited_token)
    assert allowed.status_code == 200
    denied = api.run([{"client": "local", "tgt": "*", "fun": "cmd.run", "arg": ["id"]}], limited_token)
    assert denied.status_code == 403
    assert denied.json()["error"] == "forbidden"
    runner = api.run([{"client": "runner", "fun": "jobs.list_jobs"}], limited_token)
    assert runner.status_code == 403
    second = api.run(
        [{"client": "local", "tgt": "*", "fun": "test.ping"}, {"client": "local", "tgt": "*", "fun": "cmd.run"}],
        limited_token,
    )
    assert second.status_code == 200
    assert second.json()["return"][1] == "Failed to authenticate"


def test_validate_before_run(api: Api, admin_token: str, salt_master: SaltSandbox) -> None:
    marker = f"never-{uuid.uuid4().hex}"
    response = api.run(
        [{"client": "local_async", "tgt": "*", "fun": "test.echo", "arg": [marker]}, {"client": "nope"}],
        admin_token,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"
    time.sleep(2)
    assert not salt_master.job_cache_contains(marker)
    # the same chunk alone does run (the check above can fail)
    ran = api.run([{"client": "local_async", "tgt": "*", "fun": "test.echo", "arg": [marker]}], admin_token)
    assert ran.status_code == 200
    deadline = time.monotonic() + 20
    while not salt_master.job_cache_contains(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert salt_master.job_cache_contains(marker)


def test_reserved_keys_are_refused(api: Api, admin_token: str) -> None:
    response = api.run(
        [{"client": "local_async", "tgt": "*", "fun": "test.ping", "cmd": "wheel", "user": "root", "__user__": "x"}],
        admin_token,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "reserved_key"
    assert "cmd" in body["return"] and "user" in body["return"] and "__user__" in body["return"]


def test_ssh_is_not_offered(api: Api, admin_token: str) -> None:
    response = api.run([{"client": "ssh", "tgt": "localhost", "fun": "test.ping"}], admin_token)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"


# ----------------------------------------------------------------------------
# /minions


def test_get_minions(api: Api, admin_token: str) -> None:
    everything = api.get("/minions", headers={"X-Auth-Token": admin_token}).json()["return"][0]
    assert sorted(everything) == MINIONS
    assert everything["minion-1"]["id"] == "minion-1"
    one = api.get("/minions/minion-2", headers={"X-Auth-Token": admin_token}).json()["return"][0]
    assert list(one) == ["minion-2"]
    slash = api.get("/minions/", headers={"X-Auth-Token": admin_token})
    assert slash.status_code == 200 and sorted(slash.json()["return"][0]) == MINIONS


def test_post_minions(api: Api, admin_token: str) -> None:
    response = api.post(
        "/minions", json=[{"tgt": "*", "fun": "test.ping"}], headers={"X-Auth-Token": admin_token}
    )
    assert response.status_code == 202
    body = response.json()
    jid = body["return"][0]["jid"]
    assert body["_links"]["jobs"] == [{"href": f"/jobs/{jid}"}]
    assert response.headers["Location"] == f"/jobs/{jid}"
    wrong = api.post(
        "/minions", json=[{"client": "runner", "fun": "test.arg"}], headers={"X-Auth-Token": admin_token}
    )
    assert wrong.status_code == 400
    assert wrong.json()["return"] == "We don't serve your kind here"


# ----------------------------------------------------------------------------
# negotiation and errors


def test_yaml_request_and_response(api: Api, admin_token: str) -> None:
    body = yaml.safe_dump([{"client": "local", "tgt": "minion-1", "fun": "test.ping"}])
    response = api.post(
        "/",
        data=body,
        headers={"Content-Type": "application/x-yaml", "Accept": "application/x-yaml", "X-Auth-Token": admin_token},
    )
    assert response.status_code == 200
    assert yaml.safe_load(response.text) == {"return": [{"minion-1": True}]}


def test_form_request(api: Api, admin_token: str) -> None:
    response = api.post(
        "/",
        data={"client": "local", "tgt": "minion-1", "fun": "test.arg", "arg": ["1", "two"]},
        headers={"X-Auth-Token": admin_token},
    )
    assert response.json()["return"][0]["minion-1"]["args"] == ["1", "two"]


@pytest.mark.parametrize(
    ("headers", "data", "status", "word"),
    [
        ({"Accept": "text/html"}, b"[]", 406, "not_acceptable"),
        ({}, b'[{"client": "local"}]', 415, "unsupported_media_type"),
        ({"Content-Type": "application/xml"}, b"<x/>", 415, "unsupported_media_type"),
        ({"Content-Type": "application/json"}, b"{not json", 400, "bad_request"),
        ({"Content-Type": "application/json"}, b"", 400, "bad_request"),
        ({"Content-Type": "application/x-yaml"}, b"a: &x [1]\nb: *x\n", 400, "bad_request"),
        ({"Content-Type": "application/json"}, b"\xff\xfe", 400, "bad_request"),
    ],
    ids=["accept-html", "no-content-type", "xml", "bad-json", "empty", "yaml-alias", "bad-utf8"],
)
def test_negotiation_errors(api: Api, admin_token: str, headers: dict, data: bytes, status: int, word: str) -> None:
    response = api.post("/", data=data, headers={"X-Auth-Token": admin_token, **headers})
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == word
    assert response.json()["status"].startswith(str(status))


def test_unknown_path_and_wrong_method(api: Api) -> None:
    missing = api.get("/nosuch")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    for method, path in [("GET", "/run"), ("PUT", "/"), ("DELETE", "/login"), ("POST", "/jobs")]:
        response = api.request(method, path)
        assert response.status_code == 405, (method, path)
        assert "Allow" in response.headers
        assert response.json()["error"] == "method_not_allowed"


def test_protected_routes_need_a_token(api: Api) -> None:
    for method, path in [("POST", "/"), ("GET", "/minions"), ("GET", "/jobs"), ("GET", "/keys"), ("GET", "/stats")]:
        response = api.request(method, path, json=[{}])
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "unauthenticated"


def test_disabled_client(salt_master: SaltSandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from saltapi_twisted.sandbox import ApiProcess

    from ..conftest import Api as Client

    process = ApiProcess(tmp_path, salt_master, {"disable_ssl": True})
    process.write_config()
    options = yaml.safe_load(process.config_path.read_text())
    options["netapi_enable_clients"] = ["local"]
    process.write_config = lambda: process.config_path.write_text(yaml.safe_dump(options))  # type: ignore[method-assign]
    process.start()
    try:
        client = Client(process)
        assert client.get("/").json()["clients"] == ["local"]
        token = client.login()
        response = client.run([{"client": "wheel", "fun": "key.list_all"}], token)
        assert response.status_code == 400
        assert response.json()["return"] == (
            "Client disabled: 'wheel'. Add to 'netapi_enable_clients' master config option to enable."
        )
    finally:
        process.stop()


# ----------------------------------------------------------------------------
# CORS, stats, health


def test_cors(api: Api) -> None:
    allowed = api.get("/", headers={"Origin": "https://ui.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "Origin" in allowed.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    for origin in ["https://evil.example", "https://ui.example.evil.com", "http://ui.example", "null"]:
        refused = api.get("/", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in refused.headers, origin
    preflight = api.request(
        "OPTIONS", "/", headers={"Origin": "https://ui.example", "Access-Control-Request-Headers": "X-Auth-Token, X-Evil"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Headers"] == "X-Auth-Token"
    assert preflight.headers["Access-Control-Expose-Headers"] == "X-Auth-Token"
    bare = api.request("OPTIONS", "/minions")
    assert bare.status_code == 204 and "Access-Control-Allow-Headers" not in bare.headers


def test_csrf_cookie_post_from_foreign_origin(api: Api, admin_token: str) -> None:
    chunk = '[{"client": "local_async", "tgt": "*", "fun": "test.ping"}]'
    refused = api.post(
        "/", data=chunk, cookies={"session_id": admin_token},
        headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert refused.status_code == 403 and refused.json()["error"] == "csrf"
    with_header = api.post(
        "/", data=chunk, headers={"Content-Type": "text/plain", "Origin": "https://evil.example", "X-Auth-Token": admin_token},
    )
    assert with_header.status_code == 200


def test_stats_and_health(api: Api, admin_token: str) -> None:
    health = api.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "request_channel": "up", "event_bus": "up", "tls": False}
    stats = api.get("/stats", headers={"X-Auth-Token": admin_token}).json()["saltapi_twisted"]
    assert stats["master"]["event_bus"] == "up"
    assert stats["requests_by_status"]["200"] > 0


def test_salt_version_header(api: Api) -> None:
    assert api.get("/").headers["X-Salt-Version"].startswith("300")
