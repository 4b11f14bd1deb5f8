"""A stateful property test: a hypothesis state machine drives the app through its API -
drivers sign up and add cars, book a spot or let the server pick one, reschedule, cancel,
check in and out, take walk-in tickets, a spot sensor and gates report, managers take spots
out of service, the clock moves and the engine ticks, idempotent requests are sent again -
and after every step checks, against the database:

- no two active reservations of one spot, or of one vehicle, overlap;
- every lot's published availability (one lot, the list, the mirror's body, each spot's
  state) equals a recount from the database, both the engine's own and an independent one;
- every price quoted and charged is the pricing function of the lot's rates and the times;
- no confirmed reservation is left past its check-in grace (time alone expires it).

Each rule also works out its own outcome from the database first (201/200, or the 404/409/
422 code the rules call for) and asserts it, so a wrong refusal fails as surely as a wrong
acceptance, and a 500 always fails. An idempotent request sent again gets the first
response, byte for byte, with ``Idempotent-Replayed: true`` and no second effect.

Each example starts the app (its lifespan: database, engine, mirror, bus) on an empty
database, with the clock stopped at ``NOW``; only the rules move it. Hypothesis calls the
rules synchronously, so they run on an event loop of their own (a blocking portal).
"""

import asyncio
import functools
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Concatenate, ParamSpec, Protocol, TypeVar

import httpx
import hypothesis
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from parkspot.app import create_app
from parkspot.config import Settings
from parkspot.lots import pricing
from parkspot.lots.pricing import BillingPolicy
from parkspot.models import (
    ACTIVE_STATUSES,
    Lot,
    Reservation,
    ReservationKind,
    ReservationStatus,
    Role,
    Spot,
)
from parkspot.reservations import sweeper
from parkspot.state import AppState
from tests.availability_helpers import counts, recount_lots
from tests.conftest import (
    PG_ADMIN_URL,
    Actor,
    MakeOperator,
    MakeUser,
    add_operator,
    assert_error,
    delete_redis_keys,
    empty_tables,
    sign_up,
)
from tests.device_helpers import GATE_EVENTS, SPOT_EVENTS, Sensor, add_device
from tests.lot_helpers import LOTS, SPOTS
from tests.reservation_helpers import (
    NOW,
    RESERVATIONS,
    VEHICLES,
    Site,
    add_spot,
    at,
    book,
    freeze_clock,
    make_driver,
    make_site,
)

Json = dict[str, Any]
AVAILABILITY = "/api/v1/availability"

PROFILE = "parkspot-stateful"
# About 45 s per backend on this kind of machine (derandomized: CI runs the same steps).
# Many examples rather than long ones: hypothesis turns a random share of the rules off in
# each example (swarm testing), so variety comes from examples.
hypothesis.settings.register_profile(
    PROFILE,
    max_examples=30,
    stateful_step_count=25,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow],
)
# A longer random search, for a developer's machine:
# PARKSPOT_TEST_HYPOTHESIS_PROFILE=parkspot-stateful-long .venv/bin/pytest tests/test_properties.py
hypothesis.settings.register_profile(
    f"{PROFILE}-long",
    parent=hypothesis.settings.get_profile(PROFILE),
    max_examples=300,
    derandomize=False,
)

# Lot A (2.50/h, at most 20 a day, counted from reservations, a gate): A1, A2 standard, E1 ev.
# Lot B (3.10/h, no daily cap, counted by a spot sensor, a gate): B1 standard, B2 compact.
LABELS = ("A1", "A2", "E1", "B1", "B2")
# Windows start on a 15-minute grid around now and last one of these (10: too short).
GRID = timedelta(minutes=15)
MINUTES = (60, 15, 30, 120, 10, 25 * 60 + 30)
DEFAULT_KINDS = ("standard", "compact", "ev")
MAX_DRIVERS = 4
# Idempotency keys live 24 h: the clock stays well inside that.
MAX_ELAPSED = timedelta(hours=8)

Outcome = tuple[int, str | None]
OK: Outcome = (200, None)
CREATED: Outcome = (201, None)


# --- running coroutines from hypothesis' synchronous rules ------------------------------


class OnPortal(Protocol):
    portal: BlockingPortal


M = TypeVar("M", bound=OnPortal)
P = ParamSpec("P")
T = TypeVar("T")


