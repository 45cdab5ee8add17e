"""One regression test per public advisory reachable through the API (checklist §2), kept forever.

Each test is small: the attack of the advisory, sent the way it reached Salt's
own APIs, refused by this one, with nothing executed on the real master
(:meth:`Ctx.guard`). The catalogue rows cover the same ground more broadly;
these tests keep the advisory's name on a failure.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from saltapi_twisted.sandbox import ADMIN_USER, LIMITED_USER

from .conftest import Ctx, forge_token, http_request
from .test_catalogue import ARMED, ARMED_JSON, post_root, traversal_to, upgrade

PUBLISH_FAMILY = ("publish", "runner", "wheel")


def credentials_of(load: dict[str, Any]) -> bool:
    """Whether a master load carries a token or username + password + eauth."""
    where = load.get("kwargs", {}) if load.get("cmd") == "publish" else load
    if not isinstance(where, dict):
        return False
    if isinstance(where.get("token"), str) and where["token"]:
        return True
    return all(isinstance(where.get(k), str) for k in ("username", "password", "eauth"))


# ----------------------------------------------------------------------------
# Salt master: clear commands, eauth, wheel


def test_cve_2020_11651_clear_commands_never_sent_without_credentials(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        for chunk in (
            {"client": "local", "tgt": "*", "fun": "test.ping"},
            {"client": "runner", "fun": "jobs.list_jobs"},
            {"client": "wheel", "fun": "key.list_all"},
        ):
            ctx.refused(ctx.sec.run([chunk], path="/run"), 401, "unauthenticated")
    ctx.sec.run(ARMED, ctx.T)  # one real publish, for the audit below
    loads = ctx.proxy.since(0, include_ping=True)
    assert loads, "the proxy recorded nothing"
    for load in loads:
        assert isinstance(load, dict) and load.get("cmd") in (
            "ping", "mk_token", "get_token", *PUBLISH_FAMILY
        ), load
        if load["cmd"] in PUBLISH_FAMILY:
            assert credentials_of(load), f"a {load['cmd']} load without credentials: {load}"
        if load["cmd"] == "mk_token":
            assert set(load) <= {"cmd", "username", "password", "eauth", "token_expire"}, load
        if load["cmd"] == "get_token":
            assert set(load) == {"cmd", "token"}, load


def test_cve_2020_11651_reserved_keys_never_reach_the_master(ctx: Ctx) -> None:
    with ctx.guard(round_trip="auth"):
        for chunk in (
            {**ARMED[0], "cmd": "_prep_auth_info"},
            {"client": "runner", "fun": "test.arg", "cmd": "wheel"},
            {"client": "wheel", "fun": "key.list_all", "kwarg": {"cmd": "runner"}},
            {"client": "runner", "fun": "test.arg", "__pub_user": "root"},
        ):
            ctx.refused(ctx.sec.run([chunk], ctx.A), 400, "reserved_key")


def test_cve_2020_11651_the_api_never_adds_a_jid(ctx: Ctx) -> None:
    start = len(ctx.proxy.loads)
    response = ctx.sec.run(ARMED, ctx.A)  # runs, outside any guard
    assert response.status_code == 200, response.text
    publishes = [load for load in ctx.proxy.since(start) if load.get("cmd") == "publish"]
    assert len(publishes) == 1 and "jid" not in publishes[0], publishes
    assert set(publishes[0]) <= {"cmd", "tgt", "fun", "arg", "tgt_type", "ret", "user", "kwargs"}


def test_cve_2020_11652_token_lookup_is_not_a_path(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        for value in ("../../../../etc/passwd", "../tokens/" + ctx.A, "/etc/shadow"):
            ctx.refused(ctx.sec.get("/jobs", headers={"X-Auth-Token": value}), 401, "unauthenticated")
            chunk = {**ARMED[0], "token": value}
            ctx.refused(ctx.sec.run([chunk], path="/run"), 401, "unauthenticated")


def test_cve_2020_11652_wheel_file_traversal_refused_by_acl(ctx: Ctx) -> None:
    chunk = {"client": "wheel", "fun": "file_roots.write", "data": "x", "path": traversal_to(ctx)}
    with ctx.guard(round_trip=True):
        ctx.refused(ctx.sec.run([chunk], ctx.T), 403, "forbidden")  # test.* only
    assert not ctx.sentinel.exists()


def test_cve_2021_25281_wheel_async_requires_eauth(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        response = ctx.sec.run([{"client": "wheel_async", "fun": "key.list_all"}], path="/run")
        ctx.refused(response, 401, "unauthenticated")


def test_cve_2021_25282_wheel_write_traversal_refused(ctx: Ctx) -> None:
    chunk = {"client": "wheel_async", "fun": "pillar_roots.write", "data": "x", "path": traversal_to(ctx),
             "username": "1", "password": "1", "eauth": "pam"}
    with ctx.guard(round_trip=True):
        ctx.refused(ctx.sec.run([chunk], path="/run"), 401, "unauthenticated")
    assert not ctx.sentinel.exists()


def test_cve_2021_25283_template_in_wheel_write_refused(ctx: Ctx) -> None:
    template = "{{ salt['cmd.run']('touch " + str(ctx.sentinel) + "') }}"
    chunk = {"client": "wheel", "fun": "pillar_roots.write", "data": template, "path": "x.sls"}
    with ctx.guard(round_trip=True):
        ctx.refused(ctx.sec.run([chunk], ctx.T), 403, "forbidden")
    assert not ctx.sentinel.exists()


def test_cve_2017_5192_local_batch_enforces_eauth(ctx: Ctx) -> None:
    bad = {"client": "local_batch", "batch": "1", "tgt": "*", "fun": "test.ping",
           "username": ADMIN_USER[0], "password": "wrong", "eauth": "file"}
    with ctx.guard(round_trip=True) as guard:
        ctx.refused(ctx.sec.run([bad], path="/run"), 401, "unauthenticated")
    publishes = [load for load in guard.loads if load.get("cmd") == "publish"]
    assert publishes and all(load["kwargs"].get("password") == "wrong" for load in publishes), publishes


# ----------------------------------------------------------------------------
# salt-ssh through the API: not offered


def ssh_refused(ctx: Ctx, extra: dict[str, Any], token: str | None = None, path: str = "/") -> None:
    chunk = {"client": "ssh", "tgt": "localhost", "fun": "test.ping", **extra}
    with ctx.guard(round_trip=False if token is None else "auth"):
        body = ctx.refused(ctx.sec.run([chunk], token, path=path), 400, "invalid_client")
        assert body["return"] == "400 Invalid Client: Client not found in salt clients"
    assert not ctx.sentinel.exists()


def test_cve_2017_5200_ssh_client_not_offered(ctx: Ctx) -> None:
    ssh_refused(ctx, {}, ctx.A)


def test_cve_2019_17361_ssh_target_injection_refused(ctx: Ctx) -> None:
    ssh_refused(ctx, {"tgt": f"root|touch {ctx.sentinel} #@127.0.0.1", "roster": "cache"}, ctx.A)


def test_cve_2020_16846_ssh_port_and_key_injection_refused(ctx: Ctx) -> None:
    ssh_refused(ctx, {"ssh_port": f"22 -o ProxyCommand='touch {ctx.sentinel}'", "ssh_priv": "aaa|id #"}, ctx.A)


def test_cve_2020_25592_ssh_without_eauth_refused(ctx: Ctx) -> None:
    ssh_refused(ctx, {"eauth": "xx"}, None, path="/run")


def test_cve_2021_3197_ssh_proxycommand_refused(ctx: Ctx) -> None:
    ssh_refused(ctx, {"ssh_options": [f"ProxyCommand=touch {ctx.sentinel}"]}, ctx.A)


def test_cve_2021_3148_extra_mods_injection_refused(ctx: Ctx) -> None:
    ssh_refused(ctx, {"thin_extra_mods": f"x'; touch {ctx.sentinel}; '"}, ctx.A)
    with ctx.guard(round_trip=False):  # and no local chunk smuggles it through the allowlist
        chunk = {**ARMED[0], "thin_extra_mods": "x", "token": ctx.A}
        ctx.refused(ctx.sec.run([chunk], path="/run"), 400, "unknown_key")


# ----------------------------------------------------------------------------
# tokens


def test_cve_2018_15750_token_never_used_as_a_path(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        for value in ("../../../../../tmp/x", "..%2F..%2Fx", "a/" * 32):
            ctx.refused(ctx.sec.get("/minions", headers={"X-Auth-Token": value}), 401, "unauthenticated")
            ctx.refused(ctx.sec.get("/events", cookies={"session_id": value}), 401, "unauthenticated")
        ctx.refused(upgrade(ctx.sec, "/all_events/../../tokens/x"), (401, 404))


def test_cve_2018_15751_no_execution_without_credentials(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        ctx.refused(ctx.sec.run(ARMED, path="/run"), 401, "unauthenticated")
        ctx.refused(ctx.sec.run(ARMED), 401, "unauthenticated")
        ctx.refused(ctx.sec.post("/minions", json=[{"tgt": "*", "fun": "test.ping"}]), 401, "unauthenticated")


def test_cve_2021_3144_expired_token_refused_everywhere(ctx: Ctx) -> None:
    with ctx.guard(round_trip="auth"):
        for kind in ("header", "chunk", "events", "websocket"):
            expired = forge_token(ctx.salt_master, ctx.A, -1)
            if kind == "header":
                response = ctx.sec.get("/jobs", headers={"X-Auth-Token": expired})
            elif kind == "chunk":
                response = ctx.sec.run([{**ARMED[0], "token": expired}], path="/run")
            elif kind == "events":
                response = ctx.sec.get("/events", headers={"X-Auth-Token": expired})
            else:
                response = upgrade(ctx.sec, f"/ws/{expired}")
            ctx.refused(response, 401, "unauthenticated")


def test_cve_2016_3176_pam_service_not_forwarded(ctx: Ctx) -> None:
    with ctx.guard(round_trip=True) as guard:
        for route in ("/login", "/token"):
            body = {"username": "u", "password": "bad", "eauth": "file", "service": "chsh"}
            ctx.refused(ctx.sec.post(route, json=body), 401, "unauthenticated")
    mk_tokens = [load for load in guard.loads if load.get("cmd") == "mk_token"]
    assert len(mk_tokens) == 2 and all("service" not in load for load in mk_tokens), mk_tokens


def test_cve_2022_22967_cached_token_validation_lasts_at_most_5s(ctx: Ctx) -> None:
    """A token the master drops (a locked account's) stops working here within the 5 s cache."""
    token = forge_token(ctx.salt_master, ctx.T, 600)
    assert ctx.sec.get("/login", headers={"X-Auth-Token": token}).status_code == 200  # now cached
    (ctx.salt_master.cachedir / "tokens" / f"{token}.p").unlink()
    dropped = time.monotonic()
    with ctx.guard(round_trip="auth"):
        while ctx.sec.get("/login", headers={"X-Auth-Token": token}).status_code == 200:
            assert time.monotonic() - dropped < 6.5, "a dropped token was accepted for more than 5 s"
            time.sleep(0.25)
    assert time.monotonic() - dropped < 6.5


# ----------------------------------------------------------------------------
# secrets in logs


def test_cve_2021_25284_credentials_never_logged(ctx: Ctx) -> None:
    password = "pw-" + uuid.uuid4().hex
    token = ctx.sec.login(LIMITED_USER)
    with ctx.guard(round_trip=True):
        ctx.sec.post("/login", json={"username": ADMIN_USER[0], "password": password, "eauth": "file"})
        ctx.sec.run([{**ARMED[0], "username": ADMIN_USER[0], "password": password, "eauth": "file"}], path="/run")
        ctx.sec.get("/jobs/bad", headers={"X-Auth-Token": token})
        ctx.sec.get("/events", cookies={"session_id": token}, params={"token": token})
        upgrade(ctx.sec, f"/ws/{token}x")
    assert ctx.sec.wait_log("/ws/<redacted>")
    log = ctx.sec.log()
    assert password not in log and token not in log


def test_cve_2015_6918_failed_login_password_not_logged(ctx: Ctx) -> None:
    password = "pw-" + uuid.uuid4().hex
    with ctx.guard(round_trip=True):
        form = f"username=saltdev&password={password}&eauth=file"
        response = ctx.sec.post("/login", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
        ctx.refused(response, 401, "unauthenticated")
    assert ctx.sec.wait_log('"POST /login" 401')
    assert password not in ctx.sec.log()


def test_cve_2015_6941_chunk_credentials_not_logged(ctx: Ctx) -> None:
    password = "pw-" + uuid.uuid4().hex
    with ctx.guard(round_trip=True):
        chunk = {"client": "runner", "fun": "jobs.list_jobs", "username": "nobody", "password": password,
                 "eauth": "file"}
        ctx.refused(ctx.sec.run([chunk], path="/run"), 401, "unauthenticated")
    assert ctx.sec.wait_log('"POST /run" 401')
    assert password not in ctx.sec.log()


# ----------------------------------------------------------------------------
# Salt issues named in the checklist


def test_salt_32451_run_validates_tokens(ctx: Ctx) -> None:
    with ctx.guard(round_trip="auth"):
        unknown = "0123456789abcdef" * 4
        ctx.refused(ctx.sec.run([{**ARMED[0], "token": unknown}], path="/run"), 401, "unauthenticated")


def test_salt_62187_login_without_password_answers_at_once(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        started = time.monotonic()
        ctx.refused(ctx.sec.post("/login", json={"username": "u", "eauth": "auto"}), 400, "bad_request")
        assert time.monotonic() - started < 2


def test_salt_69071_query_string_token_refused(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        ctx.refused(ctx.sec.get(f"/events?token={ctx.T}"), 400, "bad_request")
        ctx.refused(ctx.sec.get(f"/jobs?token={ctx.T}"), 401, "unauthenticated")


def test_salt_69067_logout_revokes_everywhere(ctx: Ctx) -> None:
    token = ctx.sec.login(LIMITED_USER)
    assert ctx.sec.post("/logout", headers={"X-Auth-Token": token}).status_code == 200
    with ctx.guard(round_trip=False):
        ctx.refused(ctx.sec.get("/login", headers={"X-Auth-Token": token}), 401, "unauthenticated")
        ctx.refused(ctx.sec.run([{**ARMED[0], "token": token}], path="/run"), 401, "unauthenticated")
        ctx.refused(ctx.sec.get("/events", headers={"X-Auth-Token": token}), 401, "unauthenticated")
        ctx.refused(upgrade(ctx.sec, f"/all_events/{token}"), 401, "unauthenticated")


# ----------------------------------------------------------------------------
# Twisted HTTP advisories


def framing_refused(ctx: Ctx, request: bytes) -> None:
    with ctx.guard(round_trip=False):
        exchange = ctx.sec.raw(request, timeout=20)
        assert len(exchange.responses) == 1, exchange
        ctx.refused(exchange.first, 400, bare=True)
        assert exchange.closed


def test_cve_2020_10108_duplicate_content_length_refused(ctx: Ctx) -> None:
    n = str(len(ARMED_JSON))
    framing_refused(ctx, http_request(
        "POST", "/", [("X-Auth-Token", ctx.T), ("Content-Type", "application/json"), ("Content-Length", n),
                      ("Content-Length", "3")], ARMED_JSON))


def test_cve_2020_10109_content_length_with_chunked_refused(ctx: Ctx) -> None:
    n = len(ARMED_JSON)
    framing_refused(ctx, http_request(
        "POST", "/", [("X-Auth-Token", ctx.T), ("Content-Type", "application/json"), ("Content-Length", str(n)),
                      ("Transfer-Encoding", "chunked")], f"{n:x}\r\n".encode() + ARMED_JSON + b"\r\n0\r\n\r\n"))


def test_cve_2022_24801_lax_chunk_sizes_refused(ctx: Ctx) -> None:
    n = len(ARMED_JSON)
    for size in (f"+{n:x}", f"0x{n:x}", f" {n:x}", f"{n:x}_0"):
        framing_refused(ctx, http_request(
            "POST", "/", [("X-Auth-Token", ctx.T), ("Content-Type", "application/json"),
                          ("Transfer-Encoding", "chunked")], size.encode() + b"\r\n" + ARMED_JSON + b"\r\n0\r\n\r\n"))


def test_cve_2023_46137_pipelined_responses_in_order(ctx: Ctx) -> None:
    slow = http_request("POST", "/login", {"Content-Type": "application/json"},
                        b'{"username": "nobody", "password": "x", "eauth": "file"}')
    fast = http_request("GET", "/", {})
    with ctx.guard(round_trip=True):
        exchange = ctx.sec.raw(slow + fast + fast, until_close=False, expect=3)
        assert [r.status_code for r in exchange.responses] == [401, 200, 200], exchange.responses


def test_cve_2024_41671_pipelined_requests_processed_in_order(ctx: Ctx) -> None:
    token = ctx.sec.login(LIMITED_USER)
    logout = http_request("POST", "/logout", {"X-Auth-Token": token})
    use = http_request("GET", "/login", {"X-Auth-Token": token})
    with ctx.guard(round_trip="auth"):
        exchange = ctx.sec.raw(logout + use, until_close=False, expect=2)
        # the second request must see the first one's effect
        assert [r.status_code for r in exchange.responses] == [200, 401], exchange.responses


def test_cve_2024_41810_no_redirects_no_html(ctx: Ctx) -> None:
    with ctx.guard(round_trip=False):
        for path in ("/login/", "/run/", "/nosuch", "/hook/../login", "//evil.example/"):
            response = ctx.sec.get(path, allow_redirects=False)
            assert not 300 <= response.status_code < 400, (path, response.status_code)
            assert "Location" not in response.headers
            assert response.headers["Content-Type"] == "application/json", path


# ----------------------------------------------------------------------------
# autobahn, PyYAML


def test_cve_2020_35678_websocket_redirect_parameter_ignored(ctx: Ctx) -> None:
    with ctx.guard(round_trip="auth"):
        plain = ctx.sec.get(f"/all_events/{ctx.A}?redirect=https://evil.example", allow_redirects=False)
        ctx.refused(plain, 400, "bad_request")
        assert "Location" not in plain.headers


def yaml_refused(ctx: Ctx, document: str) -> None:
    with ctx.guard(round_trip="auth"):
        ctx.refused(post_root(ctx, document.encode(), "application/x-yaml"), 400, "bad_request")
    assert not ctx.sentinel.exists()


def test_cve_2017_18342_yaml_python_object_refused(ctx: Ctx) -> None:
    yaml_refused(ctx, f'- !!python/object/new:os.system ["touch {ctx.sentinel}"]\n')


def test_cve_2020_1747_yaml_full_loader_bypass_refused(ctx: Ctx) -> None:
    yaml_refused(
        ctx,
        "- !!python/object/new:tuple\n"
        "  - !!python/object/new:map\n"
        "    - !!python/name:eval\n"
        f"    - [\"__import__('os').system('touch {ctx.sentinel}')\"]\n",
    )


def test_cve_2020_14343_yaml_object_apply_refused(ctx: Ctx) -> None:
    yaml_refused(ctx, f'- !!python/object/apply:subprocess.Popen [["touch", "{ctx.sentinel}"]]\n')
