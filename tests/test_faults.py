"""Faults under load, with real processes: a private PostgreSQL cluster stopped and started
again while clients book and cancel, and a private Redis killed, restarted and hung
(SIGSTOP) while clients book, read and stream.

Each client step carries an ``Idempotency-Key`` and is retried with the same key after a
503 until it gets a final answer, as a well-behaved app would: so what the database holds
at the end can be compared exactly with what the clients were told."""

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import col, select

from parkspot.app import create_app
from parkspot.availability import service
from parkspot.config import Settings
from parkspot.db.engine import is_unavailable
from parkspot.db.migrations import upgrade
from parkspot.db.session import Database
from parkspot.models import Reservation, ReservationStatus
from tests.conftest import assert_error
from tests.live_server import (
    Driver,
    LiveServer,
    SseStream,
    database_from,
    direct_database,
    eventually,
    http_client,
    make_driver,
    make_site,
    now,
    open_sse,
    private_redis,
    running,
)
from tests.pg_cluster import PgCluster, private_cluster

RESERVATIONS = "/api/v1/reservations"
# Concurrent clients booking and cancelling: on PostgreSQL, and on the pass's own database
# (SQLite serialises writers, so fewer keep its waits for the write lock short).
PG_BOOKERS = 8
BOOKERS = 4
OUTAGE_SECONDS = 2.0
# The deadline of every request during a fault, past which it counts as unanswered (a
# hang): the faults below make the server wait for at most a refused connection or a 1 s
# Redis timeout; the rest is this loaded machine. A request that waits on a dead dependency
# without a timeout takes far longer.
REQUEST_BOUND = 5.0
# How long after the dependency is back every client must be served again.
RECOVERY_BOUND = 15.0
# Pause before retrying a 503 (a real client would honour Retry-After; the test wants to
# see the recovery as soon as it happens).
RETRY_PAUSE = 0.05


@dataclass(frozen=True)
class Attempt:
    """One request as its client saw it; ``status`` 0: no answer at all, or none within
    ``REQUEST_BOUND``."""

    what: str
    started: float
    finished: float
    status: int
    code: str | None = None
    retry_after: str | None = None
    replayed: bool = False
    reservation_id: int | None = None


async def attempt(
    http: httpx.AsyncClient, what: str, method: str, url: str, **kw: Any
) -> tuple[Attempt, httpx.Response | None]:
    started = time.monotonic()
    try:
        async with asyncio.timeout(REQUEST_BOUND):
            response = await http.request(method, url, **kw)
    except (httpx.HTTPError, TimeoutError):
        return Attempt(what, started, time.monotonic(), 0), None
    finished = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    return Attempt(
        what,
        started,
        finished,
        response.status_code,
        code=error["code"] if error else None,
        retry_after=response.headers.get("retry-after"),
        replayed=response.headers.get("idempotent-replayed") == "true",
        reservation_id=body.get("id") if response.status_code in (200, 201) else None,
    ), response


@dataclass
class Booker:
    """A driver who books their own spot from now for an hour, cancels, and again, until
    told to stop. Each step is retried with the same key and body after a 503; any other
    answer but success ends the run (the test then reports it)."""

    http: httpx.AsyncClient
    driver: Driver
    spot_id: int
    attempts: list[Attempt] = field(default_factory=list)
    # Final answers: (when, reservation id).
    booked: list[tuple[float, int]] = field(default_factory=list)
    cancelled: list[tuple[float, int]] = field(default_factory=list)

    async def _step(self, what: str, url: str, body: dict[str, Any] | None) -> int | None:
        headers = self.driver.headers | {"Idempotency-Key": secrets.token_hex(8)}
        while True:
            result, _ = await attempt(self.http, what, "POST", url, json=body, headers=headers)
            self.attempts.append(result)
            if result.status != 503:
                return result.reservation_id if result.status in (200, 201) else None
            await asyncio.sleep(RETRY_PAUSE)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            start = now()
            body = {
                "vehicle_id": self.driver.vehicle_id,
                "spot_id": self.spot_id,
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=1)).isoformat(),
            }
            booked = await self._step("book", RESERVATIONS, body)
            if booked is None:
                return
            self.booked.append((time.monotonic(), booked))
            cancelled = await self._step("cancel", f"{RESERVATIONS}/{booked}/cancel", None)
            if cancelled is None:
                return
            self.cancelled.append((time.monotonic(), cancelled))

    def steps_after(self, moment: float) -> int:
        return sum(1 for at, _ in self.booked + self.cancelled if at > moment)


