"""What ``GET /metrics`` reads off the app's objects when it is scraped: the request
statistics, the mirror (cache age, lots, subscriptions, coalesced records), dropped
notifications, and whether the bus is up. Nothing here costs anything between scrapes."""

import math
import time
from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from parkspot.metrics.registry import RequestStats
from parkspot.state import AppState

REQUEST_LABELS = ["method", "route", "status"]


def request_metrics(stats: RequestStats) -> Iterator[Metric]:
    counts = CounterMetricFamily(
        "parkspot_http_requests_total",
        "HTTP requests answered, by method, route template and status.",
        labels=REQUEST_LABELS,
    )
    latency = HistogramMetricFamily(
        "parkspot_http_request_duration_seconds",
        "Time from a request's arrival to its response headers.",
        labels=REQUEST_LABELS,
    )
    # repr gives what prometheus_client's own histograms write ("0.0005", "1.0").
    bounds = [repr(b) for b in stats.bounds] + ["+Inf"]
    # A copy: a request finishing while this runs must not change the dict underneath.
    for (method, route, status), series in list(stats.series.items()):
        labels = [method, route, str(status)]
        cumulative, buckets = 0.0, []
        for bound, count in zip(bounds, series[:-1], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        counts.add_metric(labels, cumulative)
        latency.add_metric(labels, buckets, series[-1])
    yield counts
    yield latency


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class StateCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        state = self.state
        yield from request_metrics(state.metrics.requests)
        mirror = state.mirror
        # Seconds since this process's mirror last applied a record: cheap to keep (one
        # clock read per change), per process, and it keeps growing while the bus listener
        # gets nothing, where the age of the oldest record would grow for any quiet lot.
        age = math.nan if mirror.applied_at is None else time.monotonic() - mirror.applied_at
        yield _gauge(
            "parkspot_availability_cache_age_seconds",
            "Seconds since this process's availability mirror last applied a record "
            "(NaN before the first).",
            age,
        )
        yield _gauge(
            "parkspot_availability_cache_lots",
            "Lots in this process's availability mirror.",
            len(mirror.entries),
        )
        yield _gauge(
            "parkspot_availability_cache_stale",
            "1 while this process serves every record as stale (the bus unreachable).",
            float(mirror.stale),
        )
        yield _gauge(
            "parkspot_availability_subscriptions",
            "Live availability subscriptions (event streams and WebSockets) in this process.",
            len(mirror.subscriptions),
        )
        yield CounterMetricFamily(
            "parkspot_availability_records_coalesced_total",
            "Availability records replaced in a subscriber's queue by a newer one of the same "
            "lot before the subscriber took them (a slow client gets the latest state).",
            value=mirror.coalesced,
        )
        yield CounterMetricFamily(
            "parkspot_notifications_dropped_total",
            "Notifications dropped from full WebSocket queues (still listed by the API).",
            value=state.notifications.dropped,
        )
        yield _gauge(
            "parkspot_bus_up",
            "1 while the event bus (Redis, or in-process) answers.",
            float(state.availability.bus_up),
        )
        yield _gauge(
            "parkspot_availability_ready",
            "1 once every lot has been counted into this process's mirror.",
            float(state.availability.ready),
        )
