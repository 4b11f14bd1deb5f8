"""Gates and counters: plate matching into check-in and check-out, unplanned stays, counted
occupancy (moves, absolute counts, stale reports, managers' corrections), where each lot's
occupancy comes from, and how a lot whose devices fall silent turns stale with no request."""

from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from sqlmodel import col, select

from parkspot.models import GatePassage, Role
from parkspot.state import AppState
from tests.conftest import MakeOperator, MakeUser, assert_error
from tests.device_helpers import (
    COUNTER_EVENTS,
    GATE_EVENTS,
    SPOT_EVENTS,
    Json,
    Sensor,
    add_device,
    availability,
    counts,
    frozen_site,
)
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
    make_site,
)


@pytest.fixture
async def site(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, make_operator: MakeOperator
) -> Site:
    return await frozen_site(client, state, make_user, make_operator)


async def post(client: httpx.AsyncClient, path: str, device: Sensor, body: Json) -> Json:
    response = await client.post(path, json=body, headers=device.headers)
    assert response.status_code == 200, response.text
    answer: Json = response.json()
    return answer


async def pass_gate(
    client: httpx.AsyncClient,
    gate: Sensor,
    direction: str,
    plate: str | None,
    observed_at: datetime = NOW,
) -> Json:
    body: Json = {"direction": direction, "observed_at": observed_at.isoformat()}
    if plate is not None:
        body["plate"] = plate
    return await post(client, GATE_EVENTS, gate, body)


async def count_cars(
    client: httpx.AsyncClient, counter: Sensor, observed_at: datetime = NOW, **report: int
) -> Json:
    return await post(
        client, COUNTER_EVENTS, counter, {"observed_at": observed_at.isoformat(), **report}
    )


async def booked(
    client: httpx.AsyncClient, driver: Driver, spot: Json, starts: float, ends: float
) -> Json:
    response = await book(client, driver, at(starts), at(ends), spot_id=spot["id"])
    assert response.status_code == 201, response.text
    reservation: Json = response.json()
    return reservation


async def reservation_of(client: httpx.AsyncClient, driver: Driver, reservation_id: int) -> Json:
    response = await client.get(f"{RESERVATIONS}/{reservation_id}", headers=driver.headers)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def passages(state: AppState, lot_id: int) -> list[tuple[str, str | None, str]]:
    """(direction, plate, result) of the lot's passages, in order."""
    async with state.database.session(write=False) as session:
        rows = await session.execute(
            select(GatePassage)
            .where(col(GatePassage.lot_id) == lot_id)
            .order_by(col(GatePassage.id))
        )
        return [(p.direction, p.plate, p.result) for p in rows.scalars()]


# --- gates -----------------------------------------------------------------------------


async def test_an_entry_with_a_booked_plate_checks_the_reservation_in(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, site: Site
) -> None:
    driver = await make_driver(client, make_user, plate="AB-123 CD")
    reservation = await booked(client, driver, site.spot("A1"), 0.1, 2)
    gate = await add_device(client, site, kind="gate")

    answer = await pass_gate(client, gate, "entry", "ab 123-cd")

    assert answer["result"] == "checked_in"
    assert answer["reservation_id"] == reservation["id"]
    after = await reservation_of(client, driver, reservation["id"])
    assert after["status"] == "checked_in"
    assert after["checked_in_at"] == NOW.isoformat().replace("+00:00", "Z")
    assert counts(await availability(client, state, site)) == (2, 0, 1, 3)
    assert await passages(state, site.lot_id) == [("entry", "AB123CD", "checked_in")]


@pytest.mark.parametrize(
    ("observed", "result"),
    [
        (timedelta(seconds=-1), "unplanned"),
        (timedelta(0), "checked_in"),
    ],
    ids=["a second too early", "as the window opens"],
)
async def test_an_entry_before_the_check_in_window_opens_is_unplanned(
    client: httpx.AsyncClient,
    state: AppState,
    make_user: MakeUser,
    site: Site,
    observed: timedelta,
    result: str,
) -> None:
    driver = await make_driver(client, make_user)
    plate = f"TEST{driver.actor.id}"
    reservation = await booked(client, driver, site.spot("A1"), 1, 3)
    opens_at = at(1) - timedelta(minutes=state.settings.checkin_early_minutes)
    freeze_clock(state, opens_at)
    gate = await add_device(client, site, kind="gate")

    answer = await pass_gate(client, gate, "entry", plate, opens_at + observed)

    assert answer["result"] == result
    status = (await reservation_of(client, driver, reservation["id"]))["status"]
    assert status == ("checked_in" if result == "checked_in" else "confirmed")


