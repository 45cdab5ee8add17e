"""Table tests for saltapi_twisted.endpoints: listener descriptions and TLS options.

The TLS handshakes run in memory (pyOpenSSL connections pumped through their
memory BIOs, and Twisted's ``iosim`` for :func:`wrap_tls`), so no reactor and
no socket is involved.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import trustme
from OpenSSL import SSL
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient

from saltapi_twisted.config import ApiConfig, ConfigError, MasterSettings
from saltapi_twisted.endpoints import (
    certificate_warnings,
    default_interface,
    ipv6_available,
    listener_descriptions,
    listener_warnings,
    tls_options,
    uses_tls_wrapping,
    wrap_tls,
)

UTC = datetime.UTC
RSA = trustme.KeyType.RSA


def make_config(**values: Any) -> ApiConfig:
    values.setdefault("port", 8000)
    return ApiConfig(master=MasterSettings(), block_name="rest_tornado", **values)


# --------------------------------------------------------------------------
# Certificates


@dataclasses.dataclass
class Pki:
    ca: trustme.CA
    dir: Path
    crt: str  # leaf only
    key: str
    chain: str  # the intermediate CA
    bundle: str  # leaf + key + intermediate in one file
    other_key: str  # a key that matches nothing
    expired_crt: str
    expired_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = trustme.CA(key_type=RSA)
    intermediate = root.create_child_ca(key_type=RSA)
    leaf = intermediate.issue_cert("localhost", "127.0.0.1", "::1", key_type=RSA)
    other = intermediate.issue_cert("other.example", key_type=RSA)
    now = datetime.datetime.now(UTC)
    expired = intermediate.issue_cert(
        "localhost",
        key_type=RSA,
        not_before=now - datetime.timedelta(days=60),
        not_after=now - datetime.timedelta(days=30),
    )
    directory = tmp_path_factory.mktemp("pki")

    def write(name: str, *blobs: trustme.Blob) -> str:
        path = directory / name
        path.write_bytes(b"".join(blob.bytes() for blob in blobs))
        path.chmod(0o600)
        return str(path)

    return Pki(
        ca=root,
        dir=directory,
        crt=write("crt.pem", leaf.cert_chain_pems[0]),
        key=write("key.pem", leaf.private_key_pem),
        chain=write("chain.pem", *leaf.cert_chain_pems[1:]),
        bundle=write("bundle.pem", leaf.cert_chain_pems[0], leaf.private_key_pem, *leaf.cert_chain_pems[1:]),
        other_key=write("other-key.pem", other.private_key_pem),
        expired_crt=write("expired.pem", expired.cert_chain_pems[0]),
        expired_key=write("expired-key.pem", expired.private_key_pem),
    )


# --------------------------------------------------------------------------
# Listener descriptions


@pytest.mark.parametrize(
    ("values", "ipv6", "expected"),
    [
        pytest.param({"address": "127.0.0.1"}, True, "tcp:port=8000:interface=127.0.0.1:backlog=128", id="ipv4"),
        pytest.param({"address": "0.0.0.0"}, True, "tcp:port=8000:interface=0.0.0.0:backlog=128", id="ipv4-any"),
        pytest.param({"address": "::1"}, True, r"tcp:port=8000:interface=\:\:1:backlog=128", id="ipv6-loopback"),
        pytest.param(
            {"address": "2001:db8::17"}, True, r"tcp:port=8000:interface=2001\:db8\:\:17:backlog=128", id="ipv6"
        ),
        pytest.param({}, True, r"tcp:port=8000:interface=\:\::backlog=128", id="unset-dual-stack"),
        pytest.param({}, False, "tcp:port=8000:interface=0.0.0.0:backlog=128", id="unset-no-ipv6"),
        pytest.param({"address": "::1"}, False, r"tcp:port=8000:interface=\:\:1:backlog=128", id="explicit-wins"),
        pytest.param(
            {"address": "127.0.0.1", "backlog": 1024, "port": 443},
            True,
            "tcp:port=443:interface=127.0.0.1:backlog=1024",
            id="backlog",
        ),
        pytest.param(
            {"address": "127.0.0.1", "disable_ssl": True},
            True,
            "tcp:port=8000:interface=127.0.0.1:backlog=128",
            id="disable_ssl-same-description",
        ),
    ],
)
def test_listener_descriptions(values: dict[str, Any], ipv6: bool, expected: str) -> None:
    assert listener_descriptions(make_config(**values), ipv6=ipv6) == [expected]


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "::1", "::", "fe80::1"])
def test_descriptions_listen_as_configured(address: str) -> None:
    """Twisted parses our description back to the configured port, backlog and interface."""
    reactor = MemoryReactor()
    (description,) = listener_descriptions(make_config(address=address, backlog=77, port=4430), ipv6=True)
    serverFromString(reactor, description).listen(Factory.forProtocol(Protocol))
    ((port, _factory, backlog, interface),) = reactor.tcpServers
    assert (port, backlog, interface) == (4430, 77, address)


def test_listener_description_probes_ipv6_when_not_told() -> None:
    (description,) = listener_descriptions(make_config())
    expected = quoteStringArgument(default_interface(ipv6_available()))
    assert description == f"tcp:port=8000:interface={expected}:backlog=128"


def test_default_interface() -> None:
    assert default_interface(True) == "::"
    assert default_interface(False) == "0.0.0.0"


def test_ipv6_available_matches_a_real_socket() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
        expected = True
    except OSError:
        expected = False
    assert ipv6_available() is expected


def test_ipv6_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ipv6(*args: Any, **kwargs: Any) -> socket.socket:
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(socket, "socket", no_ipv6)
    assert ipv6_available() is False


@pytest.mark.parametrize(
    "endpoints",
    [
        pytest.param(("tcp:8000:interface=127.0.0.1",), id="tcp"),
        pytest.param((r"tcp6:port=8000:interface=\:\:1",), id="tcp6"),
        pytest.param(("ssl:8443:privateKey=key.pem:certKey=crt.pem",), id="ssl"),
        pytest.param(("unix:/run/salt-api.sock:mode=660",), id="unix"),
        pytest.param(("systemd:domain=INET6:index=0",), id="systemd"),
        pytest.param(("unix:/run/a.sock", "tcp:8000:interface=127.0.0.1"), id="several"),
    ],
)
def test_explicit_endpoints_pass_through(endpoints: tuple[str, ...]) -> None:
    config = make_config(endpoints=endpoints, address="10.0.0.1", port=1)
    assert listener_descriptions(config, ipv6=True) == list(endpoints)
    assert uses_tls_wrapping(config) is False


@pytest.mark.parametrize(
    "bad",
    [
        "8000",
        "tls:8000",
        "TCP:8000",
        "le:/var/lib/le:tcp:443",
        "tcp:",
        "",
        "tcp:8000\ninterface=0.0.0.0",
    ],
)
def test_bad_endpoint_refused(bad: str) -> None:
    config = make_config(endpoints=("tcp:8000", bad))
    with pytest.raises(ConfigError) as caught:
        listener_descriptions(config, ipv6=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "rest_tornado: endpoints:" in message
    assert repr(bad) in message


@pytest.mark.parametrize(
    ("values", "wrapped"),
    [
        ({}, True),
        ({"disable_ssl": True}, False),
        ({"endpoints": ("tcp:8000",)}, False),
        ({"endpoints": ("ssl:8443:privateKey=k:certKey=c",)}, False),
    ],
)
def test_uses_tls_wrapping(values: dict[str, Any], wrapped: bool) -> None:
    assert uses_tls_wrapping(make_config(**values)) is wrapped


def test_listener_warnings() -> None:
    assert listener_warnings(make_config(), ipv6=True) == []
    assert listener_warnings(make_config(address="127.0.0.1"), ipv6=False) == []
    (fallback,) = listener_warnings(make_config(), ipv6=False)
    assert "0.0.0.0 (IPv4 only)" in fallback
    (ssl_warning,) = listener_warnings(
        make_config(endpoints=("ssl:8443:privateKey=k:certKey=c", "unix:/run/a.sock")), ipv6=True
    )
    assert "Twisted's default TLS settings" in ssl_warning


# --------------------------------------------------------------------------
# TLS options: loading


def test_options_from_cert_key_and_chain(pki: Pki) -> None:
    options = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key, ssl_chain=pki.chain))
    assert isinstance(options, CertificateOptions)
    assert len(options.extraCertChain) == 1
    assert options.getContext() is options.getContext()  # built once, cached


def test_key_inside_certificate_file(pki: Pki) -> None:
    options = tls_options(make_config(ssl_crt=pki.bundle))
    # the intermediate after the key in the same file becomes the chain
    assert len(options.extraCertChain) == 1


def test_chain_given_twice_is_sent_once(pki: Pki) -> None:
    options = tls_options(make_config(ssl_crt=pki.bundle, ssl_chain=pki.chain))
    assert len(options.extraCertChain) == 1


def test_paths_with_colons(pki: Pki, tmp_path: Path) -> None:
    directory = tmp_path / "certs:dir"
    directory.mkdir()
    crt = directory / "crt:1.pem"
    key = directory / "key:1.pem"
    shutil.copy(pki.crt, crt)
    shutil.copy(pki.key, key)
    options = tls_options(make_config(ssl_crt=str(crt), ssl_key=str(key)))
    assert options.certificate is not None
    assert quoteStringArgument(str(key)).count(r"\:") == str(key).count(":")


def _one_line(error: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize(
    ("values", "key", "reason"),
    [
        pytest.param({"ssl_crt": None}, "ssl_crt", "missing", id="no-crt"),
        pytest.param({"ssl_crt": "{dir}/nope.pem"}, "ssl_crt", "does not exist", id="crt-missing"),
        pytest.param({"ssl_crt": "{crt}", "ssl_key": "{dir}/nope.pem"}, "ssl_key", "does not exist", id="key-missing"),
        pytest.param(
            {"ssl_crt": "{crt}", "ssl_key": "{key}", "ssl_chain": "{dir}/nope.pem"},
            "ssl_chain",
            "does not exist",
            id="chain-missing",
        ),
        pytest.param({"ssl_crt": "{dir}"}, "ssl_crt", "is a directory", id="crt-is-dir"),
        pytest.param({"ssl_crt": "{key}", "ssl_key": "{key}"}, "ssl_crt", "no PEM certificate", id="crt-is-key"),
        pytest.param({"ssl_crt": "{crt}", "ssl_key": "{crt}"}, "ssl_key", "no PEM private key", id="key-is-crt"),
        pytest.param({"ssl_crt": "{crt}"}, "ssl_crt", "no PEM private key", id="no-key-anywhere"),
        pytest.param({"ssl_crt": "{crt}", "ssl_key": "{other_key}"}, "ssl_key", "does not match", id="mismatched-key"),
        pytest.param(
            {"ssl_crt": "{crt}", "ssl_key": "{key}", "ssl_chain": "{key}"},
            "ssl_chain",
            "no PEM certificate",
            id="chain-not-certs",
        ),
        pytest.param(
            {"ssl_crt": "{crt}", "ssl_key": "{key}", "ssl_ciphers": "NO-SUCH-CIPHER"},
            "ssl_ciphers",
            "selects no usable cipher",
            id="bad-ciphers",
        ),
    ],
)
def test_tls_failures(pki: Pki, values: dict[str, Any], key: str, reason: str) -> None:
    names = {"dir": str(pki.dir), "crt": pki.crt, "key": pki.key, "other_key": pki.other_key}
    values = {k: v.format(**names) if isinstance(v, str) else v for k, v in values.items()}
    with pytest.raises(ConfigError) as caught:
        tls_options(make_config(**values))
    message = _one_line(caught)
    assert f"rest_tornado: {key}:" in message
    assert reason in message
    if values.get(key):
        assert str(values[key]) in message


def test_mismatched_key_inside_certificate_file(pki: Pki, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(Path(pki.crt).read_bytes() + Path(pki.other_key).read_bytes())
    with pytest.raises(ConfigError) as caught:
        tls_options(make_config(ssl_crt=str(bundle)))
    assert "ssl_crt:" in _one_line(caught) and "does not match" in str(caught.value)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a certificate\n", id="text"),
        pytest.param(b"\x00\x01\x02" * 50, id="binary"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", id="bad-base64-body"),
    ],
)
def test_not_pem(pki: Pki, tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "crt.pem"
    path.write_bytes(garbage)
    with pytest.raises(ConfigError) as caught:
        tls_options(make_config(ssl_crt=str(path), ssl_key=pki.key))
    assert f"ssl_crt: {path}:" in _one_line(caught)


def test_encrypted_key_refused(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(pki.key).read_bytes(), password=None)
    path = tmp_path / "enc.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError) as caught:
        tls_options(make_config(ssl_crt=pki.crt, ssl_key=str(path)))
    assert "encrypted" in _one_line(caught)


def test_unreadable_key(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    import saltapi_twisted.endpoints as endpoints

    def denied(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == pki.key:
            raise PermissionError(13, "Permission denied", path)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(endpoints, "open", denied, raising=False)
    with pytest.raises(ConfigError) as caught:
        tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key))
    assert f"ssl_key: {pki.key}: permission denied" in _one_line(caught)


# --------------------------------------------------------------------------
# TLS options: context settings and the cipher policy


def test_context_options(pki: Pki) -> None:
    context = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key)).getContext()
    flags = context.set_options(0)  # returns the current options; no Connection made yet
    for flag in ("OP_NO_COMPRESSION", "OP_NO_TICKET", "OP_NO_RENEGOTIATION", "OP_NO_TLSv1", "OP_NO_TLSv1_1"):
        assert flags & getattr(SSL, flag), flag
    assert not flags & SSL.OP_NO_TLSv1_2


def test_context_options_tls13_only(pki: Pki) -> None:
    context = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key, ssl_min_version="TLSv1.3")).getContext()
    assert context.set_options(0) & SSL.OP_NO_TLSv1_2


def test_cipher_list_is_ecdhe_aead_only(pki: Pki) -> None:
    context = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key)).getContext()
    suites = SSL.Connection(context, None).get_cipher_list()
    tls12 = [name for name in suites if not name.startswith("TLS_")]
    assert tls12, suites
    for name in tls12:
        assert name.startswith("ECDHE-"), name
        assert "GCM" in name or "CHACHA20" in name, name
    assert any(name.startswith("TLS_") for name in suites)  # TLS 1.3 keeps its default suites


def _handshake(
    server_context: SSL.Context, version: int | None = None, ciphers: bytes | None = None
) -> tuple[SSL.Connection, SSL.Connection]:
    """Pump a TLS handshake between a client and the server context in memory.

    :raises SSL.Error: from whichever side gives up first.
    """
    client_context = SSL.Context(SSL.TLS_METHOD)
    if version is not None:
        client_context.set_min_proto_version(version)
        client_context.set_max_proto_version(version)
    if ciphers is not None:
        client_context.set_cipher_list(ciphers)
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    done = {client: False, server: False}
    for _ in range(20):
        for this, peer in ((client, server), (server, client)):
            if not done[this]:
                try:
                    this.do_handshake()
                    done[this] = True
                except SSL.WantReadError:
                    pass
            try:
                data = this.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                peer.bio_write(data)
        if all(done.values()):
            return client, server
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        pytest.param(SSL.TLS1_2_VERSION, b"AES128-GCM-SHA256", id="static-rsa-gcm"),
        pytest.param(SSL.TLS1_2_VERSION, b"AES256-SHA:@SECLEVEL=0", id="static-rsa-cbc"),
        pytest.param(SSL.TLS1_2_VERSION, b"ECDHE-RSA-AES128-SHA256", id="ecdhe-cbc"),
        pytest.param(SSL.TLS1_2_VERSION, b"DHE-RSA-AES128-GCM-SHA256", id="dhe"),
        pytest.param(SSL.TLS1_1_VERSION, b"ALL:@SECLEVEL=0", id="tls1.1"),
        pytest.param(SSL.TLS1_VERSION, b"ALL:@SECLEVEL=0", id="tls1.0"),
    ],
)
def test_weak_clients_refused(pki: Pki, version: int, ciphers: bytes) -> None:
    context = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key)).getContext()
    with pytest.raises(SSL.Error):
        _handshake(context, version, ciphers)


def test_static_rsa_control(pki: Pki) -> None:
    """Twisted's defaults accept static RSA: the refusal above is our cipher policy."""
    ours = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key))
    default = CertificateOptions(privateKey=ours.privateKey, certificate=ours.certificate)
    _client, server = _handshake(default.getContext(), SSL.TLS1_2_VERSION, b"AES128-GCM-SHA256")
    assert server.get_cipher_name() == "AES128-GCM-SHA256"


