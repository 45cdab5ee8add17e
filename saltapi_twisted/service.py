"""The service: master link, event bus, web site and listeners, in order.

Start: the request channel's sockets and the event bus connection are made
first (the API serves ``GET /`` and ``/health`` at once even while the master
is down, and master features as soon as it appears), then the listeners are
bound; a bind failure aborts start-up.

Stop: stop listening, end the open streams, fail what still waits on the
master, then close the bus and the ZeroMQ sockets.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.logger import Logger

from .auth import Authenticator
from .clients import ClientRunner
from .config import ApiConfig, ConfigError
from .endpoints import listener_plan, listener_warnings, tls_options, wrap_tls
from .master.client import MasterClient
from .master.eventbus import EventBus
from .master.eventfire import EventFirer
from .master.exceptions import MasterUnavailable
from .master.reqclient import RequestChannel
from .web.site import build_site
from .workers import AdoptedPort, InheritedSocket

#: Seconds between health pings of the request channel.
PING_INTERVAL = 5.0
#: While the event bus is down, requests in flight this long are failed (503).
STALE_WHILE_DOWN = 2.0


def salt_version(config: ApiConfig) -> str | None:
    """The ``X-Salt-Version`` value: the block's key, else the installed Salt's version."""
    if config.salt_version_header is not None:
        return config.salt_version_header or None
    try:
        return importlib.metadata.version("salt")
    except importlib.metadata.PackageNotFoundError:
        return None


def bus_endpoints(reactor: Any, config: ApiConfig) -> tuple[Any, Any]:
    """Client endpoints of the master's event publisher and puller."""
    master = config.master
    if master.ipc_mode == "tcp":
        return (
            TCP4ClientEndpoint(reactor, "127.0.0.1", master.tcp_master_pub_port, timeout=5),
            TCP4ClientEndpoint(reactor, "127.0.0.1", master.tcp_master_pull_port, timeout=5),
        )
    return (
        UNIXClientEndpoint(reactor, os.path.join(master.sock_dir, "master_event_pub.ipc"), timeout=5),
        UNIXClientEndpoint(reactor, os.path.join(master.sock_dir, "master_event_pull.ipc"), timeout=5),
    )


