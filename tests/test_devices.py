"""Devices: who manages them, keys shown once and stored hashed, revocation, device
authentication, spot sensor batches (duplicates, stale, rejected, order, limits) and how
sensor reports move the spots' states and the lot's availability."""

import hashlib
import random
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from parkspot.models import Device, Role, Spot
from parkspot.state import AppState
from tests.conftest import MakeOperator, MakeUser, assert_error
from tests.device_helpers import SPOT_EVENTS, Json, Sensor, add_device, availability, counts
from tests.lot_helpers import LOTS, add_member
from tests.reservation_helpers import (
    NOW,
    RESERVATIONS,
    Site,
    add_spot,
    at,
    book,
    freeze_clock,
    make_driver,
    make_site,
)


@pytest.fixture(autouse=True)
def frozen(state: AppState) -> None:
    freeze_clock(state)


@pytest.fixture
async def site(client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator) -> Site:
    return await make_site(client, make_user, make_operator, spots=3)


def event(spot: str, occupied: bool, observed_at: datetime = NOW) -> Json:
    return {"spot": spot, "occupied": occupied, "observed_at": observed_at.isoformat()}


async def send(client: httpx.AsyncClient, sensor: Sensor, *events: Json) -> Json:
    response = await client.post(SPOT_EVENTS, json={"events": list(events)}, headers=sensor.headers)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def outcomes(body: Json) -> list[str]:
    return [result["result"] for result in body["results"]]


async def spot_states(client: httpx.AsyncClient, site: Site) -> dict[str, str]:
    response = await client.get(f"{LOTS}/{site.lot_id}/spots")
    assert response.status_code == 200, response.text
    return {spot["label"]: spot["state"] for spot in response.json()["items"]}


async def sensor_columns(state: AppState, spot_id: int) -> tuple[bool | None, datetime | None]:
    async with state.database.session(write=False) as session:
        spot = await session.get(Spot, spot_id)
    assert spot is not None
    return spot.sensor_occupied, spot.sensor_observed_at


# --- managing devices ------------------------------------------------------------------


async def test_a_manager_creates_a_device_whose_key_is_shown_once_and_stored_hashed(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)

    created = sensor.device
    assert created["key"].startswith("pk_dev_")
    assert len(created["key"]) > 40
    assert {k: v for k, v in created.items() if k not in ("id", "key", "created_at")} == {
        "lot_id": site.lot_id,
        "name": "Level 0",
        "kind": "spot_sensor",
        "status": "active",
        "last_seen_at": None,
        "revoked_at": None,
    }
    listed = await client.get(f"{LOTS}/{site.lot_id}/devices", headers=site.manager.headers)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert (page["total"], page["limit"], page["offset"]) == (1, 50, 0)
    assert page["items"] == [{k: v for k, v in created.items() if k != "key"}]
    assert sensor.key not in listed.text

    async with state.database.session(write=False) as session:
        row = await session.get(Device, created["id"])
    assert row is not None
    assert row.key_digest == hashlib.sha256(sensor.key.encode()).hexdigest()
    assert all(sensor.key not in str(value) for value in row.model_dump().values())


async def test_each_device_gets_its_own_key_and_the_list_is_paginated(
    client: httpx.AsyncClient, site: Site
) -> None:
    sensors = [await add_device(client, site, name=f"Sensor {n}") for n in range(3)]
    assert len({sensor.key for sensor in sensors}) == 3

    response = await client.get(
        f"{LOTS}/{site.lot_id}/devices",
        params={"limit": 2, "offset": 1},
        headers=site.manager.headers,
    )
    page = response.json()
    assert page["total"] == 3
    assert [d["name"] for d in page["items"]] == ["Sensor 1", "Sensor 2"]