@pytest.mark.parametrize(
    ("min_version", "client_version", "protocol"),
    [
        ("TLSv1.2", None, "TLSv1.3"),
        ("TLSv1.2", SSL.TLS1_2_VERSION, "TLSv1.2"),
        ("TLSv1.3", SSL.TLS1_3_VERSION, "TLSv1.3"),
    ],
)
def test_good_clients_accepted(pki: Pki, min_version: str, client_version: int | None, protocol: str) -> None:
    context = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key, ssl_min_version=min_version)).getContext()
    _client, server = _handshake(context, client_version)
    assert server.get_protocol_version_name() == protocol
    name = server.get_cipher_name()
    assert name.startswith(("TLS_", "ECDHE-")) and ("GCM" in name or "CHACHA20" in name)


def test_tls13_only_refuses_tls12(pki: Pki) -> None:
    context = tls_options(make_config(ssl_crt=pki.crt, ssl_key=pki.key, ssl_min_version="TLSv1.3")).getContext()
    with pytest.raises(SSL.Error):
        _handshake(context, SSL.TLS1_2_VERSION)


def test_chain_is_sent(pki: Pki) -> None:
    for values in ({"ssl_crt": pki.crt, "ssl_key": pki.key, "ssl_chain": pki.chain}, {"ssl_crt": pki.bundle}):
        client, _server = _handshake(tls_options(make_config(**values)).getContext())
        chain = client.get_peer_cert_chain(as_cryptography=True)
        assert chain is not None and len(chain) == 2


