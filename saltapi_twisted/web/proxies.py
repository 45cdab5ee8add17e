"""The client behind a reverse proxy: ``X-Forwarded-For`` and ``-Proto``.

Both headers are believed only when the TCP peer is one of the configured
``trusted_proxies`` (addresses or networks). Then the client's address is the
right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy, and
the scheme is the right-most ``X-Forwarded-Proto`` value (the one our trusted
peer set). Anyone else's forwarding headers are ignored: the TCP peer is the
client.

That address is the one logs, rate limits and the CSRF check see.
Connection caps count TCP peers (the proxy's connections).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Forwarded entries looked at, at most (a longer chain is cut from the left).
MAX_HOPS = 32


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` entries as networks (a bare address is a /32 or /128).

    :raises ValueError: an entry that is neither an address nor a network.
    """
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _values(request: Any, name: bytes) -> list[str]:
    raw = request.requestHeaders.getRawHeaders(name) or []
    values: list[str] = []
    for line in raw:
        text = line.decode("latin-1") if isinstance(line, bytes) else str(line)
        values.extend(part.strip() for part in text.split(","))
    return values[-MAX_HOPS:]


class TrustedProxies:
    """Which peers may tell us who the client is.

    :param entries: the ``trusted_proxies`` key (addresses or CIDR networks).
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks = parse_networks(entries)

    def trusts(self, address: Address | None) -> bool:
        """Whether *address* is a trusted proxy."""
        return address is not None and any(address in network for network in self.networks)

    def _peer(self, request: Any) -> tuple[str, Address | None]:
        peer = request.getClientAddress()
        host = str(getattr(peer, "host", "unix"))
        return host, _address(host)

    def client_ip(self, request: Any) -> str:
        """The client's address: the TCP peer, or what trusted proxies say."""
        cached = getattr(request, "_saltapi_client_ip", None)
        if cached is not None:
            return str(cached)
        host, peer = self._peer(request)
        client = host
        if self.networks and self.trusts(peer):
            for entry in reversed(_values(request, b"x-forwarded-for")):
                address = _address(entry)
                if address is None:
                    break  # a malformed hop: believe nothing further left
                client = str(address)
                if not self.trusts(address):
                    break
        request._saltapi_client_ip = client
        return client

    def is_secure(self, request: Any) -> bool:
        """Whether the client talks to us over TLS (directly, or to a trusted proxy)."""
        if self.networks and self.trusts(self._peer(request)[1]):
            values = [v.lower() for v in _values(request, b"x-forwarded-proto") if v]
            if values and values[-1] in ("http", "https"):
                return values[-1] == "https"
        return bool(request.isSecure())
