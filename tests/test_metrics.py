"""GET /metrics: the Prometheus text, request counts and latency by route template (the fast
path's too), booking counters, connection gauges, drops, cache age and outbox lag."""

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from parkspot.app import create_app
from parkspot.availability.mirror import ANONYMOUS, EVERY_LOT, Mirror
from parkspot.config import Settings
from parkspot.db.types import utcnow
from parkspot.metrics.registry import Metrics
from parkspot.models import AvailabilityChange
from parkspot.realtime.sse import EventStream
from parkspot.state import AppState
from tests.conftest import MakeOperator, MakeUser, assert_error
from tests.live_server import delete_redis_keys
from tests.reservation_helpers import (
    RESERVATIONS,
    at,
    book,
    freeze_clock,
    make_driver,
    make_site,
)
from tests.test_mirror import Client, lot_record

METRICS = "/metrics"
WAIT = 10.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get(METRICS)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it is not there (a series not created yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, route: str, status: str, method: str = "GET") -> float:
    labels = {"method": method, "route": route, "status": status}
    return value(samples, "parkspot_http_requests_total", **labels)


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(WAIT):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


# --- the endpoint ----------------------------------------------------------------------


async def test_metrics_answer_prometheus_text_with_every_family(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(METRICS)

    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert names >= {
        "parkspot_http_requests",
        "parkspot_http_request_duration_seconds",
        "parkspot_bookings",
        "parkspot_booking_conflicts",
        "parkspot_reservation_transitions",
        "parkspot_sse_connections",
        "parkspot_websocket_connections",
        "parkspot_stream_clients_dropped",
        "parkspot_availability_records_coalesced",
        "parkspot_notifications_dropped",
        "parkspot_availability_cache_age_seconds",
        "parkspot_availability_cache_lots",
        "parkspot_availability_cache_stale",
        "parkspot_availability_subscriptions",
        "parkspot_availability_ready",
        "parkspot_bus_up",
        "parkspot_outbox_lag_seconds",
        "parkspot_outbox_rows",
    }


async def test_metrics_can_be_turned_off(settings: Settings) -> None:
    application = create_app(settings.model_copy(update={"metrics_enabled": False}))
    try:
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                assert (await http.get("/healthz")).status_code == 200
                assert_error(await http.get(METRICS), 404)
            state: AppState = application.state.parkspot
            assert state.metrics.requests.series == {}
    finally:
        if settings.redis_url:
            await delete_redis_keys(settings.redis_url, settings.redis_key_prefix)


# --- requests --------------------------------------------------------------------------


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    for lot_id in (987654, 987655):
        assert_error(await client.get(f"/api/v1/lots/{lot_id}"), 404)
    assert_error(await client.get("/no/such/path/4242"), 404)
    assert_error(await client.request("BREW", "/no/such/path/4242"), 404)

    response = await client.get(METRICS)
    after = await scrape(client)
    template = "/api/v1/lots/{lot_id}"
    assert requests(after, template, "404") - requests(before, template, "404") == 2
    assert requests(after, "unmatched", "404") - requests(before, "unmatched", "404") == 1
    assert requests(after, "unmatched", "404", method="other") == 1
    assert "987654" not in response.text
    assert "/no/such/path" not in response.text
    # The latency histogram counts the same requests, each in the +Inf bucket.
    labels = {"method": "GET", "route": template, "status": "404"}
    histogram = "parkspot_http_request_duration_seconds"
    assert value(after, f"{histogram}_count", **labels) == requests(after, template, "404")
    assert value(after, f"{histogram}_bucket", le="+Inf", **labels) == requests(
        after, template, "404"
    )
    assert 0 < value(after, f"{histogram}_sum", **labels) < 60
    # The scrapes themselves are requests too.
    assert requests(after, METRICS, "200") == requests(before, METRICS, "200") + 2


async def test_fast_path_reads_are_counted_under_the_routes_templates(
    client: httpx.AsyncClient,
    state: AppState,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    site = await make_site(client, make_user, make_operator, spots=2)
    await state.availability.settle()
    before = await scrape(client)

    item = await client.get(f"/api/v1/availability/{site.lot_id}")
    listing = await client.get("/api/v1/availability")
    not_modified = await client.get(
        f"/api/v1/availability/{site.lot_id}", headers={"If-None-Match": item.headers["etag"]}
    )

    # Answered in front of the framework: no request id.
    for response in (item, listing, not_modified):
        assert "x-request-id" not in response.headers
    assert (item.status_code, listing.status_code, not_modified.status_code) == (200, 200, 304)
    after = await scrape(client)
    item_route, list_route = "/api/v1/availability/{lot_id}", "/api/v1/availability"
    assert requests(after, item_route, "200") - requests(before, item_route, "200") == 1
    assert requests(after, item_route, "304") - requests(before, item_route, "304") == 1
    assert requests(after, list_route, "200") - requests(before, list_route, "200") == 1


# --- bookings --------------------------------------------------------------------------


async def test_bookings_conflicts_and_status_changes_are_counted(
    client: httpx.AsyncClient,
    state: AppState,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    freeze_clock(state)
    site = await make_site(client, make_user, make_operator, spots=1)
    spot_id = site.spots[0]["id"]
    first, second = await make_driver(client, make_user), await make_driver(client, make_user)
    before = await scrape(client)

    booked = await book(client, first, at(0), at(1), spot_id=spot_id)
    assert booked.status_code == 201, booked.text
    after_booking = await scrape(client)
    assert_error(
        await book(client, second, at(0.5), at(2), spot_id=spot_id), 409, "spot_unavailable"
    )
    assert_error(await book(client, second, at(0.5), at(2), lot_id=site.lot_id), 409, "lot_full")
    reservation = f"{RESERVATIONS}/{booked.json()['id']}"
    for action in ("check-in", "check-out"):
        response = await client.post(f"{reservation}/{action}", headers=first.headers)
        assert response.status_code == 200, response.text
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after_booking, "parkspot_bookings_total", kind="reservation") == 1
    assert moved("parkspot_bookings_total", kind="reservation") == 1
    assert moved("parkspot_bookings_total", kind="ticket") == 0
    assert moved("parkspot_booking_conflicts_total", code="spot_unavailable") == 1
    assert moved("parkspot_booking_conflicts_total", code="lot_full") == 1
    assert moved("parkspot_reservation_transitions_total", status="checked_in") == 1
    assert moved("parkspot_reservation_transitions_total", status="completed") == 1
    assert moved("parkspot_reservation_transitions_total", status="cancelled") == 0


# --- connections and drops -------------------------------------------------------------


def http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }


async def test_the_sse_gauge_counts_streams_while_they_are_open(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Through the fast path (ASGITransport would wait for the end of the body)."""
    stream = Client()
    sse = "parkspot_sse_connections"
    assert value(await scrape(client), sse) == 0

    async with anyio.create_task_group() as group:
        group.start_soon(
            app, http_scope("/api/v1/availability/stream"), stream.receive, stream.send
        )

        async def open_now() -> bool:
            return value(await scrape(client), sse) == 1

        await until(open_now)
        stream.gone.set()

    assert stream.messages[0]["status"] == 200
    after = await scrape(client)
    assert value(after, sse) == 0
    assert requests(after, "/api/v1/availability/stream", "200") == 1


async def test_the_websocket_gauge_counts_sockets_while_they_are_open(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    sent: list[Message] = []
    leave = anyio.Event()
    connected = False

    async def receive() -> Message:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        await leave.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope("/api/v1/availability/ws") | {"type": "websocket", "scheme": "ws"}
    scope.pop("method")
    gauge = "parkspot_websocket_connections"
    async with anyio.create_task_group() as group:
        group.start_soon(app, scope, receive, send)

        async def open_now() -> bool:
            return value(await scrape(client), gauge, endpoint="availability") == 1

        await until(open_now)
        leave.set()

    assert sent[0]["type"] == "websocket.accept"
    after = await scrape(client)
    assert value(after, gauge, endpoint="availability") == 0
    assert value(after, gauge, endpoint="notifications") == 0


async def test_a_stream_client_that_stops_reading_is_counted_as_dropped() -> None:
    metrics, mirror = Metrics(), Mirror(events_kept=10)
    stalled = Client(reading=False)
    stream = EventStream(
        mirror.subscribe(ANONYMOUS, [EVERY_LOT]),
        b"retry: 3000\n\n",
        on_close=mirror.unsubscribe,
        keepalive_seconds=30.0,
        lifetime_seconds=30.0,
        stall_seconds=0.2,
        metrics=metrics,
    )
    registry = metrics.registry

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(stream, {"type": "http"}, stalled.receive, stalled.send)
            await anyio.sleep(0.05)
            assert registry.get_sample_value("parkspot_sse_connections") == 1
            mirror.apply("1-0", lot_record(1, 1))

    dropped = {"transport": "sse"}
    assert registry.get_sample_value("parkspot_stream_clients_dropped_total", dropped) == 1
    assert registry.get_sample_value("parkspot_sse_connections") == 0


async def test_records_coalesced_for_a_slow_subscriber_are_counted(
    client: httpx.AsyncClient, state: AppState
) -> None:
    lot_id = 10**9
    stalled = state.mirror.subscribe(ANONYMOUS, [EVERY_LOT])
    try:
        for version in range(1, 11):
            state.mirror.apply(f"coalesce-{version}", lot_record(lot_id, version))
        samples = await scrape(client)
    finally:
        state.mirror.unsubscribe(stalled)

    # The subscriber holds only the latest record; the 9 before were replaced.
    assert len(stalled.take()) == 1
    assert value(samples, "parkspot_availability_records_coalesced_total") == 9
    assert value(samples, "parkspot_availability_subscriptions") == 1


async def test_notifications_dropped_from_a_full_socket_queue_are_counted(
    client: httpx.AsyncClient, state: AppState, settings: Settings
) -> None:
    hub = state.notifications
    queue = hub.subscribe(user_id=1)
    try:
        for number in range(settings.notification_queue_size + 7):
            hub.deliver(1, b'{"n": %d}' % number)
        samples = await scrape(client)
    finally:
        hub.unsubscribe(1, queue)

    assert len(queue.take()) == settings.notification_queue_size
    assert value(samples, "parkspot_notifications_dropped_total") == 7


# --- the cache and the outbox ----------------------------------------------------------


async def test_cache_age_and_state_are_exposed(
    client: httpx.AsyncClient,
    state: AppState,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    # No lot yet: nothing was ever applied to the mirror.
    empty = await scrape(client)
    assert math.isnan(value(empty, "parkspot_availability_cache_age_seconds"))
    assert value(empty, "parkspot_availability_cache_lots") == 0

    await make_site(client, make_user, make_operator, spots=1)
    await state.availability.settle()
    samples = await scrape(client)

    assert 0 <= value(samples, "parkspot_availability_cache_age_seconds") < WAIT
    assert value(samples, "parkspot_availability_cache_lots") == 1
    assert value(samples, "parkspot_availability_cache_stale") == 0
    assert value(samples, "parkspot_availability_ready") == 1
    assert value(samples, "parkspot_bus_up") == 1


async def test_outbox_lag_is_the_age_of_the_oldest_outbox_row(
    client: httpx.AsyncClient, state: AppState
) -> None:
    await state.availability.settle()
    empty = await scrape(client)
    assert value(empty, "parkspot_outbox_rows") == 0
    assert value(empty, "parkspot_outbox_lag_seconds") == 0

    # Rows no engine has recounted yet (this app's tick is an hour away).
    async with state.database.transaction() as session:
        session.add(AvailabilityChange(lot_id=1, created_at=utcnow() - timedelta(seconds=30)))
        session.add(AvailabilityChange(lot_id=2, created_at=utcnow() - timedelta(seconds=5)))
    behind = await scrape(client)

    assert value(behind, "parkspot_outbox_rows") == 2
    assert 30 <= value(behind, "parkspot_outbox_lag_seconds") < 30 + WAIT


@asynccontextmanager
async def unreachable_database(**_: object) -> AsyncIterator[None]:
    raise OSError("database unreachable")
    yield


async def test_outbox_lag_is_nan_when_the_database_does_not_answer(
    client: httpx.AsyncClient, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state.database, "session", unreachable_database)

    samples = await scrape(client)

    assert math.isnan(value(samples, "parkspot_outbox_lag_seconds"))
    assert math.isnan(value(samples, "parkspot_outbox_rows"))
