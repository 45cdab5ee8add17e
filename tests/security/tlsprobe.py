"""TLS probes: ``openssl s_client`` runs and hand-made ClientHellos.

The hand-made hello offers exactly one cipher suite, whatever the local
OpenSSL still supports (Debian's OpenSSL 3 can no longer offer RC4 or 3DES),
so the server's own decision is what is tested.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess

#: ``openssl`` options that let the client offer what its default security level forbids.
LOW_SECURITY = "@SECLEVEL=0"

# signature_algorithms: rsa_pkcs1_sha256/384, rsa_pss_rsae_sha256, ecdsa_secp256r1_sha256, rsa_pkcs1_sha1
_SIGALGS = b"\x04\x01\x05\x01\x08\x04\x04\x03\x02\x01"
_GROUPS = b"\x00\x1d\x00\x17\x00\x18"  # x25519, secp256r1, secp384r1


def s_client(port: int, *options: str, timeout: float = 20) -> tuple[int, str]:
    """``openssl s_client`` against 127.0.0.1:*port*: its exit code and output."""
    result = subprocess.run(  # noqa: S603
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *options],  # noqa: S607
        input=b"",
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).decode("utf-8", "replace")


def negotiated(output: str) -> tuple[str, str] | None:
    """``(protocol, cipher)`` of a completed ``s_client`` handshake, or None."""
    match = re.search(r"^New, (\S+), Cipher is (\S+)", output, re.MULTILINE)
    if match is None or match.group(1) == "(NONE)" or match.group(2) == "(NONE)":
        return None
    return match.group(1).rstrip(","), match.group(2)


def local_tls12_suites() -> list[str]:
    """Every TLS 1.2 suite the local OpenSSL can offer (at security level 0)."""
    result = subprocess.run(  # noqa: S603
        ["openssl", "ciphers", "-s", "-tls1_2", f"ALL:COMPLEMENTOFALL:{LOW_SECURITY}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in result.stdout.strip().split(":") if name and not name.startswith("TLS_")]


def client_hello(suite: int, version: int = 0x0303) -> bytes:
    """A ClientHello of *version* (TLS 1.2 by default) offering exactly one cipher suite."""
    extensions = (
        b"\x00\x0a" + (len(_GROUPS) + 2).to_bytes(2, "big") + len(_GROUPS).to_bytes(2, "big") + _GROUPS
        + b"\x00\x0b\x00\x02\x01\x00"  # ec_point_formats: uncompressed
        + b"\x00\x0d" + (len(_SIGALGS) + 2).to_bytes(2, "big") + len(_SIGALGS).to_bytes(2, "big") + _SIGALGS
    )
    body = (
        version.to_bytes(2, "big")
        + os.urandom(32)
        + b"\x00"  # no session id
        + b"\x00\x02" + suite.to_bytes(2, "big")
        + b"\x01\x00"  # null compression only
        + len(extensions).to_bytes(2, "big") + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def hello_answer(port: int, suite: int, version: int = 0x0303) -> str:
    """What the server answers a one-suite hello with: ``"server_hello"``, ``"alert:<n>"`` or ``"closed"``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(client_hello(suite, version))
        data = b""
        try:
            while len(data) < 7:
                chunk = sock.recv(7 - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    if len(data) >= 6 and data[0] == 0x16 and data[5] == 0x02:
        return "server_hello"
    if len(data) >= 7 and data[0] == 0x15:
        return f"alert:{data[6]}"
    return "closed"


#: TLS alert descriptions used in the asserts.
HANDSHAKE_FAILURE = "alert:40"
PROTOCOL_VERSION = "alert:70"