async def test_an_exit_checks_the_stay_out_at_the_price_of_a_rest_check_out(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, site: Site
) -> None:
    by_gate = await make_driver(client, make_user)
    by_rest = await make_driver(client, make_user)
    gated = await booked(client, by_gate, site.spot("A1"), 0.1, 2)
    rested = await booked(client, by_rest, site.spot("A2"), 0.1, 2)
    gate = await add_device(client, site, kind="gate")
    await pass_gate(client, gate, "entry", f"TEST{by_gate.actor.id}")
    checked_in = await client.post(
        f"{RESERVATIONS}/{rested['id']}/check-in", headers=by_rest.headers
    )
    assert checked_in.status_code == 200, checked_in.text
    # Overstaying makes the price depend on when the car left.
    freeze_clock(state, at(2.5))

    answer = await pass_gate(client, gate, "exit", f"TEST{by_gate.actor.id}", at(2.5))
    checked_out = await client.post(
        f"{RESERVATIONS}/{rested['id']}/check-out", headers=by_rest.headers
    )

    assert checked_out.status_code == 200, checked_out.text
    rest_price = checked_out.json()["final_price"]
    assert answer == {
        "result": "checked_out",
        "passage_id": answer["passage_id"],
        "reservation_id": gated["id"],
        "final_price": rest_price,
        "currency": "EUR",
    }
    after = await reservation_of(client, by_gate, gated["id"])
    assert (after["status"], after["final_price"]) == ("completed", rest_price)
    notified = await client.get("/api/v1/notifications", headers=by_gate.headers)
    assert "checked_out" in [n["kind"] for n in notified.json()["items"]]


async def test_a_gate_of_another_lot_does_not_match_the_plate(
    client: httpx.AsyncClient,
    state: AppState,
    make_user: MakeUser,
    make_operator: MakeOperator,
    site: Site,
) -> None:
    driver = await make_driver(client, make_user)
    reservation = await booked(client, driver, site.spot("A1"), 0.1, 2)
    elsewhere = await make_site(client, make_user, make_operator, spots=1)
    gate = await add_device(client, elsewhere, kind="gate")

    answer = await pass_gate(client, gate, "entry", f"TEST{driver.actor.id}")

    assert answer["result"] == "unplanned"
    assert "reservation_id" not in answer or answer["reservation_id"] is None
    assert (await reservation_of(client, driver, reservation["id"]))["status"] == "confirmed"


async def test_unplanned_entries_and_unmatched_exits_are_kept_and_occupy_free_spots(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, site: Site
) -> None:
    driver = await make_driver(client, make_user)
    await booked(client, driver, site.spot("A1"), 0, 2)
    gate = await add_device(client, site, kind="gate")

    first = await pass_gate(client, gate, "entry", None)
    assert first["result"] == "unplanned"
    assert counts(await availability(client, state, site)) == (1, 1, 1, 3)
    for _ in range(3):
        await pass_gate(client, gate, "entry", "XYZ1")
    # Unplanned stays never take the reserved spot, nor more than the free ones.
    assert counts(await availability(client, state, site)) == (0, 1, 2, 3)
    for _ in range(5):
        exited = await pass_gate(client, gate, "exit", "XYZ1")
        assert exited["result"] == "unmatched_exit"
    # Four inside, five out: never below empty, so a later entry counts again.
    await pass_gate(client, gate, "entry", None)

    record = await availability(client, state, site)
    assert counts(record) == (1, 1, 1, 3)
    assert record["occupancy_source"] == "reservations"
    assert record["stale"] is False
    assert record["device_data_at"] is not None
    kept = await passages(state, site.lot_id)
    assert len(kept) == 10
    assert kept[0] == ("entry", None, "unplanned")
    assert kept[-2] == ("exit", "XYZ1", "unmatched_exit")


async def test_gate_and_counter_events_need_a_device_of_that_kind(
    client: httpx.AsyncClient, site: Site
) -> None:
    sensor = await add_device(client, site)
    gate = await add_device(client, site, kind="gate")
    gate_event = {"direction": "entry", "observed_at": NOW.isoformat()}
    counter_event = {"entries": 1, "observed_at": NOW.isoformat()}

    cases = [
        (GATE_EVENTS, sensor, gate_event),
        (COUNTER_EVENTS, gate, counter_event),
    ]
    for path, device, body in cases:
        response = await client.post(path, json=body, headers=device.headers)
        assert_error(response, 403, "wrong_device_kind")
    assert_error(await client.post(GATE_EVENTS, json=gate_event), 401, "device_key_required")


