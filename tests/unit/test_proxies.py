"""X-Forwarded-For/-Proto believed only from trusted proxies (spec §3.8)."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.test.requesthelper import DummyRequest

from saltapi_twisted.config import _networks
from saltapi_twisted.web.proxies import TrustedProxies, parse_networks


def request(peer: str, forwarded_for: list[str] | None = None, proto: list[str] | None = None, secure: bool = False):
    r = DummyRequest([b""])
    r.client = IPv6Address("TCP", peer, 4000) if ":" in peer else IPv4Address("TCP", peer, 4000)
    for value in forwarded_for or []:
        r.requestHeaders.addRawHeader(b"X-Forwarded-For", value.encode())
    for value in proto or []:
        r.requestHeaders.addRawHeader(b"X-Forwarded-Proto", value.encode())
    r.isSecure = lambda: secure  # type: ignore[method-assign]
    return r


PROXIES = TrustedProxies(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        pytest.param("198.51.100.9", ["203.0.113.5"], "198.51.100.9", id="untrusted-peer-header-ignored"),
        pytest.param("10.1.2.3", None, "10.1.2.3", id="trusted-peer-no-header"),
        pytest.param("10.1.2.3", ["203.0.113.5"], "203.0.113.5", id="one-hop"),
        pytest.param("10.1.2.3", ["1.1.1.1, 203.0.113.5"], "203.0.113.5", id="spoofed-left-entry-ignored"),
        pytest.param("10.1.2.3", ["1.1.1.1, 203.0.113.5, 10.9.9.9"], "203.0.113.5", id="chain-of-trusted-proxies"),
        pytest.param("10.1.2.3", ["1.1.1.1", "203.0.113.5, 192.0.2.7"], "203.0.113.5", id="several-header-lines"),
        pytest.param("10.1.2.3", ["10.4.4.4, 10.5.5.5"], "10.4.4.4", id="all-trusted-left-most"),
        pytest.param("10.1.2.3", ["1.1.1.1, garbage"], "10.1.2.3", id="malformed-hop-stops"),
        pytest.param("10.1.2.3", ["1.1.1.1, garbage, 10.6.6.6"], "10.6.6.6", id="malformed-after-trusted"),
        pytest.param("10.1.2.3", ["[2001:db9::1]"], "2001:db9::1", id="bracketed-ipv6"),
        pytest.param("2001:db8::5", ["203.0.113.5"], "203.0.113.5", id="ipv6-proxy"),
        pytest.param("::ffff:10.1.2.3", ["203.0.113.5"], "203.0.113.5", id="v4-mapped-proxy"),
        pytest.param("10.1.2.3", ["203.0.113.5:443"], "10.1.2.3", id="port-is-malformed"),
        pytest.param("10.1.2.3", [""], "10.1.2.3", id="empty-header"),
    ],
)
def test_client_ip(peer: str, xff: list[str] | None, expected: str) -> None:
    assert PROXIES.client_ip(request(peer, xff)) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert TrustedProxies().client_ip(request("10.1.2.3", ["203.0.113.5"])) == "10.1.2.3"


def test_long_chain_is_bounded() -> None:
    chain = ", ".join(["10.0.0.1"] * 1000)
    assert PROXIES.client_ip(request("10.1.2.3", [chain])) == "10.0.0.1"


@pytest.mark.parametrize(
    ("peer", "proto", "secure", "expected"),
    [
        ("198.51.100.9", ["https"], False, False),
        ("198.51.100.9", ["http"], True, True),
        ("10.1.2.3", ["https"], False, True),
        ("10.1.2.3", ["HTTPS"], False, True),
        ("10.1.2.3", ["http"], True, False),
        ("10.1.2.3", ["https, http"], False, False),
        ("10.1.2.3", ["gopher"], True, True),
        ("10.1.2.3", None, True, True),
    ],
)
def test_is_secure(peer: str, proto: list[str] | None, secure: bool, expected: bool) -> None:
    assert PROXIES.is_secure(request(peer, proto=proto, secure=secure)) is expected


@pytest.mark.parametrize("entry", ["10.0.0.300", "example.com", "10.0.0.0/33", ""])
def test_bad_entries_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or network"):
        parse_networks([entry])
    with pytest.raises(ValueError, match="not an IP address or network"):
        _networks([entry])


def test_good_entries_kept() -> None:
    assert _networks(["10.0.0.0/8", "::1"]) == ("10.0.0.0/8", "::1")
    assert _networks("127.0.0.1") == ("127.0.0.1",)
