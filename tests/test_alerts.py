"""Alerts for managers: each condition raised and cleared as it starts and ends (by device
reports, bookings and time alone), pushed to the lot's managers as notifications, and
visible only to them."""

import json
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest

from parkspot.models import Role
from parkspot.state import AppState
from tests.conftest import MakeOperator, MakeUser, assert_error
from tests.device_helpers import COUNTER_EVENTS, SPOT_EVENTS, Json, Sensor, add_device, frozen_site
from tests.lot_helpers import LOTS
from tests.reservation_helpers import (
    NOW,
    RESERVATIONS,
    Driver,
    Site,
    at,
    book,
    freeze_clock,
    make_driver,
)

ALERTS = "/api/v1/alerts"


@pytest.fixture
async def site(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, make_operator: MakeOperator
) -> Site:
    return await frozen_site(client, state, make_user, make_operator)


@pytest.fixture
async def sensor(client: httpx.AsyncClient, site: Site) -> Sensor:
    return await add_device(client, site)


@pytest.fixture
async def driver(client: httpx.AsyncClient, make_user: MakeUser) -> Driver:
    return await make_driver(client, make_user, plate="AB123")


async def alerts(
    client: httpx.AsyncClient, state: AppState, site: Site, params: Json | None = None
) -> list[Json]:
    """The manager's alerts once every change so far is counted."""
    await state.availability.settle()
    response = await client.get(ALERTS, params=params, headers=site.manager.headers)
    assert response.status_code == 200, response.text
    items: list[Json] = response.json()["items"]
    return items


def kinds(items: list[Json]) -> list[tuple[str, str | None]]:
    """(kind, spot label or plate) of each alert."""
    return sorted(
        (a["kind"], a["details"].get("spot_label") or a["details"].get("device_name"))
        for a in items
    )


async def report(
    client: httpx.AsyncClient,
    sensor: Sensor,
    spot: str,
    occupied: bool,
    minutes: float = 0,
    plate: str | None = None,
) -> None:
    event: Json = {
        "spot": spot,
        "occupied": occupied,
        "observed_at": (NOW + timedelta(minutes=minutes)).isoformat(),
    }
    if plate is not None:
        event["plate"] = plate
    response = await client.post(SPOT_EVENTS, json={"events": [event]}, headers=sensor.headers)
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1, response.text


async def revoke(client: httpx.AsyncClient, site: Site, device: Sensor) -> None:
    response = await client.delete(
        f"/api/v1/devices/{device.device['id']}", headers=site.manager.headers
    )
    assert response.status_code == 204, response.text


async def tick_at(state: AppState, moment: Any) -> None:
    freeze_clock(state, moment)
    await state.availability.tick()
    await state.availability.settle()


async def count(client: httpx.AsyncClient, counter: Sensor, minutes: float, **moves: int) -> Json:
    response = await client.post(
        COUNTER_EVENTS,
        json={"observed_at": (NOW + timedelta(minutes=minutes)).isoformat(), **moves},
        headers=counter.headers,
    )
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


# --- occupancy ---------------------------------------------------------------------------


async def test_a_car_on_a_spot_nobody_holds_raises_an_alert_that_clears_when_it_leaves(
    client: httpx.AsyncClient, state: AppState, site: Site, sensor: Sensor
) -> None:
    await report(client, sensor, "A2", True, plate="ZZ999")

    [alert] = await alerts(client, state, site)
    assert alert["kind"] == "unexpected_occupancy"
    assert (alert["lot_id"], alert["spot_id"]) == (site.lot_id, site.spot("A2")["id"])
    assert alert["details"] == {"spot_label": "A2", "plate": "ZZ999"}
    assert alert["cleared_at"] is None
    assert "A2" in alert["message"]

    # Another report of the same car raises nothing new.
    await report(client, sensor, "A2", True, minutes=1)
    assert [a["id"] for a in await alerts(client, state, site)] == [alert["id"]]

    await report(client, sensor, "A2", False, minutes=2)
    assert await alerts(client, state, site) == []
    [cleared] = await alerts(client, state, site, {"state": "cleared"})
    assert cleared["id"] == alert["id"]
    assert cleared["cleared_at"] is not None


async def test_a_car_on_a_spot_whose_check_in_window_is_open_raises_nothing(
    client: httpx.AsyncClient, state: AppState, site: Site, sensor: Sensor, driver: Driver
) -> None:
    response = await book(client, driver, at(1), at(3), spot_id=site.spot("A1")["id"])
    assert response.status_code == 201, response.text
    early = timedelta(minutes=state.settings.checkin_early_minutes)

    occupancy = {"kind": "unexpected_occupancy"}

    # An hour early: nobody holds the spot yet.
    await report(client, sensor, "A1", True)
    assert kinds(await alerts(client, state, site, occupancy)) == [("unexpected_occupancy", "A1")]

    # The check-in window opening clears it, with no request.
    await tick_at(state, at(1) - early)
    assert await alerts(client, state, site, occupancy) == []


