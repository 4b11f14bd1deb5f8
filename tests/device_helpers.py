"""Helpers shared by the device tests: devices with their keys, and a lot's published
record with its counts checked to add up."""

from dataclasses import dataclass
from typing import Any

import httpx

from parkspot.state import AppState
from tests.conftest import MakeOperator, MakeUser
from tests.lot_helpers import LOTS
from tests.reservation_helpers import Site, freeze_clock, make_site

Json = dict[str, Any]

SPOT_EVENTS = "/api/v1/device/spot-events"
GATE_EVENTS = "/api/v1/device/gate-events"
COUNTER_EVENTS = "/api/v1/device/counter-events"


async def frozen_site(
    client: httpx.AsyncClient, state: AppState, make_user: MakeUser, make_operator: MakeOperator
) -> Site:
    """A lot of three standard spots A1..A3, the clock stopped at ``NOW``."""
    freeze_clock(state)
    return await make_site(client, make_user, make_operator, spots=3)


@dataclass
class Sensor:
    """A device of any kind and its key."""

    device: Json
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Device-Key": self.key}


async def add_device(
    client: httpx.AsyncClient, site: Site, kind: str = "spot_sensor", name: str = "Level 0"
) -> Sensor:
    response = await client.post(
        f"{LOTS}/{site.lot_id}/devices",
        json={"name": name, "kind": kind},
        headers=site.manager.headers,
    )
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return Sensor(body, body["key"])


async def availability(client: httpx.AsyncClient, state: AppState, site: Site) -> Json:
    """The lot's record once every change so far is published."""
    await state.availability.settle()
    response = await client.get(f"/api/v1/availability/{site.lot_id}")
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def counts(body: Json) -> tuple[int, int, int, int]:
    """(free, reserved, occupied, capacity), checking that the first three add up."""
    free, reserved, occupied = body["free"], body["reserved"], body["occupied"]
    assert free + reserved + occupied == body["capacity"], body
    return free, reserved, occupied, body["capacity"]