# --------------------------------------------------------------------------
# wrap_tls: a request and its answer through the TLS factory, in memory


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())


class _Collect(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(b"hello")

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def test_wrap_tls_serves_tls(pki: Pki) -> None:
    clock = Clock()
    server_factory = wrap_tls(tls_options(make_config(ssl_crt=pki.bundle)), Factory.forProtocol(_Echo), clock)
    assert isinstance(server_factory, TLSMemoryBIOFactory)
    trust = Certificate.loadPEM(pki.ca.cert_pem.bytes())
    client_factory = TLSMemoryBIOFactory(
        optionsForClientTLS("localhost", trustRoot=trust), True, Factory.forProtocol(_Collect), clock=clock
    )
    server_factory.doStart()
    client_factory.doStart()
    try:
        client, _server, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(None), lambda: client_factory.buildProtocol(None), clock=clock
        )
        pump.flush()
        assert client.wrappedProtocol.received == b"HELLO"
        assert client.getHandle().get_protocol_version_name() in ("TLSv1.2", "TLSv1.3")
    finally:
        client_factory.doStop()
        server_factory.doStop()
    assert clock.getDelayedCalls() == []


# --------------------------------------------------------------------------
# Warnings: expiry, key file permissions, weak cipher strings


def test_no_warnings_for_a_good_setup(pki: Pki) -> None:
    assert certificate_warnings(make_config(ssl_crt=pki.crt, ssl_key=pki.key, ssl_chain=pki.chain)) == []
    assert certificate_warnings(make_config(ssl_crt=pki.bundle)) == []