async def test_a_checked_in_stay_holds_its_spot_until_check_out(
    client: httpx.AsyncClient, state: AppState, site: Site, sensor: Sensor, driver: Driver
) -> None:
    booked = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    reservation_id = booked.json()["id"]
    checked_in = await client.post(
        f"{RESERVATIONS}/{reservation_id}/check-in", headers=driver.headers
    )
    assert checked_in.status_code == 200, checked_in.text
    await report(client, sensor, "A1", True, plate="AB123")
    assert await alerts(client, state, site) == []

    # Still there after checking out: the spot is no longer held.
    freeze_clock(state, at(0.05))
    checked_out = await client.post(
        f"{RESERVATIONS}/{reservation_id}/check-out", headers=driver.headers
    )
    assert checked_out.status_code == 200, checked_out.text
    assert kinds(await alerts(client, state, site)) == [("unexpected_occupancy", "A1")]


async def test_another_plate_on_a_held_spot_raises_wrong_vehicle_until_the_right_one_is_read(
    client: httpx.AsyncClient, state: AppState, site: Site, sensor: Sensor, driver: Driver
) -> None:
    booked = await book(client, driver, NOW, at(2), spot_id=site.spot("A3")["id"])
    assert booked.status_code == 201, booked.text

    await report(client, sensor, "A3", True, plate="XY-987")
    [alert] = await alerts(client, state, site)
    assert alert["kind"] == "wrong_vehicle"
    assert alert["reservation_id"] == booked.json()["id"]
    assert alert["details"] == {"spot_label": "A3", "plate": "XY987", "expected_plate": "AB123"}

    # A sensor without a camera (no plate) says nothing about whose car it is.
    await report(client, sensor, "A3", True, minutes=1)
    assert await alerts(client, state, site) == []
    await report(client, sensor, "A3", True, minutes=2, plate="XY987")
    assert kinds(await alerts(client, state, site)) == [("wrong_vehicle", "A3")]
    await report(client, sensor, "A3", True, minutes=3, plate="ab 123")
    assert await alerts(client, state, site) == []


async def test_sensor_alerts_need_an_active_sensor(
    client: httpx.AsyncClient, state: AppState, site: Site, sensor: Sensor
) -> None:
    await report(client, sensor, "A1", True)
    assert len(await alerts(client, state, site)) == 1

    await revoke(client, site, sensor)

    # The revoked sensor's last word is no longer trusted (nor counted).
    assert await alerts(client, state, site) == []


# --- time ------------------------------------------------------------------------------


async def test_a_no_show_raises_an_alert_until_its_window_ends(
    client: httpx.AsyncClient, state: AppState, site: Site, driver: Driver
) -> None:
    booked = await book(client, driver, at(1), at(3), spot_id=site.spot("A1")["id"])
    assert booked.status_code == 201, booked.text
    grace = timedelta(minutes=state.settings.no_show_grace_minutes)

    await tick_at(state, at(1) + grace - timedelta(seconds=1))
    assert await alerts(client, state, site) == []

    await tick_at(state, at(1) + grace + timedelta(seconds=1))
    [alert] = await alerts(client, state, site)
    assert (alert["kind"], alert["reservation_id"]) == ("no_show", booked.json()["id"])
    assert alert["details"] == {"plate": "AB123", "spot_label": "A1"}

    await tick_at(state, at(3))
    assert await alerts(client, state, site) == []
    assert kinds(await alerts(client, state, site, {"state": "all"})) == [("no_show", "A1")]


