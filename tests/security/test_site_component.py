"""The site's connection handling, in memory (no master): the fixes behind W9, E3 and C11.

* a connection handed over to another protocol (a websocket upgrade) gives
  its place under ``max_connections``/``max_connections_per_ip`` back when
  the *connection* closes (before: never, so one peer's 1,000 websockets
  over time locked it out for good, and 10,000 locked everyone out);
* the header deadline of an idle keep-alive connection closes it gracefully,
  and only starts once the previous response is out (before: an abort that
  cut a slow reader's response, an SSE stream's ``: overflow`` included);
* a request line or header line over 16 KiB gets a 431 with the JSON error
  body (before: Twisted closed the connection without an answer).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from saltapi_twisted.web.site import ApiSite

PEER = IPv4Address("TCP", "10.0.0.7", 40000)
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Ok(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 - twisted.web's name
        return b"ok"


class TcpLikeTransport(StringTransport):
    """A string transport that, like ``tcp.Connection``, reports the end to its current protocol."""

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        self.protocol.connectionLost(reason)


def make_site(**limits: Any) -> tuple[ApiSite, MemoryReactorClock]:
    config = SimpleNamespace(
        request_header_timeout=2.0,
        request_body_timeout=3.0,
        max_request_body_size=1024,
        max_connections=100,
        max_connections_per_ip=2,
        trusted_proxies=(),
    )
    for key, value in limits.items():
        setattr(config, key, value)
    clock = MemoryReactorClock()
    return ApiSite(Ok(), config, reactor=clock), clock


def connect(site: ApiSite) -> tuple[Any, TcpLikeTransport]:
    channel = site.buildProtocol(PEER)
    assert channel is not None
    transport = TcpLikeTransport(peerAddress=PEER)
    transport.protocol = channel
    channel.makeConnection(transport)
    return channel, transport


def test_a_handed_over_connection_gives_its_place_back_when_it_closes() -> None:
    site, _clock = make_site()
    channel, transport = connect(site)
    connect(site)
    assert site.open_connections == 2 and site.per_ip["10.0.0.7"] == 2
    assert site.buildProtocol(PEER) is None  # the peer is at its cap
    # what autobahn's WebSocketResource does on an upgrade
    channel.transport = None
    websocket = Protocol()
    transport.protocol = websocket
    websocket.makeConnection(transport)
    assert site.per_ip["10.0.0.7"] == 2  # an open websocket still counts
    transport.connectionLost(Failure(ConnectionDone()))
    assert site.open_connections == 1 and site.per_ip["10.0.0.7"] == 1
    assert site.buildProtocol(PEER) is not None


def test_a_normal_close_is_counted_once() -> None:
    site, _clock = make_site()
    _channel, transport = connect(site)
    transport.connectionLost(Failure(ConnectionDone()))
    assert site.open_connections == 0 and "10.0.0.7" not in site.per_ip


def test_idle_keep_alive_connection_is_closed_gracefully() -> None:
    site, clock = make_site()
    channel, transport = connect(site)
    channel.dataReceived(GET)
    assert transport.value().startswith(b"HTTP/1.1 200")
    clock.advance(1.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting and not transport.disconnected  # loseConnection, not an abort


def test_slow_headers_are_aborted() -> None:
    site, clock = make_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    clock.advance(2.1)
    assert transport.disconnected


def test_the_next_deadline_starts_once_the_response_is_out() -> None:
    site, clock = make_site()
    channel, transport = connect(site)
    channel.pauseProducing()  # the transport's buffer is full: the response is still going out
    channel.dataReceived(GET)
    clock.advance(10)
    assert not transport.disconnecting
    channel.resumeProducing()  # drained
    clock.advance(2.1)
    assert transport.disconnecting and not transport.disconnected


def test_an_overlong_header_line_gets_431_with_the_json_body() -> None:
    site, _clock = make_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    head, _sep, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"Content-Type: application/json" in head and b"X-Content-Type-Options: nosniff" in head
    assert set(json.loads(body)) == {"status", "error", "return"}
    assert transport.disconnecting
