"""Booking invariants: no double booking under concurrency (and in the database itself), one
vehicle in one place, the window rules, the hold cap, what may be booked, the server's choice
of spot, server-side prices, free spots and spot states, and deletions blocked by bookings.

The app's clock is fixed at ``NOW``; every window is placed relative to it.
"""

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.config import Settings
from parkspot.db.engine import create_engine
from parkspot.db.session import Database
from parkspot.lots import pricing
from parkspot.models import ACTIVE_STATUSES, Lot, Reservation
from parkspot.state import AppState
from tests.conftest import PG_ADMIN_URL, MakeOperator, MakeUser, assert_error
from tests.lot_helpers import LOTS, SPOTS, add_member
from tests.reservation_helpers import (
    NOW,
    RESERVATIONS,
    VEHICLES,
    Driver,
    Site,
    add_spot,
    add_vehicle,
    at,
    book,
    booking,
    freeze_clock,
    make_driver,
    make_site,
)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def frozen_clock(state: AppState) -> None:
    freeze_clock(state)


@pytest.fixture
async def site(client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator) -> Site:
    return await make_site(client, make_user, make_operator, spots=3)


@pytest.fixture
async def driver(client: httpx.AsyncClient, make_user: MakeUser) -> Driver:
    return await make_driver(client, make_user)


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def cancel(client: httpx.AsyncClient, driver: Driver, reservation_id: int) -> None:
    response = await client.post(f"{RESERVATIONS}/{reservation_id}/cancel", headers=driver.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


# --- what the database holds -------------------------------------------------------------

_OVERLAPPING_PAIRS = """
SELECT a.id, b.id FROM reservations a JOIN reservations b
  ON a.{column} = b.{column} AND a.id < b.id
WHERE a.status IN ('confirmed', 'checked_in') AND b.status IN ('confirmed', 'checked_in')
  AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at
"""


async def overlapping_pairs(state: AppState, column: str = "spot_id") -> list[tuple[int, int]]:
    """Pairs of active reservations of one spot (or ``vehicle_id``) whose windows overlap."""
    assert column in {"spot_id", "vehicle_id"}
    async with state.database.session(write=False) as session:
        rows = await session.execute(text(_OVERLAPPING_PAIRS.format(column=column)))
        return [(a, b) for a, b in rows.all()]


async def active_reservations(state: AppState) -> dict[int, Reservation]:
    async with state.database.session(write=False) as session:
        stmt = select(Reservation).where(col(Reservation.status).in_(ACTIVE_STATUSES))
        return {r.id: r for r in (await session.execute(stmt)).scalars() if r.id is not None}


async def free_spots(
    client: httpx.AsyncClient, site: Site, starts_at: datetime, ends_at: datetime, **params: Any
) -> tuple[int, list[str]]:
    response = await client.get(
        f"{LOTS}/{site.lot_id}/free-spots",
        params={"starts_at": iso(starts_at), "ends_at": iso(ends_at), **params},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["count"], [s["label"] for s in body["items"]]


# --- no double booking -------------------------------------------------------------------


async def test_fifty_concurrent_overlapping_bookings_of_one_spot_get_one_201_and_409s(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, state: AppState
) -> None:
    drivers = [await make_driver(client, make_user) for _ in range(50)]
    spot_id = site.spot("A1")["id"]
    # Every window overlaps every other one, and no two are the same.
    windows = [(at(2) + n * MINUTE, at(4) + 2 * n * MINUTE) for n in range(50)]

    responses = await asyncio.gather(
        *(
            book(client, d, s, e, spot_id=spot_id)
            for d, (s, e) in zip(drivers, windows, strict=True)
        )
    )

    winners = [r for r in responses if r.status_code == 201]
    assert len(winners) == 1, [r.status_code for r in responses]
    for response in responses:
        if response.status_code != 201:
            assert_error(response, 409, "spot_unavailable")
    assert await overlapping_pairs(state) == []
    active = await active_reservations(state)
    assert [r.id for r in active.values()] == [winners[0].json()["id"]]


async def test_concurrent_bookings_of_a_lot_fill_each_spot_once_then_get_lot_full(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
) -> None:
    spots = 5
    site = await make_site(client, make_user, make_operator, spots=spots)
    drivers = [await make_driver(client, make_user) for _ in range(spots + 20)]

    responses = await asyncio.gather(
        *(book(client, d, at(2), at(5), lot_id=site.lot_id) for d in drivers)
    )

    winners = [r.json() for r in responses if r.status_code == 201]
    assert len(winners) == spots, [r.status_code for r in responses]
    assert {w["spot_id"] for w in winners} == {s["id"] for s in site.spots}
    for response in responses:
        if response.status_code != 201:
            assert_error(response, 409, "lot_full")
    assert await overlapping_pairs(state) == []
    assert len(await active_reservations(state)) == spots


async def test_concurrent_reschedules_into_one_slot_move_exactly_one_reservation(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
) -> None:
    site = await make_site(client, make_user, make_operator, spots=20)
    drivers = [await make_driver(client, make_user) for _ in range(20)]
    ids = [
        created(await book(client, d, at(1), at(2), spot_id=s["id"]))["id"]
        for d, s in zip(drivers, site.spots, strict=True)
    ]
    a1 = site.spot("A1")["id"]

    responses = await asyncio.gather(
        *(
            client.patch(
                f"{RESERVATIONS}/{reservation_id}",
                json={"spot_id": a1, "starts_at": iso(at(5) + n * MINUTE), "ends_at": iso(at(7))},
                headers=d.headers,
            )
            for n, (d, reservation_id) in enumerate(zip(drivers[1:], ids[1:], strict=True))
        )
    )

    assert [r.status_code for r in responses].count(200) == 1, [r.text for r in responses]
    for response in responses:
        if response.status_code != 200:
            assert_error(response, 409, "spot_unavailable")
    assert await overlapping_pairs(state) == []
    # The losers keep their reservations as they were.
    active = await active_reservations(state)
    moved = next(r.json() for r in responses if r.status_code == 200)
    assert (active[moved["id"]].spot_id, active[moved["id"]].ends_at) == (a1, at(7))
    for reservation_id, spot in zip(ids, site.spots, strict=True):
        if reservation_id != moved["id"]:
            stored = active[reservation_id]
            assert (stored.spot_id, stored.starts_at) == (spot["id"], at(1))


async def test_concurrent_bookings_of_one_vehicle_in_many_spots_get_one_201(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, state: AppState
) -> None:
    site = await make_site(client, make_user, make_operator, spots=20)
    driver = await make_driver(client, make_user)

    responses = await asyncio.gather(
        *(
            book(client, driver, at(2) + n * MINUTE, at(3) + n * MINUTE, spot_id=s["id"])
            for n, s in enumerate(site.spots)
        )
    )

    assert [r.status_code for r in responses].count(201) == 1, [r.text for r in responses]
    for response in responses:
        if response.status_code != 201:
            assert_error(response, 409, "vehicle_busy")
    assert await overlapping_pairs(state, "vehicle_id") == []


async def test_concurrent_bookings_by_one_driver_stop_at_the_hold_cap(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
) -> None:
    # A cap below the connection pool's size, so that racers can all be in flight at once.
    limit = state.settings.booking_max_active_per_user = 3
    site = await make_site(client, make_user, make_operator, spots=12)
    driver = await make_driver(client, make_user)
    cars = [
        Driver(driver.actor, await add_vehicle(client, driver.actor, f"CAP{n}")) for n in range(12)
    ]

    responses = await asyncio.gather(
        *(
            book(client, car, at(2), at(3), spot_id=s["id"])
            for car, s in zip(cars, site.spots, strict=True)
        )
    )

    assert [r.status_code for r in responses].count(201) == limit, [r.text for r in responses]
    for response in responses:
        if response.status_code != 201:
            assert_error(response, 409, "reservation_limit_reached")
    assert len(await active_reservations(state)) == limit


class _DeadlockDetected(Exception):
    """What asyncpg raises in the transaction PostgreSQL aborts to break a deadlock."""

    sqlstate = "40P01"


async def test_a_booking_aborted_to_break_a_deadlock_is_written_again(
    client: httpx.AsyncClient,
    site: Site,
    driver: Driver,
    state: AppState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two bookings inserting conflicting rows at the same instant each wait for the other,
    and PostgreSQL aborts one of them. Races make that happen now and then; here the first
    write fails that way every time."""
    real_begin_nested = AsyncSession.begin_nested
    deadlocks = 0

    @asynccontextmanager
    async def deadlocked(session: AsyncSession) -> AsyncIterator[None]:
        async with real_begin_nested(session):
            yield
            raise DBAPIError("INSERT INTO reservations", None, _DeadlockDetected("deadlock"))

    def begin_nested(session: AsyncSession) -> Any:
        nonlocal deadlocks
        if deadlocks == 0:
            deadlocks += 1
            return deadlocked(session)
        return real_begin_nested(session)

    monkeypatch.setattr(AsyncSession, "begin_nested", begin_nested)
    response = await book(client, driver, at(1), at(2), lot_id=site.lot_id)
    monkeypatch.undo()

    reservation = created(response)
    assert deadlocks == 1
    assert list(await active_reservations(state)) == [reservation["id"]]
    assert await free_spots(client, site, at(1), at(2)) == (2, ["A2", "A3"])


async def test_the_database_enforces_no_double_booking_itself(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, state: AppState, settings: Settings
) -> None:
    """PostgreSQL: exclusion constraints refuse overlapping active rows however they are
    written. SQLite: a booking transaction holds the write lock from BEGIN on, so the checks
    made inside it cannot be raced."""
    if PG_ADMIN_URL:
        await _postgresql_refuses_overlapping_active_rows(client, make_user, site, state)
    else:
        await _sqlite_booking_writes_lock_at_begin(client, make_user, site, state, settings)


async def _postgresql_refuses_overlapping_active_rows(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, state: AppState
) -> None:
    first = await make_driver(client, make_user, plate="FIRST1")
    second = await make_driver(client, make_user, plate="SECOND2")
    a1, a2 = site.spot("A1"), site.spot("A2")

    def row(
        driver: Driver, spot: dict[str, Any], start: float, end: float, status: str
    ) -> dict[str, Any]:
        return {
            "user_id": driver.actor.id,
            "vehicle_id": driver.vehicle_id,
            "plate": f"P{driver.vehicle_id}",
            "spot_id": spot["id"],
            "spot_label": spot["label"],
            "lot_id": site.lot_id,
            "kind": "booking",
            "status": status,
            "starts_at": at(start),
            "ends_at": at(end),
            "price_quote": Decimal("1.00"),
            "currency": "EUR",
            "created_at": NOW,
            "updated_at": NOW,
        }

    async def write(values: dict[str, Any]) -> None:
        async with state.database.transaction() as session:
            await session.execute(insert(Reservation).values(**values))

    await write(row(first, a1, 10, 12, "confirmed"))
    # Another driver's overlapping window on the same spot, active in either status.
    for status in ("confirmed", "checked_in"):
        with pytest.raises(IntegrityError, match="ex_reservations_spot_id_window"):
            await write(row(second, a1, 11, 13, status))
    # The same vehicle on another spot at an overlapping time.
    with pytest.raises(IntegrityError, match="ex_reservations_vehicle_id_window"):
        await write(row(first, a2, 11.5, 12.5, "confirmed"))
    # Inactive rows may overlap, and half-open windows that only touch do not overlap.
    for status in ("cancelled", "completed", "no_show"):
        await write(row(second, a1, 11, 13, status))
    await write(row(second, a1, 12, 13, "confirmed"))
    await write(row(first, a2, 12, 13, "confirmed"))
    assert await overlapping_pairs(state) == []
    assert await overlapping_pairs(state, "vehicle_id") == []
    assert len(await active_reservations(state)) == 3


async def _sqlite_booking_writes_lock_at_begin(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, state: AppState, settings: Settings
) -> None:
    driver = await make_driver(client, make_user)
    statements: list[str] = []

    def record(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.strip())

    engine = state.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        created(await book(client, driver, at(1), at(2), spot_id=site.spot("A1")["id"]))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # The request's first statement takes the write lock; its reads run under it.
    assert statements[0] == "BEGIN IMMEDIATE", statements
    assert "BEGIN" not in statements
    assert any(s.startswith("INSERT INTO reservations") for s in statements)

    # While one write transaction is open, another cannot begin (it waits out its busy
    # timeout, here a short one, then fails) but readers go on.
    impatient = Database(create_engine(settings.model_copy(update={"sqlite_busy_timeout_ms": 50})))
    try:
        async with state.database.session(write=True) as holder:
            await holder.execute(text("SELECT 1"))
            async with impatient.session(write=True) as writer:
                with pytest.raises(OperationalError, match="database is locked"):
                    await writer.execute(text("SELECT 1"))
            async with impatient.session(write=False) as reader:
                count = await reader.execute(text("SELECT count(*) FROM reservations"))
                assert count.scalar_one() == 1
        async with impatient.session(write=True) as writer:
            assert (await writer.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await impatient.dispose()


@dataclass
class Held:
    """A booking the client saw confirmed (and not yet cancelled)."""

    driver: Driver
    spot_id: int
    starts_at: datetime
    ends_at: datetime


async def test_a_random_storm_of_bookings_cancels_and_reschedules_never_double_books(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
) -> None:
    rng = random.Random(20310310)
    site = await make_site(client, make_user, make_operator, spots=4)
    spot_ids = [s["id"] for s in site.spots]
    drivers: list[Driver] = []
    for n in range(8):
        driver = await make_driver(client, make_user, plate=f"STORM{n}A")
        drivers.append(driver)
        # Each driver has a second car, booked as often as the first.
        drivers.append(Driver(driver.actor, await add_vehicle(client, driver.actor, f"STORM{n}B")))
    held: dict[int, Held] = {}
    outcomes: dict[str, int] = {}

    def window() -> tuple[datetime, datetime]:
        starts_at = at(1) + 15 * MINUTE * rng.randrange(96)
        return starts_at, starts_at + 15 * MINUTE * rng.randint(1, 16)

    async def book_one() -> None:
        driver, (starts_at, ends_at) = rng.choice(drivers), window()
        by_lot = rng.random() < 0.3
        target = {"lot_id": site.lot_id} if by_lot else {"spot_id": rng.choice(spot_ids)}
        response = await book(client, driver, starts_at, ends_at, **target)
        if response.status_code == 201:
            body = response.json()
            held[body["id"]] = Held(driver, body["spot_id"], starts_at, ends_at)
            outcomes["booked"] = outcomes.get("booked", 0) + 1
            return
        code = response.json()["error"]["code"]
        assert response.status_code == 409, response.text
        assert code in {
            "spot_unavailable",
            "lot_full",
            "vehicle_busy",
            "reservation_limit_reached",
        }, response.text
        outcomes[code] = outcomes.get(code, 0) + 1

    async def cancel_one(reservation_id: int) -> None:
        await cancel(client, held[reservation_id].driver, reservation_id)
        del held[reservation_id]
        outcomes["cancelled"] = outcomes.get("cancelled", 0) + 1

    async def reschedule_one(reservation_id: int) -> None:
        before = held[reservation_id]
        starts_at, ends_at = window()
        change: dict[str, Any] = {"starts_at": iso(starts_at), "ends_at": iso(ends_at)}
        if rng.random() < 0.4:
            change["spot_id"] = rng.choice(spot_ids)
        response = await client.patch(
            f"{RESERVATIONS}/{reservation_id}", json=change, headers=before.driver.headers
        )
        if response.status_code == 200:
            body = response.json()
            held[reservation_id] = Held(before.driver, body["spot_id"], starts_at, ends_at)
            assert body["spot_id"] == change.get("spot_id", before.spot_id)
            outcomes["rescheduled"] = outcomes.get("rescheduled", 0) + 1
            return
        assert_error(response, 409)
        code = response.json()["error"]["code"]
        assert code in {"spot_unavailable", "vehicle_busy"}, response.text
        outcomes[f"reschedule_{code}"] = outcomes.get(f"reschedule_{code}", 0) + 1

    for _ in range(15):
        operations = []
        # One operation per reservation per batch: the model needs no ordering.
        untouched = list(held)
        rng.shuffle(untouched)
        for _ in range(10):
            roll = rng.random()
            if roll < 0.5 or not untouched:
                operations.append(book_one())
            elif roll < 0.7:
                operations.append(cancel_one(untouched.pop()))
            else:
                operations.append(reschedule_one(untouched.pop()))
        await asyncio.gather(*operations)

    assert await overlapping_pairs(state) == []
    assert await overlapping_pairs(state, "vehicle_id") == []
    active = await active_reservations(state)
    assert set(active) == set(held)
    for reservation_id, seen in held.items():
        stored = active[reservation_id]
        assert (stored.spot_id, stored.starts_at, stored.ends_at) == (
            seen.spot_id,
            seen.starts_at,
            seen.ends_at,
        )
        assert stored.vehicle_id == seen.driver.vehicle_id
    # The storm did exercise every path.
    for outcome in ("booked", "cancelled", "rescheduled", "spot_unavailable"):
        assert outcomes.get(outcome, 0) > 0, outcomes


# --- a vehicle is in one place at a time --------------------------------------------------


async def test_one_vehicle_cannot_hold_overlapping_reservations_even_in_two_lots(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    site: Site,
    driver: Driver,
) -> None:
    other = await make_site(client, make_user, make_operator, spots=2)
    created(await book(client, driver, at(10), at(12), spot_id=site.spot("A1")["id"]))

    response = await book(client, driver, at(11), at(13), spot_id=other.spot("A1")["id"])
    assert_error(response, 409, "vehicle_busy")
    assert response.json()["error"]["details"] == {"plate": f"TEST{driver.actor.id}"}
    assert_error(
        await book(client, driver, at(9), at(13), lot_id=other.lot_id), 409, "vehicle_busy"
    )
    assert_error(
        await book(client, driver, at(11), at(11.5), spot_id=site.spot("A2")["id"]),
        409,
        "vehicle_busy",
    )
    # Another car of the same driver is free.
    second_car = Driver(driver.actor, await add_vehicle(client, driver.actor, "SECOND1"))
    created(await book(client, second_car, at(11), at(13), spot_id=other.spot("A1")["id"]))


async def test_adjacent_windows_are_allowed_for_one_spot_and_one_vehicle(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, driver: Driver, state: AppState
) -> None:
    neighbour = await make_driver(client, make_user)
    a1, a2 = site.spot("A1")["id"], site.spot("A2")["id"]
    created(await book(client, driver, at(10), at(11), spot_id=a1))

    # The spot right after, by someone else; the same car right after, elsewhere.
    created(await book(client, neighbour, at(11), at(12), spot_id=a1))
    created(await book(client, driver, at(11), at(12), spot_id=a2))
    created(await book(client, driver, at(9), at(10), spot_id=a1))
    # One minute of overlap is an overlap.
    late = await make_driver(client, make_user)
    response = await book(client, late, at(10) + 59 * MINUTE, at(13), spot_id=a1)
    assert_error(response, 409, "spot_unavailable")
    assert response.json()["error"]["details"] == {"spot": "A1"}
    assert await overlapping_pairs(state) == []
    assert await overlapping_pairs(state, "vehicle_id") == []


# --- the window rules ---------------------------------------------------------------------

WindowCase = Callable[[Settings], tuple[datetime, datetime]]


@pytest.mark.parametrize(
    ("window", "message"),
    [
        pytest.param(lambda s: (at(3), at(2)), "ends_at must be after starts_at", id="ends-first"),
        pytest.param(lambda s: (at(3), at(3)), "ends_at must be after starts_at", id="empty"),
        pytest.param(
            lambda s: (at(3), at(3) + (s.booking_min_minutes - 1) * MINUTE),
            "at least",
            id="too-short",
        ),
        pytest.param(
            lambda s: (at(3), at(3) + s.booking_max_hours * HOUR + MINUTE),
            "at most",
            id="too-long",
        ),
        pytest.param(
            lambda s: (NOW - (s.booking_start_tolerance_minutes + 1) * MINUTE, at(1)),
            "in the past",
            id="started-too-long-ago",
        ),
        pytest.param(
            lambda s: (
                NOW + timedelta(days=s.booking_max_days_ahead) + MINUTE,
                NOW + timedelta(days=s.booking_max_days_ahead) + HOUR,
            ),
            "days ahead",
            id="too-far-ahead",
        ),
    ],
)
async def test_a_window_breaking_a_rule_gets_422_invalid_window(
    client: httpx.AsyncClient,
    site: Site,
    driver: Driver,
    settings: Settings,
    window: WindowCase,
    message: str,
) -> None:
    starts_at, ends_at = window(settings)
    for target in ({"spot_id": site.spot("A1")["id"]}, {"lot_id": site.lot_id}):
        response = await book(client, driver, starts_at, ends_at, **target)
        assert_error(response, 422, "invalid_window")
        assert message in response.json()["error"]["message"]
    # A reschedule is held to the same rules.
    reservation = created(await book(client, driver, at(1), at(2), spot_id=site.spot("A2")["id"]))
    response = await client.patch(
        f"{RESERVATIONS}/{reservation['id']}",
        json={"starts_at": iso(starts_at), "ends_at": iso(ends_at)},
        headers=driver.headers,
    )
    assert_error(response, 422, "invalid_window")
    count, _ = await free_spots(client, site, at(1), at(2))
    assert count == 2


async def test_windows_on_the_limits_of_the_rules_are_booked(
    client: httpx.AsyncClient, site: Site, driver: Driver, settings: Settings
) -> None:
    a1 = site.spot("A1")["id"]
    started = NOW - settings.booking_start_tolerance_minutes * MINUTE
    shortest = started + settings.booking_min_minutes * MINUTE
    created(await book(client, driver, started, shortest, spot_id=a1))
    created(
        await book(client, driver, at(1), at(1) + settings.booking_max_hours * HOUR, spot_id=a1)
    )
    furthest = NOW + timedelta(days=settings.booking_max_days_ahead)
    created(await book(client, driver, furthest, furthest + HOUR, spot_id=a1))


@pytest.mark.parametrize("field", ["starts_at", "ends_at"])
async def test_a_time_without_an_offset_gets_422_validation_error(
    client: httpx.AsyncClient, site: Site, driver: Driver, field: str
) -> None:
    body = booking(driver, at(1), at(2), spot_id=site.spot("A1")["id"])
    body[field] = at(1.5).replace(tzinfo=None).isoformat()

    response = await client.post(RESERVATIONS, json=body, headers=driver.headers)

    assert_error(response, 422, "validation_error")
    message = response.json()["error"]["message"]
    assert field in message
    assert "timezone" in message


async def test_ids_are_json_integers_as_json_schema_reads_them(
    client: httpx.AsyncClient, site: Site, driver: Driver
) -> None:
    # Found by tests/test_fuzz.py: 7.0 is an integer to JSON Schema, and was refused.
    spot_id = site.spot("A1")["id"]
    for refused in (True, str(spot_id)):
        body = booking(driver, at(1), at(2), spot_id=spot_id) | {"spot_id": refused}
        response = await client.post(RESERVATIONS, json=body, headers=driver.headers)
        assert_error(response, 422, "validation_error")

    body = booking(driver, at(1), at(2), spot_id=spot_id) | {"spot_id": float(spot_id)}
    response = await client.post(RESERVATIONS, json=body, headers=driver.headers)

    assert response.status_code == 201, response.text
    assert response.json()["spot_id"] == spot_id


@pytest.mark.parametrize(
    ("target", "message"),
    [
        pytest.param({"spot_id": True, "lot_id": True}, "exactly one of", id="both"),
        pytest.param({}, "exactly one of", id="neither"),
        pytest.param({"spot_id": True, "kind": "ev"}, "kind goes with lot_id", id="kind-with-spot"),
    ],
)
async def test_a_booking_names_a_spot_or_a_lot_and_only_a_lot_takes_a_kind(
    client: httpx.AsyncClient, site: Site, driver: Driver, target: dict[str, Any], message: str
) -> None:
    body = booking(driver, at(1), at(2))
    if target.pop("spot_id", False):
        body["spot_id"] = site.spot("A1")["id"]
    if target.pop("lot_id", False):
        body["lot_id"] = site.lot_id
    body |= target

    response = await client.post(RESERVATIONS, json=body, headers=driver.headers)

    assert_error(response, 422, "validation_error")
    assert message in response.json()["error"]["message"]
    count, _ = await free_spots(client, site, at(1), at(2))
    assert count == 3


# --- the hold cap -------------------------------------------------------------------------


async def test_the_hold_cap_refuses_one_more_upcoming_booking_until_one_is_cancelled(
    client: httpx.AsyncClient, site: Site, driver: Driver, settings: Settings
) -> None:
    limit = settings.booking_max_active_per_user
    a1 = site.spot("A1")["id"]
    ids = [
        created(await book(client, driver, at(1 + 2 * n), at(2 + 2 * n), spot_id=a1))["id"]
        for n in range(limit)
    ]

    response = await book(client, driver, at(100), at(101), lot_id=site.lot_id)
    assert_error(response, 409, "reservation_limit_reached")
    assert response.json()["error"]["details"] == {"limit": limit}

    await cancel(client, driver, ids[3])
    created(await book(client, driver, at(100), at(101), lot_id=site.lot_id))
    assert_error(
        await book(client, driver, at(102), at(103), spot_id=a1), 409, "reservation_limit_reached"
    )


# --- what may be booked -------------------------------------------------------------------


async def test_a_closed_lot_cannot_be_booked(
    client: httpx.AsyncClient, site: Site, driver: Driver
) -> None:
    response = await client.patch(
        f"{LOTS}/{site.lot_id}", json={"is_active": False}, headers=site.manager.headers
    )
    assert response.status_code == 200, response.text

    for target in ({"spot_id": site.spot("A1")["id"]}, {"lot_id": site.lot_id}):
        assert_error(await book(client, driver, at(1), at(2), **target), 409, "lot_closed")

    response = await client.patch(
        f"{LOTS}/{site.lot_id}", json={"is_active": True}, headers=site.manager.headers
    )
    assert response.status_code == 200, response.text
    created(await book(client, driver, at(1), at(2), lot_id=site.lot_id))


async def test_a_spot_out_of_service_cannot_be_booked_and_is_never_picked(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, driver: Driver
) -> None:
    for label in ("A1", "A2"):
        response = await client.patch(
            f"{SPOTS}/{site.spot(label)['id']}",
            json={"out_of_service": True},
            headers=site.manager.headers,
        )
        assert response.status_code == 200, response.text

    response = await book(client, driver, at(1), at(2), spot_id=site.spot("A1")["id"])
    assert_error(response, 409, "spot_out_of_service")
    assert response.json()["error"]["details"] == {"spot": "A1"}
    assert (
        created(await book(client, driver, at(1), at(2), lot_id=site.lot_id))["spot_id"]
        == (site.spot("A3")["id"])
    )
    other = await make_driver(client, make_user)
    assert_error(await book(client, other, at(1), at(2), lot_id=site.lot_id), 409, "lot_full")


async def test_a_members_only_lot_is_not_found_for_a_stranger_and_bookable_by_a_member(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    driver: Driver,
    state: AppState,
) -> None:
    site = await make_site(client, make_user, make_operator, spots=1, visibility="members")
    spot_id = site.spot("A1")["id"]

    assert_error(await book(client, driver, at(1), at(2), spot_id=spot_id), 404, "spot_not_found")
    assert_error(await book(client, driver, at(1), at(2), lot_id=site.lot_id), 404, "lot_not_found")

    await add_member(state, site.operator_id, driver.actor.id)
    created(await book(client, driver, at(1), at(2), spot_id=spot_id))


async def test_another_users_vehicle_is_not_found(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, driver: Driver
) -> None:
    owner = await make_driver(client, make_user)
    body = booking(owner, at(1), at(2), spot_id=site.spot("A1")["id"])

    response = await client.post(RESERVATIONS, json=body, headers=driver.headers)

    assert_error(response, 404, "vehicle_not_found")
    count, _ = await free_spots(client, site, at(1), at(2))
    assert count == 3


# --- the server's choice of spot ----------------------------------------------------------


async def test_a_requested_kind_is_the_only_kind_the_server_picks(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    site = await make_site(client, make_user, make_operator, spots=2)
    ev = await add_spot(client, site, "E1", "ev")
    accessible = await add_spot(client, site, "H1", "accessible")
    first, second, third = [await make_driver(client, make_user) for _ in range(3)]

    booked = created(await book(client, first, at(1), at(2), lot_id=site.lot_id, kind="ev"))
    assert booked["spot_id"] == ev["id"]
    booked = created(
        await book(client, second, at(1), at(2), lot_id=site.lot_id, kind="accessible")
    )
    assert booked["spot_id"] == accessible["id"]
    # Standard spots are still free, but they are not what was asked for.
    for kind in ("ev", "accessible", "motorcycle"):
        response = await book(client, third, at(1), at(2), lot_id=site.lot_id, kind=kind)
        assert_error(response, 409, "lot_full")
    booked = created(await book(client, third, at(1), at(2), lot_id=site.lot_id, kind="standard"))
    assert booked["spot_id"] in {site.spot("A1")["id"], site.spot("A2")["id"]}


async def test_without_a_kind_the_server_never_picks_accessible_or_motorcycle_spots(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    site = await make_site(client, make_user, make_operator, spots=0)
    for label, kind in [
        ("H1", "accessible"),
        ("M1", "motorcycle"),
        ("E1", "ev"),
        ("C1", "compact"),
        ("S1", "standard"),
    ]:
        await add_spot(client, site, label, kind)
    drivers = [await make_driver(client, make_user) for _ in range(4)]

    kinds = []
    for driver in drivers[:3]:
        spot_id = created(await book(client, driver, at(1), at(2), lot_id=site.lot_id))["spot_id"]
        kinds.append(next(s["kind"] for s in site.spots if s["id"] == spot_id))

    # A standard spot first; then the other ordinary car spots.
    assert kinds[0] == "standard"
    assert sorted(kinds) == ["compact", "ev", "standard"]
    assert_error(await book(client, drivers[3], at(1), at(2), lot_id=site.lot_id), 409, "lot_full")
    count, labels = await free_spots(client, site, at(1), at(2))
    assert (count, labels) == (2, ["H1", "M1"])


async def test_the_server_picks_the_spot_that_leaves_no_gap_too_short_to_book(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    settings: Settings,
) -> None:
    site = await make_site(client, make_user, make_operator, spots=3)
    neighbour = await make_driver(client, make_user)
    shortest = settings.booking_min_minutes * MINUTE
    starts_at, ends_at = at(5), at(7)
    # A1: a booking ends just before the window, leaving a gap shorter than any booking.
    # A2: a booking ends well before (a bookable gap). A3: nothing on the day.
    # A1 is first by label and the tightest fit, so only the gap rule rules it out.
    a1_end = starts_at - shortest + MINUTE
    created(await book(client, neighbour, a1_end - HOUR, a1_end, spot_id=site.spot("A1")["id"]))
    other = await make_driver(client, make_user)
    created(await book(client, other, at(1), at(2), spot_id=site.spot("A2")["id"]))
    driver = await make_driver(client, make_user)

    booked = created(await book(client, driver, starts_at, ends_at, lot_id=site.lot_id))

    # A2 leaves a bookable gap and keeps A3's long free stretch whole.
    assert booked["spot_id"] == site.spot("A2")["id"]
    # A booking that ends exactly where the next one starts is the best fit of all.
    later = await make_driver(client, make_user)
    booked = created(await book(client, later, at(3), starts_at, lot_id=site.lot_id))
    assert booked["spot_id"] == site.spot("A2")["id"]


async def test_a_lot_with_no_spot_free_for_the_whole_window_is_full(
    client: httpx.AsyncClient, make_user: MakeUser, site: Site, driver: Driver
) -> None:
    for n, spot in enumerate(site.spots):
        # Each spot is taken for some part of the window.
        holder = await make_driver(client, make_user)
        created(await book(client, holder, at(2 + n), at(2.5 + n), spot_id=spot["id"]))

    response = await book(client, driver, at(1), at(5), lot_id=site.lot_id)

    assert_error(response, 409, "lot_full")
    created(await book(client, driver, at(5), at(6), lot_id=site.lot_id))


# --- prices are the server's --------------------------------------------------------------


async def test_the_price_quote_is_the_lots_price_for_the_window(
    client: httpx.AsyncClient, site: Site, driver: Driver, state: AppState
) -> None:
    # 2.50 an hour, at most 20.00 a day.
    two_hours = created(await book(client, driver, at(1), at(3), spot_id=site.spot("A1")["id"]))
    assert (two_hours["price_quote"], two_hours["currency"]) == ("5.00", "EUR")
    assert two_hours["final_price"] is None

    # 26 h 10 min is billed 26 h 15 min: a capped first day (20.00) and 2 h 15 min (5.625).
    starts_at, ends_at = at(4), at(4) + 26 * HOUR + 10 * MINUTE
    long = created(await book(client, driver, starts_at, ends_at, lot_id=site.lot_id))
    assert long["price_quote"] == "25.63"

    quote = await client.get(
        f"{LOTS}/{site.lot_id}/quote", params={"starts_at": iso(starts_at), "ends_at": iso(ends_at)}
    )
    assert quote.json()["amount"] == "25.63"
    async with state.database.session(write=False) as session:
        lot = await session.get(Lot, site.lot_id)
        assert lot is not None
        expected = pricing.price(lot, state.billing, starts_at, ends_at)
    assert Decimal(long["price_quote"]) == expected.amount


@pytest.mark.parametrize("field", ["price_quote", "final_price", "price", "currency"])
async def test_a_price_sent_by_the_client_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, site: Site, driver: Driver, field: str, state: AppState
) -> None:
    value = "USD" if field == "currency" else "0.01"
    body = booking(driver, at(1), at(3), spot_id=site.spot("A1")["id"]) | {field: value}

    response = await client.post(RESERVATIONS, json=body, headers=driver.headers)

    assert_error(response, 422, "validation_error")
    assert field in response.json()["error"]["message"]
    assert await active_reservations(state) == {}

    reservation = created(await book(client, driver, at(1), at(3), spot_id=site.spot("A1")["id"]))
    response = await client.patch(
        f"{RESERVATIONS}/{reservation['id']}", json={field: value}, headers=driver.headers
    )
    assert_error(response, 422, "validation_error")
    response = await client.get(f"{RESERVATIONS}/{reservation['id']}", headers=driver.headers)
    assert (response.json()["price_quote"], response.json()["currency"]) == ("5.00", "EUR")


# --- free spots and spot states -----------------------------------------------------------


async def test_free_spots_leave_out_spots_booked_for_part_of_the_window_until_cancelled(
    client: httpx.AsyncClient, site: Site, driver: Driver
) -> None:
    reservation = created(await book(client, driver, at(10), at(12), spot_id=site.spot("A1")["id"]))

    assert await free_spots(client, site, at(11), at(13)) == (2, ["A2", "A3"])
    assert await free_spots(client, site, at(9), at(10) + MINUTE) == (2, ["A2", "A3"])
    # Windows that only touch the booking leave the spot free.
    assert await free_spots(client, site, at(12), at(13)) == (3, ["A1", "A2", "A3"])
    assert await free_spots(client, site, at(9), at(10)) == (3, ["A1", "A2", "A3"])
    assert await free_spots(client, site, at(11), at(13), kind="standard") == (2, ["A2", "A3"])

    await cancel(client, driver, reservation["id"])

    assert await free_spots(client, site, at(11), at(13)) == (3, ["A1", "A2", "A3"])


async def test_a_spots_state_follows_its_reservation_through_the_stay(
    client: httpx.AsyncClient, site: Site, driver: Driver, state: AppState
) -> None:
    a1 = site.spot("A1")["id"]
    reservation = created(await book(client, driver, at(1), at(3), spot_id=a1))
    path = f"{RESERVATIONS}/{reservation['id']}"

    async def spot_state() -> str:
        one = (await client.get(f"{SPOTS}/{a1}")).json()["state"]
        listed = (await client.get(f"{LOTS}/{site.lot_id}/spots")).json()["items"]
        assert next(s["state"] for s in listed if s["id"] == a1) == one
        return str(one)

    assert await spot_state() == "available"
    freeze_clock(state, at(1) - 5 * MINUTE)
    assert await spot_state() == "available"
    response = await client.post(f"{path}/check-in", headers=driver.headers)
    assert response.status_code == 200, response.text
    # Checked in before the start: the car is there.
    assert await spot_state() == "occupied"
    freeze_clock(state, at(2))
    assert await spot_state() == "occupied"
    response = await client.post(f"{path}/check-out", headers=driver.headers)
    assert response.status_code == 200, response.text
    assert response.json()["final_price"] == "5.00"
    assert await spot_state() == "available"
    assert await free_spots(client, site, at(2), at(3)) == (3, ["A1", "A2", "A3"])


async def test_a_confirmed_reservation_covering_now_shows_its_spot_reserved(
    client: httpx.AsyncClient, site: Site, driver: Driver, state: AppState
) -> None:
    a2 = site.spot("A2")["id"]
    created(await book(client, driver, at(1), at(3), spot_id=a2))

    states = {}
    for moment in (at(1) - MINUTE, at(1), at(2), at(3) - MINUTE, at(3)):
        freeze_clock(state, moment)
        states[moment] = (await client.get(f"{SPOTS}/{a2}")).json()["state"]

    assert list(states.values()) == ["available", "reserved", "reserved", "reserved", "available"]


# --- deletions blocked by bookings --------------------------------------------------------


async def test_a_lot_with_an_upcoming_reservation_cannot_be_deleted_until_it_is_cancelled(
    client: httpx.AsyncClient, site: Site, driver: Driver
) -> None:
    reservation = created(await book(client, driver, at(1), at(2), lot_id=site.lot_id))
    path = f"{LOTS}/{site.lot_id}"

    assert_error(
        await client.delete(path, headers=site.manager.headers), 409, "lot_has_reservations"
    )
    await cancel(client, driver, reservation["id"])
    assert (await client.delete(path, headers=site.manager.headers)).status_code == 204

    kept = (await client.get(f"{RESERVATIONS}/{reservation['id']}", headers=driver.headers)).json()
    assert (kept["lot_id"], kept["spot_label"], kept["status"]) == (
        site.lot_id,
        reservation["spot_label"],
        "cancelled",
    )


async def test_a_spot_with_an_upcoming_reservation_cannot_be_deleted_and_history_keeps_its_label(
    client: httpx.AsyncClient, site: Site, driver: Driver, state: AppState
) -> None:
    a1 = site.spot("A1")["id"]
    past = created(await book(client, driver, at(1), at(2), spot_id=a1))
    freeze_clock(state, at(1))
    assert (
        await client.post(f"{RESERVATIONS}/{past['id']}/check-in", headers=driver.headers)
    ).is_success
    freeze_clock(state, at(2))
    assert (
        await client.post(f"{RESERVATIONS}/{past['id']}/check-out", headers=driver.headers)
    ).is_success
    upcoming = created(await book(client, driver, at(5), at(6), spot_id=a1))

    response = await client.delete(f"{SPOTS}/{a1}", headers=site.manager.headers)
    assert_error(response, 409, "spot_has_reservations")
    await cancel(client, driver, upcoming["id"])
    assert (await client.delete(f"{SPOTS}/{a1}", headers=site.manager.headers)).status_code == 204

    for reservation in (past, upcoming):
        response = await client.get(f"{RESERVATIONS}/{reservation['id']}", headers=driver.headers)
        kept = response.json()
        assert (kept["spot_id"], kept["spot_label"], kept["plate"]) == (
            None,
            "A1",
            reservation["plate"],
        )


async def test_a_vehicle_with_an_upcoming_reservation_cannot_be_deleted_and_history_keeps_its_plate(
    client: httpx.AsyncClient, site: Site, driver: Driver, state: AppState
) -> None:
    past = created(await book(client, driver, at(1), at(2), spot_id=site.spot("A1")["id"]))
    upcoming = created(await book(client, driver, at(5), at(6), spot_id=site.spot("A2")["id"]))
    path = f"{VEHICLES}/{driver.vehicle_id}"
    freeze_clock(state, at(3))

    assert_error(await client.delete(path, headers=driver.headers), 409, "vehicle_in_use")
    await cancel(client, driver, upcoming["id"])
    assert (await client.delete(path, headers=driver.headers)).status_code == 204

    for reservation in (past, upcoming):
        response = await client.get(f"{RESERVATIONS}/{reservation['id']}", headers=driver.headers)
        kept = response.json()
        assert (kept["vehicle_id"], kept["plate"], kept["spot_label"]) == (
            None,
            f"TEST{driver.actor.id}",
            reservation["spot_label"],
        )
