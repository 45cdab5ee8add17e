"""TLS policy of the configured listener (checklist §4 and §5.1 "TLS").

* protocols = {TLS 1.2, TLS 1.3};
* TLS 1.2 suites ⊆ ECDHE + AEAD: with the default ``ssl_ciphers`` and an RSA
  certificate, exactly ECDHE-RSA with AES-GCM or ChaCha20-Poly1305;
* no compression, no session tickets; the session cookie is ``Secure``.

The refusals themselves (old protocols, weak suites, plain HTTP, idle
connections) are catalogue rows T1-T4.
"""

from __future__ import annotations

import pytest

from saltapi_twisted.sandbox import LIMITED_USER

from .conftest import Api
from .tlsprobe import LOW_SECURITY, hello_answer, local_tls12_suites, negotiated, s_client

EXPECTED_TLS12 = {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"}
EXPECTED_IDS = {0xC02F, 0xC030, 0xCCA8}

#: Every TLS 1.2 suite id worth asking about: the classic range, the ECC range and ChaCha20.
SUITE_IDS = [*range(0x0001, 0x0100), *range(0xC001, 0xC0B0), *range(0xCCA8, 0xCCAF)]


@pytest.fixture
def tls(tls_api: Api) -> Api:
    return tls_api


def test_protocols_are_tls12_and_tls13_only(tls: Api) -> None:
    for option, expected in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        code, output = s_client(tls.port, option)
        result = negotiated(output)
        assert code == 0 and result is not None and result[0] == expected, output[-800:]
    for option in ("-tls1", "-tls1_1"):
        _code, output = s_client(tls.port, option, "-cipher", f"DEFAULT:{LOW_SECURITY}")
        assert negotiated(output) is None, output[-800:]
    # SSL 3.0, TLS 1.0 and 1.1 hellos for a suite the server likes: a protocol_version alert each
    for version in (0x0300, 0x0301, 0x0302):
        assert hello_answer(tls.port, 0xC02F, version) in ("alert:70", "alert:40", "closed"), hex(version)


def test_tls12_suites_are_ecdhe_aead_only(tls: Api) -> None:
    """Offer every suite the local OpenSSL has, remove the one chosen, repeat: the accepted set."""
    remaining = local_tls12_suites()
    accepted = []
    while remaining:
        _code, output = s_client(tls.port, "-tls1_2", "-cipher", ":".join(remaining) + f":{LOW_SECURITY}")
        result = negotiated(output)
        if result is None:
            break
        assert result[0] == "TLSv1.2", output[-800:]
        accepted.append(result[1])
        remaining.remove(result[1])
    assert set(accepted) == EXPECTED_TLS12, accepted
    for name in accepted:  # and each one alone, as s_client -cipher per suite
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
        code, output = s_client(tls.port, "-tls1_2", "-cipher", name)
        assert code == 0 and negotiated(output) == ("TLSv1.2", name), output[-800:]


def test_every_tls12_suite_id_the_server_accepts(tls: Api) -> None:
    """Independent of the local OpenSSL: one hand-made hello per suite id."""
    accepted = {suite for suite in SUITE_IDS if hello_answer(tls.port, suite) == "server_hello"}
    assert accepted == EXPECTED_IDS, sorted(hex(s) for s in accepted)


def test_no_compression_no_session_ticket(tls: Api) -> None:
    code, output = s_client(tls.port, "-tls1_2")
    assert code == 0, output[-800:]
    assert "Compression: NONE" in output
    assert "TLS session ticket:" not in output, output[-800:]


def test_session_cookie_is_secure_over_tls(tls: Api) -> None:
    response = tls.post("/login", json={"username": LIMITED_USER[0], "password": LIMITED_USER[1], "eauth": "file"})
    assert response.status_code == 200, response.text
    cookie = response.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Secure"):
        assert attribute in cookie, cookie