@pytest.mark.parametrize(
    ("path", "kind", "body"),
    [
        (GATE_EVENTS, "gate", {"direction": "sideways"}),
        (GATE_EVENTS, "gate", {"direction": "entry", "plate": "!!"}),
        (GATE_EVENTS, "gate", {"direction": "entry", "observed_at": "2031-03-10T08:00:00"}),
        (COUNTER_EVENTS, "counter", {"entries": -1}),
        (COUNTER_EVENTS, "counter", {"entries": 1, "occupied": 2}),
        (COUNTER_EVENTS, "counter", {}),
        (COUNTER_EVENTS, "counter", {"occupied": 10**12}),
        # Found by tests/test_fuzz.py: JSON true was read as 1.
        (COUNTER_EVENTS, "counter", {"entries": True}),
    ],
    ids=["direction", "plate", "naive time", "negative", "both", "neither", "huge", "bool"],
)
async def test_bad_gate_and_counter_events_get_422(
    client: httpx.AsyncClient, site: Site, path: str, kind: str, body: Json
) -> None:
    device = await add_device(client, site, kind=kind)
    full: dict[str, Any] = {"observed_at": NOW.isoformat()} | body

    assert_error(await client.post(path, json=full, headers=device.headers), 422)


async def test_events_from_the_future_are_refused(client: httpx.AsyncClient, site: Site) -> None:
    gate = await add_device(client, site, kind="gate")
    counter = await add_device(client, site, kind="counter")
    future = (NOW + timedelta(minutes=6)).isoformat()

    gate_answer = await client.post(
        GATE_EVENTS, json={"direction": "entry", "observed_at": future}, headers=gate.headers
    )
    counter_answer = await client.post(
        COUNTER_EVENTS, json={"entries": 1, "observed_at": future}, headers=counter.headers
    )

    assert_error(gate_answer, 422, "observed_in_future")
    assert_error(counter_answer, 422, "observed_in_future")


# --- counters --------------------------------------------------------------------------