async def test_admin_creates_lists_and_revokes_the_devices_of_any_lot(
    client: httpx.AsyncClient, site: Site, make_user: MakeUser
) -> None:
    admin = await make_user(Role.admin)
    devices = f"{LOTS}/{site.lot_id}/devices"

    created = await client.post(
        devices, json={"name": "Gate", "kind": "gate"}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    assert (await client.get(devices, headers=admin.headers)).json()["total"] == 1
    revoked = await client.delete(f"/api/v1/devices/{created.json()['id']}", headers=admin.headers)
    assert revoked.status_code == 204, revoked.text


async def test_only_the_lots_managers_manage_its_devices_others_get_403_or_404(
    client: httpx.AsyncClient,
    state: AppState,
    site: Site,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    sensor = await add_device(client, site)
    devices = f"{LOTS}/{site.lot_id}/devices"
    body = {"name": "Mine", "kind": "spot_sensor"}
    other_manager = await make_user(Role.manager, manages=(await make_operator(),))
    member = await make_user()
    await add_member(state, site.operator_id, member.id)
    driver = await make_user()

    for actor in (other_manager, member, driver):
        # They may see the (public) lot, so the lot's device routes are 403 ...
        assert_error(await client.post(devices, json=body, headers=actor.headers), 403)
        assert_error(await client.get(devices, headers=actor.headers), 403, "not_lot_manager")
        # ... but nobody else may learn which devices it has.
        response = await client.delete(
            f"/api/v1/devices/{sensor.device['id']}", headers=actor.headers
        )
        assert_error(response, 404, "device_not_found")

    assert_error(await client.post(devices, json=body), 401)
    assert_error(await client.get(devices), 401)
    assert_error(await client.delete(f"/api/v1/devices/{sensor.device['id']}"), 401)
    listed = await client.get(devices, headers=site.manager.headers)
    assert [d["status"] for d in listed.json()["items"]] == ["active"]


async def test_the_devices_of_a_members_only_lot_are_404_to_those_who_cannot_see_it(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    site = await make_site(client, make_user, make_operator, spots=1, visibility="members")
    driver = await make_user()

    response = await client.post(
        f"{LOTS}/{site.lot_id}/devices",
        json={"name": "S", "kind": "spot_sensor"},
        headers=driver.headers,
    )
    assert_error(response, 404, "lot_not_found")
    response = await client.get(f"{LOTS}/{site.lot_id}/devices", headers=driver.headers)
    assert_error(response, 404, "lot_not_found")


async def test_another_operators_manager_cannot_revoke_its_device_and_it_keeps_working(
    client: httpx.AsyncClient, site: Site, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    sensor = await add_device(client, site)
    other = await make_site(client, make_user, make_operator, spots=1)

    response = await client.delete(
        f"/api/v1/devices/{sensor.device['id']}", headers=other.manager.headers
    )

    assert_error(response, 404, "device_not_found")
    assert outcomes(await send(client, sensor, event("A1", True))) == ["applied"]


async def test_revoking_stops_the_key_at_once_and_revoking_again_is_204(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)
    device = f"/api/v1/devices/{sensor.device['id']}"
    assert outcomes(await send(client, sensor, event("A1", True))) == ["applied"]

    revoked = await client.delete(device, headers=site.manager.headers)
    assert revoked.status_code == 204, revoked.text
    response = await client.post(
        SPOT_EVENTS, json={"events": [event("A1", False, at(0.01))]}, headers=sensor.headers
    )
    assert_error(response, 401, "invalid_device_key")

    freeze_clock(state, at(1))
    again = await client.delete(device, headers=site.manager.headers)
    assert again.status_code == 204, again.text
    listed = await client.get(f"{LOTS}/{site.lot_id}/devices", headers=site.manager.headers)
    [item] = listed.json()["items"]
    assert item["status"] == "revoked"
    assert datetime.fromisoformat(item["revoked_at"]) == NOW
    assert await sensor_columns(state, site.spot("A1")["id"]) == (True, NOW)


async def test_unknown_device_ids_are_404_and_bad_ones_422(
    client: httpx.AsyncClient, site: Site
) -> None:
    headers = site.manager.headers
    assert_error(await client.delete("/api/v1/devices/999999", headers=headers), 404)
    for bad in ("0", "-1", "abc", "99999999999999999999"):
        response = await client.delete(f"/api/v1/devices/{bad}", headers=headers)
        assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "", "kind": "gate"}, id="empty-name"),
        pytest.param({"name": "x" * 81, "kind": "gate"}, id="long-name"),
        pytest.param({"name": "two\nlines", "kind": "gate"}, id="newline"),
        pytest.param({"name": "nul\x00", "kind": "gate"}, id="nul"),
        pytest.param({"name": "Gate", "kind": "camera"}, id="unknown-kind"),
        pytest.param({"name": "Gate"}, id="no-kind"),
        pytest.param({"name": "Gate", "kind": "gate", "key": "pk_dev_mine"}, id="own-key"),
        pytest.param([], id="list"),
    ],
)
async def test_bad_device_bodies_get_422(client: httpx.AsyncClient, site: Site, body: Any) -> None:
    response = await client.post(
        f"{LOTS}/{site.lot_id}/devices", json=body, headers=site.manager.headers
    )
    assert_error(response, 422, "validation_error")


