"""Helpers shared by the reservation tests: a lot with spots and its manager, drivers with
a vehicle, booking bodies and a fixed clock."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from parkspot.models import Role
from parkspot.state import AppState
from tests.conftest import Actor, MakeOperator, MakeUser
from tests.lot_helpers import LOTS, create_lot

RESERVATIONS = "/api/v1/reservations"
VEHICLES = "/api/v1/vehicles"
# A fixed "now" (a Monday, 08:00 UTC) for tests that set ``state.clock``.
NOW = datetime(2031, 3, 10, 8, 0, tzinfo=UTC)


def at(hours: float, base: datetime = NOW) -> datetime:
    """``hours`` after ``base``."""
    return base + timedelta(hours=hours)


def freeze_clock(state: AppState, now: datetime = NOW) -> None:
    state.clock = lambda: now


@dataclass
class Site:
    """An operator's lot with its spots, and a manager of that operator."""

    operator_id: int
    manager: Actor
    lot: dict[str, Any]
    spots: list[dict[str, Any]]

    @property
    def lot_id(self) -> int:
        lot_id: int = self.lot["id"]
        return lot_id

    def spot(self, label: str) -> dict[str, Any]:
        return next(s for s in self.spots if s["label"] == label)


async def make_site(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    spots: int = 3,
    kind: str = "standard",
    **lot_overrides: Any,
) -> Site:
    """A new operator and manager, a lot (2.50 EUR an hour unless overridden) and ``spots``
    spots A1..An of ``kind``."""
    operator_id = await make_operator()
    manager = await make_user(Role.manager, manages=(operator_id,))
    lot = await create_lot(client, manager, operator_id, **lot_overrides)
    created: list[dict[str, Any]] = []
    if spots:
        response = await client.post(
            f"{LOTS}/{lot['id']}/spots",
            json={"prefix": "A", "count": spots, "kind": kind},
            headers=manager.headers,
        )
        assert response.status_code == 201, response.text
        created = response.json()["items"]
    return Site(operator_id, manager, lot, created)


async def add_spot(client: httpx.AsyncClient, site: Site, label: str, kind: str) -> dict[str, Any]:
    response = await client.post(
        f"{LOTS}/{site.lot_id}/spots",
        json={"label": label, "kind": kind},
        headers=site.manager.headers,
    )
    assert response.status_code == 201, response.text
    spot: dict[str, Any] = response.json()
    site.spots.append(spot)
    return spot


@dataclass
class Driver:
    actor: Actor
    vehicle_id: int

    @property
    def headers(self) -> dict[str, str]:
        return self.actor.headers


async def add_vehicle(client: httpx.AsyncClient, actor: Actor, plate: str) -> int:
    response = await client.post(VEHICLES, json={"plate": plate}, headers=actor.headers)
    assert response.status_code == 201, response.text
    vehicle_id: int = response.json()["id"]
    return vehicle_id


async def make_driver(
    client: httpx.AsyncClient, make_user: MakeUser, plate: str | None = None
) -> Driver:
    """A new driver with one car (plate ``plate``, else one derived from the user id)."""
    actor = await make_user()
    return Driver(actor, await add_vehicle(client, actor, plate or f"TEST{actor.id}"))


def booking(
    driver: Driver,
    starts_at: datetime,
    ends_at: datetime,
    *,
    spot_id: int | None = None,
    lot_id: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A POST /reservations body for the driver's vehicle (``spot_id`` or ``lot_id``)."""
    body: dict[str, Any] = {
        "vehicle_id": driver.vehicle_id,
        "starts_at": starts_at.isoformat(),
        "ends_at": ends_at.isoformat(),
    }
    if spot_id is not None:
        body["spot_id"] = spot_id
    if lot_id is not None:
        body["lot_id"] = lot_id
    return body | extra


async def book(
    client: httpx.AsyncClient,
    driver: Driver,
    starts_at: datetime,
    ends_at: datetime,
    *,
    spot_id: int | None = None,
    lot_id: int | None = None,
    **extra: Any,
) -> httpx.Response:
    body = booking(driver, starts_at, ends_at, spot_id=spot_id, lot_id=lot_id, **extra)
    return await client.post(RESERVATIONS, json=body, headers=driver.headers)