async def test_counter_moves_are_clamped_to_empty_and_to_capacity(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    counter = await add_device(client, site, kind="counter")

    assert (await count_cars(client, counter, entries=2))["counted_occupied"] == 2
    assert (await count_cars(client, counter, entries=5, exits=1))["counted_occupied"] == 3
    assert counts(await availability(client, state, site)) == (0, 0, 3, 3)
    answer = await count_cars(client, counter, exits=9)

    assert answer == {
        "result": "applied",
        "counted_occupied": 0,
        "counted_at": answer["counted_at"],
    }
    assert counts(await availability(client, state, site)) == (3, 0, 0, 3)


async def test_a_counter_report_older_than_the_last_applied_is_stale(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    counter = await add_device(client, site, kind="counter")
    await count_cars(client, counter, NOW, occupied=2)

    older = await count_cars(client, counter, at(-0.1), entries=1)
    same_time = await count_cars(client, counter, NOW, entries=1)

    assert (older["result"], older["counted_occupied"]) == ("stale", 2)
    assert (same_time["result"], same_time["counted_occupied"]) == ("applied", 3)
    assert counts(await availability(client, state, site)) == (0, 0, 3, 3)


async def test_an_absolute_count_by_a_counter_or_a_manager_corrects_the_drift(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, site: Site
) -> None:
    counter = await add_device(client, site, kind="counter")
    await count_cars(client, counter, at(-0.5), entries=3)

    assert (await count_cars(client, counter, at(-0.4), occupied=1))["counted_occupied"] == 1
    corrected = await client.put(
        f"{LOTS}/{site.lot_id}/occupancy", json={"occupied": 2}, headers=site.manager.headers
    )

    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["counted_occupied"] == 2
    assert counts(await availability(client, state, site)) == (1, 0, 2, 3)
    # The counter's reports from before the manager counted are now stale.
    assert (await count_cars(client, counter, at(-0.1), exits=1))["result"] == "stale"


async def test_only_the_lots_managers_may_correct_its_occupancy(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, site: Site
) -> None:
    driver = await make_user()
    other_manager = await make_user(Role.manager, manages=(await make_operator(),))
    body = {"occupied": 1}

    for actor in (driver, other_manager):
        response = await client.put(
            f"{LOTS}/{site.lot_id}/occupancy", json=body, headers=actor.headers
        )
        assert_error(response, 403)
    unknown = await client.put(f"{LOTS}/999999/occupancy", json=body, headers=driver.headers)
    assert_error(unknown, 404)
    anonymous = await client.put(f"{LOTS}/{site.lot_id}/occupancy", json=body)
    assert_error(anonymous, 401)


# --- occupancy source and counts --------------------------------------------------------


async def test_the_occupancy_source_follows_the_lots_active_devices(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    async def source() -> str:
        value: str = (await availability(client, state, site))["occupancy_source"]
        return value

    assert await source() == "reservations"
    await add_device(client, site, kind="gate")
    assert await source() == "reservations"
    await add_device(client, site, kind="counter")
    assert await source() == "counter"
    sensor = await add_device(client, site)
    assert await source() == "sensors"
    revoked = await client.delete(
        f"/api/v1/devices/{sensor.device['id']}", headers=site.manager.headers
    )
    assert revoked.status_code == 204, revoked.text
    assert await source() == "counter"


async def test_a_manager_count_alone_makes_a_counter_lot(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    response = await client.put(
        f"{LOTS}/{site.lot_id}/occupancy", json={"occupied": 1}, headers=site.manager.headers
    )
    assert response.status_code == 200, response.text

    record = await availability(client, state, site)

    assert (record["occupancy_source"], record["device_data_at"], record["stale"]) == (
        "counter",
        None,
        False,
    )
    assert counts(record) == (2, 0, 1, 3)


async def test_a_counter_lot_keeps_reservations_and_checked_in_stays_in_its_counts(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, site: Site
) -> None:
    counter = await add_device(client, site, kind="counter")
    reserving = await make_driver(client, make_user)
    staying = await make_driver(client, make_user)
    await booked(client, reserving, site.spot("A1"), 0, 2)
    stay = await booked(client, staying, site.spot("A2"), 0, 2)
    checked_in = await client.post(f"{RESERVATIONS}/{stay['id']}/check-in", headers=staying.headers)
    assert checked_in.status_code == 200, checked_in.text

    # The counter lags: the stay checked in is inside all the same.
    record = await availability(client, state, site)
    assert counts(record) == (1, 1, 1, 3)
    await count_cars(client, counter, occupied=2)
    assert counts(await availability(client, state, site)) == (0, 1, 2, 3)
    await count_cars(client, counter, occupied=3)
    record = await availability(client, state, site)

    # A full count leaves no spot held for the reservation, and no kind shows free spots.
    assert counts(record) == (0, 0, 3, 3)
    assert record["by_kind"] == {"standard": {"capacity": 3, "free": 0}}
    assert record["status"] == "full"


async def test_a_sensor_lot_counts_its_sensors_only(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    sensor = await add_device(client, site)
    counter = await add_device(client, site, kind="counter")
    gate = await add_device(client, site, kind="gate")
    await count_cars(client, counter, occupied=3)
    await pass_gate(client, gate, "entry", None)
    await post(
        client,
        SPOT_EVENTS,
        sensor,
        {"events": [{"spot": "A1", "occupied": True, "observed_at": NOW.isoformat()}]},
    )

    record = await availability(client, state, site)

    assert record["occupancy_source"] == "sensors"
    assert counts(record) == (2, 0, 1, 3)


# --- freshness -------------------------------------------------------------------------


async def turned_stale(client: httpx.AsyncClient, state: AppState, site: Site) -> Json:
    """The lot's record once it is stale: a tick's recount reaches this process's mirror
    through the bus, a moment after the tick (and the tick loop may be the one doing it)."""
    with anyio.fail_after(5):
        while True:
            record = await availability(client, state, site)
            if record["stale"]:
                return record
            await anyio.sleep(0.01)


async def test_a_sensor_lot_goes_stale_when_its_sensors_fall_silent_and_fresh_on_a_report(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    silence = timedelta(seconds=state.settings.device_silence_seconds)
    sensor = await add_device(client, site)
    report = {"events": [{"spot": "A1", "occupied": True, "observed_at": NOW.isoformat()}]}
    await post(client, SPOT_EVENTS, sensor, report)
    record = await availability(client, state, site)
    assert (record["stale"], record["device_data_at"]) == (False, "2031-03-10T08:00:00Z")

    freeze_clock(state, NOW + silence - timedelta(seconds=1))
    await state.availability.tick()
    assert (await availability(client, state, site))["stale"] is False
    freeze_clock(state, NOW + silence)
    await state.availability.tick()
    silent = await turned_stale(client, state, site)
    assert silent["version"] > record["version"]

    await post(client, SPOT_EVENTS, sensor, report)
    fresh = await availability(client, state, site)
    assert fresh["stale"] is False
    assert fresh["device_data_at"] == "2031-03-10T08:10:00Z"


async def test_a_counter_lot_goes_stale_when_its_counter_never_reports(
    client: httpx.AsyncClient, state: AppState, site: Site
) -> None:
    await add_device(client, site, kind="counter")
    record = await availability(client, state, site)
    assert (record["occupancy_source"], record["stale"], record["device_data_at"]) == (
        "counter",
        False,
        None,
    )

    freeze_clock(state, NOW + timedelta(seconds=state.settings.device_silence_seconds))
    await state.availability.tick()

    assert (await turned_stale(client, state, site))["device_data_at"] is None
