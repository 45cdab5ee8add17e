"""Log observers for ``twistd --logger``.

``twistd --logger=saltapi_twisted.logobserver.json_observer …`` writes one
JSON object per line to standard output (for journald or a log shipper);
Salt's usual ``api_logfile`` location is ``/var/log/salt/api`` when a file
is wanted (``--logfile``).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, jsonFileLogObserver


def json_observer() -> Any:
    """JSON lines on standard output, INFO and above."""
    return FilteringLogObserver(
        jsonFileLogObserver(sys.stdout), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)]
    )


def json_debug_observer() -> Any:
    """JSON lines on standard output, DEBUG and above."""
    return FilteringLogObserver(
        jsonFileLogObserver(sys.stdout), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug)]
    )
