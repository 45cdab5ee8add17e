"""Table tests for saltapi_twisted.lowstate (spec §4.2, §4.4; checklist R2, R3, R5, A3-A7, L1-L17)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saltapi_twisted.config import IMPLEMENTED_CLIENTS
from saltapi_twisted.errors import ApiError
from saltapi_twisted.lowstate import (
    INVALID_CLIENT,
    LOCAL_ALLOWED_KEYS,
    NO_CREDENTIALS,
    PUBLISH_LOAD_KEYS,
    RESERVED_KEYS,
    Limits,
    distinct_tokens,
    local_publish_load,
    runner_load,
    token_well_formed,
    validate_lowstate,
    wheel_load,
)

TOKEN = "0123456789abcdef" * 4
OTHER_TOKEN = "f" * 64
NOW_DT = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
NOW = NOW_DT.timestamp()
LOCAL_CLIENTS = ("local", "local_async", "local_batch", "local_subset")
RUNNER_WHEEL_CLIENTS = ("runner", "runner_async", "wheel", "wheel_async")


def jid_at(offset: float = 0.0, suffix: str = "") -> str:
    return f"{NOW_DT + timedelta(seconds=offset):%Y%m%d%H%M%S%f}{suffix}"


def validate(chunks: Any, **kwargs: Any) -> list[dict]:
    kwargs.setdefault("enabled_clients", IMPLEMENTED_CLIENTS)
    kwargs.setdefault("limits", Limits())
    kwargs.setdefault("header_token", None)
    kwargs.setdefault("now", NOW)
    return validate_lowstate(chunks, **kwargs)


def local(**extra: Any) -> dict:
    chunk = {"client": "local", "tgt": "*", "fun": "test.ping", "token": TOKEN}
    chunk.update(extra)
    return chunk


def chunk_for(client: str, **extra: Any) -> dict:
    chunk: dict[str, Any] = {"client": client, "fun": "test.ping", "token": TOKEN}
    if client in LOCAL_CLIENTS:
        chunk["tgt"] = "*"
    chunk.update(extra)
    return chunk


def refused(chunks: Any, word: str, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        validate(chunks, **kwargs)
    assert info.value.word == word, info.value.message
    return info.value


def check_value_refused(key: str, value: Any, client: str = "local", **extra: Any) -> ApiError:
    error = refused([chunk_for(client, **{key: value}, **extra)], "invalid_value")
    assert error.message.startswith("chunk 1: ")
    return error


# --------------------------------------------------------------------------
# Token format gate (R3, A3, A4, A7)


@pytest.mark.parametrize(
    "token, length",
    [
        (TOKEN, 64),
        ("a" * 32, 32),
        ("0" * 40, 40),
        ("9" * 128, 128),
    ],
)
def test_token_well_formed_accepts(token: str, length: int) -> None:
    assert token_well_formed(token, length)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("a" * 63, id="63-hex"),
        pytest.param("a" * 65, id="65-hex"),
        pytest.param("0x" + "a" * 62, id="0x-prefix"),
        pytest.param(" " + "a" * 64 + " ", id="surrounding-spaces"),
        pytest.param(" " + "a" * 63, id="leading-space-64"),
        pytest.param("a" * 63 + "\n", id="trailing-newline-64"),
        pytest.param("A" * 64, id="uppercase"),
        pytest.param(TOKEN.upper(), id="uppercase-mixed"),
        pytest.param("\uff10" * 64, id="fullwidth-digits"),
        pytest.param("\u0660" * 64, id="arabic-indic-digits"),
        pytest.param("g" * 64, id="non-hex-letter"),
        pytest.param("/nonexistent/x", id="path"),
        pytest.param("../" + "a" * 61, id="path-64"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param(12345, id="int"),
        pytest.param(TOKEN.encode(), id="bytes"),
        pytest.param([TOKEN], id="list"),
    ],
)
def test_token_well_formed_refuses(token: object) -> None:
    assert not token_well_formed(token, 64)


@pytest.mark.parametrize("length", [0, -1, True, 64.0, "64"])
def test_token_well_formed_refuses_odd_lengths(length: Any) -> None:
    assert not token_well_formed("", length)
    assert not token_well_formed("a", length)


def test_limits_defaults_and_frozen() -> None:
    limits = Limits()
    assert (limits.max_chunks, limits.max_tgt_length, limits.token_length) == (100, 65536, 64)
    with pytest.raises(Exception):
        limits.max_chunks = 5  # type: ignore[misc]


# --------------------------------------------------------------------------
# Check 1: count (L15)


@pytest.mark.parametrize("count", [0, 101, 10_000])
def test_chunk_count_refused(count: int) -> None:
    error = refused([local()] * count, "bad_request")
    assert error.status == 400


def test_chunk_count_limit_is_inclusive_and_configurable() -> None:
    assert len(validate([local()] * 100)) == 100
    assert len(validate([local()] * 3, limits=Limits(max_chunks=3))) == 3
    refused([local()] * 4, "bad_request", limits=Limits(max_chunks=4 - 1))


def test_ten_thousand_invalid_chunks_are_refused_on_count() -> None:
    refused(["x"] * 10_000, "bad_request")


def test_a_single_dict_is_one_chunk() -> None:
    assert validate(local()) == [{**local(), "arg": [], "tgt_type": "glob"}]


# --------------------------------------------------------------------------
# Check 2: implemented client (L16, L17, ssh)


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param("x", id="string"),
        pytest.param(1, id="int"),
        pytest.param(None, id="null"),
        pytest.param({}, id="empty-dict"),
        pytest.param([], id="list"),
        pytest.param({"client": None, "fun": "test.ping"}, id="client-null"),
        pytest.param({"client": "nope"}, id="unknown"),
        pytest.param({"client": "LOCAL", "tgt": "*", "fun": "test.ping"}, id="case"),
        pytest.param({"client": ["local"]}, id="client-list"),
        pytest.param({"client": {"local": 1}}, id="client-dict"),
        pytest.param({"client": "ssh", "tgt": "localhost", "fun": "test.ping"}, id="ssh"),
        pytest.param({"client": "<script>alert(1)</script>"}, id="script"),
    ],
)
def test_invalid_client(chunk: Any) -> None:
    error = refused([chunk], "invalid_client")
    assert error.status == 400
    assert error.message == INVALID_CLIENT == "400 Invalid Client: Client not found in salt clients"
    assert "<script>" not in str(error.body())


def test_ssh_stays_invalid_even_when_enabled() -> None:
    refused([{"client": "ssh", "tgt": "x", "fun": "test.ping", "token": TOKEN}], "invalid_client",
            enabled_clients=(*IMPLEMENTED_CLIENTS, "ssh"))


# --------------------------------------------------------------------------
# Check 3: enabled client (L1)


def test_client_disabled() -> None:
    error = refused([{"client": "wheel", "fun": "key.list_all"}], "client_disabled",
                    enabled_clients=("local", "runner"))
    assert error.status == 400
    assert error.message == (
        "Client disabled: 'wheel'. Add to 'netapi_enable_clients' master config option to enable."
    )


@pytest.mark.parametrize("client", IMPLEMENTED_CLIENTS)
def test_every_client_can_be_disabled(client: str) -> None:
    others = tuple(c for c in IMPLEMENTED_CLIENTS if c != client)
    refused([chunk_for(client)], "client_disabled", enabled_clients=others)
    refused([chunk_for(client)], "client_disabled", enabled_clients=())


@pytest.mark.parametrize("client", IMPLEMENTED_CLIENTS)
def test_every_client_validates_when_enabled(client: str) -> None:
    (out,) = validate([chunk_for(client)], enabled_clients=(client,))
    assert out["client"] == client


# --------------------------------------------------------------------------
# Stage order: every chunk passes a check before any is tested on the next (R5, L11)


@pytest.mark.parametrize(
    "chunks, word",
    [
        pytest.param(
            [{"client": "local_async", "tgt": "*", "fun": "test.ping"}, {"client": "nope"}],
            "invalid_client",
            id="L11-no-credentials-then-bad-client",
        ),
        pytest.param([chunk_for("wheel"), {"client": "nope"}], "invalid_client", id="disabled-then-bad-client"),
        pytest.param([local(cmd="x"), {"client": "nope"}], "invalid_client", id="reserved-then-bad-client"),
        pytest.param([local(foo=1), chunk_for("wheel")], "client_disabled", id="unknown-then-disabled"),
        pytest.param([local(foo=1), local(cmd=1)], "reserved_key", id="unknown-then-reserved"),
        pytest.param([local(timeout="abc"), local(foo=1)], "unknown_key", id="value-then-unknown"),
        pytest.param(
            [{"client": "local", "tgt": "*", "fun": "test.ping"}, local(timeout=-1)],
            "invalid_value",
            id="no-credentials-then-value",
        ),
        pytest.param([local(token="bad"), {"client": "local", "tgt": "*", "fun": "x"}], "unauthenticated",
                     id="bad-token-then-no-credentials"),
    ],
)
def test_checks_run_stage_by_stage(chunks: list, word: str) -> None:
    refused(chunks, word, enabled_clients=("local", "local_async"))


def test_no_credentials_decides_before_token_format() -> None:
    error = refused([local(token="bad"), {"client": "local", "tgt": "*", "fun": "x"}], "unauthenticated")
    assert error.message == NO_CREDENTIALS


def test_second_chunk_failure_names_its_index() -> None:
    error = refused([local(), local(timeout="abc")], "invalid_value")
    assert error.message.startswith("chunk 2: timeout")


# --------------------------------------------------------------------------
# Check 4: reserved keys (R2, L10)


def test_reserved_keys_all_named() -> None:
    chunk = {
        "client": "local_async",
        "tgt": "*",
        "fun": "test.ping",
        "cmd": "wheel",
        "key": "x",
        "user": "root",
        "auth_list": [".*"],
        "__user__": "root",
        "to": 99,
        "kwargs": {"a": 1},
    }
    error = refused([chunk], "reserved_key")
    assert error.status == 400
    assert error.message.startswith("chunk 1: ")
    for name in ("cmd", "key", "user", "auth_list", "__user__", "to", "kwargs"):
        assert repr(name) in error.message
    assert "'tgt'" not in error.message and "'fun'" not in error.message
    names = error.message.split(": ", 2)[2].split(", ")
    assert names == sorted(names)


@pytest.mark.parametrize("client", IMPLEMENTED_CLIENTS)
@pytest.mark.parametrize("key", sorted(RESERVED_KEYS) + ["__", "__pub_user", "__kwarg__", "__jid__"])
def test_each_reserved_key_refused_for_every_client(client: str, key: str) -> None:
    error = refused([chunk_for(client, **{key: 1})], "reserved_key")
    assert repr(key) in error.message


def test_reserved_key_message_is_bounded() -> None:
    chunk = local(**{f"__{i:04d}" + "x" * 200: 1 for i in range(500)})
    error = refused([chunk], "reserved_key")
    assert len(error.message) < 4000
    assert "more" in error.message


@pytest.mark.parametrize("key", ["_cmd", "cmd_", "CMD", "User", "_user", "kwargs_", "_"])
def test_near_reserved_keys_are_not_reserved(key: str) -> None:
    (out,) = validate([chunk_for("runner", **{key: 1})])
    assert out[key] == 1


# --------------------------------------------------------------------------
# Check 5: local allowlists (A4)


@pytest.mark.parametrize(
    "client, key",
    [
        ("local", "ToKen"),
        ("local", "Token"),
        ("local", "foo"),
        ("local", "batch"),
        ("local", "subset"),
        ("local_async", "batch_wait"),
        ("local_batch", "subset"),
        ("local_subset", "batch"),
        ("local", "ssh_priv"),
        ("local", "roster"),
        ("local", "raw_shell"),
        ("local", " token"),
    ],
)
def test_unknown_key(client: str, key: str) -> None:
    error = refused([chunk_for(client, **{key: ""})], "unknown_key")
    assert error.status == 400
    assert repr(key) in error.message


def test_a4_token_case_variant_is_unknown_key() -> None:
    chunk = {"client": "local", "tgt": "*", "fun": "test.ping", "ToKen": ""}
    refused([chunk], "unknown_key")


def test_unknown_keys_all_named_sorted() -> None:
    error = refused([local(zeta=1, alpha=2, Mid=3)], "unknown_key")
    assert error.message.endswith("'Mid', 'alpha', 'zeta'")


def test_non_string_key_is_unknown_for_every_family() -> None:
    refused([local(**{}) | {1: "x"}], "unknown_key")
    refused([chunk_for("runner") | {1: "x"}], "unknown_key")


@pytest.mark.parametrize("client", LOCAL_CLIENTS)
def test_local_allowlist_accepts_every_key(client: str) -> None:
    values = {
        "tgt": "*",
        "fun": "test.ping",
        "arg": [],
        "kwarg": {},
        "tgt_type": "glob",
        "expr_form": "glob",
        "ret": "",
        "ret_config": "x",
        "ret_kwargs": {"a": 1},
        "metadata": {"m": 1},
        "timeout": 5,
        "full_return": True,
        "batch": "10%",
        "batch_wait": 1,
        "subset": 2,
        "username": "u",
        "password": "p",
        "eauth": "pam",
        "token": TOKEN,
        "client": client,
    }
    chunk = {k: values[k] for k in LOCAL_ALLOWED_KEYS[client] if k != "jid"}
    (out,) = validate([chunk])
    assert out["client"] == client


@pytest.mark.parametrize("client", RUNNER_WHEEL_CLIENTS)
def test_runner_and_wheel_accept_function_keywords(client: str) -> None:
    (out,) = validate([chunk_for(client, match="minion-1", tgt="*", jid="../../x", ret=";", anything=[1])])
    assert out["match"] == "minion-1"
    assert out["jid"] == "../../x"  # a runner/wheel keyword, not a publish jid


# --------------------------------------------------------------------------
# Check 6: fun


@pytest.mark.parametrize("fun", ["test.ping", "a", "_", "0", "cmd.run_all", "a" * 256, "state.sls_id", "a..b"])
@pytest.mark.parametrize("client", ["local", "runner", "wheel"])
def test_fun_accepted(client: str, fun: str) -> None:
    (out,) = validate([chunk_for(client, fun=fun)])
    assert out["fun"] == fun


@pytest.mark.parametrize(
    "fun",
    ["", ".test", "a" * 257, "test.ping;rm", "test ping", "test/ping", "tést.ping", "test.ping\n", "-o", None, 1,
     True, {"a": 1}],
)
@pytest.mark.parametrize("client", ["local", "runner", "wheel"])
def test_fun_refused(client: str, fun: Any) -> None:
    error = check_value_refused("fun", fun, client)
    assert error.message.startswith("chunk 1: fun")


@pytest.mark.parametrize("client", IMPLEMENTED_CLIENTS)
def test_fun_required(client: str) -> None:
    chunk = chunk_for(client)
    del chunk["fun"]
    error = refused([chunk], "invalid_value")
    assert error.message == "chunk 1: fun is required"


def test_fun_list_local_only() -> None:
    (out,) = validate([local(fun=["test.ping", "test.echo"], arg=[[], ["x"]])])
    assert out["fun"] == ["test.ping", "test.echo"]
    for fun in ([], ["test.ping", ""], ["test.ping", 1], [".x"], [["test.ping"]]):
        check_value_refused("fun", fun)
    check_value_refused("fun", ["test.ping"], "runner")
    check_value_refused("fun", ["test.ping"], "wheel_async")


# --------------------------------------------------------------------------
# Check 6: tgt, tgt_type, expr_form (L13 first half)


@pytest.mark.parametrize("client", LOCAL_CLIENTS)
def test_tgt_required_for_local_family(client: str) -> None:
    chunk = chunk_for(client)
    del chunk["tgt"]
    error = refused([chunk], "invalid_value")
    assert error.message == "chunk 1: tgt is required"


@pytest.mark.parametrize(
    "tgt, tgt_type",
    [
        ("*", "glob"),
        ("minion-1,minion-2", "list"),
        (["minion-1", "minion-2"], "list"),
        ([], "list"),
        ("G@os:Debian and web*", "compound"),
        ("(a+)+$" + "a" * 50, "pcre"),
        ("10.0.0.0/8", "ipcidr"),
        ("ünïcode", "glob"),
        ("", "glob"),
    ],
)
def test_tgt_accepted(tgt: Any, tgt_type: str) -> None:
    (out,) = validate([local(tgt=tgt, tgt_type=tgt_type)])
    assert out["tgt"] == tgt
    assert out["tgt_type"] == tgt_type


@pytest.mark.parametrize(
    "tgt, tgt_type",
    [
        (["a"], "glob"),
        (["a"], None),
        (["a", 1], "list"),
        (["a", None], "list"),
        ([["a"]], "list"),
        (1, "glob"),
        (None, "glob"),
        ({"a": 1}, "glob"),
        ("a\x00b", "glob"),
        ("a\nb", "glob"),
        ("a\tb", "glob"),
        ("a\x1fb", "glob"),
        ("a\x7fb", "glob"),
        (["ok", "bad\x00"], "list"),
        ("\ud800", "glob"),
    ],
)
def test_tgt_refused(tgt: Any, tgt_type: str | None) -> None:
    extra = {"tgt_type": tgt_type} if tgt_type else {}
    error = check_value_refused("tgt", tgt, **extra)
    assert error.message.startswith("chunk 1: tgt")


def test_tgt_length_in_utf8_bytes() -> None:
    limits = Limits(max_tgt_length=10)
    validate([local(tgt="a" * 10)], limits=limits)
    refused([local(tgt="a" * 11)], "invalid_value", limits=limits)
    validate([local(tgt="é" * 5)], limits=limits)  # 10 bytes
    refused([local(tgt="é" * 5 + "a")], "invalid_value", limits=limits)
    validate([local(tgt=["abcde", "fghij"], tgt_type="list")], limits=limits)
    refused([local(tgt=["abcde", "fghijk"], tgt_type="list")], "invalid_value", limits=limits)


def test_tgt_default_max_length() -> None:
    validate([local(tgt="a" * 65536)])
    error = refused([local(tgt="a" * 65537)], "invalid_value")
    assert "65536" in error.message


@pytest.mark.parametrize(
    "tgt_type",
    ["glob", "pcre", "list", "grain", "grain_pcre", "pillar", "pillar_pcre", "pillar_exact", "nodegroup", "range",
     "compound", "ipcidr"],
)
def test_tgt_type_accepted(tgt_type: str) -> None:
    (out,) = validate([local(tgt_type=tgt_type)])
    assert out["tgt_type"] == tgt_type


@pytest.mark.parametrize("tgt_type", ["GLOB", "", "regex", "glob ", None, 1, ["glob"]])
def test_tgt_type_refused(tgt_type: Any) -> None:
    error = check_value_refused("tgt_type", tgt_type)
    assert error.message.startswith("chunk 1: tgt_type must be one of")


def test_tgt_type_defaults_to_glob() -> None:
    (out,) = validate([local()])
    assert out["tgt_type"] == "glob"


def test_expr_form_is_an_alias_when_tgt_type_absent() -> None:
    (out,) = validate([local(tgt="a,b", expr_form="list")])
    assert out["tgt_type"] == "list"
    assert "expr_form" not in out


def test_expr_form_ignored_when_tgt_type_present() -> None:
    (out,) = validate([local(tgt_type="grain", expr_form="list", tgt="os:Debian")])
    assert out["tgt_type"] == "grain"
    assert "expr_form" not in out


def test_expr_form_checked_like_tgt_type() -> None:
    error = check_value_refused("expr_form", "bogus")
    assert error.message.startswith("chunk 1: expr_form must be one of")


def test_expr_form_list_allows_list_target() -> None:
    (out,) = validate([local(tgt=["a", "b"], expr_form="list")])
    assert out["tgt"] == ["a", "b"]
    assert local_publish_load(out)["tgt_type"] == "list"


# --------------------------------------------------------------------------
# Check 6: arg, kwarg


@pytest.mark.parametrize("arg, expected", [("x", ["x"]), (1, [1]), (None, [None]), ({"a": 1}, [{"a": 1}]),
                                           ([1, "x"], [1, "x"]), ([], [])])
@pytest.mark.parametrize("client", ["local", "runner", "wheel"])
def test_arg_is_a_list(client: str, arg: Any, expected: list) -> None:
    (out,) = validate([chunk_for(client, arg=arg)])
    assert out["arg"] == expected


def test_arg_default_only_for_local_family() -> None:
    for client in LOCAL_CLIENTS:
        assert validate([chunk_for(client)])[0]["arg"] == []
    for client in RUNNER_WHEEL_CLIENTS:
        assert "arg" not in validate([chunk_for(client)])[0]


@pytest.mark.parametrize("kwarg", [[], "a=1", 1, None, [("a", 1)]])
@pytest.mark.parametrize("client", ["local", "runner", "wheel"])
def test_kwarg_must_be_a_mapping(client: str, kwarg: Any) -> None:
    error = check_value_refused("kwarg", kwarg, client)
    assert error.message == "chunk 1: kwarg must be a mapping"


def test_kwarg_stays_absent_when_absent() -> None:
    for client in IMPLEMENTED_CLIENTS:
        assert "kwarg" not in validate([chunk_for(client)])[0]


@pytest.mark.parametrize("client", IMPLEMENTED_CLIENTS)
@pytest.mark.parametrize("key", ["__kwarg__", "__pub_user", "__user__"])
def test_kwarg_dunder_keys_refused(client: str, key: str) -> None:
    error = refused([chunk_for(client, kwarg={key: "root"})], "reserved_key")
    assert repr(key) in error.message


@pytest.mark.parametrize("client", ["wheel", "wheel_async"])
@pytest.mark.parametrize("key", sorted(RESERVED_KEYS) + ["client", "fun", "token", "username", "password", "eauth",
                                                         "full_return"])
def test_wheel_kwarg_cannot_reach_load_control_keys(client: str, key: str) -> None:
    refused([chunk_for(client, kwarg={key: "x"})], "reserved_key")


def test_runner_kwarg_may_hold_plain_names() -> None:
    (out,) = validate([chunk_for("runner", kwarg={"cmd": "x", "user": "y"})])
    load = runner_load(out)
    assert load["cmd"] == "runner"
    assert load["kwarg"]["kwarg"] == {"cmd": "x", "user": "y"}


def test_non_string_kwarg_key_refused() -> None:
    refused([local(kwarg={1: "x"})], "reserved_key")


# --------------------------------------------------------------------------
# Check 6: timeout (L14)


@pytest.mark.parametrize("client", ["local", "runner", "wheel_async"])
@pytest.mark.parametrize(
    "value, expected",
    [(1, 1.0), (0.5, 0.5), ("30", 30.0), ("2.5", 2.5), ("1e3", 1000.0), (86400, 86400.0), ("86400", 86400.0)],
)
def test_timeout_accepted(client: str, value: Any, expected: float) -> None:
    (out,) = validate([chunk_for(client, timeout=value)])
    assert out["timeout"] == expected
    assert type(out["timeout"]) is float


@pytest.mark.parametrize(
    "value",
    ["abc", -1, "-1", 0, "0", 0.0, 1e308, "1e308", True, False, "true", "nan", "inf", "Infinity", float("nan"),
     float("inf"), 86400.001, "1e999", 10**400, None, [], {}, " 5", "5 ", "\uff15", "0x10", "1_0", ""],
)
@pytest.mark.parametrize("client", ["local", "runner", "wheel"])
def test_timeout_refused(client: str, value: Any) -> None:
    error = check_value_refused("timeout", value, client)
    assert error.message.startswith("chunk 1: timeout")


# --------------------------------------------------------------------------
# Check 6: ret, full_return


@pytest.mark.parametrize("ret", ["", "mysql", "a,b_c", "A1"])
def test_ret_accepted(ret: str) -> None:
    assert validate([local(ret=ret)])[0]["ret"] == ret


@pytest.mark.parametrize("ret", ["a;b", "a b", "../x", "a.b", 1, None, ["mysql"], "ré"])
def test_ret_refused(ret: Any) -> None:
    check_value_refused("ret", ret)


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), (False, False), ("true", True), ("TRUE", True), ("Yes", True), ("1", True), ("false", False),
     ("No", False), ("0", False), (1, True), (0, False)],
)
@pytest.mark.parametrize("client", ["local", "runner"])
def test_full_return_accepted(client: str, value: Any, expected: bool) -> None:
    (out,) = validate([chunk_for(client, full_return=value)])
    assert out["full_return"] is expected


@pytest.mark.parametrize("value", ["maybe", "", "on", 2, -1, None, [], 1.5, "t"])
def test_full_return_refused(value: Any) -> None:
    check_value_refused("full_return", value)
    check_value_refused("full_return", value, "runner")


# --------------------------------------------------------------------------
# Check 6: batch, batch_wait, subset


@pytest.mark.parametrize(
    "value, expected", [(1, "1"), (25, "25"), ("3", "3"), ("03", "3"), ("10%", "10%"), ("1%", "1%"), ("100%", "100%")]
)
def test_batch_accepted(value: Any, expected: str) -> None:
    (out,) = validate([chunk_for("local_batch", batch=value)])
    assert out["batch"] == expected


@pytest.mark.parametrize(
    "value", [0, -1, "0", "0%", "101%", "%", "10 %", "abc", 2.5, "1.5", True, False, None, [], "-1", "\uff13"]
)
def test_batch_refused(value: Any) -> None:
    check_value_refused("batch", value, "local_batch")


@pytest.mark.parametrize("value, expected", [(0, 0.0), (1.5, 1.5), ("2", 2.0)])
def test_batch_wait_accepted(value: Any, expected: float) -> None:
    (out,) = validate([chunk_for("local_batch", batch_wait=value)])
    assert out["batch_wait"] == expected
    assert type(out["batch_wait"]) is float


@pytest.mark.parametrize("value", [-1, -0.5, "x", True, float("inf"), float("nan"), None])
def test_batch_wait_refused(value: Any) -> None:
    check_value_refused("batch_wait", value, "local_batch")


@pytest.mark.parametrize("value, expected", [(1, 1), (5, 5), ("2", 2)])
def test_subset_accepted(value: Any, expected: int) -> None:
    (out,) = validate([chunk_for("local_subset", subset=value)])
    assert out["subset"] == expected


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "0", "x", None, "1%"])
def test_subset_refused(value: Any) -> None:
    check_value_refused("subset", value, "local_subset")


# --------------------------------------------------------------------------
# Check 6: credential values


@pytest.mark.parametrize(
    "key, value",
    [("username", "u" * 256), ("username", ""), ("password", "p" * 4096), ("password", ""), ("eauth", "pam"),
     ("eauth", "a" * 64), ("eauth", "ldap_2")],
)
def test_credential_values_accepted(key: str, value: str) -> None:
    validate([local(**{key: value})])


@pytest.mark.parametrize(
    "key, value",
    [("username", "u" * 257), ("username", 1), ("username", None), ("username", "\ud800"), ("password", "p" * 4097),
     ("password", ["p"]), ("password", "\udfff"), ("eauth", ""), ("eauth", "a" * 65), ("eauth", "pa m"),
     ("eauth", "pam!"), ("eauth", "../pam"), ("eauth", None), ("eauth", "päm")],
)
@pytest.mark.parametrize("client", ["local", "runner"])
def test_credential_values_refused(client: str, key: str, value: Any) -> None:
    error = check_value_refused(key, value, client)
    assert error.message.startswith(f"chunk 1: {key}")
    if isinstance(value, str) and len(value) > 5:
        assert value not in error.message


# --------------------------------------------------------------------------
# Check 6: jid (R2, L12)


def jid_kwargs(**overrides: Any) -> dict:
    kwargs: dict[str, Any] = {"now": NOW, "jid_seen": lambda jid: False, "bus_connected_since": NOW - 61}
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize("jid", [jid_at(), jid_at(-59), jid_at(59), jid_at(0, "_1"), jid_at(0, "_" + "aZ9" * 10 + "xy")])
def test_jid_accepted(jid: str) -> None:
    seen: list[str] = []

    def jid_seen(candidate: str) -> bool:
        seen.append(candidate)
        return False

    (out,) = validate([local(jid=jid)], **jid_kwargs(jid_seen=jid_seen))
    assert out["jid"] == jid
    assert seen == [jid]
    assert local_publish_load(out)["jid"] == jid


@pytest.mark.parametrize(
    "jid, overrides",
    [
        pytest.param("../../x", {}, id="path"),
        pytest.param("", {}, id="empty"),
        pytest.param(20261127201231619010, {}, id="int"),
        pytest.param(None, {}, id="none"),
        pytest.param(jid_at()[:19], {}, id="19-digits"),
        pytest.param(jid_at() + "1", {}, id="21-digits"),
        pytest.param(jid_at(0, "_"), {}, id="empty-suffix"),
        pytest.param(jid_at(0, "_" + "a" * 33), {}, id="33-char-suffix"),
        pytest.param(jid_at(0, "_a-b"), {}, id="dash-suffix"),
        pytest.param(jid_at(0, "_a\n"), {}, id="newline-suffix"),
        pytest.param(jid_at() + "\n", {}, id="trailing-newline"),
        pytest.param("\uff12" * 20, {}, id="fullwidth-digits"),
        pytest.param("20261301120000000000", {"now": datetime(2026, 12, 31, 12, tzinfo=timezone.utc).timestamp()},
                     id="month-13"),
        pytest.param(jid_at(-86400), {}, id="a-day-old"),
        pytest.param(jid_at(-61), {}, id="61s-old"),
        pytest.param(jid_at(61), {}, id="61s-ahead"),
        pytest.param(jid_at(), {"jid_seen": lambda jid: True}, id="seen"),
        pytest.param(jid_at(), {"jid_seen": None}, id="no-jid-index"),
        pytest.param(jid_at(), {"bus_connected_since": None}, id="bus-down"),
        pytest.param(jid_at(), {"bus_connected_since": NOW - 30}, id="bus-up-30s"),
    ],
)
def test_jid_refused(jid: Any, overrides: dict) -> None:
    error = refused([local(jid=jid)], "invalid_value", **jid_kwargs(**overrides))
    assert error.message.startswith("chunk 1: jid")


def test_jid_bus_watched_exactly_a_minute_is_enough() -> None:
    validate([local(jid=jid_at())], **jid_kwargs(bus_connected_since=NOW - 60))


def test_jid_repeated_within_one_request_refused() -> None:
    jid = jid_at()
    error = refused([local(jid=jid), local(jid=jid)], "invalid_value", **jid_kwargs())
    assert error.message.startswith("chunk 2: jid")


def test_jid_for_every_local_client() -> None:
    for client in LOCAL_CLIENTS:
        validate([chunk_for(client, jid=jid_at())], **jid_kwargs())
        refused([chunk_for(client, jid="../../x")], "invalid_value", **jid_kwargs())


def test_jid_uses_real_time_when_now_not_given() -> None:
    real_now = datetime.now(timezone.utc)
    jid = f"{real_now:%Y%m%d%H%M%S%f}"
    kwargs = jid_kwargs(bus_connected_since=real_now.timestamp() - 120)
    del kwargs["now"]
    validate_lowstate([local(jid=jid)], enabled_clients=IMPLEMENTED_CLIENTS, limits=Limits(), header_token=None,
                      **kwargs)


# --------------------------------------------------------------------------
# Checks 7 and 8: credentials and token format (A3-A7)


def test_a5_no_credentials() -> None:
    error = refused([{"client": "local", "tgt": "*", "fun": "test.ping"}], "unauthenticated")
    assert error.status == 401
    assert error.message == NO_CREDENTIALS
    assert error.headers == {"WWW-Authenticate": "Session"}


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({"eauth": "pam"}, id="A6-eauth-only"),
        pytest.param({"username": "u", "password": "p"}, id="no-eauth"),
        pytest.param({"username": "u", "eauth": "pam"}, id="no-password"),
        pytest.param({"password": "p", "eauth": "pam"}, id="no-username"),
    ],
)
@pytest.mark.parametrize("client", IMPLEMENTED_CLIENTS)
def test_incomplete_credentials(client: str, credentials: dict) -> None:
    chunk = chunk_for(client, **credentials)
    del chunk["token"]
    error = refused([chunk], "unauthenticated")
    assert error.message == NO_CREDENTIALS


def test_eauth_credentials_suffice() -> None:
    chunk = {"client": "local", "tgt": "*", "fun": "test.ping", "username": "u", "password": "p", "eauth": "pam"}
    (out,) = validate([chunk])
    assert "token" not in out


def test_credentials_not_required_when_told() -> None:
    (out,) = validate([{"client": "runner", "fun": "test.arg"}], require_credentials=False)
    assert "token" not in out


def test_token_format_still_checked_without_required_credentials() -> None:
    refused([chunk_for("runner", token="x")], "unauthenticated", require_credentials=False)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("/nonexistent/x", id="A3-path"),
        pytest.param("", id="A4-empty"),
        pytest.param(None, id="null"),
        pytest.param(1, id="int"),
        pytest.param("a" * 63, id="63-hex"),
        pytest.param("a" * 65, id="65-hex"),
        pytest.param("0x" + "a" * 62, id="0x"),
        pytest.param(" " + TOKEN + " ", id="spaces"),
        pytest.param(TOKEN.upper(), id="uppercase"),
        pytest.param("\uff11" * 64, id="fullwidth"),
    ],
)
def test_a3_a4_chunk_token_format(token: Any) -> None:
    error = refused([local(token=token)], "unauthenticated")
    assert error.status == 401
    if isinstance(token, str) and token:
        assert token not in error.message


@pytest.mark.parametrize(
    "header",
    ["a" * 63, "a" * 65, "0x" + "a" * 62, " " + TOKEN + " ", TOKEN.upper(), "\uff10" * 64, "", "../" * 21 + "a"],
)
def test_a7_header_token_format(header: str) -> None:
    chunk = {"client": "local", "tgt": "*", "fun": "test.ping"}
    refused([chunk], "unauthenticated", header_token=header)


def test_token_length_follows_hash_type() -> None:
    md5_token = "a" * 32
    validate([local(token=md5_token)], limits=Limits(token_length=32))
    refused([local(token=TOKEN)], "unauthenticated", limits=Limits(token_length=32))


def test_header_token_injected() -> None:
    chunks = [{"client": "local", "tgt": "*", "fun": "test.ping"}, {"client": "runner", "fun": "test.arg"}]
    out = validate(chunks, header_token=TOKEN)
    assert [c["token"] for c in out] == [TOKEN, TOKEN]
    assert all("token" not in c for c in chunks)


def test_chunk_token_wins_over_header() -> None:
    out = validate([local(token=OTHER_TOKEN), {"client": "local", "tgt": "*", "fun": "x"}], header_token=TOKEN)
    assert [c["token"] for c in out] == [OTHER_TOKEN, TOKEN]


def test_bad_chunk_token_not_rescued_by_good_header() -> None:
    refused([local(token="")], "unauthenticated", header_token=TOKEN)


def test_header_token_injected_beside_eauth_credentials_and_wins() -> None:
    chunk = {"client": "local", "tgt": "*", "fun": "test.ping", "username": "u", "password": "p", "eauth": "pam"}
    (out,) = validate([chunk], header_token=TOKEN)
    assert out["token"] == TOKEN and out["username"] == "u"
    load = local_publish_load(out)
    assert load["kwargs"] == {"token": TOKEN}
    assert load["user"] == "saltapi"


def test_token_and_eauth_in_one_chunk_token_wins() -> None:
    (out,) = validate([local(username="u", password="p", eauth="pam")])
    assert {"token", "username", "password", "eauth"} <= set(out)
    assert local_publish_load(out)["kwargs"] == {"token": TOKEN}
    assert runner_load(chunk_for("runner", username="u", password="p", eauth="pam"))["token"] == TOKEN
    assert "password" not in runner_load(chunk_for("runner", username="u", password="p", eauth="pam"))


# --------------------------------------------------------------------------
# Normalised output and no mutation


def test_input_never_mutated_and_output_is_new() -> None:
    chunks = [
        {"client": "local", "tgt": ["a"], "expr_form": "list", "fun": ["test.ping"], "arg": [[1]],
         "kwarg": {"k": [1]}, "timeout": "5", "full_return": "yes"},
        {"client": "local_batch", "tgt": "*", "fun": "test.ping", "arg": "x", "batch": 2, "batch_wait": "1"},
        {"client": "runner", "fun": "test.arg", "arg": [1], "kwarg": {"a": 1}, "extra": {"b": 2}},
    ]
    before = copy.deepcopy(chunks)
    out = validate(chunks, header_token=TOKEN)
    assert chunks == before
    for original, new in zip(chunks, out):
        assert new is not original
        for key in ("arg", "kwarg", "tgt", "fun"):
            if key in original and isinstance(original[key], (list, dict)):
                assert new[key] is not original[key]
    assert out[0] == {"client": "local", "tgt": ["a"], "tgt_type": "list", "fun": ["test.ping"], "arg": [[1]],
                      "kwarg": {"k": [1]}, "timeout": 5.0, "full_return": True, "token": TOKEN}
    assert out[1] == {"client": "local_batch", "tgt": "*", "tgt_type": "glob", "fun": "test.ping", "arg": ["x"],
                      "batch": "2", "batch_wait": 1.0, "token": TOKEN}
    assert out[2] == {"client": "runner", "fun": "test.arg", "arg": [1], "kwarg": {"a": 1}, "extra": {"b": 2},
                      "token": TOKEN}


def test_distinct_tokens() -> None:
    chunks = [{"token": TOKEN}, {"token": OTHER_TOKEN}, {"token": TOKEN}, {"username": "u"}]
    assert distinct_tokens(chunks) == [TOKEN, OTHER_TOKEN]
    out = validate([local(), local(token=OTHER_TOKEN), {"client": "runner", "fun": "x"}], header_token=TOKEN)
    assert distinct_tokens(out) == [TOKEN, OTHER_TOKEN]
    assert distinct_tokens([]) == []


# --------------------------------------------------------------------------
# Master loads (R2)


def test_publish_load_with_token() -> None:
    (out,) = validate([local()])
    assert local_publish_load(out) == {
        "cmd": "publish",
        "tgt": "*",
        "fun": "test.ping",
        "arg": [],
        "tgt_type": "glob",
        "ret": "",
        "user": "saltapi",
        "kwargs": {"token": TOKEN},
    }


def test_publish_load_with_eauth_kwarg_and_extras() -> None:
    chunk = {
        "client": "local_async", "tgt": ["m1", "m2"], "tgt_type": "list", "fun": "test.arg", "arg": ["a", 2],
        "kwarg": {"k": "v"}, "ret": "mysql", "metadata": {"m": 1}, "ret_config": "alt", "ret_kwargs": {"r": 2},
        "timeout": 9, "full_return": True, "username": "saltdev", "password": "pw", "eauth": "file",
    }
    (out,) = validate([chunk])
    load = local_publish_load(out)
    assert load == {
        "cmd": "publish",
        "tgt": ["m1", "m2"],
        "fun": "test.arg",
        "arg": ["a", 2, {"k": "v", "__kwarg__": True}],
        "tgt_type": "list",
        "ret": "mysql",
        "user": "saltdev",
        "kwargs": {"eauth": "file", "username": "saltdev", "password": "pw", "metadata": {"m": 1},
                   "ret_config": "alt", "ret_kwargs": {"r": 2}},
    }
    assert out["arg"] == ["a", 2]  # building the load did not touch the chunk


@pytest.mark.parametrize("client", LOCAL_CLIENTS)
def test_publish_load_adds_no_jid_and_no_to(client: str) -> None:
    (out,) = validate([chunk_for(client, timeout=30)])
    load = local_publish_load(out)
    assert "jid" not in load
    assert "to" not in load
    assert "timeout" not in load


def test_publish_load_empty_kwarg_adds_nothing() -> None:
    (out,) = validate([local(kwarg={})])
    assert local_publish_load(out)["arg"] == []


def test_publish_load_requires_credentials() -> None:
    with pytest.raises(ApiError) as info:
        local_publish_load({"client": "local", "tgt": "*", "fun": "test.ping"})
    assert info.value.word == "unauthenticated"


def test_runner_load() -> None:
    chunk = {"client": "runner", "fun": "jobs.lookup_jid", "arg": ["x"], "kwarg": {"a": 1}, "jid": "123",
             "tgt": "m", "timeout": 30, "full_return": True, "username": "u", "password": "p", "eauth": "file"}
    (out,) = validate([chunk])
    assert runner_load(out) == {
        "cmd": "runner",
        "fun": "jobs.lookup_jid",
        "kwarg": {"arg": ["x"], "kwarg": {"a": 1, "jid": "123", "tgt": "m"}},
        "eauth": "file",
        "username": "u",
        "password": "p",
    }


def test_runner_load_defaults() -> None:
    (out,) = validate([{"client": "runner_async", "fun": "manage.up"}], header_token=TOKEN)
    assert runner_load(out) == {"cmd": "runner", "fun": "manage.up", "kwarg": {"arg": [], "kwarg": {}},
                                "token": TOKEN}


def test_wheel_load() -> None:
    chunk = {"client": "wheel", "fun": "key.finger", "kwarg": {"match": "minion-1", "x": 1}, "x": 2,
             "timeout": 5, "full_return": False, "token": TOKEN}
    (out,) = validate([chunk])
    assert wheel_load(out) == {"match": "minion-1", "x": 2, "cmd": "wheel", "fun": "key.finger", "token": TOKEN}


def test_wheel_load_arg_only_when_non_empty() -> None:
    (out,) = validate([chunk_for("wheel_async", arg=[])])
    assert "arg" not in wheel_load(out)
    (out,) = validate([chunk_for("wheel_async", arg="a")])
    assert wheel_load(out)["arg"] == ["a"]


def test_loads_cannot_be_steered_by_unvalidated_chunks() -> None:
    """Even a chunk that skipped validation cannot choose cmd or smuggle reserved keys."""
    evil = {"client": "wheel", "fun": "key.list_all", "token": TOKEN, "cmd": "publish", "key": "k", "user": "root",
            "__user__": "root", "kwargs": {}, "print_event": True, "tgt": "*", "jid": "1", "to": 1,
            "kwarg": {"cmd": "runner", "token": "x", "eauth": "pam", "__jid__": "1", "key": "k"}}
    load = wheel_load(evil)
    assert load["cmd"] == "wheel" and load["token"] == TOKEN
    assert not (set(load) & (RESERVED_KEYS - {"cmd"} | {"eauth", "username", "password"}))
    assert not any(k.startswith("__") for k in load)

    load = runner_load({**evil, "client": "runner"})
    assert set(load) == {"cmd", "fun", "kwarg", "token"} and load["cmd"] == "runner"
    assert not any(k.startswith("__") for k in load["kwarg"]["kwarg"])
    assert not (set(load["kwarg"]["kwarg"]) & RESERVED_KEYS - {"cmd", "key"})  # kwarg's own names stay nested

    load = local_publish_load({**evil, "client": "local"})
    assert set(load) <= PUBLISH_LOAD_KEYS and load["cmd"] == "publish"
    assert set(load["kwargs"]) == {"token"}


# --------------------------------------------------------------------------
# Properties


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                               inner, max_size=3),
                    max_leaves=8)
KEY_NAMES = st.sampled_from(
    sorted(LOCAL_ALLOWED_KEYS["local_batch"] | LOCAL_ALLOWED_KEYS["local_subset"] | RESERVED_KEYS)
    + ["__user__", "ToKen", "foo", "ssh_priv", "roster", "module_executors", "to"]
) | st.text(max_size=10)
CREDENTIAL_KWARGS = {"token", "eauth", "username", "password", "metadata", "ret_config", "ret_kwargs"}


@settings(max_examples=300, deadline=None)
@given(
    client=st.sampled_from(LOCAL_CLIENTS),
    extra=st.dictionaries(KEY_NAMES, JSON, max_size=6),
)
def test_random_extra_keys_never_reach_the_publish_load(client: str, extra: dict) -> None:
    chunk = {**extra, "client": client, "tgt": "*", "fun": "test.ping", "token": TOKEN}
    try:
        (out,) = validate([chunk])
    except ApiError:
        return
    load = local_publish_load(out)
    assert load["cmd"] == "publish"
    assert set(load) <= PUBLISH_LOAD_KEYS
    assert set(load["kwargs"]) <= CREDENTIAL_KWARGS
    assert load["kwargs"]["token"] == TOKEN
    assert ("jid" in load) == ("jid" in chunk)
    assert set(out) <= LOCAL_ALLOWED_KEYS[client]


@settings(max_examples=300, deadline=None)
@given(
    client=st.sampled_from(RUNNER_WHEEL_CLIENTS),
    extra=st.dictionaries(KEY_NAMES, JSON, max_size=6),
    kwarg=st.dictionaries(KEY_NAMES, JSON, max_size=4),
)
def test_random_keys_cannot_steer_runner_and_wheel_loads(client: str, extra: dict, kwarg: dict) -> None:
    chunk = {**extra, "client": client, "fun": "test.arg", "kwarg": kwarg, "token": TOKEN}
    try:
        (out,) = validate([chunk])
    except ApiError:
        return
    if client.startswith("runner"):
        load = runner_load(out)
        assert set(load) == {"cmd", "fun", "kwarg", "token"}
        assert load["cmd"] == "runner"
    else:
        load = wheel_load(out)
        assert load["cmd"] == "wheel"
        forbidden = RESERVED_KEYS - {"cmd"} | {"eauth", "username", "password", "client", "full_return"}
        assert not (set(load) & forbidden)
        assert not any(k.startswith("__") for k in load)
    assert load["fun"] == "test.arg" and load["token"] == TOKEN


@settings(max_examples=500, deadline=None)
@given(chunks=st.lists(st.dictionaries(KEY_NAMES, JSON, max_size=6) | JSON, max_size=4) | JSON,
       header=st.none() | st.just(TOKEN) | st.text(max_size=70))
def test_validation_only_ever_raises_api_error(chunks: Any, header: str | None) -> None:
    try:
        out = validate(chunks, header_token=header, jid_seen=lambda jid: False, bus_connected_since=NOW - 120)
    except ApiError as error:
        assert error.status in (400, 401)
        return
    for chunk in out:
        assert token_well_formed(chunk["token"], 64) or {"username", "password", "eauth"} <= set(chunk)


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=70) | st.binary(max_size=70) | st.integers() | st.none())
def test_token_gate_property(token: object) -> None:
    expected = isinstance(token, str) and len(token) == 64 and all(c in "0123456789abcdef" for c in token)
    assert token_well_formed(token, 64) is expected
