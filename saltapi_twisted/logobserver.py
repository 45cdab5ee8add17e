"""Log observers: the block's ``log_format`` and ``debug``, and ``twistd --logger``.

Unless ``twistd --logger`` or ``--syslog`` is given, the service installs its
own observer: text (Twisted's usual lines) or ``log_format: json`` (one JSON
object per line, for journald or a log shipper), at INFO and above, or DEBUG
and above with ``debug: True``. It writes where twistd would: ``--logfile``
(rotated as twistd rotates it), else standard output with ``-n``, else
``twistd.log``.

``twistd --logger=saltapi_twisted.logobserver.json_observer …`` still works
(JSON lines on standard output, INFO and above).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)


def _filtered(observer: Any, debug: bool) -> ILogObserver:
    level = LogLevel.debug if debug else LogLevel.info
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])


def json_observer() -> Any:
    """JSON lines on standard output, INFO and above."""
    return _filtered(jsonFileLogObserver(sys.stdout), debug=False)


def json_debug_observer() -> Any:
    """JSON lines on standard output, DEBUG and above."""
    return _filtered(jsonFileLogObserver(sys.stdout), debug=True)


def log_destination(logfile: str | None, nodaemon: bool) -> IO[str]:
    """Where twistd would write: ``--logfile``, else stdout with ``-n``, else ``twistd.log``."""
    if logfile == "-" or (not logfile and nodaemon):
        return sys.stdout
    from twisted.python.logfile import LogFile

    return LogFile.fromFullPath(logfile or "twistd.log")


def configured_observer(log_format: str, debug: bool, destination: IO[str]) -> ILogObserver:
    """The observer for the block's ``log_format`` and ``debug``."""
    if log_format == "json":
        return _filtered(jsonFileLogObserver(destination), debug)
    return _filtered(textFileLogObserver(destination), debug)