async def test_a_device_of_a_deleted_lot_is_refused_and_gone(
    client: httpx.AsyncClient, site: Site
) -> None:
    sensor = await add_device(client, site)
    deleted = await client.delete(f"{LOTS}/{site.lot_id}", headers=site.manager.headers)
    assert deleted.status_code == 204, deleted.text

    response = await client.post(
        SPOT_EVENTS, json={"events": [event("A1", True)]}, headers=sensor.headers
    )
    assert_error(response, 401, "invalid_device_key")
    response = await client.delete(
        f"/api/v1/devices/{sensor.device['id']}", headers=site.manager.headers
    )
    assert_error(response, 404, "device_not_found")


# --- device authentication -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "device_key_required", id="missing"),
        pytest.param({"X-Device-Key": ""}, "device_key_required", id="empty"),
        pytest.param({"X-Device-Key": "pk_dev_guessed"}, "invalid_device_key", id="unknown"),
        pytest.param({"X-Device-Key": "not a key; (!)" * 300}, "invalid_device_key", id="garbage"),
    ],
)
async def test_a_missing_or_unknown_device_key_gets_401(
    client: httpx.AsyncClient, site: Site, headers: dict[str, str], code: str
) -> None:
    await add_device(client, site)

    response = await client.post(SPOT_EVENTS, json={"events": [event("A1", True)]}, headers=headers)

    assert_error(response, 401, code)
    assert "X-Device-Key" in response.headers["WWW-Authenticate"]
    assert (await spot_states(client, site))["A1"] == "available"


async def test_a_users_token_is_no_device_key(client: httpx.AsyncClient, site: Site) -> None:
    response = await client.post(
        SPOT_EVENTS, json={"events": [event("A1", True)]}, headers=site.manager.headers
    )
    assert_error(response, 401, "device_key_required")


async def test_the_key_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(SPOT_EVENTS, json={"events": "nonsense"})
    assert_error(response, 401, "device_key_required")


@pytest.mark.parametrize("kind", ["gate", "counter"])
async def test_gate_and_counter_keys_may_not_send_spot_events(
    client: httpx.AsyncClient, site: Site, kind: str
) -> None:
    device = await add_device(client, site, kind=kind)

    response = await client.post(
        SPOT_EVENTS, json={"events": [event("A1", True)]}, headers=device.headers
    )

    assert_error(response, 403, "wrong_device_kind")
    assert response.json()["error"]["details"] == {"kind": kind, "required": "spot_sensor"}
    assert (await spot_states(client, site))["A1"] == "available"


async def test_a_device_request_sets_last_seen_at(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)
    freeze_clock(state, at(2))

    await send(client, sensor, event("A1", True, at(2)))

    listed = await client.get(f"{LOTS}/{site.lot_id}/devices", headers=site.manager.headers)
    [item] = listed.json()["items"]
    assert datetime.fromisoformat(item["last_seen_at"]) == at(2)


async def test_the_device_key_header_is_declared_in_the_openapi_schema(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    schema = response.json()

    scheme = schema["components"]["securitySchemes"]["DeviceKey"]
    assert {k: scheme[k] for k in ("type", "in", "name")} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Device-Key",
    }
    operation = schema["paths"]["/api/v1/device/spot-events"]["post"]
    assert operation["security"] == [{"DeviceKey": []}]


# --- key scope -------------------------------------------------------------------------


async def test_a_key_acts_only_on_the_spots_of_its_own_lot(
    client: httpx.AsyncClient,
    state: AppState,
    site: Site,
    make_user: MakeUser,
    make_operator: MakeOperator,
) -> None:
    other = await make_site(client, make_user, make_operator, spots=3)
    elsewhere = await add_spot(client, other, "B9", "standard")
    sensor = await add_device(client, site)

    body = await send(client, sensor, event("B9", True), event("A1", True))

    assert body["results"][0] == {
        "index": 0,
        "spot": "B9",
        "result": "rejected",
        "code": "unknown_spot",
        "message": body["results"][0]["message"],
    }
    assert outcomes(body) == ["rejected", "applied"]
    # The other lot has an A1 too; only this lot's A1 changed.
    assert (await spot_states(client, site))["A1"] == "occupied"
    assert set((await spot_states(client, other)).values()) == {"available"}
    assert await sensor_columns(state, elsewhere["id"]) == (None, None)
    assert await sensor_columns(state, other.spot("A1")["id"]) == (None, None)


# --- batches ---------------------------------------------------------------------------


async def test_an_applied_event_is_reported_with_the_batch_totals(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)

    body = await send(client, sensor, event("a1", True, at(-0.1)))

    assert body == {
        "results": [{"index": 0, "spot": "A1", "result": "applied", "code": None, "message": None}],
        "applied": 1,
        "duplicates": 0,
        "stale": 0,
        "rejected": 0,
    }
    assert await sensor_columns(state, site.spot("A1")["id"]) == (True, at(-0.1))


