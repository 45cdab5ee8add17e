"""CORS, preflight and cross-site decisions (spec §3.6, §3.7)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from saltapi_twisted.cors import (
    ALLOWED_REQUEST_HEADERS,
    allow_origin,
    cors_headers,
    is_foreign,
    own_origin,
    preflight_headers,
)

UI = "https://ui.example"
LISTED = (UI, "http://localhost:3000")
OWN = "https://salt.example:8000"


# ----------------------------------------------------------------------------
# Access-Control-Allow-Origin


@pytest.mark.parametrize(
    ("origin", "config", "expected"),
    [
        (UI, (), None),  # CORS off
        (None, LISTED, None),  # no Origin
        (None, ("*",), None),
        (UI, ("*",), "*"),
        ("null", ("*",), "*"),
        (UI, (UI,), UI),  # a single string
        (UI, LISTED, UI),
        ("http://localhost:3000", LISTED, "http://localhost:3000"),
        ("http://ui.example", LISTED, None),  # scheme differs
        ("https://ui.example:443", LISTED, None),  # exact, even for the default port
        ("https://ui.example/", LISTED, None),
        ("https://UI.example", LISTED, None),
        ("https://ui.example.evil", LISTED, None),
        ("https://evil.ui.example", LISTED, None),
        ("http://localhost:3001", LISTED, None),
        ("null", LISTED, None),
        ("", LISTED, None),
        (UI + " ", LISTED, None),
    ],
)
def test_allow_origin(origin: str | None, config: tuple[str, ...], expected: str | None) -> None:
    assert allow_origin(origin, config) == expected


@pytest.mark.parametrize(
    ("origin", "config", "expected"),
    [
        (UI, (), {}),
        (UI, ("*",), {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "X-Auth-Token"}),
        (None, ("*",), {}),
        (
            UI,
            LISTED,
            {"Vary": "Origin", "Access-Control-Allow-Origin": UI, "Access-Control-Expose-Headers": "X-Auth-Token"},
        ),
        ("https://evil.example", LISTED, {"Vary": "Origin"}),  # served, without CORS headers
        (None, LISTED, {"Vary": "Origin"}),
    ],
)
def test_cors_headers(origin: str | None, config: tuple[str, ...], expected: dict[str, str]) -> None:
    assert cors_headers(origin, config) == expected


# ----------------------------------------------------------------------------
# preflight


def test_preflight_without_requested_headers() -> None:
    headers = preflight_headers(UI, LISTED, None)
    assert headers == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": UI,
        "Access-Control-Expose-Headers": "X-Auth-Token",
        "Access-Control-Allow-Methods": "OPTIONS, GET, POST",
    }
    assert "Access-Control-Max-Age" not in headers


def test_preflight_without_cors_config() -> None:
    headers = preflight_headers(UI, (), "X-Auth-Token, Content-Type")
    assert headers == {
        "Access-Control-Expose-Headers": "X-Auth-Token",
        "Access-Control-Allow-Methods": "OPTIONS, GET, POST",
        "Access-Control-Allow-Headers": "X-Auth-Token, Content-Type",
    }


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        ("X-Auth-Token", "X-Auth-Token"),
        ("x-auth-token,content-type", "x-auth-token, content-type"),  # re-joined, spelling kept
        (" Accept ,  Content-Type ", "Accept, Content-Type"),
        ("Last-Event-ID, X-Requested-With, Authorization", "Last-Event-ID, X-Requested-With, Authorization"),
        ("X-Auth-Token, X-Evil, Cookie", "X-Auth-Token"),
        ("Cookie, Host, X-Forwarded-For", None),
        ("", None),
        (",,, ,", None),
        ("X-Auth-Token\r\nSet-Cookie: x=1", None),
        ("Content-Type\r\nX: y, Accept", "Accept"),
    ],
)
def test_preflight_filters_requested_headers(requested: str, allowed: str | None) -> None:
    headers = preflight_headers(UI, LISTED, requested)
    assert headers.get("Access-Control-Allow-Headers") == allowed


_HEADER_NAMES = st.sampled_from(
    sorted(ALLOWED_REQUEST_HEADERS) + ["Cookie", "Host", "X-Evil", "Set-Cookie", "Origin", "X-Auth-Token "]
) | st.text(max_size=20)


@settings(max_examples=100, deadline=None)
@given(names=st.lists(_HEADER_NAMES, max_size=8), origin=st.none() | st.text(max_size=30))
def test_preflight_only_echoes_allowed_headers(names: list[str], origin: str | None) -> None:
    headers = preflight_headers(origin, LISTED, ", ".join(names))
    echoed = headers.get("Access-Control-Allow-Headers")
    if echoed is not None:
        for name in echoed.split(", "):
            assert name.lower() in ALLOWED_REQUEST_HEADERS
            assert "\r" not in name and "\n" not in name
    wanted = [n.strip() for n in ", ".join(names).split(",") if n.strip().lower() in ALLOWED_REQUEST_HEADERS]
    assert (echoed or None) == (", ".join(wanted) or None)


# ----------------------------------------------------------------------------
# random origins


_HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z]{2,6}){1,2}", fullmatch=True)
_ORIGINS = (
    st.builds(
        lambda scheme, host, port: f"{scheme}://{host}{port}",
        st.sampled_from(["http", "https", "ws", "file", "chrome-extension"]),
        _HOSTS,
        st.sampled_from(["", ":80", ":443", ":3000", ":8000"]),
    )
    | st.text(max_size=40)
    | st.sampled_from(["null", "https://ui.example.", "https://ui.example:443", "HTTPS://ui.example"])
)


@settings(max_examples=100, deadline=None)
@given(origin=_ORIGINS)
def test_foreign_origins_are_never_allowed_with_a_list(origin: str) -> None:
    assume(origin not in LISTED)
    assert allow_origin(origin, LISTED) is None
    assert "Access-Control-Allow-Origin" not in cors_headers(origin, LISTED)
    assert "Access-Control-Allow-Origin" not in preflight_headers(origin, LISTED, "X-Auth-Token")
    assert is_foreign(origin, OWN if origin != OWN else None, LISTED, None)


@settings(max_examples=100, deadline=None)
@given(origin=st.none() | _ORIGINS, config=st.sampled_from([("*",), LISTED, (), (UI, "*")]))
def test_allow_credentials_is_never_sent(origin: str | None, config: tuple[str, ...]) -> None:
    for headers in (cors_headers(origin, config), preflight_headers(origin, config, "X-Auth-Token, Cookie")):
        assert not any(name.lower() == "access-control-allow-credentials" for name in headers)
        if "*" in config and origin is not None:
            assert headers["Access-Control-Allow-Origin"] == "*"


# ----------------------------------------------------------------------------
# cross-site requests


@pytest.mark.parametrize(
    ("origin", "own", "config", "sec_fetch_site", "foreign"),
    [
        (None, OWN, (), None, False),  # curl, scripts
        (None, None, (), None, False),
        (None, OWN, (), "same-origin", False),
        (None, OWN, (), "none", False),
        (None, OWN, (), "cross-site", True),
        ("null", OWN, (), None, True),
        ("null", OWN, ("*",), None, True),
        ("null", OWN, ("null",), None, True),
        (OWN, OWN, (), None, False),
        (OWN, OWN, (), "same-origin", False),
        (OWN, OWN, (), "same-site", False),
        (OWN, OWN, (), "cross-site", True),  # the browser's word wins
        ("https://salt.example", OWN, (), None, True),  # port differs
        ("http://salt.example:8000", OWN, (), None, True),  # scheme differs
        (UI, OWN, (), None, True),
        (UI, OWN, LISTED, None, False),
        (UI, OWN, LISTED, "cross-site", True),
        (UI, OWN, ("*",), None, True),  # "*" allows reading, never cookie-authenticated writes
        ("https://evil.example", OWN, LISTED, None, True),
        ("https://evil.example", OWN, LISTED, "same-origin", True),
        (UI, None, (), None, True),
        (UI, None, LISTED, None, False),
    ],
)
def test_is_foreign(
    origin: str | None, own: str | None, config: tuple[str, ...], sec_fetch_site: str | None, foreign: bool
) -> None:
    assert is_foreign(origin, own, config, sec_fetch_site) is foreign


@pytest.mark.parametrize(
    ("scheme", "host", "expected"),
    [
        ("https", "salt.example:8000", "https://salt.example:8000"),
        ("http", "127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https", "[::1]:8000", "https://[::1]:8000"),
        ("https", None, None),
        ("https", "", None),
    ],
)
def test_own_origin(scheme: str, host: str | None, expected: str | None) -> None:
    assert own_origin(scheme, host) == expected
