"""Live availability in one process: the counts, reads, ETags, filters, visibility, the
outbox, versions, time boundaries and agreement between API, cache, mirror and database."""

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, select, text

from parkspot.app import create_app
from parkspot.availability.outbox import lot_changed
from parkspot.config import Settings
from parkspot.db.types import utcnow
from parkspot.models import AvailabilityChange, LotAvailability, Role
from parkspot.state import AppState
from tests.availability_helpers import counts, recount
from tests.conftest import MakeOperator, MakeUser, assert_error
from tests.lot_helpers import LOTS, SPOTS, add_member
from tests.reservation_helpers import (
    NOW,
    RESERVATIONS,
    Driver,
    Site,
    at,
    book,
    freeze_clock,
    make_driver,
    make_site,
)

AVAILABILITY = "/api/v1/availability"
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def frozen(state: AppState) -> None:
    freeze_clock(state)


async def record(client: httpx.AsyncClient, state: AppState, lot_id: int, **kw: Any) -> Json:
    """The lot's record once every change so far is published."""
    await state.availability.settle()
    response = await client.get(f"{AVAILABILITY}/{lot_id}", **kw)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


@pytest.fixture
async def site(client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator) -> Site:
    return await make_site(client, make_user, make_operator, spots=3)


@pytest.fixture
async def driver(client: httpx.AsyncClient, make_user: MakeUser) -> Driver:
    return await make_driver(client, make_user)


# --- counts ----------------------------------------------------------------------------