def blocking(method: Callable[Concatenate[M, P], Awaitable[T]]) -> Callable[Concatenate[M, P], T]:
    """An async method as a plain one that runs it on the machine's event loop."""

    @functools.wraps(method)
    def run(self: M, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.portal.call(functools.partial(method, self, *args, **kwargs))

    return run


@dataclass
class World:
    """What the examples of one run share: the event loop, the app (its lifespan run anew
    for each example: building its routes takes longer than a whole example), the test's
    settings and its clean database (a SQLite file copied per example; PostgreSQL
    emptied per example)."""

    portal: BlockingPortal
    app: FastAPI
    settings: Settings
    folder: Path
    examples: int = 0

    def fresh_settings(self) -> Settings:
        """The settings of the next example: an empty database, Redis keys of its own."""
        self.examples += 1
        url = self.settings.database_url
        if PG_ADMIN_URL:
            self.portal.call(empty_tables, self.settings.effective_database_url)
        else:
            path = self.folder / f"example-{self.examples}.db"
            shutil.copyfile(make_url(url).database or "", path)
            url = f"sqlite+aiosqlite:///{path}"
        prefix = f"{self.settings.redis_key_prefix}-{self.examples}"
        return self.settings.model_copy(update={"database_url": url, "redis_key_prefix": prefix})


@dataclass(frozen=True)
class Stored:
    """The rows the rules and invariants read, in one go."""

    reservations: list[Reservation]
    spots: dict[int, Spot]
    lots: dict[int, Lot]


@dataclass(frozen=True)
class Car:
    driver: Actor
    vehicle_id: int
    plate: str

    def __repr__(self) -> str:
        return f"Car({self.plate} of {self.driver.username})"


@dataclass(frozen=True)
class Booked:
    id: int
    owner: Actor

    def __repr__(self) -> str:
        return f"Booked(reservation {self.id} of {self.owner.username})"


@dataclass(frozen=True)
class Keyed:
    """A request with an Idempotency-Key that succeeded, and its response."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    content: bytes
    reservation_id: int

    def __repr__(self) -> str:
        return f"Keyed(POST {self.path} with {self.headers['Idempotency-Key']})"


# --- the rules' expectations, from the database ------------------------------------------


def is_active(r: Reservation) -> bool:
    return r.status in ACTIVE_STATUSES


def overlaps(r: Reservation, starts_at: datetime, ends_at: datetime) -> bool:
    return is_active(r) and r.starts_at < ends_at and r.ends_at > starts_at


def holds_now(r: Reservation, now: datetime) -> bool:
    """The reservation takes its spot at ``now``: a stay checked in (even past its end), or
    a confirmed booking covering ``now``."""
    return r.status == ReservationStatus.checked_in or (
        r.status == ReservationStatus.confirmed and r.starts_at <= now < r.ends_at
    )


def may_check_in(settings: Settings, r: Reservation, at: datetime) -> bool:
    opens = r.starts_at - timedelta(minutes=settings.checkin_early_minutes)
    closes = r.starts_at + timedelta(minutes=settings.no_show_grace_minutes)
    return r.status == ReservationStatus.confirmed and opens <= at <= closes


def window_refused(
    settings: Settings, now: datetime, starts_at: datetime, ends_at: datetime, *, new_start: bool
) -> bool:
    duration = ends_at - starts_at
    return (
        duration < timedelta(minutes=settings.booking_min_minutes)
        or duration > timedelta(hours=settings.booking_max_hours)
        or (
            new_start
            and starts_at < now - timedelta(minutes=settings.booking_start_tolerance_minutes)
        )
        or ends_at <= now
        or starts_at > now + timedelta(days=settings.booking_max_days_ahead)
    )


def check(response: httpx.Response, outcome: Outcome) -> None:
    status, code = outcome
    if status >= 400:
        assert_error(response, status, code)
    else:
        assert response.status_code == status, response.text


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


class ParkingMachine(RuleBasedStateMachine):
    world: ClassVar[World]
    # Set once the example's app has started.
    client: httpx.AsyncClient
    state: AppState
    policy: BillingPolicy
    sites: dict[str, Site]
    gates: dict[str, Sensor]
    sensor: Sensor
    spot_ids: dict[str, int]
    cars: Bundle[Car] = Bundle("cars")
    bookings: Bundle[Booked] = Bundle("bookings")
    # Walk-in tickets: checked in from the start.
    stays: Bundle[Booked] = Bundle("stays")

    def __init__(self) -> None:
        super().__init__()
        self.portal = self.world.portal
        self.now = NOW
        self.drivers: list[Actor] = []
        self.cars_of: dict[int, int] = {}
        self.keyed: list[Keyed] = []
        self._users = 0
        self._keys = 0
        self._closing = ExitStack()
        settings = self.world.fresh_settings()
        try:
            if not PG_ADMIN_URL:
                database = Path(make_url(settings.database_url).database or "")
                self._closing.callback(self._remove, database)
            self._closing.enter_context(
                self.portal.wrap_async_context_manager(self._running(settings))
            )
        except BaseException:
            self._closing.close()
            raise

    def teardown(self) -> None:
        self._closing.close()

    @staticmethod
    def _remove(database: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            database.with_name(database.name + suffix).unlink(missing_ok=True)

    @asynccontextmanager
    async def _running(self, settings: Settings) -> AsyncIterator[None]:
        app = self.world.app
        # The lifespan builds everything from these: database, engine, mirror, bus.
        app.state.settings = settings
        try:
            async with (
                LifespanManager(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://test"
                ) as client,
            ):
                self.client = client
                self.state = app.state.parkspot
                self.state.clock = lambda: self.now
                self.policy = BillingPolicy.from_settings(settings)
                await self._open_lots()
                yield
        finally:
            if settings.redis_url:
                await delete_redis_keys(settings)

    async def _make_user(self, role: Role = Role.driver, manages: tuple[int, ...] = ()) -> Actor:
        self._users += 1
        return await sign_up(self.client, self.state, f"{role.value}{self._users}", role, manages)

    async def _make_operator(self) -> int:
        return await add_operator(self.state, f"Operator {self._users}")

    async def _open_lots(self) -> None:
        lot_a = await make_site(self.client, self._make_user, self._make_operator, spots=2)
        await add_spot(self.client, lot_a, "E1", "ev")
        lot_b = await make_site(
            self.client,
            self._make_user,
            self._make_operator,
            spots=0,
            name="Les Halles",
            hourly_rate="3.10",
            daily_max=None,
        )
        await add_spot(self.client, lot_b, "B1", "standard")
        await add_spot(self.client, lot_b, "B2", "compact")
        self.sites = {"A": lot_a, "B": lot_b}
        self.gates = {
            name: await add_device(self.client, site, "gate", f"Gate {name}")
            for name, site in self.sites.items()
        }
        self.sensor = await add_device(self.client, lot_b, "spot_sensor", "Level 0")
        self.spot_ids = {s["label"]: s["id"] for site in self.sites.values() for s in site.spots}

    # --- reading the database --------------------------------------------------------

    async def _load(self) -> Stored:
        async with self.state.database.session(write=False) as session:
            reservations = (
                await session.execute(select(Reservation).order_by(col(Reservation.id)))
            ).scalars()
            spots = (await session.execute(select(Spot))).scalars()
            lots = (await session.execute(select(Lot))).scalars()
            return Stored(
                list(reservations),
                {spot.id or 0: spot for spot in spots},
                {lot.id or 0: lot for lot in lots},
            )

    async def _reservation(self, reservation_id: int) -> Reservation:
        async with self.state.database.session(write=False) as session:
            reservation = await session.get(Reservation, reservation_id)
        assert reservation is not None
        return reservation

    async def _snapshot(self) -> list[Json]:
        """Every reservation and lot as stored: what a replay must leave alone."""
        stored = await self._load()
        return [r.model_dump() for r in stored.reservations] + [
            lot.model_dump() for lot in stored.lots.values()
        ]

    def _price(
        self, lot: Lot, starts_at: datetime, ends_at: datetime, left_at: datetime | None = None
    ) -> Decimal:
        return pricing.price(lot, self.policy, starts_at, ends_at, left_at).amount

    def _slot(self, steps: int) -> datetime:
        """A time on the 15-minute grid: ``steps`` after the first grid point not before
        now (so ``0`` may be checked in to at once, ``-1`` may be too far in the past)."""
        return NOW + (-((NOW - self.now) // GRID) + steps) * GRID

    def _manager_of(self, lot_id: int) -> Actor:
        return next(site.manager for site in self.sites.values() if site.lot_id == lot_id)

    def _actor(self, booked: Booked, who: str, lot_id: int) -> Actor:
        if who == "owner":
            return booked.owner
        if who == "manager":
            return self._manager_of(lot_id)
        return next(d for d in self.drivers if d.id != booked.owner.id)

    # --- sending -----------------------------------------------------------------------

    async def _post(
        self, path: str, actor: Actor, body: Json | None, keyed: bool = False
    ) -> tuple[httpx.Response, dict[str, str], bytes]:
        content = b"" if body is None else json.dumps(body).encode()
        headers = dict(actor.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if keyed:
            self._keys += 1
            headers["Idempotency-Key"] = f"key-{self._keys}"
        response = await self.client.post(path, content=content, headers=headers)
        return response, headers, content

    async def _remember(
        self, response: httpx.Response, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        """Keeps a keyed request that succeeded for later replays, and sends it again at
        once, as a client that lost the response would."""
        if "Idempotency-Key" in headers and response.is_success:
            assert "Idempotent-Replayed" not in response.headers
            reservation_id = response.json()["id"]
            keyed = Keyed(
                path, headers, body, response.status_code, response.content, reservation_id
            )
            self.keyed.append(keyed)
            await self._replay(keyed)

    def _check_reservation(
        self, body: Json, lot: Lot, starts_at: datetime, ends_at: datetime, status: str
    ) -> None:
        assert body["status"] == status, body
        assert body["lot_id"] == lot.id, body
        assert instant(body["starts_at"]) == starts_at, body
        assert instant(body["ends_at"]) == ends_at, body
        assert Decimal(body["price_quote"]) == self._price(lot, starts_at, ends_at), body

    # --- drivers and cars --------------------------------------------------------------

    async def _new_car(self, driver: Actor) -> Car:
        plate = f"PS{driver.id}X{self.cars_of.get(driver.id, 0)}"
        response = await self.client.post(VEHICLES, json={"plate": plate}, headers=driver.headers)
        assert response.status_code == 201, response.text
        self.cars_of[driver.id] = self.cars_of.get(driver.id, 0) + 1
        return Car(driver, response.json()["id"], plate)

    async def _new_driver(self) -> Car:
        driver = await self._make_user()
        self.drivers.append(driver)
        return await self._new_car(driver)

    @initialize(target=cars)
    @blocking
    async def first_drivers(self) -> MultipleResults[Car]:
        return multiple(await self._new_driver(), await self._new_driver())

    @precondition(lambda self: len(self.drivers) < MAX_DRIVERS)
    @rule(target=cars)
    @blocking
    async def sign_up_driver(self) -> Car:
        return await self._new_driver()

    @rule(target=cars, car=cars)
    @blocking
    async def add_car(self, car: Car) -> Car | MultipleResults[Car]:
        if self.cars_of[car.driver.id] >= 2:
            return multiple()
        return await self._new_car(car.driver)

    # --- booking -----------------------------------------------------------------------

    def _booking_outcome(
        self,
        rows: list[Reservation],
        car: Car,
        starts_at: datetime,
        ends_at: datetime,
        spot: Spot | None = None,
    ) -> Outcome:
        """What POST /reservations must answer before looking for a free spot (of the lot,
        or ``spot`` when one is asked for)."""
        settings = self.state.settings
        if window_refused(settings, self.now, starts_at, ends_at, new_start=True):
            return 422, "invalid_window"
        if spot is not None and spot.is_out_of_service:
            return 409, "spot_out_of_service"
        upcoming = [
            r for r in rows if r.user_id == car.driver.id and is_active(r) and r.ends_at > self.now
        ]
        if len(upcoming) >= settings.booking_max_active_per_user:
            return 409, "reservation_limit_reached"
        if any(r.vehicle_id == car.vehicle_id and overlaps(r, starts_at, ends_at) for r in rows):
            return 409, "vehicle_busy"
        return CREATED

    @rule(
        target=bookings,
        car=cars,
        label=st.sampled_from(LABELS),
        start=st.integers(-2, 8),
        minutes=st.sampled_from(MINUTES),
        keyed=st.booleans(),
    )
    @blocking
    async def book_spot(
        self, car: Car, label: str, start: int, minutes: int, keyed: bool
    ) -> Booked | MultipleResults[Booked]:
        starts_at = self._slot(start)
        ends_at = starts_at + timedelta(minutes=minutes)
        stored = await self._load()
        spot = stored.spots[self.spot_ids[label]]
        expected = self._spot_booking_outcome(stored.reservations, car, spot, starts_at, ends_at)
        body = self._spot_booking(car, spot, starts_at, ends_at)
        response, headers, content = await self._post(RESERVATIONS, car.driver, body, keyed)
        check(response, expected)
        if expected != CREATED:
            return multiple()
        self._check_spot_booking(response, stored.lots[spot.lot_id], spot, starts_at, ends_at)
        await self._remember(response, RESERVATIONS, headers, content)
        return Booked(response.json()["id"], car.driver)

    @rule(
        first=cars,
        second=cars,
        label=st.sampled_from(LABELS),
        start=st.integers(-2, 8),
        minutes=st.sampled_from(MINUTES),
    )
    @blocking
    async def race_for_a_spot(
        self, first: Car, second: Car, label: str, start: int, minutes: int
    ) -> None:
        """Two drivers book one spot for one window at the same moment: when both could
        have it alone, exactly one gets it (the exclusion constraint on PostgreSQL, the
        serialised writers on SQLite) and the other is told it is taken. Which one wins
        is chance, so the winner cancels at once: hypothesis needs the same steps to
        leave the same state."""
        if first.driver.id == second.driver.id:
            return
        starts_at = self._slot(start)
        ends_at = starts_at + timedelta(minutes=minutes)
        stored = await self._load()
        spot = stored.spots[self.spot_ids[label]]
        cars = (first, second)
        alone = [
            self._spot_booking_outcome(stored.reservations, car, spot, starts_at, ends_at)
            for car in cars
        ]
        sent = await asyncio.gather(
            *(
                self._post(
                    RESERVATIONS, car.driver, self._spot_booking(car, spot, starts_at, ends_at)
                )
                for car in cars
            )
        )
        responses = [response for response, _, _ in sent]
        if alone == [CREATED, CREATED]:
            won = [i for i, response in enumerate(responses) if response.status_code == 201]
            assert len(won) == 1, [response.text for response in responses]
            check(responses[1 - won[0]], (409, "spot_unavailable"))
        else:
            for response, expected in zip(responses, alone, strict=True):
                check(response, expected)
        for response, car in zip(responses, cars, strict=True):
            if response.status_code == 201:
                lot = stored.lots[spot.lot_id]
                self._check_spot_booking(response, lot, spot, starts_at, ends_at)
                cancel = f"{RESERVATIONS}/{response.json()['id']}/cancel"
                cancelled = await self.client.post(cancel, headers=car.driver.headers)
                assert cancelled.status_code == 200, cancelled.text

    def _spot_booking_outcome(
        self, rows: list[Reservation], car: Car, spot: Spot, starts_at: datetime, ends_at: datetime
    ) -> Outcome:
        expected = self._booking_outcome(rows, car, starts_at, ends_at, spot)
        if expected == CREATED and any(
            r.spot_id == spot.id and overlaps(r, starts_at, ends_at) for r in rows
        ):
            return 409, "spot_unavailable"
        return expected

    @staticmethod
    def _spot_booking(car: Car, spot: Spot, starts_at: datetime, ends_at: datetime) -> Json:
        return {
            "spot_id": spot.id,
            "vehicle_id": car.vehicle_id,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
        }

    def _check_spot_booking(
        self, response: httpx.Response, lot: Lot, spot: Spot, starts_at: datetime, ends_at: datetime
    ) -> None:
        booked = response.json()
        assert booked["spot_id"] == spot.id, booked
        self._check_reservation(booked, lot, starts_at, ends_at, "confirmed")

    @rule(
        target=bookings,
        car=cars,
        lot=st.sampled_from(("A", "B")),
        kind=st.sampled_from((None, "standard", "ev", "compact", "motorcycle")),
        start=st.integers(-2, 8),
        minutes=st.sampled_from(MINUTES),
        keyed=st.booleans(),
    )
    @blocking
    async def book_in_lot(
        self, car: Car, lot: str, kind: str | None, start: int, minutes: int, keyed: bool
    ) -> Booked | MultipleResults[Booked]:
        starts_at = self._slot(start)
        ends_at = starts_at + timedelta(minutes=minutes)
        lot_id = self.sites[lot].lot_id
        stored = await self._load()
        rows, spots, lots = stored.reservations, stored.spots, stored.lots
        kinds = (kind,) if kind is not None else DEFAULT_KINDS
        free = [
            s
            for s in spots.values()
            if s.lot_id == lot_id
            and not s.is_out_of_service
            and s.kind in kinds
            and not any(r.spot_id == s.id and overlaps(r, starts_at, ends_at) for r in rows)
        ]
        expected = self._booking_outcome(rows, car, starts_at, ends_at)
        if expected == CREATED and not free:
            expected = (409, "lot_full")
        body: Json = {
            "lot_id": lot_id,
            "vehicle_id": car.vehicle_id,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
        }
        if kind is not None:
            body["kind"] = kind
        response, headers, content = await self._post(RESERVATIONS, car.driver, body, keyed)
        check(response, expected)
        if expected != CREATED:
            return multiple()
        booked = response.json()
        # The preferred kind first: a spot of the best kind still free.
        best = min(kinds.index(s.kind) for s in free)
        assert booked["spot_id"] in {s.id for s in free if kinds.index(s.kind) == best}, booked
        self._check_reservation(booked, lots[lot_id], starts_at, ends_at, "confirmed")
        quote = await self.client.get(
            f"{LOTS}/{lot_id}/quote",
            params={"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()},
        )
        assert quote.status_code == 200, quote.text
        assert Decimal(quote.json()["amount"]) == Decimal(booked["price_quote"]), quote.text
        await self._remember(response, RESERVATIONS, headers, content)
        return Booked(booked["id"], car.driver)

    @rule(target=stays, car=cars, label=st.sampled_from(LABELS), keyed=st.booleans())
    @blocking
    async def walk_in(self, car: Car, label: str, keyed: bool) -> Booked | MultipleResults[Booked]:
        stored = await self._load()
        rows, spots, lots = stored.reservations, stored.spots, stored.lots
        spot = spots[self.spot_ids[label]]
        settings = self.state.settings
        ends_at = self.now + timedelta(hours=settings.ticket_max_hours)
        ends_at = min(
            [ends_at]
            + [
                r.starts_at
                for r in rows
                if r.spot_id == spot.id and is_active(r) and r.starts_at >= self.now
            ]
        )
        expected = CREATED
        if spot.is_out_of_service:
            expected = (409, "spot_out_of_service")
        elif any(r.spot_id == spot.id and holds_now(r, self.now) for r in rows) or (
            ends_at - self.now < timedelta(minutes=settings.booking_min_minutes)
        ):
            expected = (409, "spot_unavailable")
        elif any(r.vehicle_id == car.vehicle_id and overlaps(r, self.now, ends_at) for r in rows):
            expected = (409, "vehicle_busy")
        body = {"vehicle_id": car.vehicle_id, "spot_id": spot.id}
        response, headers, content = await self._post("/api/v1/tickets", car.driver, body, keyed)
        check(response, expected)
        if expected != CREATED:
            return multiple()
        ticket = response.json()
        assert (ticket["kind"], ticket["spot_id"]) == ("ticket", spot.id), ticket
        assert instant(ticket["checked_in_at"]) == self.now, ticket
        self._check_reservation(ticket, lots[spot.lot_id], self.now, ends_at, "checked_in")
        await self._remember(response, "/api/v1/tickets", headers, content)
        return Booked(ticket["id"], car.driver)

    # --- changing a reservation ----------------------------------------------------------

    @rule(
        booked=bookings,
        who=st.sampled_from(("owner", "owner", "manager", "stranger")),
        start=st.none() | st.integers(-2, 8),
        minutes=st.sampled_from(MINUTES),
    )
    @blocking
    async def reschedule(self, booked: Booked, who: str, start: int | None, minutes: int) -> None:
        """PATCH a booking's window (no start: keep it, as a started booking may still
        move its end)."""
        await self._change(booked, who, start, minutes, None, None)

    @rule(
        booked=bookings,
        label=st.sampled_from(LABELS),
        car=st.none() | cars,
        start=st.none() | st.integers(-2, 8),
        minutes=st.sampled_from(MINUTES),
    )
    @blocking
    async def move_booking(
        self, booked: Booked, label: str, car: Car | None, start: int | None, minutes: int
    ) -> None:
        """PATCH a booking onto another spot (maybe of the other lot), maybe another car
        (another driver's is not found)."""
        await self._change(booked, "owner", start, minutes, label, car)

    async def _change(
        self,
        booked: Booked,
        who: str,
        start: int | None,
        minutes: int,
        label: str | None,
        car: Car | None,
    ) -> None:
        stored = await self._load()
        rows, spots, lots = stored.reservations, stored.spots, stored.lots
        current = next(r for r in rows if r.id == booked.id)
        actor = self._actor(booked, who, current.lot_id)
        starts_at = current.starts_at if start is None else self._slot(start)
        ends_at = starts_at + timedelta(minutes=minutes)
        spot = spots[self.spot_ids[label] if label else current.spot_id or 0]
        vehicle_id = current.vehicle_id if car is None else car.vehicle_id
        body: Json = {"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
        if label is not None:
            body["spot_id"] = spot.id
        if car is not None:
            body["vehicle_id"] = car.vehicle_id
        others = [r for r in rows if r.id != current.id]
        expected = OK
        if who == "stranger":
            expected = (404, "reservation_not_found")
        elif who == "manager":
            expected = (403, "not_reservation_owner")
        elif current.status != ReservationStatus.confirmed:
            expected = (409, "invalid_status")
        elif window_refused(
            self.state.settings,
            self.now,
            starts_at,
            ends_at,
            new_start=starts_at != current.starts_at,
        ):
            expected = (422, "invalid_window")
        elif car is not None and car.driver.id != booked.owner.id:
            expected = (404, "vehicle_not_found")
        elif spot.is_out_of_service:
            expected = (409, "spot_out_of_service")
        elif any(r.vehicle_id == vehicle_id and overlaps(r, starts_at, ends_at) for r in others):
            expected = (409, "vehicle_busy")
        elif any(r.spot_id == spot.id and overlaps(r, starts_at, ends_at) for r in others):
            expected = (409, "spot_unavailable")
        response = await self.client.patch(
            f"{RESERVATIONS}/{booked.id}", json=body, headers=actor.headers
        )
        check(response, expected)
        if expected == OK:
            changed = response.json()
            assert (changed["spot_id"], changed["vehicle_id"]) == (spot.id, vehicle_id), changed
            self._check_reservation(changed, lots[spot.lot_id], starts_at, ends_at, "confirmed")

    async def _transition(
        self, booked: Booked, who: str, keyed: bool, verb: str, allowed: ReservationStatus
    ) -> tuple[Reservation, httpx.Response, Outcome]:
        """POSTs .../{verb} as ``who`` and checks the answer against the status machine."""
        current = await self._reservation(booked.id)
        actor = self._actor(booked, who, current.lot_id)
        expected = OK
        if who == "stranger":
            expected = (404, "reservation_not_found")
        elif current.status != allowed:
            expected = (409, "invalid_status")
        elif verb == "check-in" and not may_check_in(self.state.settings, current, self.now):
            expected = (409, "outside_check_in_window")
        path = f"{RESERVATIONS}/{booked.id}/{verb}"
        response, headers, content = await self._post(path, actor, None, keyed)
        check(response, expected)
        if expected == OK:
            await self._remember(response, path, headers, content)
        return current, response, expected

    @rule(
        # Bookings twice as often as walk-ins (which are checked in already).
        booked=st.one_of(bookings, bookings, stays),
        verb=st.sampled_from(("check-in", "check-out", "cancel")),
        who=st.sampled_from(("owner", "owner", "manager", "stranger")),
        keyed=st.booleans(),
        wait=st.sampled_from((None, 0, -15, 30, -16, 31, 20)),
    )
    @blocking
    async def transition(
        self, booked: Booked, verb: str, who: str, keyed: bool, wait: int | None
    ) -> None:
        """Checks in, checks out or cancels now, or first waits until ``wait`` minutes
        after the start (check-in, cancel) or the end (check-out). Check-in is open from
        15 minutes before the start to 30 after; past that the tick has made the booking a
        no-show. Checking out after the end is an overstay."""
        if wait is not None:
            current = await self._reservation(booked.id)
            boundary = current.ends_at if verb == "check-out" else current.starts_at
            await self._wait_until(boundary + timedelta(minutes=wait))
        allowed = (
            ReservationStatus.checked_in if verb == "check-out" else ReservationStatus.confirmed
        )
        current, response, expected = await self._transition(booked, who, keyed, verb, allowed)
        if expected != OK:
            return
        body = response.json()
        if verb == "cancel":
            assert body["status"] == "cancelled", body
            assert instant(body["cancelled_at"]) == self.now, body
        elif verb == "check-in":
            assert body["status"] == "checked_in", body
            assert instant(body["checked_in_at"]) == self.now, body
        else:
            assert body["status"] == "completed", body
            assert instant(body["checked_out_at"]) == self.now, body
            lot = (await self._load()).lots[current.lot_id]
            assert Decimal(body["final_price"]) == self._final_price(lot, current, self.now), body

    def _final_price(self, lot: Lot, r: Reservation, left_at: datetime) -> Decimal:
        """A booking pays its window plus any overstay; a walk-in the time it stayed (at
        least a moment), plus any time past the spot's next reservation."""
        ends_at = r.ends_at
        if r.kind == ReservationKind.ticket:
            ends_at = max(min(left_at, r.ends_at), r.starts_at + timedelta(seconds=1))
        return self._price(lot, r.starts_at, ends_at, left_at)

    # --- replays -----------------------------------------------------------------------

    # Drawn here: hypothesis draws only on the thread that runs the test.
    @precondition(lambda self: bool(self.keyed))
    @rule(data=st.data(), other_request=st.booleans())
    def send_key_again(self, data: st.DataObject, other_request: bool) -> None:
        """An Idempotency-Key used before, with the same request (the first response comes
        back) or with another (refused); neither acts again."""
        keyed = data.draw(st.sampled_from(self.keyed))
        self.portal.call(self._reuse_key if other_request else self._replay, keyed)

    async def _replay(self, keyed: Keyed) -> None:
        before = await self._snapshot()
        response = await self.client.post(keyed.path, content=keyed.body, headers=keyed.headers)
        assert response.status_code == keyed.status, response.text
        assert response.content == keyed.content
        assert response.headers.get("Idempotent-Replayed") == "true"
        assert await self._snapshot() == before

    async def _reuse_key(self, keyed: Keyed) -> None:
        verb = "check-in" if keyed.path.endswith("/cancel") else "cancel"
        path = f"{RESERVATIONS}/{keyed.reservation_id}/{verb}"
        headers = {k: v for k, v in keyed.headers.items() if k != "Content-Type"}
        before = await self._snapshot()
        response = await self.client.post(path, headers=headers)
        assert_error(response, 422, "idempotency_key_reused")
        assert await self._snapshot() == before

    # --- time ----------------------------------------------------------------------------

    @precondition(lambda self: self.now - NOW < MAX_ELAPSED)
    @rule(minutes=st.sampled_from((5, 1, 10, 14, 15, 16, 30, 31, 45, 120)), sweep=st.booleans())
    @blocking
    async def advance_clock(self, minutes: int, sweep: bool) -> None:
        await self._wait_until(self.now + timedelta(minutes=minutes), sweep=sweep)

    async def _wait_until(self, moment: datetime, *, sweep: bool = False) -> None:
        """Time passes (never back, nor past ``MAX_ELAPSED``); the engine's tick runs, and
        with ``sweep`` the sweeper's pass first (both run in the background of every
        process)."""
        if not self.now < moment <= NOW + MAX_ELAPSED:
            return
        # Whatever is being recounted is recounted at the old time first.
        await self.state.availability.settle()
        self.now = moment
        if sweep:
            await sweeper.sweep(self.state)
        await self.state.availability.tick()

    # --- devices and managers --------------------------------------------------------------

    @rule(
        events=st.lists(
            st.tuples(
                st.sampled_from(("B1", "B2", "B1", "B2", "A1")),
                st.booleans(),
                st.sampled_from((0, 1, 5, 20, -2, -10)),
            ),
            min_size=1,
            max_size=3,
        ),
        one_by_one=st.booleans(),
    )
    @blocking
    async def sensor_reports(self, events: list[tuple[str, bool, int]], one_by_one: bool) -> None:
        """Lot B's sensor reports spots (A1 is not one of them), in or out of order,
        some from the future (negative minutes ago), in one batch or one by one."""
        spots = (await self._load()).spots
        lot_b = self.sites["B"].lot_id
        readings = {
            s.label: (s.sensor_occupied, s.sensor_observed_at)
            for s in spots.values()
            if s.lot_id == lot_b
        }
        latest = self.now + timedelta(minutes=5)
        expected: list[tuple[str, str | None]] = []
        sent = []
        for label, occupied, minutes_ago in events:
            at = self.now - timedelta(minutes=minutes_ago)
            sent.append({"spot": label, "occupied": occupied, "observed_at": at.isoformat()})
            if label not in readings:
                expected.append(("rejected", "unknown_spot"))
            elif at > latest:
                expected.append(("rejected", "observed_in_future"))
            elif (last := readings[label][1]) is None or at > last:
                readings[label] = (occupied, at)
                expected.append(("applied", None))
            elif at == last and occupied == readings[label][0]:
                expected.append(("duplicate", None))
            else:
                expected.append(("stale", None))
        results = []
        for batch in [[event] for event in sent] if one_by_one else [sent]:
            response = await self.client.post(
                SPOT_EVENTS, json={"events": batch}, headers=self.sensor.headers
            )
            assert response.status_code == 200, response.text
            results += response.json()["results"]
        assert [(r["result"], r["code"]) for r in results] == expected, results

    @rule(
        booked=st.none() | stays | bookings,
        lot=st.sampled_from(("A", "B")),
        entry=st.booleans(),
        minutes_ago=st.sampled_from((0, 2, 10, -3, -10)),
        wait=st.booleans(),
    )
    @blocking
    async def gate_passage(
        self, booked: Booked | None, lot: str, entry: bool, minutes_ago: int, wait: bool
    ) -> None:
        """A gate reads a plate going in or out, ``minutes_ago`` (negative: a gate clock
        ahead): the car of a reservation at its lot (with ``wait``, once its start or end
        has come), or a stranger's at ``lot``."""
        lot_id, plate = self.sites[lot].lot_id, "ZZ999"
        if booked is not None:
            reservation = await self._reservation(booked.id)
            lot_id, plate = reservation.lot_id, reservation.plate
            if wait:
                await self._wait_until(reservation.starts_at if entry else reservation.ends_at)
        gate = next(self.gates[name] for name, s in self.sites.items() if s.lot_id == lot_id)
        at = self.now - timedelta(minutes=minutes_ago)
        stored = await self._load()
        rows = [r for r in stored.reservations if r.lot_id == lot_id and r.plate == plate]
        # Entry: the earliest confirmed booking of the plate whose check-in is open;
        # exit: the plate's stay checked in last.
        matched: Reservation | None
        if entry:
            waiting = [r for r in rows if may_check_in(self.state.settings, r, at)]
            matched = min(waiting, key=lambda r: (r.starts_at, r.id or 0), default=None)
        else:
            stays = [r for r in rows if r.status == ReservationStatus.checked_in]
            matched = max(
                stays, key=lambda r: (r.checked_in_at or r.starts_at, r.id or 0), default=None
            )
        body = {
            "direction": "entry" if entry else "exit",
            "plate": plate,
            "observed_at": at.isoformat(),
        }
        response = await self.client.post(GATE_EVENTS, json=body, headers=gate.headers)
        if at > self.now + timedelta(minutes=5):
            assert_error(response, 422, "observed_in_future")
            return
        assert response.status_code == 200, response.text
        passage = response.json()
        if matched is None:
            result = "unplanned" if entry else "unmatched_exit"
        else:
            result = "checked_in" if entry else "checked_out"
        assert passage["result"] == result, (passage, matched)
        assert passage["reservation_id"] == (matched.id if matched else None), passage
        if matched is not None and not entry:
            assert matched.checked_in_at is not None
            left_at = max(at, matched.checked_in_at)
            lot_row = stored.lots[lot_id]
            assert Decimal(passage["final_price"]) == self._final_price(lot_row, matched, left_at)

    @rule(label=st.sampled_from(LABELS), out_of_service=st.booleans())
    @blocking
    async def set_out_of_service(self, label: str, out_of_service: bool) -> None:
        spot_id = self.spot_ids[label]
        spot = (await self._load()).spots[spot_id]
        manager = self._manager_of(spot.lot_id)
        response = await self.client.patch(
            f"{SPOTS}/{spot_id}", json={"out_of_service": out_of_service}, headers=manager.headers
        )
        assert response.status_code == 200, response.text

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    @blocking
    async def invariants_hold(self) -> None:
        """Checked after every step (one read of the database for all of them)."""
        stored = await self._load()
        self._check_no_overlaps(stored)
        self._check_no_show_expiry(stored)
        self._check_prices(stored)
        await self._check_availability(stored)

    def _check_no_overlaps(self, stored: Stored) -> None:
        """No two active reservations of one spot, or of one vehicle, overlap."""
        active = [r for r in stored.reservations if is_active(r)]
        for i, one in enumerate(active):
            for other in active[i + 1 :]:
                if one.starts_at < other.ends_at and other.starts_at < one.ends_at:
                    assert one.spot_id != other.spot_id, ("spot booked twice", one, other)
                    assert one.vehicle_id != other.vehicle_id, ("vehicle twice", one, other)

    def _check_no_show_expiry(self, stored: Stored) -> None:
        """Every clock move ticks: no booking is still confirmed past its check-in grace."""
        grace = timedelta(minutes=self.state.settings.no_show_grace_minutes)
        late = [
            r
            for r in stored.reservations
            if r.status == ReservationStatus.confirmed and r.starts_at + grace < self.now
        ]
        assert late == [], late

    def _check_prices(self, stored: Stored) -> None:
        """Quotes and final prices are the pricing function of the lot's rates."""
        for r in stored.reservations:
            lot = stored.lots[r.lot_id]
            assert r.price_quote == self._price(lot, r.starts_at, r.ends_at), r
            if r.status == ReservationStatus.completed:
                assert r.checked_out_at is not None, r
                assert r.final_price == self._final_price(lot, r, r.checked_out_at), r
            else:
                assert r.final_price is None, r

    async def _check_availability(self, stored: Stored) -> None:
        """Once the engine has settled, each lot's record (read alone, in the list and in
        the mirror) is the engine's recount and the independent count from the rows, and
        each spot's listed state is the one worked out from the rows."""
        await self.state.availability.settle()
        lot_ids = [site.lot_id for site in self.sites.values()]
        # Reads only, so all at once.
        paths = [f"{AVAILABILITY}/{lot_id}" for lot_id in lot_ids]
        paths += [f"{LOTS}/{lot_id}/spots" for lot_id in lot_ids] + [AVAILABILITY]
        recounted, (*responses, listing) = await asyncio.gather(
            recount_lots(self.state, lot_ids),
            asyncio.gather(*(self.client.get(path) for path in paths)),
        )
        for response in [*responses, listing]:
            assert response.status_code == 200, response.text
        records = [response.json() for response in responses[: len(lot_ids)]]
        assert listing.json() == {"lots": records}
        for lot_id, record, response, listed in zip(
            lot_ids, records, responses, responses[len(lot_ids) :], strict=False
        ):
            assert self.state.mirror.entries[lot_id].body == response.content
            assert counts(record) == recounted[lot_id]
            states = self._spot_states(lot_id, stored)
            expected = self._counts(stored.lots[lot_id], states, record["occupancy_source"])
            assert {k: record[k] for k in expected} == expected, (record, states)
            assert {s["label"]: s["state"] for s in listed.json()["items"]} == states

    def _spot_states(self, lot_id: int, stored: Stored) -> dict[str, str]:
        """Each spot's state now, worked out from the rows."""
        states = {}
        for spot in stored.spots.values():
            if spot.lot_id != lot_id:
                continue
            holding = [
                r for r in stored.reservations if r.spot_id == spot.id and holds_now(r, self.now)
            ]
            if spot.is_out_of_service:
                state = "out_of_service"
            elif spot.sensor_occupied or any(
                r.status == ReservationStatus.checked_in for r in holding
            ):
                state = "occupied"
            elif holding:
                state = "reserved"
            else:
                state = "available"
            states[spot.label] = state
        return states

    def _counts(self, lot: Lot, states: dict[str, str], source: str) -> Json:
        """A lot's counts from its spots' states: cars let in by a gate unplanned take free
        spots of a lot counted from its reservations."""
        free = sum(state == "available" for state in states.values())
        reserved = sum(state == "reserved" for state in states.values())
        occupied = sum(state == "occupied" for state in states.values())
        if source == "reservations":
            unplanned = min(lot.unplanned_inside, free)
            free, occupied = free - unplanned, occupied + unplanned
        capacity = free + reserved + occupied
        ratio = self.state.settings.availability_almost_full_ratio
        status = "full" if free == 0 else "almost_full" if free < capacity * ratio else "open"
        return {
            "capacity": capacity,
            "free": free,
            "reserved": reserved,
            "occupied": occupied,
            "out_of_service": len(states) - capacity,
            "status": status,
        }


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis keeps a cache (and would keep its example database) under the current
    folder: in the test's folder instead, so the work tree stays clean."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)


@pytest.mark.usefixtures("hypothesis_home")
def test_any_sequence_of_api_calls_keeps_the_invariants(settings: Settings, tmp_path: Path) -> None:
    profile = os.environ.get("PARKSPOT_TEST_HYPOTHESIS_PROFILE", PROFILE)
    with start_blocking_portal(backend="asyncio") as portal:

        class Machine(ParkingMachine):
            world = World(portal, create_app(settings), settings, tmp_path)

        run_state_machine_as_test(Machine, settings=hypothesis.settings.get_profile(profile))


# --- what the machine found, kept as plain examples ------------------------------------


@pytest.mark.parametrize("hours", [2, 0.5])
async def test_a_recount_at_the_end_of_the_grace_keeps_the_no_show_due(
    client: httpx.AsyncClient,
    state: AppState,
    make_user: MakeUser,
    make_operator: MakeOperator,
    hours: float,
) -> None:
    """A lot recounted exactly when a booking's check-in grace ends (check-in still open)
    must still have the no-show as its next boundary, also when the booking has ended."""
    freeze_clock(state)
    site = await make_site(client, make_user, make_operator, spots=1)
    driver = await make_driver(client, make_user)
    booked = await book(client, driver, at(1), at(1 + hours), spot_id=site.spot("A1")["id"])
    assert booked.status_code == 201, booked.text
    await state.availability.settle()
    grace = timedelta(minutes=state.settings.no_show_grace_minutes)
    for late in (grace, grace + timedelta(minutes=1)):
        freeze_clock(state, at(1) + late)
        await state.availability.tick()
        await state.availability.settle()

    response = await client.get(f"{RESERVATIONS}/{booked.json()['id']}", headers=driver.headers)
    assert response.json()["status"] == "no_show"
