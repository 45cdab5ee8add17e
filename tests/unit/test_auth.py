"""Token validation, revocation, ``perms`` and rate limits (spec §3.5, §5.2, §5.3)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from saltapi_twisted.auth import SESSION_COOKIE, Authenticator, RateLimiter, compute_perms, token_from_request
from saltapi_twisted.errors import ApiError
from saltapi_twisted.master.exceptions import MasterTimeout, MasterUnavailable

NOW = 1_700_000_000.0
TOKEN = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4


class FakeMaster:
    """``get_token`` from a table; counts calls; may raise or hang."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.error: BaseException | None = None
        self.hold: defer.Deferred[None] | None = None

    def add(self, token: str, expire: float, **extra: Any) -> dict[str, Any]:
        info = {"token": token, "expire": expire, "start": NOW - 10, "name": "saltdev", "eauth": "file", **extra}
        self.tokens[token] = info
        return info

    async def get_token(self, token: str) -> dict[str, Any] | None:
        self.calls.append(token)
        if self.hold is not None:
            await self.hold
        if self.error is not None:
            raise self.error
        return self.tokens.get(token)


class Now:
    def __init__(self, value: float = NOW) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def make(cache_seconds: float = 5.0, length: int = 64) -> tuple[Authenticator, FakeMaster, Now]:
    master, now = FakeMaster(), Now()
    return Authenticator(master, length, cache_seconds, now=now), master, now  # type: ignore[arg-type]


def outcome(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def validate(auth: Authenticator, token: Any) -> Any:
    result = outcome(defer.ensureDeferred(auth.validate(token)))
    if isinstance(result, Failure):
        result.raiseException()
    return result


def refused(auth: Authenticator, token: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        validate(auth, token)
    assert info.value.status == 401
    assert info.value.headers == {"WWW-Authenticate": "Session"}
    return info.value


# ----------------------------------------------------------------------------
# the format gate


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "a" * 63,
        "a" * 65,
        "A" * 64,
        "0123456789ABCDEF" * 4,
        "0x" + "a" * 62,
        " " + "a" * 63,
        "a" * 63 + " ",
        "a" * 32 + " " + "a" * 31,
        "a" * 63 + "\n",
        "a" * 63 + "\x00",
        "\uff10" * 64,  # fullwidth digit zero
        "\u0660" * 64,  # arabic-indic digit zero
        "g" * 64,
        "../" + "a" * 61,
        "a" * 1_000_000,
        b"a" * 64,
        64,
        ["a" * 64],
    ],
)
def test_format_gate_refuses_without_asking_the_master(token: Any) -> None:
    auth, master, _now = make()
    master.add("a" * 64, NOW + 3600)
    error = refused(auth, token)
    assert master.calls == []
    assert not auth.well_formed(token)
    if token is None:
        assert error.message == "Please log in"


@pytest.mark.parametrize(("length", "good"), [(32, "f" * 32), (40, "0" * 40), (128, "9" * 128)])
def test_format_gate_follows_the_hash_length(length: int, good: str) -> None:
    auth, master, _now = make(length=length)
    master.add(good, NOW + 60)
    assert validate(auth, good)["token"] == good
    refused(auth, good + "0")
    refused(auth, good[:-1])
    assert master.calls == [good]


# ----------------------------------------------------------------------------
# validation


def test_valid_token() -> None:
    auth, master, _now = make()
    info = master.add(TOKEN, NOW + 3600)
    assert validate(auth, TOKEN) == info
    assert master.calls == [TOKEN]


def test_unknown_token() -> None:
    auth, master, _now = make()
    refused(auth, TOKEN)
    refused(auth, TOKEN)
    assert master.calls == [TOKEN, TOKEN]  # refusals are not cached


@pytest.mark.parametrize("expire", [NOW, NOW - 1, NOW - 86400])
def test_expired_token(expire: float) -> None:
    auth, master, _now = make()
    master.add(TOKEN, expire)
    refused(auth, TOKEN)


def test_token_without_expire_is_refused() -> None:
    auth, master, _now = make()
    master.tokens[TOKEN] = {"token": TOKEN, "name": "saltdev"}
    refused(auth, TOKEN)


def test_result_is_cached_for_cache_seconds() -> None:
    auth, master, now = make(cache_seconds=5)
    master.add(TOKEN, NOW + 3600)
    validate(auth, TOKEN)
    now.value = NOW + 4.9
    validate(auth, TOKEN)
    assert master.calls == [TOKEN]
    now.value = NOW + 5.0
    validate(auth, TOKEN)
    assert master.calls == [TOKEN, TOKEN]


