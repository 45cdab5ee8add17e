"""``twistd saltapi``: options and ``makeService``.

This is the only module that imports the global reactor and txZMQ (which
imports it too); everything else is handed the reactor.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

_log = Logger(namespace="saltapi_twisted")


class Options(usage.Options):
    """Command-line options of ``twistd saltapi``."""

    synopsis = "[-c /etc/salt/master] [--section rest_twisted] [--listen ENDPOINT ...]"
    longdesc = (
        "Serve the Salt master's REST and streaming API. The master config file (or the "
        "directory holding 'master', as with Salt's -c) is read with its master.d/*.conf "
        "includes; the rest_twisted block is used, else rest_tornado."
    )
    optParameters = [
        ["config", "c", "/etc/salt/master", "The Salt master config file, or the directory holding 'master'."],
        ["section", None, None, "The config block to use (default: rest_twisted, else rest_tornado)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["adopt"] = []
        self["worker"] = None

    def opt_worker(self, index: str) -> None:
        """Internal (processes: N): run as worker INDEX of a supervisor."""
        if not index.isdigit() or not 1 <= int(index) <= 64:
            raise usage.UsageError("--worker: a number from 1 to 64")
        self["worker"] = int(index)

    def opt_adopt(self, description: str) -> None:
        """Internal (processes: N): serve on the inherited listening socket FD:FAMILY:TLS."""
        from .workers import InheritedSocket

        try:
            self["adopt"].append(InheritedSocket.parse(description))
        except ValueError as exc:
            raise usage.UsageError(str(exc)) from None

    def opt_listen(self, description: str) -> None:
        """A Twisted endpoint to listen on (repeatable); replaces the configured listeners."""
        self["listen"].append(description)

    opt_l = opt_listen


def _fail(message: str) -> None:
    sys.stderr.write(f"saltapi: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def makeService(options: Options) -> Any:  # noqa: N802 - twistd's name
    """Load the configuration and build the service (fails before daemonising)."""
    from twisted.internet import reactor

    from .config import ConfigError, load_config
    from .endpoints import certificate_warnings

    try:
        config = load_config(options["config"], options["section"])
    except ConfigError as exc:
        _fail(str(exc))
    for warning in config.warnings:
        _log.warn("{warning}", warning=warning)
    try:
        if config.tls and not options["listen"]:
            for warning in certificate_warnings(config):
                _log.warn("{warning}", warning=warning)
        if config.processes > 1 and options["worker"] is None:
            service = _supervisor(options, config, reactor)
        else:
            service = _api_service(options, config, reactor)
    except ConfigError as exc:
        _fail(str(exc))
    reactor.addSystemEventTrigger("after", "shutdown", _graceful_exit, reactor)
    return ApiRoot(service, _observer(options, config))


def _api_service(options: Options, config: Any, reactor: Any) -> Any:
    """The API itself: alone, or as worker ``--worker I`` on ``--adopt`` sockets."""
    from txzmq import ZmqFactory

    from .service import SaltApiService

    factory = ZmqFactory()
    factory.reactor = reactor
    factory.registerForShutdown()
    worker = options["worker"]
    adopted = options["adopt"] if worker is not None else None
    service = SaltApiService(config, reactor, factory, listen=options["listen"] or None, adopted=adopted, worker=worker)
    if worker is not None:
        from .workers import connect_control

        connect_control(reactor, service.auth)
    return service


def _supervisor(options: Options, config: Any, reactor: Any) -> Any:
    """``processes: N``: bind the listeners, run N workers."""
    import os

    from .workers import WorkerSupervisor, worker_command_line

    twistd = getattr(options, "parent", None) or {}
    command = worker_command_line(os.path.abspath(options["config"]), options["section"], dict(twistd))
    return WorkerSupervisor(config, reactor, command, listen=options["listen"] or None)


def _observer(options: Options, config: Any) -> Any:
    """Our log observer, unless ``--logger`` or ``--syslog`` chose one."""
    twistd = getattr(options, "parent", None) or {}
    if twistd.get("logger") or twistd.get("syslog"):
        return None
    from .logobserver import configured_observer, log_destination

    destination = log_destination(twistd.get("logfile"), bool(twistd.get("nodaemon")))
    return configured_observer(config.log_format, config.debug, destination)


class ApiRoot(MultiService):
    """The service twistd runs: installs our log observer on the application.

    :param service: the API (or the worker supervisor).
    :param observer: the log observer, or None to leave twistd's.
    """

    def __init__(self, service: Any, observer: Any) -> None:
        super().__init__()
        self.observer = observer
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> Any:  # noqa: N802 - Twisted's name
        if self.observer is not None and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            parent.setComponent(ILogObserver, self.observer)
        return super().setServiceParent(parent)


def _graceful_exit(reactor: Any) -> None:
    """Exit 0 after a graceful stop on SIGTERM.

    twistd re-raises the signal that stopped the reactor so the exit status
    names it; a service manager asking us to stop with SIGTERM gets a clean
    exit code instead once the shutdown completed.
    """
    import signal

    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None
