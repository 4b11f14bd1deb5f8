"""Reservations after booking: idempotent retries, the status machine, check-in and check-out
(with prices), rescheduling, walk-in tickets, no-shows, notifications, listings and who may
do what.

Time is the app's clock (``state.clock``), frozen at ``NOW`` and moved by the tests. The lot
charges 4.00 an hour in 15-minute increments (30 minutes at least), with no daily cap, so
a two-hour booking costs 8.00.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from parkspot.idempotency import repository as idempotency_repository
from parkspot.models import IdempotencyKey, Notification, Reservation, Role
from parkspot.reservations.sweeper import sweep
from parkspot.state import AppState
from tests.conftest import Actor, MakeOperator, MakeUser, assert_error
from tests.lot_helpers import add_member, create_lot
from tests.reservation_helpers import (
    NOW,
    RESERVATIONS,
    Site,
    add_spot,
    add_vehicle,
    freeze_clock,
    make_site,
)

TICKETS = "/api/v1/tickets"
NOTIFICATIONS = "/api/v1/notifications"

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# The default booking of the tests: two hours starting in an hour, 8.00.
START, END = NOW + HOUR, NOW + 3 * HOUR

Json = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def count_rows(state: AppState, model: Any, *where: ColumnElement[bool]) -> int:
    async with state.database.session(write=False) as session:
        stmt = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(stmt)).scalar_one())


class World:
    """One operator with a manager and a lot of three spots (A1-A3), and a driver with a
    vehicle; helpers to book, act and read as any actor."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        state: AppState,
        make_user: MakeUser,
        make_operator: MakeOperator,
    ) -> None:
        self.client = client
        self.state = state
        self.make_user = make_user
        self.make_operator = make_operator

    async def build(self) -> "World":
        self.move_clock(NOW)
        site = await make_site(
            self.client, self.make_user, self.make_operator, hourly_rate="4.00", daily_max=None
        )
        self.operator_id, self.manager = site.operator_id, site.manager
        self.lot, self.spots = site.lot, site.spots
        self.driver = await self.make_user(username="dora")
        self.vehicle_id = await self.add_vehicle(self.driver, "AB-123-CD")
        return self

    def move_clock(self, moment: datetime) -> None:
        freeze_clock(self.state, moment)

    async def add_vehicle(self, actor: Actor, plate: str) -> int:
        return await add_vehicle(self.client, actor, plate)

    async def driver_with_vehicle(self, username: str, plate: str) -> tuple[Actor, int]:
        actor = await self.make_user(username=username)
        return actor, await self.add_vehicle(actor, plate)

    def spot(self, index: int) -> int:
        spot_id: int = self.spots[index]["id"]
        return spot_id

    async def book(
        self,
        actor: Actor | None = None,
        *,
        spot_id: int | None = None,
        vehicle_id: int | None = None,
        starts_at: datetime = START,
        ends_at: datetime = END,
        key: str | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body = {
            "spot_id": spot_id or self.spot(0),
            "vehicle_id": vehicle_id or self.vehicle_id,
            "starts_at": iso(starts_at),
            "ends_at": iso(ends_at),
            **extra,
        }
        return await self.client.post(
            RESERVATIONS, json=body, headers=headers_of(actor or self.driver, key)
        )

    async def booked(self, actor: Actor | None = None, **kwargs: Any) -> Json:
        response = await self.book(actor, **kwargs)
        assert response.status_code == 201, response.text
        reservation: Json = response.json()
        return reservation

    async def act(
        self, actor: Actor | None, reservation: Json, action: str, key: str | None = None
    ) -> httpx.Response:
        """``action``: cancel, check-in or check-out."""
        return await self.client.post(
            f"{RESERVATIONS}/{reservation['id']}/{action}", headers=headers_of(actor, key)
        )

    async def done(self, actor: Actor | None, reservation: Json, action: str) -> Json:
        response = await self.act(actor, reservation, action)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    async def patch(self, actor: Actor | None, reservation: Json, body: Json) -> httpx.Response:
        return await self.client.patch(
            f"{RESERVATIONS}/{reservation['id']}", json=body, headers=headers_of(actor)
        )

    async def read(self, reservation: Json, actor: Actor | None = None) -> Json:
        response = await self.client.get(
            f"{RESERVATIONS}/{reservation['id']}", headers=headers_of(actor or self.driver)
        )
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    async def ticket(
        self,
        actor: Actor | None = None,
        *,
        spot_id: int | None = None,
        vehicle_id: int | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        body = {"spot_id": spot_id or self.spot(0), "vehicle_id": vehicle_id or self.vehicle_id}
        return await self.client.post(
            TICKETS, json=body, headers=headers_of(actor or self.driver, key)
        )

    async def notifications(self, actor: Actor | None = None, **params: Any) -> Json:
        response = await self.client.get(
            NOTIFICATIONS, params=params, headers=headers_of(actor or self.driver)
        )
        assert response.status_code == 200, response.text
        page: Json = response.json()
        return page

    async def kinds(self, actor: Actor | None = None) -> list[str]:
        """The actor's notification kinds, oldest first."""
        items = (await self.notifications(actor, limit=100))["items"]
        return [n["kind"] for n in reversed(items)]

    async def listing(self, actor: Actor | None = None, /, **params: Any) -> httpx.Response:
        return await self.client.get(
            RESERVATIONS, params=params, headers=headers_of(actor or self.driver)
        )

    async def listed_ids(self, actor: Actor | None = None, /, **params: Any) -> list[int]:
        response = await self.listing(actor, **params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]


def headers_of(actor: Actor | None, key: str | None = None) -> dict[str, str]:
    headers = dict(actor.headers) if actor is not None else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@pytest.fixture
async def world(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, make_operator: MakeOperator
) -> World:
    return await World(client, state, make_user, make_operator).build()


async def reservation_in(world: World, status: str) -> Json:
    """The driver's default booking (A1, START-END), driven to ``status``; the clock is left
    where the last step needed it."""
    reservation = await world.booked()
    if status == "cancelled":
        await world.done(world.driver, reservation, "cancel")
    elif status == "no_show":
        world.move_clock(START + 31 * MINUTE)
        assert await sweep(world.state) == 1
    elif status in ("checked_in", "completed"):
        world.move_clock(START)
        await world.done(world.driver, reservation, "check-in")
        if status == "completed":
            world.move_clock(END)
            await world.done(world.driver, reservation, "check-out")
    current = await world.read(reservation)
    assert current["status"] == status
    return current


# --- idempotency --------------------------------------------------------------------------


async def test_booking_retried_with_the_same_key_replays_the_first_response_and_books_once(
    world: World,
) -> None:
    first = await world.book(key="book-1")
    second = await world.book(key="book-1")

    assert first.status_code == second.status_code == 201, second.text
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await count_rows(world.state, Reservation) == 1
    assert await count_rows(world.state, Notification) == 1


Action = Callable[[World, Json, str], Awaitable[httpx.Response]]


def _on_reservation(action: str) -> Action:
    async def run(world: World, reservation: Json, key: str) -> httpx.Response:
        return await world.act(world.driver, reservation, action, key)

    return run


async def _ticket(world: World, _: Json, key: str) -> httpx.Response:
    return await world.ticket(spot_id=world.spot(1), key=key)


@pytest.mark.parametrize(
    ("before", "action", "status_code", "kind"),
    [
        ("confirmed", _on_reservation("cancel"), 200, "reservation_cancelled"),
        ("confirmed", _on_reservation("check-in"), 200, None),
        ("checked_in", _on_reservation("check-out"), 200, "checked_out"),
        ("none", _ticket, 201, None),
    ],
    ids=["cancel", "check-in", "check-out", "ticket"],
)
async def test_each_unsafe_action_retried_with_the_same_key_replays_and_acts_once(
    world: World, before: str, action: Action, status_code: int, kind: str | None
) -> None:
    reservation: Json = {}
    if before != "none":
        reservation = await reservation_in(world, before)
        if before == "confirmed":
            world.move_clock(START)
    reservations = await count_rows(world.state, Reservation)
    notifications = await count_rows(world.state, Notification)

    first = await action(world, reservation, "key-1")
    second = await action(world, reservation, "key-1")

    assert first.status_code == second.status_code == status_code, second.text
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await count_rows(world.state, Reservation) == reservations + (before == "none")
    assert await count_rows(world.state, Notification) == notifications + (kind is not None)
    if kind is not None:
        assert (await world.kinds()).count(kind) == 1
    # Without the key, the same request is a new one: the status machine refuses it.
    retried = await action(world, reservation, "key-2")
    assert retried.status_code == 409, retried.text


async def test_same_key_with_another_body_or_path_is_422_and_acts_not(world: World) -> None:
    first = await world.booked(key="k")

    other_window = await world.book(key="k", starts_at=START + HOUR, ends_at=END + HOUR)
    assert_error(other_window, 422, "idempotency_key_reused")
    other_path = await world.act(world.driver, first, "cancel", key="k")
    assert_error(other_path, 422, "idempotency_key_reused")

    assert (await world.read(first))["status"] == "confirmed"
    assert await count_rows(world.state, Reservation) == 1


async def test_keys_are_per_user(world: World) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    first = await world.booked(key="shared")

    response = await world.book(erin, spot_id=world.spot(1), vehicle_id=erins_vehicle, key="shared")

    assert response.status_code == 201, response.text
    assert "Idempotent-Replayed" not in response.headers
    assert response.json()["id"] != first["id"]
    assert response.json()["user_id"] == erin.id
    assert await count_rows(world.state, Reservation) == 2


async def test_a_failed_attempt_stores_nothing_so_a_retry_with_the_key_can_succeed(
    world: World,
) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    blocking = await world.booked(erin, vehicle_id=erins_vehicle)

    refused = await world.book(key="retry-me")
    assert_error(refused, 409, "spot_unavailable")
    assert await count_rows(world.state, IdempotencyKey) == 0
    await world.done(erin, blocking, "cancel")

    retried = await world.book(key="retry-me")
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers


async def test_a_key_is_replayed_within_the_ttl_and_forgotten_after_it(world: World) -> None:
    ttl = timedelta(hours=world.state.settings.idempotency_ttl_hours)
    later_start = NOW + ttl + 6 * HOUR
    first = await world.booked(key="old", starts_at=later_start, ends_at=later_start + HOUR)

    world.move_clock(NOW + ttl - MINUTE)
    replayed = await world.book(key="old", starts_at=later_start, ends_at=later_start + HOUR)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == first

    # Past the TTL the key means nothing: another request with it is simply carried out.
    world.move_clock(NOW + ttl)
    response = await world.book(
        key="old", spot_id=world.spot(1), starts_at=START + ttl, ends_at=END + ttl
    )
    assert response.status_code == 201, response.text
    assert "Idempotent-Replayed" not in response.headers
    assert await count_rows(world.state, Reservation) == 2


@pytest.mark.parametrize("endpoint", ["booking", "ticket"])
async def test_concurrent_requests_with_one_key_take_effect_once(
    world: World, endpoint: str
) -> None:
    async def send() -> httpx.Response:
        if endpoint == "booking":
            return await world.book(key="burst")
        return await world.ticket(key="burst")

    responses = await asyncio.gather(*(send() for _ in range(10)))

    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    assert {r.content for r in created} == {created[0].content}
    for response in responses:
        if response.status_code != 201:
            assert_error(response, 409, "idempotency_key_in_use")
            assert response.headers["Retry-After"] == "1"
    assert await count_rows(world.state, Reservation) == 1
    notifications = 1 if endpoint == "booking" else 0
    assert await count_rows(world.state, Notification) == notifications
    # Once the first is done, a retry replays it.
    again = await send()
    assert again.content == created[0].content
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("key", ["k" * 256, "has space", "", "tab\there"])
async def test_an_invalid_idempotency_key_is_422_and_books_nothing(world: World, key: str) -> None:
    response = await world.book(key=key)

    assert_error(response, 422, "validation_error")
    assert await count_rows(world.state, Reservation) == 0


async def test_a_key_of_255_printable_characters_is_accepted(world: World) -> None:
    response = await world.book(key="~!" + "x" * 253)

    assert response.status_code == 201, response.text


# --- status machine -----------------------------------------------------------------------


async def test_a_stay_goes_confirmed_checked_in_completed(world: World) -> None:
    reservation = await world.booked()
    assert reservation["status"] == "confirmed"
    assert reservation["checked_in_at"] is None
    assert reservation["final_price"] is None

    world.move_clock(START + 5 * MINUTE)
    checked_in = await world.done(world.driver, reservation, "check-in")
    assert checked_in["status"] == "checked_in"
    assert parse(checked_in["checked_in_at"]) == START + 5 * MINUTE

    world.move_clock(END - 10 * MINUTE)
    completed = await world.done(world.driver, reservation, "check-out")
    assert completed["status"] == "completed"
    assert parse(completed["checked_out_at"]) == END - 10 * MINUTE
    assert completed["final_price"] == "8.00"
    assert await world.read(reservation) == completed


async def _patch_end(world: World, reservation: Json) -> httpx.Response:
    return await world.patch(world.driver, reservation, {"ends_at": iso(END + HOUR)})


def _post(action: str) -> Callable[[World, Json], Awaitable[httpx.Response]]:
    async def run(world: World, reservation: Json) -> httpx.Response:
        return await world.act(world.driver, reservation, action)

    return run


ILLEGAL = [
    *(("cancel", status) for status in ("cancelled", "checked_in", "completed", "no_show")),
    *(("check-in", status) for status in ("cancelled", "checked_in", "completed", "no_show")),
    *(("check-out", status) for status in ("confirmed", "cancelled", "completed")),
    *(("patch", status) for status in ("cancelled", "checked_in", "completed", "no_show")),
]


@pytest.mark.parametrize(("action", "status"), ILLEGAL, ids=[f"{a}-{s}" for a, s in ILLEGAL])
async def test_an_illegal_transition_is_409_naming_the_current_status(
    world: World, action: str, status: str
) -> None:
    reservation = await reservation_in(world, status)
    # A no-show also raises an alert for the lot's managers (a notification) as its lot is
    # recounted: that happens before the refused action, not because of it.
    await world.state.availability.settle()
    notifications = await count_rows(world.state, Notification)

    run = _patch_end if action == "patch" else _post(action)
    response = await run(world, reservation)

    assert_error(response, 409, "invalid_status")
    assert response.json()["error"]["details"] == {"status": status}
    assert await world.read(reservation) == reservation
    assert await count_rows(world.state, Notification) == notifications


@pytest.mark.parametrize(
    ("before", "action", "kind"),
    [("confirmed", "cancel", "reservation_cancelled"), ("checked_in", "check-out", "checked_out")],
)
async def test_concurrent_moves_of_one_reservation_let_exactly_one_win(
    world: World, before: str, action: str, kind: str
) -> None:
    reservation = await reservation_in(world, before)

    responses = await asyncio.gather(
        *(world.act(world.driver, reservation, action) for _ in range(6))
    )

    assert sorted(r.status_code for r in responses) == [200] + [409] * 5
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "invalid_status")
    assert (await world.kinds()).count(kind) == 1


# --- check-in window ----------------------------------------------------------------------


async def test_check_in_before_the_window_opens_is_409_naming_the_window(world: World) -> None:
    reservation = await world.booked()
    world.move_clock(START - 16 * MINUTE)

    response = await world.act(world.driver, reservation, "check-in")

    assert_error(response, 409, "outside_check_in_window")
    details = response.json()["error"]["details"]
    assert parse(details["opens_at"]) == START - 15 * MINUTE
    assert parse(details["closes_at"]) == START + 30 * MINUTE
    assert (await world.read(reservation))["status"] == "confirmed"


async def test_check_in_opens_checkin_early_minutes_before_the_start(world: World) -> None:
    reservation = await world.booked()
    early = timedelta(minutes=world.state.settings.checkin_early_minutes)
    world.move_clock(START - early)

    checked_in = await world.done(world.driver, reservation, "check-in")

    assert checked_in["status"] == "checked_in"
    assert parse(checked_in["checked_in_at"]) == START - early


async def test_check_in_closes_when_the_no_show_grace_ends(world: World) -> None:
    grace = timedelta(minutes=world.state.settings.no_show_grace_minutes)
    last_minute = await world.booked()
    too_late = await world.booked(
        spot_id=world.spot(1), vehicle_id=await world.add_vehicle(world.driver, "LATE1")
    )

    world.move_clock(START + grace)
    assert (await world.done(world.driver, last_minute, "check-in"))["status"] == "checked_in"
    world.move_clock(START + grace + timedelta(seconds=1))
    response = await world.act(world.driver, too_late, "check-in")
    assert_error(response, 409, "outside_check_in_window")


# --- check-out price ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left_at", "price"),
    [
        (START + 30 * MINUTE, "8.00"),
        (END, "8.00"),
        (END + timedelta(seconds=1), "9.00"),
        (END + 15 * MINUTE, "9.00"),
        (END + 16 * MINUTE, "10.00"),
        (END + 2 * HOUR, "16.00"),
    ],
    ids=["early", "on-time", "1s-late", "15min-late", "16min-late", "2h-late"],
)
async def test_check_out_charges_the_window_plus_each_started_increment_of_overstay(
    world: World, left_at: datetime, price: str
) -> None:
    reservation = await world.booked()
    assert reservation["price_quote"] == "8.00"
    world.move_clock(START)
    await world.done(world.driver, reservation, "check-in")
    world.move_clock(left_at)

    completed = await world.done(world.driver, reservation, "check-out")

    assert completed["final_price"] == price
    assert completed["price_quote"] == "8.00"
    latest = (await world.notifications(limit=1))["items"][0]
    assert latest["kind"] == "checked_out"
    assert f"{price} EUR" in latest["content"]
    assert latest["data"]["final_price"] == price


