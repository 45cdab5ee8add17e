r"""Turn the API block into Twisted listeners and TLS options.

Everything here is a pure function of an :class:`~saltapi_twisted.config.ApiConfig`
(plus the files it names), so the table tests in ``tests/unit/test_endpoints.py``
cover it without a reactor.

Listeners
    The config-derived listener is one ``tcp:`` server endpoint description::

        tcp:port=<port>:interface=<address>:backlog=<backlog>

    Every value goes through :func:`~twisted.internet.endpoints.quoteStringArgument`,
    so ``address: ::1`` becomes ``interface=\:\:1``. With ``address`` unset the
    interface is ``::`` (dual-stack), or ``0.0.0.0`` when this host cannot make an
    IPv6 socket (the caller logs :func:`listener_warnings`). With TLS on (the
    default) the caller wraps the site with :func:`wrap_tls` around
    :func:`tls_options`; see :func:`uses_tls_wrapping`.

    A non-empty ``endpoints:`` list replaces the derived listener and is used as
    written: no TLS wrapping is added, and an ``ssl:`` entry gets Twisted's own TLS
    defaults rather than ``ssl_ciphers``/``ssl_min_version``.

TLS
    ``ssl_crt`` is a PEM file holding the certificate first, then optionally the
    key and chain certificates; ``ssl_key`` (if set) holds the key; ``ssl_chain``
    (if set) holds more chain certificates. The context allows TLS 1.2+ (or 1.3+),
    the ``ssl_ciphers`` TLS 1.2 suites, no compression, no session tickets and no
    renegotiation.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import stat
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from OpenSSL import SSL
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.protocols.tls import TLSMemoryBIOFactory

from saltapi_twisted.config import ApiConfig, ConfigError

#: Endpoint types an ``endpoints:`` entry may use.
ENDPOINT_TYPES = ("tcp:", "tcp6:", "ssl:", "unix:", "systemd:")

#: ``ssl_min_version`` -> the Twisted constant.
TLS_VERSIONS = {
    "TLSv1.2": TLSVersion.TLSv1_2,
    "TLSv1.3": TLSVersion.TLSv1_3,
}

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
    re.DOTALL,
)


# --------------------------------------------------------------------------
# Listeners


def ipv6_available() -> bool:
    """Tell whether this host can bind an IPv6 TCP socket to ``::``.

    :returns: False when the kernel lacks IPv6 or refuses the address.
    """
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
    except OSError:
        return False
    return True


def default_interface(ipv6_ok: bool) -> str:
    """The interface used when ``address`` is unset.

    :param ipv6_ok: whether an IPv6 socket can be made (:func:`ipv6_available`).
    :returns: ``"::"`` (dual-stack) or, without IPv6, ``"0.0.0.0"``.
    """
    return "::" if ipv6_ok else "0.0.0.0"  # noqa: S104 - the documented default: all interfaces  # nosec B104


def _where(config: ApiConfig) -> str:
    return f"{config.master.config_file}: {config.block_name}"


def _checked_endpoint(config: ApiConfig, description: str) -> str:
    printable = description.isprintable()
    if not printable or not description.startswith(ENDPOINT_TYPES) or description in ENDPOINT_TYPES:
        kinds = ", ".join(ENDPOINT_TYPES)
        raise ConfigError(
            f"{_where(config)}: endpoints: {description!r} is not an endpoint description starting with one of {kinds}"
        )
    return description


def listener_descriptions(config: ApiConfig, ipv6: bool | None = None) -> list[str]:
    """The server endpoint descriptions to listen on.

    :param config: the API block.
    :param ipv6: whether IPv6 is available; None probes with :func:`ipv6_available`
        (only when ``address`` is unset).
    :returns: the ``endpoints:`` entries as written, if any, else one ``tcp:``
        description from ``port``, ``address`` and ``backlog``.
    :raises ConfigError: an ``endpoints:`` entry of an unsupported type.
    """
    if config.endpoints:
        return [_checked_endpoint(config, description) for description in config.endpoints]
    interface = config.address
    if interface is None:
        interface = default_interface(ipv6_available() if ipv6 is None else ipv6)
    fields = (("port", config.port), ("interface", interface), ("backlog", config.backlog))
    return ["tcp:" + ":".join(f"{name}={quoteStringArgument(str(value))}" for name, value in fields)]


def listener_warnings(config: ApiConfig, ipv6: bool | None = None) -> list[str]:
    """Warnings about the listeners, for the caller to log at start-up.

    :param config: the API block.
    :param ipv6: as for :func:`listener_descriptions`.
    :returns: one line per warning (IPv4-only fallback, ``ssl:`` entries that do
        not follow ``ssl_ciphers``/``ssl_min_version``).
    """
    warnings: list[str] = []
    if config.endpoints:
        for description in config.endpoints:
            if description.startswith("ssl:"):
                warnings.append(
                    f"{_where(config)}: endpoints: {description!r} uses Twisted's default TLS "
                    "settings; ssl_ciphers and ssl_min_version do not apply to it"
                )
        return warnings
    if config.address is None and not (ipv6_available() if ipv6 is None else ipv6):
        warnings.append(f"{_where(config)}: address: unset and this host has no IPv6; listening on 0.0.0.0 (IPv4 only)")
    return warnings


def listener_plan(config: ApiConfig, listen: list[str] | None = None) -> list[tuple[str, bool]]:
    """What to listen on: (endpoint description, whether we wrap it in our TLS).

    :param config: the API block.
    :param listen: ``--listen`` descriptions, replacing the configured ones.
        Operator-given endpoints get our TLS policy too when a certificate is
        configured (``ssl:`` strings bring their own).
    """
    raw = listen or list(config.endpoints)
    if raw:
        wrap = bool(config.ssl_crt) and not config.disable_ssl
        return [(d, wrap and not d.startswith("ssl:")) for d in raw]
    return [(d, not config.disable_ssl) for d in listener_descriptions(config)]


def uses_tls_wrapping(config: ApiConfig) -> bool:
    """Whether the caller wraps :func:`listener_descriptions` in :func:`wrap_tls`.

    :returns: True for the config-derived listener with TLS on; False with
        ``disable_ssl`` or an ``endpoints:`` list (used as written).
    """
    return config.tls and not config.endpoints


def wrap_tls(
    options: CertificateOptions, factory: IProtocolFactory, clock: IReactorTime | None = None
) -> TLSMemoryBIOFactory:
    """Serve *factory* over TLS, as ``listenSSL`` does inside.

    :param options: from :func:`tls_options`.
    :param factory: the site.
    :param clock: schedules the flush of small TLS writes; the reactor the
        listener runs on (Twisted falls back to the global reactor if None).
    """
    return TLSMemoryBIOFactory(options, False, factory, clock=clock)


# --------------------------------------------------------------------------
# Reading PEM files


def _show(path: str) -> str:
    return path if path.isprintable() else repr(path)


def _fail(config: ApiConfig, key: str, path: str, reason: str) -> ConfigError:
    return ConfigError(f"{_where(config)}: {key}: {_show(path)}: {reason}")


def _read(config: ApiConfig, key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise _fail(config, key, path, "does not exist") from None
    except PermissionError:
        raise _fail(config, key, path, "permission denied") from None
    except IsADirectoryError:
        raise _fail(config, key, path, "is a directory, not a PEM file") from None
    except OSError as exc:
        raise _fail(config, key, path, f"cannot be read ({exc.strerror or exc})") from None


def _certificates(config: ApiConfig, key: str, path: str, data: bytes) -> list[x509.Certificate]:
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1) == b"CERTIFICATE"]
    if not blocks:
        raise _fail(config, key, path, "no PEM certificate found")
    certificates = []
    for number, block in enumerate(blocks, 1):
        try:
            certificates.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise _fail(config, key, path, f"PEM certificate {number} is not a valid certificate") from None
    return certificates


def _private_key(config: ApiConfig, key: str, path: str, data: bytes) -> PrivateKeyTypes:
    blocks = [m for m in _PEM_BLOCK.finditer(data) if m.group(1).endswith(b"PRIVATE KEY")]
    if not blocks:
        raise _fail(config, key, path, "no PEM private key found")
    block = blocks[0]
    if block.group(1) == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block.group(2):
        raise _fail(config, key, path, "the private key is encrypted; a passphrase is not supported")
    try:
        return serialization.load_pem_private_key(block.group(0), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(config, key, path, f"the private key cannot be loaded ({detail})") from None


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_material(
    config: ApiConfig,
) -> tuple[PrivateKeyTypes, x509.Certificate, list[tuple[str, x509.Certificate]]]:
    """Return the key, the leaf certificate and ``(key, certificate)`` chain entries."""
    if not config.ssl_crt:
        raise ConfigError(f"{_where(config)}: ssl_crt: missing; set ssl_crt (and ssl_key) or disable_ssl: True")
    crt_data = _read(config, "ssl_crt", config.ssl_crt)
    certificates = _certificates(config, "ssl_crt", config.ssl_crt, crt_data)
    if config.ssl_key:
        key_name, key_path = "ssl_key", config.ssl_key
        key_data = _read(config, "ssl_key", config.ssl_key)
    else:
        key_name, key_path, key_data = "ssl_crt", config.ssl_crt, crt_data
    private_key = _private_key(config, key_name, key_path, key_data)
    leaf = certificates[0]
    try:
        matches = _public_der(private_key.public_key()) == _public_der(leaf.public_key())
    except (ValueError, TypeError):
        matches = False
    if not matches:
        if key_name == "ssl_key":
            reason = f"the key does not match the certificate in ssl_crt ({_show(config.ssl_crt)})"
        else:
            reason = "the key does not match the first certificate in the file"
        raise _fail(config, key_name, key_path, reason)
    chain = [("ssl_crt", c) for c in certificates[1:]]
    if config.ssl_chain:
        chain_data = _read(config, "ssl_chain", config.ssl_chain)
        chain += [("ssl_chain", c) for c in _certificates(config, "ssl_chain", config.ssl_chain, chain_data)]
    seen = {leaf.fingerprint(hashes.SHA256())}
    unique = []
    for origin, certificate in chain:
        fingerprint = certificate.fingerprint(hashes.SHA256())
        if fingerprint not in seen:
            seen.add(fingerprint)
            unique.append((origin, certificate))
    return private_key, leaf, unique


# --------------------------------------------------------------------------
# TLS options


def tls_options(config: ApiConfig) -> CertificateOptions:
    """Build the server TLS options and prove they load.

    :param config: the API block (``ssl_crt``, ``ssl_key``, ``ssl_chain``,
        ``ssl_ciphers``, ``ssl_min_version``).
    :returns: options whose (cached) context is already built, with
        renegotiation, compression and session tickets off.
    :raises ConfigError: a missing, unreadable or non-PEM file, an encrypted or
        mismatched key, or a cipher string selecting nothing; one line naming
        the key and the path.
    """
    private_key, leaf, chain = _load_material(config)
    # Twisted's annotations say pyOpenSSL PKey/X509, but it hands these straight
    # to pyOpenSSL, which takes cryptography objects (and deprecates its own).
    material: dict[str, Any] = {
        "privateKey": private_key,
        "certificate": leaf,
        "extraCertChain": [certificate for _origin, certificate in chain],
    }
    try:
        ciphers = AcceptableCiphers.fromOpenSSLCipherString(config.ssl_ciphers)
        options = CertificateOptions(
            **material,
            acceptableCiphers=ciphers,
            raiseMinimumTo=TLS_VERSIONS[config.ssl_min_version],
            enableSessionTickets=False,
        )
    except ValueError as exc:
        raise ConfigError(
            f"{_where(config)}: ssl_ciphers: {config.ssl_ciphers!r} selects no usable cipher ({exc})"
        ) from None
    try:
        context = options.getContext()
        context.set_options(SSL.OP_NO_RENEGOTIATION)
    except (SSL.Error, ValueError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        key_path = config.ssl_key or config.ssl_crt or ""
        raise _fail(
            config,
            "ssl_key" if config.ssl_key else "ssl_crt",
            key_path,
            f"the key and certificate cannot be used together ({detail})",
        ) from None
    return options


def _tls12_suites(cipher_string: str) -> list[str]:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_cipher_list(cipher_string.encode("ascii"))
    return [name for name in SSL.Connection(context, None).get_cipher_list() if not name.startswith("TLS_")]


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def certificate_warnings(config: ApiConfig, now: datetime.datetime | None = None) -> list[str]:
    """Problems that do not stop start-up but must be logged as WARNINGs.

    * an expired (or not yet valid) certificate in ``ssl_crt`` or the chain;
    * a private key file readable by group or others, or owned by a user other
      than root and the one running the API (checklist G3);
    * ``ssl_ciphers`` allowing TLS 1.2 suites without ECDHE/DHE or without AEAD.

    Files that cannot be read are skipped here; :func:`tls_options` reports them.

    :param config: the API block.
    :param now: the current time (UTC), for tests.
    :returns: one line per warning; empty with ``disable_ssl`` or without ``ssl_crt``.
    """
    if not config.tls or not config.ssl_crt:
        return []
    now = now or datetime.datetime.now(datetime.UTC)
    warnings: list[str] = []
    try:
        _key, leaf, chain = _load_material(config)
    except ConfigError:
        leaf, chain = None, []
    labelled = ([("ssl_crt", leaf)] if leaf is not None else []) + chain
    for number, (origin, certificate) in enumerate(labelled):
        what = "certificate" if number == 0 else f"chain certificate {certificate.subject.rfc4514_string()!r}"
        path = _show((config.ssl_crt if origin == "ssl_crt" else config.ssl_chain) or "")
        if certificate.not_valid_after_utc < now:
            when = _when(certificate.not_valid_after_utc)
            warnings.append(f"{_where(config)}: {origin}: {what} expired on {when} ({path})")
        elif certificate.not_valid_before_utc > now:
            when = _when(certificate.not_valid_before_utc)
            warnings.append(f"{_where(config)}: {origin}: {what} is not valid before {when} ({path})")

    key_name = "ssl_key" if config.ssl_key else "ssl_crt"
    key_path = config.ssl_key or config.ssl_crt
    try:
        info = os.stat(key_path)
    except OSError:
        info = None
    if info is not None:
        holds = "" if key_name == "ssl_key" else " holds the private key and"
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o044:
            warnings.append(
                f"{_where(config)}: {key_name}: {_show(key_path)}{holds} is readable by other users (mode {mode:04o})"
            )
        if info.st_uid not in (0, os.geteuid()):
            warnings.append(
                f"{_where(config)}: {key_name}: {_show(key_path)}{holds} is owned by uid {info.st_uid}, "
                f"neither root nor the API's user (uid {os.geteuid()})"
            )

    try:
        suites = _tls12_suites(config.ssl_ciphers)
    except (SSL.Error, UnicodeEncodeError):
        suites = []
    weak = [
        name
        for name in suites
        if not name.startswith(("ECDHE-", "DHE-")) or not any(a in name for a in ("GCM", "CHACHA20", "CCM"))
    ]
    if weak:
        warnings.append(
            f"{_where(config)}: ssl_ciphers: {config.ssl_ciphers!r} allows TLS 1.2 suites without forward secrecy "
            f"or AEAD: {', '.join(weak)}"
        )
    return warnings