def test_cache_is_per_token() -> None:
    auth, master, _now = make()
    master.add(TOKEN, NOW + 3600)
    master.add(OTHER, NOW + 3600)
    validate(auth, TOKEN)
    validate(auth, OTHER)
    validate(auth, TOKEN)
    assert master.calls == [TOKEN, OTHER]


def test_cache_never_outlives_expire() -> None:
    auth, master, now = make(cache_seconds=5)
    master.add(TOKEN, NOW + 2)
    validate(auth, TOKEN)
    now.value = NOW + 1.9
    validate(auth, TOKEN)
    assert master.calls == [TOKEN]
    now.value = NOW + 2.0
    refused(auth, TOKEN)
    assert master.calls == [TOKEN, TOKEN]


def test_master_forgetting_a_token_takes_effect_after_the_cache() -> None:
    auth, master, now = make(cache_seconds=5)
    master.add(TOKEN, NOW + 3600)
    validate(auth, TOKEN)
    del master.tokens[TOKEN]
    now.value = NOW + 5
    refused(auth, TOKEN)


def test_zero_cache_asks_every_time() -> None:
    auth, master, _now = make(cache_seconds=0)
    master.add(TOKEN, NOW + 3600)
    for _ in range(3):
        validate(auth, TOKEN)
    assert master.calls == [TOKEN] * 3


def test_cache_is_bounded() -> None:
    master, now = FakeMaster(), Now()
    auth = Authenticator(master, 64, 5.0, now=now, max_cache=2)  # type: ignore[arg-type]
    tokens = [f"{n:064x}" for n in range(3)]
    for token in tokens:
        master.add(token, NOW + 3600)
        validate(auth, token)
    validate(auth, tokens[0])  # evicted first
    validate(auth, tokens[2])
    assert master.calls == tokens + [tokens[0]]


@pytest.mark.parametrize("error", [MasterUnavailable("down"), MasterTimeout("slow")])
def test_master_failures_propagate_and_are_not_cached(error: Exception) -> None:
    auth, master, _now = make()
    master.add(TOKEN, NOW + 3600)
    master.error = error
    with pytest.raises(type(error)):
        validate(auth, TOKEN)
    master.error = None
    assert validate(auth, TOKEN)["token"] == TOKEN
    assert master.calls == [TOKEN, TOKEN]


# ----------------------------------------------------------------------------
# revocation


def test_revoke_refuses_everywhere_and_tells_listeners() -> None:
    auth, master, now = make()
    master.add(TOKEN, NOW + 3600)
    master.add(OTHER, NOW + 3600)
    validate(auth, TOKEN)
    heard: list[str] = []
    auth.on_revoke(heard.append)
    auth.revoke(TOKEN, NOW + 3600)
    assert heard == [TOKEN]
    error = refused(auth, TOKEN)  # cached a moment ago: the cache is evicted
    assert "revoked" in error.message.lower()
    assert master.calls == [TOKEN]  # refused without asking the master
    assert auth.is_revoked(TOKEN)
    validate(auth, OTHER)
    now.value = NOW + 60
    refused(auth, TOKEN)


def test_revocation_lapses_at_expire() -> None:
    auth, master, now = make()
    auth.revoke(TOKEN, NOW + 10)
    assert auth.is_revoked(TOKEN)
    now.value = NOW + 10
    assert not auth.is_revoked(TOKEN)
    refused(auth, TOKEN)  # the master says it expired anyway
    assert master.calls == [TOKEN]


def test_revoke_while_validating_refuses() -> None:
    auth, master, _now = make()
    master.add(TOKEN, NOW + 3600)
    master.hold = defer.Deferred()
    d = defer.ensureDeferred(auth.validate(TOKEN))
    auth.revoke(TOKEN, NOW + 3600)
    master.hold.callback(None)
    failure = outcome(d)
    assert isinstance(failure, Failure)
    failure.trap(ApiError)
    assert failure.value.status == 401
    master.hold = None
    refused(auth, TOKEN)  # and nothing was cached


def test_listener_unsubscribes() -> None:
    auth, _master, _now = make()
    heard: list[str] = []
    stop = auth.on_revoke(heard.append)
    auth.revoke(TOKEN, NOW + 60)
    stop()
    auth.revoke(OTHER, NOW + 60)
    assert heard == [TOKEN]


# ----------------------------------------------------------------------------
# token sources


class FakeRequest:
    def __init__(self, header: bytes | None = None, cookie: bytes | None = None) -> None:
        self.header, self.cookie = header, cookie

    def getHeader(self, name: bytes) -> bytes | None:  # noqa: N802 - twisted.web API
        assert name == b"x-auth-token"
        return self.header

    def getCookie(self, name: bytes) -> bytes | None:  # noqa: N802 - twisted.web API
        assert name == SESSION_COOKIE
        return self.cookie