@dataclass
class Prober:
    """Reads the lot's availability and the readiness probe in a loop."""

    http: httpx.AsyncClient
    lot_id: int
    reads: list[Attempt] = field(default_factory=list)
    readiness: list[tuple[Attempt, dict[str, Any]]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for url in (f"/api/v1/availability/{self.lot_id}", "/api/v1/availability"):
                self.reads.append((await attempt(self.http, "read", "GET", url))[0])
            result, response = await attempt(self.http, "readyz", "GET", "/readyz")
            details: dict[str, Any] = {}
            if response is not None and result.status == 503:
                details = response.json()["error"]["details"]
            self.readiness.append((result, details))
            await asyncio.sleep(0.05)


async def progress(bookers: list[Booker], moment: float, steps: int = 2) -> None:
    """Waits until every booker has finished ``steps`` steps after ``moment``."""

    async def enough() -> bool:
        # A booker whose run ended early would never progress: fail at once with why.
        for booker in bookers:
            if booker.attempts:
                assert booker.attempts[-1].status in (200, 201, 503), booker.attempts[-1]
        return all(booker.steps_after(moment) >= steps for booker in bookers)

    await eventually(enough, within=RECOVERY_BOUND)


def during(attempts: list[Attempt], begin: float, end: float) -> list[Attempt]:
    """The attempts sent and answered between ``begin`` and ``end``."""
    return [a for a in attempts if a.started >= begin and a.finished <= end]


async def recount(database: Database, lot_id: int) -> dict[str, Any]:
    """The lot's counts from the database by the engine's own counting, less what every
    recount changes (version, time)."""
    settings = Settings(_env_file=None, database_url="sqlite://")
    async with database.session(write=False) as session:
        counted = await service.count(
            session,
            [lot_id],
            now(),
            timedelta(minutes=settings.no_show_grace_minutes),
            settings.availability_almost_full_ratio,
            timedelta(seconds=settings.device_silence_seconds),
        )
    return without_version(counted[lot_id].record.lot.model_dump(mode="json"))


def without_version(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("version", "updated_at")}


async def reservations_of(database: Database, lot_id: int) -> list[Reservation]:
    async with database.session(write=False) as session:
        stmt = select(Reservation).where(col(Reservation.lot_id) == lot_id)
        return list((await session.execute(stmt)).scalars())


def check_bookings_against_database(bookers: list[Booker], rows: list[Reservation]) -> None:
    """Every booking answered 201 exists once, cancelled when the client was told so,
    and the database holds no booking no client was given (no step acted twice)."""
    booked = [rid for b in bookers for _, rid in b.booked]
    cancelled = {rid for b in bookers for _, rid in b.cancelled}
    assert len(booked) == len(set(booked))
    assert sorted(row.id for row in rows if row.id is not None) == sorted(booked)
    for row in rows:
        expected = (
            ReservationStatus.cancelled if row.id in cancelled else ReservationStatus.confirmed
        )
        assert row.status == expected, (row.id, row.status)
    # No overlap: at most one confirmed booking per spot (each covers now).
    confirmed = [row.spot_id for row in rows if row.status == ReservationStatus.confirmed]
    assert len(confirmed) == len(set(confirmed))


async def settle_and_compare(
    http: httpx.AsyncClient,
    database: Database,
    lot_id: int,
    accept: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Waits until the server's read of the lot equals a recount from the database."""
    truth = await recount(database, lot_id)
    record: dict[str, Any] = {}

    async def agrees() -> bool:
        nonlocal record
        response = await http.get(f"/api/v1/availability/{lot_id}")
        record = response.json()
        return response.status_code == 200 and without_version(record) == truth and accept(record)

    try:
        await eventually(agrees, within=RECOVERY_BOUND)
    except TimeoutError:
        raise AssertionError(f"served {record}, recounted {truth}") from None
    return record


# --- PostgreSQL stopped and started again ----------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    """A private cluster migrated to head (made once: initdb takes seconds)."""
    with private_cluster() as cluster:
        upgrade(cluster.url)
        yield cluster


# Needs no shared service (it makes its own cluster), so it runs in one pass: the one that
# has PostgreSQL. There it fails, never skips, when the cluster cannot be made.
@pytest.mark.postgresql_pass
async def test_a_database_outage_under_load_is_503_and_service_resumes_without_losing_bookings(
    cluster: PgCluster, tmp_path: Path
) -> None:
    # The in-process bus: this test is about the database, and must not use shared Redis.
    server = LiveServer(cluster.url, tmp_path)
    stop = asyncio.Event()
    try:
        async with running(server), http_client(server) as http:
            async with direct_database(cluster.url) as database:
                site = await make_site(http, database, spots=PG_BOOKERS)
            drivers = [await make_driver(http) for _ in range(PG_BOOKERS)]
            bookers = [Booker(http, d, s) for d, s in zip(drivers, site.spot_ids, strict=True)]
            prober = Prober(http, site.lot_id)
            # (mode, stopping, stopped, restarting) of each outage.
            outages: list[tuple[str, float, float, float]] = []
            async with asyncio.TaskGroup() as group:
                for run in [b.run(stop) for b in bookers] + [prober.run(stop)]:
                    group.create_task(run)
                await progress(bookers, time.monotonic(), steps=3)
                # "immediate": every PostgreSQL process quits at once, as in a crash, and
                # the next start recovers from the WAL; "fast": sessions are ended with
                # an admin_shutdown error, then the server stops cleanly. Requests in
                # flight lose their connections mid-statement or mid-commit.
                for mode in ("immediate", "fast"):
                    stopping = time.monotonic()
                    await cluster.stop(mode)
                    stopped = time.monotonic()
                    await asyncio.sleep(OUTAGE_SECONDS)
                    restarting = time.monotonic()
                    await cluster.start()
                    outages.append((mode, stopping, stopped, restarting))
                    # Service resumes without restarting parkspot.
                    await progress(bookers, time.monotonic())
                stop.set()

            steps = [a for b in bookers for a in b.attempts]
            # Never a 500, never a hang: a success, or 503 database_unavailable with
            # Retry-After; every request answered within its deadline.
            for result in steps + prober.reads + [r for r, _ in prober.readiness]:
                assert result.status in (200, 201, 503), result
            for result in steps:
                if result.status == 503:
                    assert result.code == "database_unavailable", result
                    assert result.retry_after is not None, result
                    assert int(result.retry_after) > 0, result
            # Reads come from the mirror: they never needed the database.
            assert {a.status for a in prober.reads} == {200}
            for mode, _, stopped, restarting in outages:
                # While the cluster was down every step was refused, and there were many.
                refused = during(steps, stopped, restarting)
                assert len(refused) >= PG_BOOKERS, mode
                assert {a.status for a in refused} == {503}, mode
                down = [(r, d) for r, d in prober.readiness if stopped <= r.started <= restarting]
                assert down, mode
                for result, details in down:
                    assert result.status == 503, (mode, result)
                    assert details["database"] == "down", (mode, details)
            await eventually(lambda: is_ready(http))

            async with direct_database(cluster.url) as database:
                check_bookings_against_database(
                    bookers, await reservations_of(database, site.lot_id)
                )
                # A 503 for a step whose commit happened all the same: the connection died
                # after PostgreSQL committed, before the answer to COMMIT came back. The
                # retry with the same key gets the first response, replayed (without a
                # key it would have got 409 for its own booking). Rare, and only possible
                # for a request in flight when a stop began.
                for booker in bookers:
                    for before, result in itertools.pairwise(booker.attempts):
                        if result.replayed:
                            assert before.status == 503, (before, result)
                            assert any(
                                before.started <= stopped and before.finished >= stopping
                                for _, stopping, stopped, _ in outages
                            ), (before, result)
                # The engine recounts the lots whose recount an outage interrupted (they
                # stay marked until it succeeds): the server agrees with the database.
                await settle_and_compare(http, database, site.lot_id, lambda r: True)
        # A database that is away is no error of parkspot's: warnings, no tracebacks.
        assert server.errors() == []
    except BaseException as exc:
        exc.add_note(cluster.log())
        raise
    finally:
        stop.set()


async def is_ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


# --- Redis killed, restarted and hung --------------------------------------------------


@dataclass
class Listener:
    """Reads an SSE stream, keeping the latest record of the lot and when each change
    of it arrived."""

    stream: SseStream
    lot_id: int
    latest: dict[str, Any] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            event = await self.stream.next_event(within=60)
            if event.event == "snapshot":
                (self.latest,) = event.json()["lots"]
            elif event.event == "availability" and event.json()["lot_id"] == self.lot_id:
                self.latest = event.json()
                self.arrivals.append(time.monotonic())

    def arrived_between(self, begin: float, end: float) -> bool:
        return any(begin < moment < end for moment in self.arrivals)


async def test_bookings_reads_and_a_stream_carry_on_through_redis_killed_restarted_and_hung(
    template: str, tmp_path: Path
) -> None:
    """Complements tests/test_live_processes.py (each fault alone, one request at a time):
    here clients book, cancel, read and stream all through the faults."""
    settings = {
        "REDIS_TIMEOUT_SECONDS": "1",
        "AVAILABILITY_STALE_AFTER_SECONDS": "1",
        "STREAM_KEEPALIVE_SECONDS": "1",
    }
    stop = asyncio.Event()
    async with database_from(template, tmp_path) as url, private_redis(tmp_path) as redis:
        server = LiveServer(url, tmp_path, redis.url, settings=settings)
        async with (
            direct_database(url) as database,
            running(server),
            http_client(server) as http,
        ):
            site = await make_site(http, database, spots=BOOKERS)
            drivers = [await make_driver(http) for _ in range(BOOKERS)]
            bookers = [Booker(http, d, s) for d, s in zip(drivers, site.spot_ids, strict=True)]
            prober = Prober(http, site.lot_id)
            async with open_sse(server, {"lot_id": site.lot_id}) as stream:
                listener = Listener(stream, site.lot_id)
                listening = asyncio.create_task(listener.run())
                try:
                    async with asyncio.TaskGroup() as group:
                        for run in [b.run(stop) for b in bookers] + [prober.run(stop)]:
                            group.create_task(run)
                        await progress(bookers, time.monotonic())
                        # Killed: connections refused. Every booker books and cancels
                        # meanwhile (``progress``), and the stream carries on.
                        killed = time.monotonic()
                        await redis.kill()
                        await progress(bookers, time.monotonic())
                        await asyncio.sleep(1)
                        await progress(bookers, time.monotonic())
                        restarting = time.monotonic()
                        # Back, empty: everything is recounted and republished.
                        await redis.start()
                        await progress(bookers, time.monotonic())
                        # Hung: connections accepted, nothing answered; every call
                        # waits for its timeout, never longer.
                        paused = time.monotonic()
                        redis.pause()
                        try:
                            await progress(bookers, time.monotonic())
                            await asyncio.sleep(1.5)
                            await progress(bookers, time.monotonic())
                        finally:
                            redis.resume()
                        resumed = time.monotonic()
                        await progress(bookers, time.monotonic())
                        stop.set()
                    # The stream converges on the database's truth, no longer stale.
                    record = await settle_and_compare(
                        http, database, site.lot_id, lambda r: not r["stale"]
                    )

                    async def stream_caught_up() -> bool:
                        return listener.latest == record

                    await eventually(stream_caught_up)
                    assert not listening.done()
                finally:
                    stop.set()
                    listening.cancel()

        # The server's own changes reached the stream during each fault.
        assert listener.arrived_between(killed, restarting)
        assert listener.arrived_between(paused, resumed)
        steps = [a for b in bookers for a in b.attempts]
        # No request failed or waited on Redis past its deadline: bookings and reads never
        # need it.
        for result in steps + prober.reads:
            assert result.status in (200, 201), result
        # Readiness says when Redis is away, within its timeout.
        for result, details in prober.readiness:
            assert result.status in (200, 503), result
            assert result.status == 200 or details["redis"] == "down", details
        assert any(result.status == 503 for result, _ in prober.readiness)
        assert server.errors() == []


# --- what counts as the database being away --------------------------------------------


class _ServerError(Exception):
    """What asyncpg raises for an error the server reports, with its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"server error {sqlstate}")
        self.sqlstate = sqlstate


def _driver_error(sqlstate: str) -> DBAPIError:
    # SQLAlchemy's wrapper of asyncpg's errors carries the SQLSTATE as ``orig.sqlstate``.
    return DBAPIError("SELECT 1", {}, _ServerError(sqlstate))


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        pytest.param(ConnectionRefusedError(111, "refused"), True, id="refused"),
        pytest.param(TimeoutError(), True, id="timed-out"),
        pytest.param(
            DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True),
            True,
            id="connection-lost",
        ),
        pytest.param(_driver_error("08006"), True, id="connection-failure"),
        pytest.param(_driver_error("57P01"), True, id="admin-shutdown"),
        pytest.param(_driver_error("57P03"), True, id="starting-up"),
        pytest.param(_driver_error("53300"), True, id="too-many-connections"),
        pytest.param(OperationalError("SELECT 1", {}, Exception("locked")), True, id="sqlite"),
        pytest.param(_driver_error("42P01"), False, id="undefined-table"),
        pytest.param(DBAPIError("SELECT 1", {}, Exception("bug")), False, id="other"),
        pytest.param(ValueError("bug"), False, id="not-a-database-error"),
    ],
)
def test_only_errors_of_a_database_that_is_away_count_as_unavailable(
    exc: Exception, unavailable: bool
) -> None:
    assert is_unavailable(exc) is unavailable


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        pytest.param(_driver_error("57P03"), 503, "database_unavailable", id="starting-up"),
        pytest.param(_driver_error("42P01"), 500, "internal_error", id="undefined-table"),
    ],
)
async def test_driver_errors_are_503_when_the_database_is_away_and_500_otherwise(
    settings: Settings, exc: Exception, status: int, code: str
) -> None:
    async def fail() -> None:
        raise exc

    app = create_app(settings)
    app.add_api_route("/fail", fail)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/fail")

    assert_error(response, status, code)
    assert ("Retry-After" in response.headers) is (status == 503)