async def test_a_new_lot_is_published_with_every_spot_free(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    body = await record(client, state, site.lot_id)

    assert counts(body) == {
        "lot_id": site.lot_id,
        "name": site.lot["name"],
        "latitude": site.lot["latitude"],
        "longitude": site.lot["longitude"],
        "capacity": 3,
        "free": 3,
        "reserved": 0,
        "occupied": 0,
        "out_of_service": 0,
        "by_kind": {"standard": {"capacity": 3, "free": 3}},
        "status": "open",
        "occupancy_source": "reservations",
        "device_data_at": None,
        "stale": False,
    }
    assert body["version"] >= 1


async def test_a_booking_covering_now_reserves_a_spot_and_a_later_one_does_not(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver, make_user: MakeUser
) -> None:
    later = await book(client, driver, at(2), at(3), spot_id=site.spot("A1")["id"])
    assert later.status_code == 201, later.text
    assert (await record(client, state, site.lot_id))["free"] == 3

    other = await make_driver(client, make_user, plate="NOW1")
    now = await book(client, other, NOW, at(1), spot_id=site.spot("A2")["id"])
    assert now.status_code == 201, now.text

    body = await record(client, state, site.lot_id)
    assert (body["free"], body["reserved"], body["occupied"]) == (2, 1, 0)


async def test_check_in_occupies_the_spot_and_check_out_frees_it(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    booked = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    reservation = f"{RESERVATIONS}/{booked.json()['id']}"

    checked_in = await client.post(f"{reservation}/check-in", headers=driver.headers)
    assert checked_in.status_code == 200, checked_in.text
    body = await record(client, state, site.lot_id)
    assert (body["free"], body["reserved"], body["occupied"]) == (2, 0, 1)

    freeze_clock(state, at(0.5))
    checked_out = await client.post(f"{reservation}/check-out", headers=driver.headers)
    assert checked_out.status_code == 200, checked_out.text
    body = await record(client, state, site.lot_id)
    assert (body["free"], body["reserved"], body["occupied"]) == (3, 0, 0)


async def test_cancelling_frees_the_spot(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    booked = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    assert (await record(client, state, site.lot_id))["reserved"] == 1

    cancelled = await client.post(
        f"{RESERVATIONS}/{booked.json()['id']}/cancel", headers=driver.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    body = await record(client, state, site.lot_id)
    assert (body["free"], body["reserved"]) == (3, 0)


async def test_a_walk_in_ticket_occupies_its_spot(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    ticket = await client.post(
        "/api/v1/tickets",
        json={"vehicle_id": driver.vehicle_id, "spot_id": site.spot("A3")["id"]},
        headers=driver.headers,
    )
    assert ticket.status_code == 201, ticket.text
    body = await record(client, state, site.lot_id)
    assert (body["free"], body["occupied"]) == (2, 1)


async def test_a_spot_out_of_service_leaves_the_capacity(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    response = await client.patch(
        f"{SPOTS}/{site.spot('A1')['id']}",
        json={"out_of_service": True},
        headers=site.manager.headers,
    )
    assert response.status_code == 200, response.text

    body = await record(client, state, site.lot_id)
    assert (body["capacity"], body["free"], body["out_of_service"]) == (2, 2, 1)
    assert body["by_kind"] == {"standard": {"capacity": 2, "free": 2}}


async def test_spots_added_and_deleted_change_capacity_and_kinds(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    added = await client.post(
        f"{LOTS}/{site.lot_id}/spots",
        json={"label": "E1", "kind": "ev"},
        headers=site.manager.headers,
    )
    assert added.status_code == 201, added.text
    body = await record(client, state, site.lot_id)
    assert body["capacity"] == 4
    assert body["by_kind"]["ev"] == {"capacity": 1, "free": 1}

    deleted = await client.delete(f"{SPOTS}/{added.json()['id']}", headers=site.manager.headers)
    assert deleted.status_code == 204, deleted.text
    body = await record(client, state, site.lot_id)
    assert body["capacity"] == 3
    assert "ev" not in body["by_kind"]


async def test_status_goes_almost_full_then_full(
    client: httpx.AsyncClient, state: AppState, site: Site, make_user: MakeUser
) -> None:
    state.settings.availability_almost_full_ratio = 0.5
    statuses = [(await record(client, state, site.lot_id))["status"]]
    for label in ("A1", "A2", "A3"):
        driver = await make_driver(client, make_user, plate=f"FULL{label}")
        response = await book(client, driver, NOW, at(1), spot_id=site.spot(label)["id"])
        assert response.status_code == 201, response.text
        statuses.append((await record(client, state, site.lot_id))["status"])

    # 3 free, 2 free (not under half of 3), 1 free (under half), none.
    assert statuses == ["open", "open", "almost_full", "full"]


async def test_a_closed_lot_is_closed_and_a_deleted_lot_is_gone(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    lot = f"{LOTS}/{site.lot_id}"
    closed = await client.patch(lot, json={"is_active": False}, headers=site.manager.headers)
    assert closed.status_code == 200, closed.text
    assert (await record(client, state, site.lot_id))["status"] == "closed"

    deleted = await client.delete(lot, headers=site.manager.headers)
    assert deleted.status_code == 204, deleted.text
    await state.availability.settle()

    assert_error(await client.get(f"{AVAILABILITY}/{site.lot_id}"), 404, "lot_not_found")
    listed = await client.get(AVAILABILITY)
    assert site.lot_id not in [lot["lot_id"] for lot in listed.json()["lots"]]


async def test_each_change_gets_a_higher_version(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    versions = [(await record(client, state, site.lot_id))["version"]]
    for hours in (1, 2, 3):
        response = await book(
            client, driver, at(hours), at(hours + 0.5), spot_id=site.spot("A1")["id"]
        )
        assert response.status_code == 201, response.text
        versions.append((await record(client, state, site.lot_id))["version"])

    assert versions == sorted(set(versions))


async def test_a_refused_booking_publishes_nothing(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver, make_user: MakeUser
) -> None:
    first = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    assert first.status_code == 201, first.text
    before = await record(client, state, site.lot_id)

    other = await make_driver(client, make_user, plate="LATE1")
    refused = await book(client, other, NOW, at(1), spot_id=site.spot("A1")["id"])
    assert_error(refused, 409, "spot_unavailable")

    assert await record(client, state, site.lot_id) == before
    async with state.database.session(write=False) as session:
        assert (
            await session.execute(select(func.count()).select_from(AvailabilityChange))
        ).scalar() == 0


async def test_a_rolled_back_transaction_marks_nothing_and_leaves_no_outbox_row(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    await state.availability.settle()
    marked: list[int] = []
    state.database.on_lots_changed = marked.extend

    async def failing_request() -> None:
        async with state.database.transaction() as session:
            lot_changed(session, site.lot_id)
            await session.flush()
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError):
        await failing_request()

    assert marked == []
    async with state.database.session(write=False) as session:
        rows = (
            await session.execute(select(func.count()).select_from(AvailabilityChange))
        ).scalar()
    assert rows == 0


# --- reads -----------------------------------------------------------------------------


async def test_if_none_match_with_the_etag_gets_304_until_the_lot_changes(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    await state.availability.settle()
    for path in (f"{AVAILABILITY}/{site.lot_id}", AVAILABILITY):
        first = await client.get(path)
        etag = first.headers["ETag"]
        same = await client.get(path, headers={"If-None-Match": etag})
        assert same.status_code == 304
        assert same.content == b""
        assert same.headers["ETag"] == etag

    await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    await state.availability.settle()
    changed = await client.get(f"{AVAILABILITY}/{site.lot_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["reserved"] == 1


async def test_the_fast_path_and_the_routes_give_the_same_bodies_and_etags(
    client: httpx.AsyncClient, state: AppState, site: Site, make_user: MakeUser
) -> None:
    await state.availability.settle()
    anyone = await make_user()
    fast_one = await client.get(f"{AVAILABILITY}/{site.lot_id}")
    routed_one = await client.get(f"{AVAILABILITY}/{site.lot_id}", headers=anyone.headers)
    fast_all = await client.get(AVAILABILITY)
    routed_all = await client.get(AVAILABILITY, params={"bbox": "-180,-90,180,90"})

    assert "x-request-id" not in fast_one.headers
    assert "x-request-id" in routed_one.headers
    assert fast_one.content == routed_one.content
    assert fast_one.headers["ETag"] == routed_one.headers["ETag"]
    assert fast_all.content == routed_all.content
    assert fast_all.headers["ETag"] == routed_all.headers["ETag"]


async def test_lists_filter_by_lot_ids_and_bbox(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    paris = await make_site(client, make_user, make_operator, spots=1)
    lyon = await make_site(
        client, make_user, make_operator, spots=1, name="Lyon", latitude=45.76, longitude=4.83
    )
    await state.availability.settle()

    def ids(response: httpx.Response) -> list[int]:
        assert response.status_code == 200, response.text
        return [lot["lot_id"] for lot in response.json()["lots"]]

    assert ids(await client.get(AVAILABILITY)) == [paris.lot_id, lyon.lot_id]
    assert ids(await client.get(AVAILABILITY, params={"lot_id": [lyon.lot_id]})) == [lyon.lot_id]
    france = {"bbox": "-5,42,8,51"}
    assert ids(await client.get(AVAILABILITY, params=france)) == [paris.lot_id, lyon.lot_id]
    south: list[tuple[str, str | int | float | bool | None]] = [
        ("bbox", "4,45,5,46"),
        ("lot_id", paris.lot_id),
        ("lot_id", lyon.lot_id),
    ]
    assert ids(await client.get(AVAILABILITY, params=south)) == [lyon.lot_id]
    assert ids(await client.get(AVAILABILITY, params={"lot_id": [999]})) == []


@pytest.mark.parametrize(
    "params",
    [
        {"bbox": "1,2,3"},
        {"bbox": "0,50,1,40"},
        {"bbox": "a,b,c,d"},
        {"lot_id": "0"},
        {"lot_id": "x"},
        {"lot_id": str(2**40)},
    ],
)
async def test_bad_filters_get_422(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    assert_error(await client.get(AVAILABILITY, params=params), 422)
    assert_error(await client.get(f"{AVAILABILITY}/stream", params=params), 422)


@pytest.mark.parametrize("lot_id", ["0", "-1", "abc", str(2**40)])
async def test_a_bad_lot_id_gets_422_and_an_unknown_one_404(
    client: httpx.AsyncClient, lot_id: str
) -> None:
    assert_error(await client.get(f"{AVAILABILITY}/{lot_id}"), 422)
    assert_error(await client.get(f"{AVAILABILITY}/12345"), 404, "lot_not_found")


@pytest.mark.parametrize("value", ["0" * 1025, "a\tb"])
async def test_an_if_none_match_the_routes_refuse_is_refused_by_the_fast_path_too(
    client: httpx.AsyncClient, state: AppState, site: Site, make_user: MakeUser, value: str
) -> None:
    # Found by tests/test_fuzz.py: the fast path answered 200 where the routes said 422.
    await state.availability.settle()
    anyone = await make_user()
    for path in (f"{AVAILABILITY}/{site.lot_id}", AVAILABILITY):
        fast = await client.get(path, headers={"If-None-Match": value})
        routed = await client.get(path, headers={"If-None-Match": value} | anyone.headers)
        assert_error(fast, 422, "validation_error")
        assert_error(routed, 422, "validation_error")


async def test_a_members_only_lot_is_seen_by_members_and_admins_only(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    site = await make_site(client, make_user, make_operator, spots=2, visibility="members")
    member, stranger = await make_user(), await make_user()
    admin = await make_user(Role.admin)
    await add_member(state, site.operator_id, member.id)
    await state.availability.settle()
    path = f"{AVAILABILITY}/{site.lot_id}"

    assert_error(await client.get(path), 404, "lot_not_found")
    assert_error(await client.get(path, headers=stranger.headers), 404, "lot_not_found")
    for actor in (member, site.manager, admin):
        response = await client.get(path, headers=actor.headers)
        assert response.status_code == 200, response.text
        listed = await client.get(AVAILABILITY, headers=actor.headers)
        assert [lot["lot_id"] for lot in listed.json()["lots"]] == [site.lot_id]
    assert (await client.get(AVAILABILITY)).json() == {"lots": []}
    assert (await client.get(AVAILABILITY, headers=stranger.headers)).json() == {"lots": []}


async def test_a_bad_token_on_a_read_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(AVAILABILITY, headers={"Authorization": "Bearer nope"})
    assert_error(response, 401, "invalid_token")


# --- the outbox and time ---------------------------------------------------------------


async def test_outbox_rows_left_by_a_dead_process_are_recomputed_by_the_tick(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    await state.availability.settle()
    # As if the process died right after this commit: nobody is told.
    state.database.on_lots_changed = lambda lot_ids: None
    booked = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    assert booked.status_code == 201, booked.text
    assert (await record(client, state, site.lot_id))["reserved"] == 0
    async with state.database.transaction() as session:
        # Rows younger than a couple of seconds belong to a live process's recompute.
        await session.execute(
            text("UPDATE availability_changes SET created_at = :old"),
            {"old": (utcnow() - timedelta(minutes=1)).replace(tzinfo=None)},
        )

    await state.availability.tick()

    assert (await record(client, state, site.lot_id))["reserved"] == 1
    async with state.database.session(write=False) as session:
        assert (
            await session.execute(select(func.count()).select_from(AvailabilityChange))
        ).scalar() == 0


async def test_a_restarted_process_publishes_what_was_committed_before_it_died(
    client: httpx.AsyncClient, state: AppState, settings: Settings, site: Site, driver: Driver
) -> None:
    # Real time here: the restarted process counts at its own (real) now.
    state.clock = utcnow
    await state.availability.settle()
    state.database.on_lots_changed = lambda lot_ids: None
    now = utcnow()
    booked = await book(
        client, driver, now, now + timedelta(hours=1), spot_id=site.spot("A1")["id"]
    )
    assert booked.status_code == 201, booked.text

    async with started(settings) as restarted:
        mirrored = restarted.state.parkspot.mirror.entries[site.lot_id].record.lot
    assert (mirrored.free, mirrored.reserved) == (2, 1)


async def test_a_reservation_start_moves_free_at_the_boundary_without_a_request(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    booked = await book(client, driver, at(1), at(2), spot_id=site.spot("A1")["id"])
    assert booked.status_code == 201, booked.text
    assert (await record(client, state, site.lot_id))["free"] == 3

    freeze_clock(state, at(1))
    await state.availability.tick()
    assert (await record(client, state, site.lot_id))["reserved"] == 1

    # Not checked in by the end of the grace period: a no-show, and the spot is free again.
    grace = timedelta(minutes=state.settings.no_show_grace_minutes)
    freeze_clock(state, at(1) + grace + timedelta(seconds=1))
    await state.availability.tick()
    assert (await record(client, state, site.lot_id))["free"] == 3
    response = await client.get(f"{RESERVATIONS}/{booked.json()['id']}", headers=driver.headers)
    assert response.json()["status"] == "no_show"


async def test_a_boundary_is_recomputed_once_when_two_processes_tick_together(
    client: httpx.AsyncClient, state: AppState, settings: Settings, site: Site, driver: Driver
) -> None:
    booked = await book(client, driver, at(2), at(3), spot_id=site.spot("A1")["id"])
    assert booked.status_code == 201, booked.text

    async def version() -> int:
        async with state.database.session(write=False) as session:
            row = await session.get(LotAvailability, site.lot_id)
            assert row is not None
            assert row.record is not None
            stored.append(row.record["lot"])
            return row.version

    stored: list[Json] = []

    async with started(settings) as other:
        other_state: AppState = other.state.parkspot
        await state.availability.settle()
        before = await version()
        freeze_clock(state, at(2))
        freeze_clock(other_state, at(2))
        async with anyio.create_task_group() as group:
            group.start_soon(state.availability.tick)
            group.start_soon(other_state.availability.tick)
        after = await version()

    assert after == before + 1
    assert stored[-1]["reserved"] == 1


# --- agreement -------------------------------------------------------------------------


async def redis_record(settings: Settings, lot_id: int) -> Json | None:
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url)
    try:
        raw = await redis.hget(f"{settings.redis_key_prefix}:availability", str(lot_id))
    finally:
        await redis.aclose()
    if raw is None:
        return None
    lot: Json = json.loads(raw)["lot"]
    return lot


async def test_after_random_operations_api_cache_mirrors_and_database_agree(
    client: httpx.AsyncClient,
    state: AppState,
    settings: Settings,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    rng = random.Random(20261121)
    sites = [await make_site(client, make_user, make_operator, spots=4) for _ in range(2)]
    drivers = [await make_driver(client, make_user, plate=f"RND{i}") for i in range(4)]
    booked: list[tuple[Driver, int]] = []

    async def step() -> None:
        action = rng.choice(["book", "book", "cancel", "check_in", "check_out", "toggle", "close"])
        site = rng.choice(sites)
        driver = rng.choice(drivers)
        if action == "book":
            start = at(rng.choice([-0.05, 0, 0, 1, 2]))
            response = await book(
                client, driver, start, start + timedelta(hours=1), lot_id=site.lot_id
            )
            if response.status_code == 201:
                booked.append((driver, response.json()["id"]))
        elif action in ("cancel", "check_in", "check_out") and booked:
            owner, reservation_id = rng.choice(booked)
            verb = action.replace("_", "-")
            await client.post(f"{RESERVATIONS}/{reservation_id}/{verb}", headers=owner.headers)
        elif action == "toggle":
            spot = rng.choice(site.spots)
            await client.patch(
                f"{SPOTS}/{spot['id']}",
                json={"out_of_service": rng.random() < 0.5},
                headers=site.manager.headers,
            )
        elif action == "close":
            await client.patch(
                f"{LOTS}/{site.lot_id}",
                json={"is_active": rng.random() < 0.7},
                headers=site.manager.headers,
            )

    async with started(settings) if settings.redis_url else nullcontext() as other:
        for _ in range(40):
            await step()
            await state.availability.settle()
            for site in sites:
                api = (await client.get(f"{AVAILABILITY}/{site.lot_id}")).json()
                assert counts(api) == await recount(state, site.lot_id)
                assert (
                    state.mirror.entries[site.lot_id].body
                    == (await client.get(f"{AVAILABILITY}/{site.lot_id}")).content
                )
                if other is not None:
                    await converged(other.state.parkspot, site.lot_id, api["version"])
                    mirrored = other.state.parkspot.mirror.entries[site.lot_id].record.lot
                    assert mirrored.model_dump(mode="json") == api
                    assert await redis_record(settings, site.lot_id) == api


# --- helpers ---------------------------------------------------------------------------


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[FastAPI]:
    """A second app (another process, as far as the database and Redis can tell) on the
    same database."""
    other = create_app(settings.model_copy())
    async with LifespanManager(other):
        yield other


async def converged(other: AppState, lot_id: int, version: int) -> None:
    """Waits (a bounded while) for another process's mirror to reach ``version``."""
    with anyio.fail_after(5):
        while True:
            entry = other.mirror.entries.get(lot_id)
            if entry is not None and entry.record.lot.version >= version:
                return
            await anyio.sleep(0.01)


async def test_a_committed_notification_reaches_the_users_live_queue_only(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver, make_user: MakeUser
) -> None:
    mine = state.notifications.subscribe(driver.actor.id)
    other = await make_driver(client, make_user, plate="OTHER1")
    theirs = state.notifications.subscribe(other.actor.id)

    booked = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    refused = await book(client, other, NOW, at(1), spot_id=site.spot("A1")["id"])
    assert booked.status_code == 201, booked.text
    assert_error(refused, 409)

    with anyio.fail_after(5):
        await mine.wake.wait()
    pushed = [json.loads(body) for body in mine.take()]
    assert [(n["kind"], n["data"]["reservation_id"]) for n in pushed] == [
        ("reservation_confirmed", booked.json()["id"])
    ]
    assert theirs.take() == []