async def test_duplicates_are_no_ops_and_older_or_conflicting_reports_are_stale(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)
    await send(client, sensor, event("A1", True, NOW))
    version = (await availability(client, state, site))["version"]

    body = await send(
        client,
        sensor,
        event("A1", True, NOW),
        event("A1", False, at(-1)),
        event("A1", False, NOW),
    )

    assert outcomes(body) == ["duplicate", "stale", "stale"]
    assert (body["applied"], body["duplicates"], body["stale"], body["rejected"]) == (0, 1, 2, 0)
    assert all(r["code"] is None and r["message"] for r in body["results"])
    assert await sensor_columns(state, site.spot("A1")["id"]) == (True, NOW)
    after = await availability(client, state, site)
    assert after["version"] == version
    assert counts(after) == (2, 0, 1, 3)


async def test_events_of_one_batch_apply_in_order(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)

    body = await send(
        client,
        sensor,
        event("A1", True, at(-0.2)),
        event("A1", False, at(-0.1)),
        event("A1", True, at(-0.3)),
        event("A1", False, at(-0.1)),
        event("A2", True, at(-0.1)),
    )

    assert outcomes(body) == ["applied", "applied", "stale", "duplicate", "applied"]
    assert await sensor_columns(state, site.spot("A1")["id"]) == (False, at(-0.1))
    assert counts(await availability(client, state, site)) == (2, 0, 1, 3)


async def test_a_mixed_batch_applies_the_valid_events_and_rejects_the_rest_one_by_one(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)

    body = await send(
        client,
        sensor,
        event("A1", True),
        event("Z404", True),
        event("A2", True, at(1)),
        event("A3", True, at(-0.5)),
    )

    assert [(r["index"], r["spot"], r["result"], r["code"]) for r in body["results"]] == [
        (0, "A1", "applied", None),
        (1, "Z404", "rejected", "unknown_spot"),
        (2, "A2", "rejected", "observed_in_future"),
        (3, "A3", "applied", None),
    ]
    assert (body["applied"], body["rejected"]) == (2, 2)
    assert await spot_states(client, site) == {
        "A1": "occupied",
        "A2": "available",
        "A3": "occupied",
    }


async def test_an_event_up_to_five_minutes_ahead_of_the_server_is_accepted(
    client: httpx.AsyncClient, site: Site
) -> None:
    sensor = await add_device(client, site)
    limit = NOW + timedelta(minutes=5)

    body = await send(
        client,
        sensor,
        event("A1", True, limit),
        event("A2", True, limit + timedelta(microseconds=1)),
    )

    assert outcomes(body) == ["applied", "rejected"]
    assert body["results"][1]["code"] == "observed_in_future"


async def test_observed_at_in_another_offset_is_the_same_instant(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)
    await send(client, sensor, event("A1", True, NOW))

    paris = {"spot": "A1", "occupied": True, "observed_at": "2031-03-10T09:00:00+01:00"}
    body = await send(client, sensor, paris)

    assert outcomes(body) == ["duplicate"]


async def test_a_batch_of_500_events_is_accepted(client: httpx.AsyncClient, site: Site) -> None:
    sensor = await add_device(client, site)
    events = [event("A1", n % 2 == 0, NOW - timedelta(seconds=500 - n)) for n in range(500)]

    body = await send(client, sensor, *events)

    assert body["applied"] == 500


def _events(count: int) -> list[Json]:
    return [event("A1", True)] * count


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"events": _events(501)}, id="501-events"),
        pytest.param({"events": []}, id="no-events"),
        pytest.param({}, id="no-events-field"),
        pytest.param(
            {"events": [{"spot": "A1", "occupied": True, "observed_at": "2031-03-10T08:00:00"}]},
            id="naive-observed-at",
        ),
        pytest.param(
            {"events": [{"spot": "A1", "occupied": True, "observed_at": "yesterday"}]},
            id="not-a-time",
        ),
        pytest.param(
            {"events": [{"spot": "A1", "occupied": True, "observed_at": "1970-01-01T00:00:00Z"}]},
            id="out-of-range-time",
        ),
        pytest.param(
            {"events": [{"spot": "A1", "observed_at": NOW.isoformat()}]}, id="no-occupied"
        ),
        pytest.param({"events": [event("A1", True) | {"occupied": "maybe"}]}, id="bad-occupied"),
        pytest.param({"events": [event("A 1\x00", True)]}, id="bad-label"),
        pytest.param({"events": [event("A" * 17, True)]}, id="long-label"),
        pytest.param({"events": [event("A1", True) | {"battery": 90}]}, id="unknown-field"),
        pytest.param({"events": event("A1", True)}, id="not-a-list"),
        pytest.param([event("A1", True)], id="bare-list"),
    ],
)
async def test_bad_batches_get_422_and_change_nothing(
    client: httpx.AsyncClient, state: AppState, site: Site, body: Any
) -> None:
    sensor = await add_device(client, site)

    response = await client.post(SPOT_EVENTS, json=body, headers=sensor.headers)

    assert_error(response, 422, "validation_error")
    assert await sensor_columns(state, site.spot("A1")["id"]) == (None, None)