async def test_a_silent_device_raises_an_alert_until_it_reports_or_is_revoked(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    silence = timedelta(seconds=state.settings.device_silence_seconds)
    gate = await add_device(client, site, kind="gate", name="North gate")
    counter = await add_device(client, site, kind="counter", name="Ramp counter")

    await tick_at(state, NOW + silence - timedelta(seconds=1))
    assert await alerts(client, state, site) == []

    await tick_at(state, NOW + silence)
    silent = await alerts(client, state, site)
    assert kinds(silent) == [("device_silent", "North gate"), ("device_silent", "Ramp counter")]
    assert all(a["details"]["last_seen_at"] is None for a in silent)
    assert {a["device_id"] for a in silent} == {gate.device["id"], counter.device["id"]}

    await count(client, counter, silence.total_seconds() / 60, entries=1)
    assert kinds(await alerts(client, state, site)) == [("device_silent", "North gate")]

    await revoke(client, site, gate)
    assert await alerts(client, state, site) == []

    # Silent again a full threshold after its last report.
    await tick_at(state, NOW + 2 * silence)
    [again] = await alerts(client, state, site)
    assert again["details"]["last_seen_at"] is not None


# --- counts ----------------------------------------------------------------------------


async def test_exits_past_zero_raise_an_impossible_count_until_the_count_is_possible(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    counter = await add_device(client, site, kind="counter")
    await count(client, counter, 0, entries=1)
    assert (await count(client, counter, 1, exits=3))["counted_occupied"] == 0

    [alert] = await alerts(client, state, site)
    assert (alert["kind"], alert["details"]) == ("impossible_count", {"excess": -2})
    assert "2 more exits" in alert["message"]

    await count(client, counter, 2, entries=1)
    assert await alerts(client, state, site) == []


async def test_counts_past_capacity_raise_an_alert_a_managers_correction_clears(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    counter = await add_device(client, site, kind="counter")
    await count(client, counter, 0, entries=5)

    [alert] = await alerts(client, state, site)
    assert (alert["kind"], alert["details"]) == ("impossible_count", {"excess": 2})

    corrected = await client.put(
        f"{LOTS}/{site.lot_id}/occupancy", json={"occupied": 2}, headers=site.manager.headers
    )
    assert corrected.status_code == 200, corrected.text
    assert await alerts(client, state, site) == []


async def test_deleting_a_lot_clears_its_alerts(
    client: httpx.AsyncClient, state: AppState, site: Site, sensor: Sensor
) -> None:
    await report(client, sensor, "A1", True)
    assert len(await alerts(client, state, site)) == 1

    deleted = await client.delete(f"{LOTS}/{site.lot_id}", headers=site.manager.headers)
    assert deleted.status_code == 204, deleted.text

    assert await alerts(client, state, site) == []


# --- who hears of them -----------------------------------------------------------------


async def test_alerts_reach_the_lots_managers_live_and_as_notifications(
    client: httpx.AsyncClient,
    state: AppState,
    site: Site,
    sensor: Sensor,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    stranger = await make_user(Role.manager, manages=(await make_operator(),))
    live = state.notifications.subscribe(site.manager.id)
    theirs = state.notifications.subscribe(stranger.id)

    # Each report counted before the next: a condition that starts and ends within one
    # recount is never seen.
    await report(client, sensor, "A1", True)
    await state.availability.settle()
    await report(client, sensor, "A1", False, minutes=1)
    await state.availability.settle()

    with anyio.fail_after(5):
        pushed: list[Json] = []
        while len(pushed) < 2:
            await live.wake.wait()
            pushed += [json.loads(body) for body in live.take()]
    assert [(n["kind"], n["data"]["alert"]["kind"]) for n in pushed] == [
        ("alert_raised", "unexpected_occupancy"),
        ("alert_cleared", "unexpected_occupancy"),
    ]
    assert pushed[1]["data"]["alert"]["cleared_at"] is not None
    assert theirs.take() == []

    listed = await client.get("/api/v1/notifications", headers=site.manager.headers)
    assert [n["kind"] for n in listed.json()["items"]] == ["alert_cleared", "alert_raised"]


async def test_alerts_of_lots_one_does_not_manage_are_not_found(
    client: httpx.AsyncClient,
    state: AppState,
    site: Site,
    sensor: Sensor,
    driver: Driver,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    await report(client, sensor, "A1", True)
    [alert] = await alerts(client, state, site)
    own = await client.get(f"{ALERTS}/{alert['id']}", headers=site.manager.headers)
    assert own.status_code == 200
    assert own.json() == alert

    stranger = await make_user(Role.manager, manages=(await make_operator(),))
    listed = await client.get(ALERTS, headers=stranger.headers)
    assert listed.json()["items"] == []
    assert_error(
        await client.get(f"{ALERTS}/{alert['id']}", headers=stranger.headers),
        404,
        "alert_not_found",
    )
    assert_error(await client.get(ALERTS, headers=driver.headers), 403, "managers_only")
    assert_error(await client.get(ALERTS), 401)

    admin = await make_user(Role.admin)
    everything = await client.get(ALERTS, headers=admin.headers)
    assert [a["id"] for a in everything.json()["items"]] == [alert["id"]]


async def test_alert_lists_filter_and_page(
    client: httpx.AsyncClient, state: AppState, site: Site, sensor: Sensor
) -> None:
    for minute, spot in enumerate(("A1", "A2", "A3")):
        await report(client, sensor, spot, True, minutes=minute)
        await state.availability.settle()
    await report(client, sensor, "A3", False, minutes=5)

    assert len(await alerts(client, state, site)) == 2
    assert len(await alerts(client, state, site, {"state": "all"})) == 3
    assert await alerts(client, state, site, {"kind": "no_show"}) == []
    assert len(await alerts(client, state, site, {"lot_id": site.lot_id, "state": "all"})) == 3
    assert await alerts(client, state, site, {"lot_id": site.lot_id + 1000}) == []
    page = await client.get(
        ALERTS, params={"state": "all", "limit": 2, "offset": 2}, headers=site.manager.headers
    )
    assert (page.json()["total"], len(page.json()["items"])) == (3, 1)

    for bad in ({"state": "closed"}, {"kind": "fire"}, {"lot_id": 0}):
        assert_error(await client.get(ALERTS, params=bad, headers=site.manager.headers), 422)
    assert_error(await client.get(f"{ALERTS}/0", headers=site.manager.headers), 422)