def test_no_warnings_without_tls(pki: Pki) -> None:
    assert certificate_warnings(make_config(disable_ssl=True, ssl_crt=pki.expired_crt)) == []


def test_expired_certificate_loads_and_warns(pki: Pki) -> None:
    config = make_config(ssl_crt=pki.expired_crt, ssl_key=pki.expired_key)
    tls_options(config)  # starts anyway
    (warning,) = certificate_warnings(config)
    assert "ssl_crt: certificate expired on " in warning
    assert pki.expired_crt in warning and "\n" not in warning


def test_not_yet_valid_and_chain_expiry(pki: Pki) -> None:
    config = make_config(ssl_crt=pki.crt, ssl_key=pki.key, ssl_chain=pki.chain)
    far_future = datetime.datetime(3001, 1, 1, tzinfo=UTC)  # trustme certificates end in 3000
    warnings = certificate_warnings(config, now=far_future)
    assert len(warnings) == 2
    assert "ssl_crt: certificate expired on" in warnings[0]
    assert "ssl_chain: chain certificate" in warnings[1] and "expired on" in warnings[1]
    past = datetime.datetime(1970, 1, 2, tzinfo=UTC)
    assert any("is not valid before" in w for w in certificate_warnings(config, now=past))


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o600, False), (0o400, False), (0o640, True), (0o604, True), (0o644, True), (0o620, False)],
)
def test_key_readable_by_others(pki: Pki, tmp_path: Path, mode: int, warned: bool) -> None:
    key = tmp_path / "key.pem"
    shutil.copy(pki.key, key)
    key.chmod(mode)
    warnings = certificate_warnings(make_config(ssl_crt=pki.crt, ssl_key=str(key)))
    expected = [f"ssl_key: {key} is readable by other users (mode {mode:04o})"]
    assert [w.split("rest_tornado: ", 1)[1] for w in warnings] == (expected if warned else [])