async def test_the_client_cannot_set_a_price(world: World) -> None:
    assert_error(await world.book(price_quote="0.00"), 422, "validation_error")
    assert_error(await world.book(final_price="0.00"), 422, "validation_error")
    assert_error(
        await world.client.post(
            TICKETS,
            json={"spot_id": world.spot(0), "vehicle_id": world.vehicle_id, "final_price": "0"},
            headers=world.driver.headers,
        ),
        422,
        "validation_error",
    )
    reservation = await world.booked()
    patched = await world.patch(world.driver, reservation, {"price_quote": "0.00"})
    assert_error(patched, 422, "validation_error")

    world.move_clock(START)
    await world.done(world.driver, reservation, "check-in")
    world.move_clock(END)
    response = await world.client.post(
        f"{RESERVATIONS}/{reservation['id']}/check-out",
        json={"final_price": "0.00"},
        headers=world.driver.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["final_price"] == "8.00"


# --- rescheduling (PATCH) -----------------------------------------------------------------


async def test_rescheduling_reprices_the_new_window_and_notifies(world: World) -> None:
    reservation = await world.booked()

    response = await world.patch(
        world.driver, reservation, {"starts_at": iso(START + HOUR), "ends_at": iso(END + 2 * HOUR)}
    )

    assert response.status_code == 200, response.text
    moved = response.json()
    assert (parse(moved["starts_at"]), parse(moved["ends_at"])) == (START + HOUR, END + 2 * HOUR)
    assert moved["price_quote"] == "12.00"
    assert moved["status"] == "confirmed"
    assert await world.read(reservation) == moved
    assert await world.kinds() == ["reservation_confirmed", "reservation_rescheduled"]


async def test_rescheduling_onto_another_booking_is_409_and_changes_nothing(
    world: World,
) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    await world.booked(erin, vehicle_id=erins_vehicle, starts_at=END + HOUR, ends_at=END + 3 * HOUR)
    await world.booked(erin, vehicle_id=erins_vehicle, spot_id=world.spot(1), starts_at=START)
    reservation = await world.booked()

    longer = await world.patch(world.driver, reservation, {"ends_at": iso(END + 2 * HOUR)})
    assert_error(longer, 409, "spot_unavailable")
    elsewhere = await world.patch(world.driver, reservation, {"spot_id": world.spot(1)})
    assert_error(elsewhere, 409, "spot_unavailable")

    assert await world.read(reservation) == reservation
    assert await world.kinds() == ["reservation_confirmed"]


async def test_changing_to_a_busy_vehicle_is_409_and_to_a_free_one_is_allowed(
    world: World,
) -> None:
    van = await world.add_vehicle(world.driver, "VAN 42")
    vespa = await world.add_vehicle(world.driver, "VESPA 1")
    await world.booked(vehicle_id=van, spot_id=world.spot(1), starts_at=START + HOUR)
    reservation = await world.booked()

    busy = await world.patch(world.driver, reservation, {"vehicle_id": van})
    assert_error(busy, 409, "vehicle_busy")
    assert (await world.read(reservation))["plate"] == "AB123CD"

    response = await world.patch(world.driver, reservation, {"vehicle_id": vespa})
    assert response.status_code == 200, response.text
    assert (response.json()["vehicle_id"], response.json()["plate"]) == (vespa, "VESPA1")


async def test_moving_to_another_spot_frees_the_first(world: World) -> None:
    reservation = await world.booked()

    response = await world.patch(world.driver, reservation, {"spot_id": world.spot(2)})

    assert response.status_code == 200, response.text
    assert (response.json()["spot_id"], response.json()["spot_label"]) == (world.spot(2), "A3")
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    await world.booked(erin, vehicle_id=erins_vehicle)


async def test_a_started_reservation_may_change_its_end_but_not_move_its_start(
    world: World,
) -> None:
    reservation = await world.booked()
    world.move_clock(START + 30 * MINUTE)

    longer = await world.patch(world.driver, reservation, {"ends_at": iso(END + HOUR)})
    assert longer.status_code == 200, longer.text
    assert longer.json()["price_quote"] == "12.00"
    assert parse(longer.json()["starts_at"]) == START

    earlier = await world.patch(world.driver, reservation, {"starts_at": iso(START - HOUR)})
    assert_error(earlier, 422, "invalid_window")


async def test_a_started_reservation_cannot_be_made_to_end_in_the_past(world: World) -> None:
    reservation = await world.booked()
    world.move_clock(START + 40 * MINUTE)

    response = await world.patch(world.driver, reservation, {"ends_at": iso(START + 20 * MINUTE)})

    assert_error(response, 422, "invalid_window")
    assert await world.read(reservation) == reservation


async def test_rescheduling_with_another_users_vehicle_is_404(world: World) -> None:
    _, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    reservation = await world.booked()

    response = await world.patch(world.driver, reservation, {"vehicle_id": erins_vehicle})

    assert response.status_code == 404, response.text
    assert await world.read(reservation) == reservation


# --- walk-in tickets ----------------------------------------------------------------------


async def test_a_ticket_starts_now_checked_in_for_at_most_ticket_max_hours(world: World) -> None:
    response = await world.ticket()

    assert response.status_code == 201, response.text
    ticket = response.json()
    assert (ticket["kind"], ticket["status"]) == ("ticket", "checked_in")
    assert parse(ticket["starts_at"]) == parse(ticket["checked_in_at"]) == NOW
    max_hours = world.state.settings.ticket_max_hours
    assert parse(ticket["ends_at"]) == NOW + timedelta(hours=max_hours)
    assert ticket["final_price"] is None


async def test_a_ticket_ends_when_the_spots_next_reservation_starts(world: World) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    await world.booked(
        erin, vehicle_id=erins_vehicle, starts_at=NOW + 3 * HOUR, ends_at=NOW + 5 * HOUR
    )
    await world.booked(
        erin, vehicle_id=erins_vehicle, starts_at=NOW + 7 * HOUR, ends_at=NOW + 8 * HOUR
    )

    response = await world.ticket()

    assert response.status_code == 201, response.text
    assert parse(response.json()["ends_at"]) == NOW + 3 * HOUR


async def test_a_ticket_for_a_spot_reserved_or_occupied_now_is_409(world: World) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    reserved = await world.booked(erin, vehicle_id=erins_vehicle, starts_at=NOW, ends_at=END)

    assert_error(await world.ticket(), 409, "spot_unavailable")
    world.move_clock(NOW + 30 * MINUTE)
    assert_error(await world.ticket(), 409, "spot_unavailable")
    await world.done(erin, reserved, "check-in")
    assert_error(await world.ticket(), 409, "spot_unavailable")
    assert await count_rows(world.state, Reservation) == 1


async def test_a_ticket_for_a_spot_still_held_by_an_overstaying_stay_is_409(
    world: World,
) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    stay = await world.booked(erin, vehicle_id=erins_vehicle)
    world.move_clock(START)
    await world.done(erin, stay, "check-in")
    world.move_clock(END + 10 * MINUTE)

    assert_error(await world.ticket(), 409, "spot_unavailable")
    await world.done(erin, stay, "check-out")
    response = await world.ticket()
    assert response.status_code == 201, response.text


async def test_a_ticket_is_refused_when_the_next_reservation_is_too_close(world: World) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    shortest = timedelta(minutes=world.state.settings.booking_min_minutes)
    await world.booked(erin, vehicle_id=erins_vehicle, starts_at=NOW + shortest - MINUTE)
    await world.booked(
        erin,
        vehicle_id=await world.add_vehicle(erin, "ER2"),
        spot_id=world.spot(2),
        starts_at=NOW + shortest,
    )

    assert_error(await world.ticket(spot_id=world.spot(0)), 409, "spot_unavailable")
    shortest_ticket = await world.ticket(spot_id=world.spot(2))
    assert shortest_ticket.status_code == 201, shortest_ticket.text
    assert parse(shortest_ticket.json()["ends_at"]) == NOW + shortest


async def test_checking_out_a_ticket_charges_the_time_actually_stayed(world: World) -> None:
    response = await world.ticket()
    assert response.status_code == 201, response.text
    ticket = response.json()
    world.move_clock(NOW + HOUR + 10 * MINUTE)

    completed = await world.done(world.driver, ticket, "check-out")

    # 70 minutes, billed as 75: 4.00 x 1.25.
    assert completed["final_price"] == "5.00"
    assert completed["status"] == "completed"
    assert await world.kinds() == ["checked_out"]


async def test_a_short_ticket_pays_the_billing_minimum(world: World) -> None:
    ticket = (await world.ticket()).json()
    world.move_clock(NOW + 5 * MINUTE)

    completed = await world.done(world.driver, ticket, "check-out")

    assert completed["final_price"] == "2.00"


# --- no-shows and the sweeper -------------------------------------------------------------


async def test_the_sweeper_turns_late_confirmed_reservations_into_no_shows(world: World) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    missed = await world.booked()
    attended = await world.booked(erin, vehicle_id=erins_vehicle, spot_id=world.spot(1))
    world.move_clock(START)
    await world.done(erin, attended, "check-in")
    grace = timedelta(minutes=world.state.settings.no_show_grace_minutes)

    world.move_clock(START + grace)
    assert await sweep(world.state) == 0
    assert (await world.read(missed))["status"] == "confirmed"

    world.move_clock(START + grace + MINUTE)
    assert await sweep(world.state) == 1
    assert (await world.read(missed))["status"] == "no_show"
    assert (await world.read(attended, erin))["status"] == "checked_in"
    assert await world.kinds() == ["reservation_confirmed", "no_show"]
    assert await world.kinds(erin) == ["reservation_confirmed"]
    no_show = (await world.notifications(limit=1))["items"][0]
    assert no_show["data"]["reservation_id"] == missed["id"]

    # The spot is free again for the rest of that window.
    frank, franks_vehicle = await world.driver_with_vehicle("frank", "FR1")
    await world.booked(frank, vehicle_id=franks_vehicle, starts_at=START + grace + MINUTE)

    notifications = await count_rows(world.state, Notification)
    assert await sweep(world.state) == 0
    assert await count_rows(world.state, Notification) == notifications
    assert (await world.read(missed))["status"] == "no_show"


async def test_two_sweepers_at_once_expire_each_reservation_once(world: World) -> None:
    await world.booked()
    await world.booked(
        spot_id=world.spot(1), vehicle_id=await world.add_vehicle(world.driver, "V2")
    )
    world.move_clock(END)

    counts = await asyncio.gather(sweep(world.state), sweep(world.state))

    assert sum(counts) == 2
    assert (await world.kinds()).count("no_show") == 2


async def test_the_sweeper_forgets_idempotency_keys_older_than_the_ttl(world: World) -> None:
    ttl = timedelta(hours=world.state.settings.idempotency_ttl_hours)
    await world.booked(key="old")
    world.move_clock(NOW + 2 * HOUR)
    await world.booked(
        key="fresh", spot_id=world.spot(1), starts_at=NOW + 4 * HOUR, ends_at=NOW + 5 * HOUR
    )

    world.move_clock(NOW + ttl + MINUTE)
    await sweep(world.state)

    async with world.state.database.session(write=False) as session:
        assert await idempotency_repository.get(session, world.driver.id, "old") is None
        assert await idempotency_repository.get(session, world.driver.id, "fresh") is not None


# --- notifications ------------------------------------------------------------------------


async def test_the_driver_is_told_of_booking_rescheduling_and_cancelling(world: World) -> None:
    first = await world.booked()
    await world.patch(world.driver, first, {"ends_at": iso(END + HOUR)})
    await world.done(world.driver, first, "cancel")
    second = await world.booked(spot_id=world.spot(1))
    await world.done(world.manager, second, "cancel")

    items = (await world.notifications())["items"]

    assert [n["kind"] for n in items] == [
        "reservation_cancelled",
        "reservation_confirmed",
        "reservation_cancelled",
        "reservation_rescheduled",
        "reservation_confirmed",
    ]
    by_manager, _, by_owner, rescheduled, confirmed = items
    assert "operator" in by_manager["content"]
    assert "operator" not in by_owner["content"]
    assert "A1" in confirmed["content"]
    assert "Gare du Nord" in confirmed["content"]
    assert "A1" in rescheduled["content"]
    assert [n["data"]["reservation_id"] for n in items] == [second["id"], second["id"]] + [
        first["id"]
    ] * 3
    assert all(n["read"] is False for n in items)
    assert (await world.notifications(world.manager))["total"] == 0


async def test_notifications_are_listed_newest_first_in_pages(world: World) -> None:
    for index in range(3):
        await world.booked(
            spot_id=world.spot(index),
            starts_at=START + 3 * index * HOUR,
            ends_at=END + 3 * index * HOUR,
        )

    everything = await world.notifications()
    first_page = await world.notifications(limit=2)
    second_page = await world.notifications(limit=2, offset=2)

    ids = [n["id"] for n in everything["items"]]
    assert ids == sorted(ids, reverse=True)
    assert (first_page["total"], first_page["limit"], first_page["offset"]) == (3, 2, 0)
    assert [n["id"] for n in first_page["items"] + second_page["items"]] == ids
    assert ["A3" in n["content"] for n in everything["items"]] == [True, False, False]


async def test_marking_read_touches_only_your_own_notifications(world: World) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    await world.booked()
    await world.booked(spot_id=world.spot(1), starts_at=END + HOUR, ends_at=END + 2 * HOUR)
    await world.booked(erin, vehicle_id=erins_vehicle, spot_id=world.spot(2))
    mine = [n["id"] for n in (await world.notifications())["items"]]
    erins = [n["id"] for n in (await world.notifications(erin))["items"]]

    response = await world.client.post(
        f"{NOTIFICATIONS}/read", json={"ids": [mine[0], *erins]}, headers=world.driver.headers
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"updated": 1}
    unread = await world.notifications(unread="true")
    assert [n["id"] for n in unread["items"]] == [mine[1]]
    assert unread["total"] == 1
    assert [n["read"] for n in (await world.notifications())["items"]] == [True, False]
    assert [n["read"] for n in (await world.notifications(erin))["items"]] == [False]
    assert (await world.notifications(erin, unread="true"))["total"] == 1


async def test_a_failed_booking_notifies_nobody(world: World) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    await world.booked(erin, vehicle_id=erins_vehicle)

    assert_error(await world.book(), 409, "spot_unavailable")

    assert await world.kinds() == []


async def test_a_booking_rolled_back_after_its_effect_notifies_nobody(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The effect (reservation and notification) is staged, then the idempotency key is found
    taken by another process: the whole transaction rolls back."""

    async def taken(*_: Any) -> bool:
        return False

    monkeypatch.setattr(idempotency_repository, "insert", taken)

    assert_error(await world.book(key="lost-race"), 409, "idempotency_key_in_use")

    assert await count_rows(world.state, Reservation) == 0
    assert await count_rows(world.state, Notification) == 0


# --- listing ------------------------------------------------------------------------------


async def test_the_list_holds_only_your_own_reservations_newest_start_first(
    world: World,
) -> None:
    erin, erins_vehicle = await world.driver_with_vehicle("erin", "ER1")
    early = await world.booked()
    late = await world.booked(starts_at=END + HOUR, ends_at=END + 2 * HOUR)
    await world.booked(erin, vehicle_id=erins_vehicle, spot_id=world.spot(1))

    response = await world.listing()

    assert response.status_code == 200, response.text
    page = response.json()
    assert [r["id"] for r in page["items"]] == [late["id"], early["id"]]
    assert (page["total"], page["limit"], page["offset"]) == (2, 50, 0)
    assert page["items"][1] == early
    second = await world.listing(limit=1, offset=1)
    assert [r["id"] for r in second.json()["items"]] == [early["id"]]
    assert second.json()["total"] == 2


async def test_the_list_filters_by_repeated_status(world: World) -> None:
    confirmed = await world.booked()
    cancelled = await world.booked(
        spot_id=world.spot(1), starts_at=END + HOUR, ends_at=END + 2 * HOUR
    )
    await world.done(world.driver, cancelled, "cancel")
    # Starting in ten minutes: check-in is already open.
    checked_in = await world.booked(
        spot_id=world.spot(2), starts_at=NOW + 10 * MINUTE, ends_at=NOW + 40 * MINUTE
    )
    await world.done(world.driver, checked_in, "check-in")

    assert await world.listed_ids(status="cancelled") == [cancelled["id"]]
    both = await world.listed_ids(status=["confirmed", "checked_in"])
    assert both == [confirmed["id"], checked_in["id"]]
    assert await world.listed_ids(status="completed") == []
    assert_error(await world.listing(status="lost"), 422, "validation_error")


async def test_the_list_filters_by_lot_and_by_overlap_with_from_to(world: World) -> None:
    other_lot = await create_lot(
        world.client, world.manager, world.operator_id, name="Bercy", hourly_rate="1"
    )
    b1 = await add_spot(
        world.client, Site(world.operator_id, world.manager, other_lot, []), "B1", "standard"
    )
    first = await world.booked()  # START-END
    second = await world.booked(starts_at=END + 2 * HOUR, ends_at=END + 3 * HOUR)
    elsewhere = await world.booked(
        spot_id=b1["id"], starts_at=NOW + 24 * HOUR, ends_at=NOW + 25 * HOUR
    )

    assert await world.listed_ids(lot_id=other_lot["id"]) == [elsewhere["id"]]
    assert await world.listed_ids(lot_id=world.lot["id"]) == [second["id"], first["id"]]
    window = {"from": iso(END - MINUTE), "to": iso(END + 2 * HOUR + MINUTE)}
    assert await world.listed_ids(**window) == [second["id"], first["id"]]
    # Half-open windows: ending exactly at ``from`` or starting exactly at ``to`` is outside.
    assert await world.listed_ids(**{"from": iso(END), "to": iso(END + 2 * HOUR)}) == []
    assert await world.listed_ids(**{"from": iso(NOW + 24 * HOUR)}) == [elsewhere["id"]]
    assert await world.listed_ids(to=iso(START + MINUTE)) == [first["id"]]
    reversed_window = await world.listing(**{"from": iso(END), "to": iso(START)})
    assert_error(reversed_window, 422, "validation_error")


class Managed:
    """Two operators, each with a manager and a lot; a reservation in each."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def build(self) -> "Managed":
        world = self.world
        site = await make_site(
            world.client,
            world.make_user,
            world.make_operator,
            spots=0,
            name="Bercy Arena",
            address="8 Boulevard de Bercy",
        )
        self.manager = site.manager
        self.spot = await add_spot(world.client, site, "B7", "standard")
        self.driver, vehicle = await world.driver_with_vehicle("emil", "ZZ-999")
        self.ours = await world.booked()
        self.theirs = await world.booked(self.driver, vehicle_id=vehicle, spot_id=self.spot["id"])
        self.admin = await world.make_user(Role.admin)
        return self


async def test_scope_managed_lists_the_reservations_of_the_lots_you_manage(
    world: World,
) -> None:
    managed = await Managed(world).build()

    mine = await world.listed_ids(world.manager, scope="managed")
    theirs = await world.listed_ids(managed.manager, scope="managed")
    everything = await world.listed_ids(managed.admin, scope="managed")

    assert mine == [managed.ours["id"]]
    assert theirs == [managed.theirs["id"]]
    assert sorted(everything) == sorted([managed.ours["id"], managed.theirs["id"]])
    assert await world.listed_ids(world.manager) == []
    assert_error(await world.listing(scope="managed"), 403, "managers_only")


@pytest.mark.parametrize(
    ("q", "match"),
    [
        ("DORA@example", "ours"),
        ("emil@", "theirs"),
        ("ab123", "ours"),
        ("zz99", "theirs"),
        ("b7", "theirs"),
        ("gare du", "ours"),
        ("arena", "theirs"),
        ("dunkerque", "ours"),
        ("boulevard", "theirs"),
        ("example.com", "both"),
        ("%", "none"),
    ],
)
async def test_q_searches_email_plate_spot_lot_name_and_address(
    world: World, q: str, match: str
) -> None:
    managed = await Managed(world).build()
    expected = {
        "ours": [managed.ours["id"]],
        "theirs": [managed.theirs["id"]],
        "both": sorted([managed.ours["id"], managed.theirs["id"]]),
        "none": [],
    }[match]

    found = await world.listed_ids(managed.admin, scope="managed", q=q)

    assert sorted(found) == expected


async def test_q_searches_only_the_lots_you_manage(world: World) -> None:
    managed = await Managed(world).build()

    assert await world.listed_ids(world.manager, scope="managed", q="example.com") == [
        managed.ours["id"]
    ]


async def test_q_without_scope_managed_is_422(world: World) -> None:
    managed = await Managed(world).build()

    assert_error(await world.listing(managed.admin, q="dora"), 422, "validation_error")
    assert_error(await world.listing(q="dora"), 422, "validation_error")


# --- who may do what ----------------------------------------------------------------------

ACTORS = ["owner", "other_driver", "member", "manager", "other_manager", "admin", "anonymous"]
ACTIONS = ["read", "patch", "cancel", "check-in", "check-out"]
MANAGES = {"read": 200, "patch": 403, "cancel": 200, "check-in": 200, "check-out": 200}
EXPECTED: dict[str, dict[str, int]] = {
    "owner": dict.fromkeys(ACTIONS, 200),
    "other_driver": dict.fromkeys(ACTIONS, 404),
    # A plain member of the lot's operator (passkey sign-up) does not manage its lots.
    "member": dict.fromkeys(ACTIONS, 404),
    "manager": MANAGES,
    "other_manager": dict.fromkeys(ACTIONS, 404),
    "admin": MANAGES,
    "anonymous": dict.fromkeys(ACTIONS, 401),
}
CODES = {403: "not_reservation_owner", 404: "reservation_not_found", 401: "not_authenticated"}
AFTER = {"cancel": "cancelled", "check-in": "checked_in", "check-out": "completed"}


async def _actor(world: World, who: str) -> Actor | None:
    if who == "owner":
        return world.driver
    if who == "other_driver":
        return await world.make_user(username="mallory")
    if who == "member":
        member = await world.make_user(username="mia")
        await add_member(world.state, world.operator_id, member.id)
        return member
    if who == "manager":
        return world.manager
    if who == "other_manager":
        operator_id = await world.make_operator()
        return await world.make_user(Role.manager, manages=(operator_id,))
    if who == "admin":
        return await world.make_user(Role.admin)
    return None


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("who", ACTORS)
async def test_who_may_read_and_change_a_reservation(world: World, who: str, action: str) -> None:
    # Starting in ten minutes, so check-in is open now.
    reservation = await world.booked(starts_at=NOW + 10 * MINUTE, ends_at=NOW + 70 * MINUTE)
    if action == "check-out":
        reservation = await world.done(world.driver, reservation, "check-in")
    actor = await _actor(world, who)

    if action == "read":
        response = await world.client.get(
            f"{RESERVATIONS}/{reservation['id']}", headers=headers_of(actor)
        )
    elif action == "patch":
        response = await world.patch(actor, reservation, {"ends_at": iso(NOW + 2 * HOUR)})
    else:
        response = await world.act(actor, reservation, action)

    expected = EXPECTED[who][action]
    after = await world.read(reservation)
    if expected == 200:
        assert response.status_code == 200, response.text
        assert response.json()["id"] == reservation["id"]
        if action == "read":
            assert response.json() == reservation
        elif action == "patch":
            assert parse(after["ends_at"]) == NOW + 2 * HOUR
        else:
            assert after["status"] == AFTER[action]
    else:
        assert_error(response, expected, CODES[expected])
        assert after == reservation
