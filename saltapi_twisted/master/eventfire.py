"""Firing events onto the master's bus (``/hook``).

Events go to ``<sock_dir>/master_event_pull.ipc`` (or
``127.0.0.1:tcp_master_pull_port`` with ``ipc_mode: tcp``), each one
length-prefixed. One persistent connection fires every event; it is kept up
by a ``ClientService`` and a fire while it is down fails at once with
:class:`~saltapi_twisted.master.exceptions.BusUnavailable`.
"""

from __future__ import annotations

from datetime import datetime, UTC
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from .exceptions import BusUnavailable
from .framing import frame_for_fire


class _FireProtocol(Protocol):
    def __init__(self, firer: EventFirer) -> None:
        self.firer = firer

    def connectionMade(self) -> None:  # noqa: N802 - Twisted hook
        self.firer.protocol = self

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - the pull side never answers
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted hook
        if self.firer.protocol is self:
            self.firer.protocol = None


class EventFirer:
    """Puts events on the master's bus.

    :param endpoint: the master's pull socket.
    :param clock: time source (reconnect backoff).
    """

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime) -> None:
        factory = Factory.forProtocol(lambda: _FireProtocol(self))
        self._service = ClientService(
            endpoint, factory, retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0, factor=1.6), clock=clock
        )
        self.protocol: _FireProtocol | None = None
        self.fired = 0

    def start(self) -> None:
        """Connect, and keep reconnecting until :meth:`stop`."""
        self._service.startService()

    def stop(self) -> Any:
        """Disconnect."""
        return self._service.stopService()

    @property
    def connected(self) -> bool:
        """Whether events can be fired now."""
        return self.protocol is not None

    def fire(self, tag: str, data: dict[str, Any]) -> None:
        """Fire one event; raises :class:`BusUnavailable` when not connected.

        A ``_stamp`` is added as Salt's own clients do; the master adds none.
        """
        if self.protocol is None or self.protocol.transport is None:
            raise BusUnavailable("The master's event bus is not reachable")
        payload = dict(data)
        payload.setdefault("_stamp", datetime.now(UTC).isoformat())
        self.protocol.transport.write(frame_for_fire(tag, payload))
        self.fired += 1