async def test_concurrent_batches_leave_each_spot_with_its_newest_report(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensors = [await add_device(client, site, name=f"S{n}") for n in range(2)]
    reports = [(n, n % 3 == 0) for n in range(12)]
    random.Random(7).shuffle(reports)

    async def report(n: int, occupied: bool) -> None:
        sensor = sensors[n % 2]
        await send(client, sensor, event("A1", occupied, at(-n / 60)), event("A2", occupied))

    async with anyio.create_task_group() as group:
        for n, occupied in reports:
            group.start_soon(report, n, occupied)

    # Report 0 is the newest (observed_at = now) of A1; every A2 report has the same time.
    assert await sensor_columns(state, site.spot("A1")["id"]) == (True, NOW)
    a2_occupied, a2_at = await sensor_columns(state, site.spot("A2")["id"])
    assert a2_at == NOW
    assert counts(await availability(client, state, site))[2] == 1 + (a2_occupied is True)


# --- occupancy and availability --------------------------------------------------------


async def test_a_spot_reported_occupied_is_occupied_until_reported_free(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)
    assert counts(await availability(client, state, site)) == (3, 0, 0, 3)

    await send(client, sensor, event("A2", True, at(-0.1)))

    assert (await spot_states(client, site))["A2"] == "occupied"
    spot = await client.get(f"/api/v1/spots/{site.spot('A2')['id']}")
    assert spot.json()["state"] == "occupied"
    body = await availability(client, state, site)
    assert counts(body) == (2, 0, 1, 3)
    assert body["by_kind"] == {"standard": {"capacity": 3, "free": 2}}

    await send(client, sensor, event("A2", False, NOW))

    assert (await spot_states(client, site))["A2"] == "available"
    assert counts(await availability(client, state, site)) == (3, 0, 0, 3)


async def test_a_reserved_spot_reported_occupied_counts_as_occupied_not_reserved(
    client: httpx.AsyncClient, state: AppState, site: Site, make_user: MakeUser
) -> None:
    driver = await make_driver(client, make_user)
    booked = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    assert booked.status_code == 201, booked.text
    assert counts(await availability(client, state, site)) == (2, 1, 0, 3)
    sensor = await add_device(client, site)

    await send(client, sensor, event("A1", True))

    assert (await spot_states(client, site))["A1"] == "occupied"
    assert counts(await availability(client, state, site)) == (2, 0, 1, 3)

    await send(client, sensor, event("A1", False, at(0.01)))
    assert (await spot_states(client, site))["A1"] == "reserved"


async def test_a_sensor_reporting_free_does_not_end_a_checked_in_stay(
    client: httpx.AsyncClient, state: AppState, site: Site, make_user: MakeUser
) -> None:
    driver = await make_driver(client, make_user)
    booked = await book(client, driver, NOW, at(1), spot_id=site.spot("A1")["id"])
    checked_in = await client.post(
        f"{RESERVATIONS}/{booked.json()['id']}/check-in", headers=driver.headers
    )
    assert checked_in.status_code == 200, checked_in.text
    sensor = await add_device(client, site)

    assert outcomes(await send(client, sensor, event("A1", False))) == ["applied"]

    assert (await spot_states(client, site))["A1"] == "occupied"
    assert counts(await availability(client, state, site)) == (2, 0, 1, 3)


async def test_out_of_service_wins_over_a_sensor_reporting_occupied(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)
    await send(client, sensor, event("A3", True))

    response = await client.patch(
        f"/api/v1/spots/{site.spot('A3')['id']}",
        json={"out_of_service": True},
        headers=site.manager.headers,
    )

    assert response.json()["state"] == "out_of_service"
    body = await availability(client, state, site)
    assert (body["capacity"], body["free"], body["occupied"], body["out_of_service"]) == (
        2,
        2,
        0,
        1,
    )