@pytest.mark.parametrize(
    ("header", "cookie", "expected"),
    [
        (None, None, None),
        (TOKEN.encode(), None, TOKEN),
        (None, TOKEN.encode(), TOKEN),
        (TOKEN.encode(), OTHER.encode(), TOKEN),  # the header wins
        (b"", OTHER.encode(), ""),  # an empty header still wins (and fails the gate)
    ],
)
def test_token_from_request(header: bytes | None, cookie: bytes | None, expected: str | None) -> None:
    assert token_from_request(FakeRequest(header, cookie)) == expected


# ----------------------------------------------------------------------------
# perms


EXTERNAL_AUTH = {
    "file": {
        "saltdev": [".*", "@runner", {"web*": ["test.*"]}],
        "*": ["test.ping", ".*"],
        "admins%": ["@wheel", {"*": ["grains.items"]}, {"web*": ["test.*"]}],
        "ops%": "state.apply",
        "limited": ["test.*"],
    },
    "pam": {"saltdev": ["pam.only"]},
    "broken": ["not", "a", "dict"],
}


@pytest.mark.parametrize(
    ("eauth", "user", "groups", "expected"),
    [
        (
            "file",
            "saltdev",
            ["admins"],
            [".*", "@runner", "@wheel", "test.ping", {"*": ["grains.items"]}, {"web*": ["test.*"]}],
        ),
        ("file", "saltdev", None, [".*", "@runner", "test.ping", {"web*": ["test.*"]}]),
        ("file", "limited", [], [".*", "test.*", "test.ping"]),
        ("file", "nobody", ["ops"], [".*", "state.apply", "test.ping"]),
        ("file", "nobody", ["unknown"], [".*", "test.ping"]),
        ("pam", "saltdev", ["admins"], ["pam.only"]),
        ("pam", "nobody", None, []),
        ("ldap", "saltdev", None, []),
        ("broken", "saltdev", None, []),
    ],
)
def test_compute_perms(eauth: str, user: str, groups: list[str] | None, expected: list[Any]) -> None:
    assert compute_perms(EXTERNAL_AUTH, eauth, user, groups) == expected


def test_compute_perms_sorts_non_strings_by_repr() -> None:
    config = {"file": {"u": [{"b": 1}, "z", {"a": 2}, "a", {"a": 2}, "z"]}}
    assert compute_perms(config, "file", "u", None) == ["a", "z", {"a": 2}, {"b": 1}]


# ----------------------------------------------------------------------------
# rate limits


def test_rate_limiter_window() -> None:
    now = Now(0.0)
    limiter = RateLimiter(3, 60.0, now=now)
    for t in (0.0, 10.0, 20.0):
        now.value = t
        assert limiter.retry_after("ip") == 0
        limiter.hit("ip")
    now.value = 30.0
    retry = limiter.retry_after("ip")
    assert 30 <= retry <= 31  # the first hit leaves the window at 60
    assert limiter.retry_after("other") == 0
    now.value = 59.9
    assert limiter.retry_after("ip") >= 1
    now.value = 60.0
    assert limiter.retry_after("ip") == 0  # sliding: one hit left the window
    limiter.hit("ip")
    assert limiter.retry_after("ip") > 0
    now.value = 80.0
    assert limiter.retry_after("ip") == 0


def test_rate_limiter_retry_after_is_never_early() -> None:
    for elapsed in (0.0, 0.5, 1.0, 30.0, 58.5, 59.0, 59.99):
        now = Now(100.0)
        limiter = RateLimiter(1, 60.0, now=now)
        limiter.hit("ip")
        now.value = 100.0 + elapsed
        retry = limiter.retry_after("ip")
        assert retry >= 60.0 - elapsed
        assert retry <= 60.0 - elapsed + 1
        now.value = 100.0 + elapsed + retry
        assert limiter.retry_after("ip") == 0


def test_rate_limiter_off() -> None:
    limiter = RateLimiter(0, 60.0, now=lambda: 0.0)
    for _ in range(100):
        limiter.hit("ip")
    assert limiter.retry_after("ip") == 0


def test_rate_limiter_forgets_the_oldest_keys() -> None:
    now = Now(0.0)
    limiter = RateLimiter(1, 60.0, now=now, max_keys=2)
    limiter.hit("a")
    limiter.hit("b")
    limiter.hit("c")
    assert limiter.retry_after("c") > 0
    assert limiter.retry_after("a") == 0  # forgotten
