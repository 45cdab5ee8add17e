"""Counters and latency histograms, exposed on ``/metrics`` in Prometheus format.

The counters are plain Python objects updated on the hot path; the
``prometheus_client`` package is imported only when ``/metrics`` is served
(it is an optional dependency, and its Twisted module would import the
global reactor). Labels never carry tokens, user names or minion ids:
routes are reduced to their first path segment.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Histogram bucket upper bounds, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: Route labels: the first path segment of a known route, else "other".
ROUTES = frozenset(
    {
        "",
        "login",
        "logout",
        "token",
        "run",
        "minions",
        "jobs",
        "keys",
        "events",
        "hook",
        "stats",
        "health",
        "metrics",
        "all_events",
        "formatted_events",
        "ws",
        "openapi.json",
    }
)


def route_label(path: bytes | str) -> str:
    """``/minions/minion-1`` → ``/minions``; unknown paths → ``other``."""
    text = path.decode("latin-1") if isinstance(path, bytes) else path
    first = text.split("?", 1)[0].lstrip("/").split("/", 1)[0]
    return "/" + first if first in ROUTES else "other"


@dataclass
class Histogram:
    """Cumulative-ready bucket counts, a sum and a count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def buckets(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs, ``+Inf`` last."""
        result = []
        running = 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


class Metrics:
    """Everything ``/metrics`` reports."""

    def __init__(self) -> None:
        self.http_requests: Counter[tuple[str, str, str]] = Counter()
        self.http_durations: dict[str, Histogram] = {}
        self.master_requests: Counter[tuple[str, str]] = Counter()
        self.master_durations: dict[str, Histogram] = {}
        self.logins: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()

    def observe_request(self, path: bytes | str, method: bytes | str, code: int, seconds: float) -> None:
        route = route_label(path)
        verb = method.decode("latin-1") if isinstance(method, bytes) else method
        self.http_requests[(route, verb, str(code))] += 1
        self.http_durations.setdefault(route, Histogram()).observe(seconds)

    def observe_master(self, cmd: str, outcome: str, seconds: float) -> None:
        self.master_requests[(cmd, outcome)] += 1
        self.master_durations.setdefault(cmd, Histogram()).observe(seconds)

    def render(self, gauges: dict[str, Any]) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        metrics = self

        class _Collector:
            def collect(self) -> Any:
                requests = CounterMetricFamily(
                    "saltapi_http_requests", "HTTP requests", labels=["route", "method", "code"]
                )
                for (route, method, code), value in sorted(metrics.http_requests.items()):
                    requests.add_metric([route, method, code], value)
                yield requests
                durations = HistogramMetricFamily(
                    "saltapi_http_request_duration_seconds", "HTTP request latency", labels=["route"]
                )
                for route, histogram in sorted(metrics.http_durations.items()):
                    durations.add_metric([route], histogram.buckets(), histogram.total)
                yield durations
                master = CounterMetricFamily(
                    "saltapi_master_requests", "Master request-channel round trips", labels=["cmd", "outcome"]
                )
                for (cmd, outcome), value in sorted(metrics.master_requests.items()):
                    master.add_metric([cmd, outcome], value)
                yield master
                master_durations = HistogramMetricFamily(
                    "saltapi_master_request_duration_seconds", "Master round-trip latency", labels=["cmd"]
                )
                for cmd, histogram in sorted(metrics.master_durations.items()):
                    master_durations.add_metric([cmd], histogram.buckets(), histogram.total)
                yield master_durations
                logins = CounterMetricFamily("saltapi_logins", "Logins", labels=["outcome"])
                for outcome, value in sorted(metrics.logins.items()):
                    logins.add_metric([outcome], value)
                yield logins
                limited = CounterMetricFamily("saltapi_rate_limited", "Rate-limited requests", labels=["limit"])
                for limit, value in sorted(metrics.rate_limited.items()):
                    limited.add_metric([limit], value)
                yield limited
                yield GaugeMetricFamily("saltapi_open_connections", "Open connections", value=gauges["connections"])
                streams = GaugeMetricFamily("saltapi_open_streams", "Open event streams", labels=["kind"])
                for kind, value in sorted(gauges["streams"].items()):
                    streams.add_metric([kind], value)
                yield streams
                yield CounterMetricFamily(
                    "saltapi_events_received", "Events read from the master's bus", value=gauges["events_received"]
                )
                dropped = CounterMetricFamily("saltapi_events_dropped", "Events not delivered", labels=["reason"])
                for reason, value in sorted(gauges["events_dropped"].items()):
                    dropped.add_metric([reason], value)
                yield dropped
                up = GaugeMetricFamily("saltapi_master_up", "Master connection state", labels=["channel"])
                for channel, value in sorted(gauges["master_up"].items()):
                    up.add_metric([channel], value)
                yield up
                yield CounterMetricFamily(
                    "saltapi_event_bus_reconnects", "Event bus reconnections", value=gauges["reconnects"]
                )

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())
        return generate_latest(registry), CONTENT_TYPE_LATEST