class ReactorLag:
    """Measures how late the reactor runs a 50 ms timer (the worst delay a request sees)."""

    INTERVAL = 0.05

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock
        self._last: float | None = None
        self.max_lag = 0.0
        self.recent_max = 0.0
        self._window_started = 0.0

    def _tick(self) -> None:
        now = self._clock.seconds()
        if self._last is not None:
            lag = max(0.0, now - self._last - self.INTERVAL)
            self.max_lag = max(self.max_lag, lag)
            if now - self._window_started > 60:
                self._window_started = now
                self.recent_max = lag
            else:
                self.recent_max = max(self.recent_max, lag)
        self._last = now

    def start(self) -> None:
        self._window_started = self._clock.seconds()
        self._loop.start(self.INTERVAL, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()


class SaltApiService(MultiService):
    """Owns every long-lived part of the API.

    :param config: the API configuration.
    :param reactor: the reactor (time, TCP, UNIX).
    :param zmq_factory: the txZMQ factory.
    :param listen: endpoint descriptions replacing the configured listeners.
    :param adopted: listening sockets inherited from the supervisor (a worker
        of ``processes: N``); then nothing is bound here.
    :param worker: this worker's number (1..N), None when running alone.
    """

    _log = Logger()

    def __init__(
        self,
        config: ApiConfig,
        reactor: Any,
        zmq_factory: Any,
        listen: list[str] | None = None,
        adopted: list[InheritedSocket] | None = None,
        worker: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.zmq_factory = zmq_factory
        self.channel = RequestChannel(
            zmq_factory,
            config.master.request_address,
            reactor,
            pool_size=config.master_pool_size,
            timeout=config.master_request_timeout,
        )
        self.master = MasterClient(self.channel)
        pub, pull = bus_endpoints(reactor, config)
        self.bus = EventBus(pub, reactor)
        self.firer = EventFirer(pull, reactor)
        self.auth = Authenticator(self.master, config.master.token_length, config.token_cache_seconds)
        self.runner = ClientRunner(self.master, self.bus, reactor, config)
        self.worker = worker
        self.site, self.api = build_site(self, salt_version(config))
        self.lag = ReactorLag(reactor)
        self.api.lag = self.lag
        self._ping_in_flight = False
        self._pinger = task.LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._stale_check = task.LoopingCall(self._fail_stale)
        self._stale_check.clock = reactor
        self._unsubscribe = self.bus.subscribe(lambda tag, data: None, self._bus_state)

        if not listen and adopted is None:
            for warning in listener_warnings(config):
                self._log.warn("{warning}", warning=warning)
        if adopted is not None:
            self._adopt(adopted)
            return
        descriptions = listener_plan(config, listen)
        factory_tls = tls_options(config) if any(tls for _d, tls in descriptions) else None
        for description, tls in descriptions:
            factory = self._site_factory(tls, factory_tls)
            try:
                service = strports.service(description, factory, reactor=reactor)
            except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
                raise ConfigError(f"cannot listen on {description!r}: {exc or type(exc).__name__}") from None
            service.setServiceParent(self)

    def _adopt(self, adopted: list[InheritedSocket]) -> None:
        """Serve on listening sockets a supervisor bound (``processes: N``)."""
        factory_tls = tls_options(self.config) if any(s.tls for s in adopted) else None
        for inherited in adopted:
            AdoptedPort(self.reactor, inherited, self._site_factory(inherited.tls, factory_tls)).setServiceParent(self)

    def _site_factory(self, tls: bool, factory_tls: Any) -> Any:
        """The site, wrapped in our TLS when the listener wants it."""
        return wrap_tls(factory_tls, self.site, clock=self.reactor) if tls and factory_tls else self.site

    def _bus_state(self, up: bool) -> None:
        if up:
            # The master is back (or newly up): check the request channel now.
            self._ping(force=True)
            if self._stale_check.running:
                self._stale_check.stop()
        else:
            # The bus lives in the master process: when it drops, the master
            # went away, and replies to requests in flight will never come.
            self.channel.fail_inflight(MasterUnavailable("The Salt master went away"))
            # While it is down, a request the stopping master took is not
            # answered either: fail it after STALE_WHILE_DOWN, not at its deadline.
            if not self._stale_check.running and self.running:
                self._stale_check.start(0.5, now=False)

    def _fail_stale(self) -> None:
        self.channel.fail_stale(
            STALE_WHILE_DOWN, MasterUnavailable("The Salt master went away (its event bus is down) and did not answer")
        )

    def _ping(self, force: bool = False) -> Any:
        """Keep the request channel's health fresh: a ping when it is idle or failing.

        Runs every second; a healthy channel used within ``PING_INTERVAL``
        is left alone, a failing one is probed every second so recovery is
        seen within a second or two of the master's return.
        """
        if not force and self.channel.recently_ok(self.reactor.seconds(), window=PING_INTERVAL):
            return None
        if self._ping_in_flight and not force:
            return None
        self._ping_in_flight = True
        d = defer.ensureDeferred(self.master.ping(timeout=2.0))
        d.addErrback(lambda _failure: None)
        d.addBoth(self._ping_done)
        return None

    def _ping_done(self, _result: Any) -> None:
        self._ping_in_flight = False

    def startService(self) -> None:  # noqa: N802 - Twisted hook
        """Connect to the master, then bind the listeners."""
        self.channel.warm_up()
        self.bus.start()
        self.firer.start()
        self._pinger.start(1.0, now=True)
        self.api.hub.start()
        self.lag.start()
        super().startService()
        self._log.info(
            "saltapi_twisted serving the master at {address} (event bus in {sock_dir})",
            address=self.config.master.request_address,
            sock_dir=self.config.master.sock_dir,
        )

    async def _stop(self) -> None:
        self.api.shutting_down = True
        await defer.DeferredList([defer.maybeDeferred(s.stopService) for s in list(self)])
        Service.stopService(self)
        await self.api.close_streams()
        if self._pinger.running:
            self._pinger.stop()
        if self._stale_check.running:
            self._stale_check.stop()
        self.lag.stop()
        self.channel.close()
        self._unsubscribe()
        await defer.DeferredList([defer.maybeDeferred(self.bus.stop), defer.maybeDeferred(self.firer.stop)])
        self.zmq_factory.shutdown()

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802 - Twisted hook
        """Stop listening, end streams, close the master link."""
        return defer.ensureDeferred(self._stop())