def test_key_inside_readable_certificate_file(pki: Pki, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    shutil.copy(pki.bundle, bundle)
    bundle.chmod(0o644)
    (warning,) = certificate_warnings(make_config(ssl_crt=str(bundle)))
    assert f"ssl_crt: {bundle} holds the private key and is readable by other users" in warning


def test_key_owned_by_another_user(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "key.pem"
    shutil.copy(pki.key, key)
    key.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(key, 4242, -1)
        owner = 4242
    else:
        owner = key.stat().st_uid
        monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)
    (warning,) = certificate_warnings(make_config(ssl_crt=pki.crt, ssl_key=str(key)))
    assert f"ssl_key: {key} is owned by uid {owner}, neither root nor the API's user" in warning


def test_root_owned_key_is_fine(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    real_stat = os.stat

    def root_owned(path: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_stat(path, *args, **kwargs)
        if str(path) != pki.key:
            return result
        fields = list(result)
        fields[4] = 0  # st_uid
        return os.stat_result(fields)

    monkeypatch.setattr(os, "stat", root_owned)
    monkeypatch.setattr(os, "geteuid", lambda: 4343)
    assert certificate_warnings(make_config(ssl_crt=pki.crt, ssl_key=pki.key)) == []


def test_weak_cipher_string_warns(pki: Pki) -> None:
    config = make_config(ssl_crt=pki.crt, ssl_key=pki.key, ssl_ciphers="ECDHE+AESGCM:AES256-SHA")
    tls_options(config)
    (warning,) = certificate_warnings(config)
    assert "ssl_ciphers:" in warning and "AES256-SHA" in warning and "ECDHE-RSA-AES128-GCM" not in warning
