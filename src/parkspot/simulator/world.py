"""The lots, devices and drivers of a run, made through the API before the traffic starts,
and what the simulator remembers of them (who booked what, which car stands where)."""

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parkspot.simulator.client import Account, Api, Json, SetupError, error_code

# One sensor and one gate per lot carry these names; a new run revokes the previous run's
# (their keys were shown once, to that run) and makes its own.
SENSOR_NAME = "parkspot simulate: spot sensor"
GATE_NAME = "parkspot simulate: gate"
# Kinds of spots a car may take; accessible and motorcycle spots are left alone.
CAR_KINDS = ("standard", "compact", "ev")


@dataclass(eq=False)
class Lot:
    id: int
    name: str
    bookable: bool
    kinds: tuple[str, ...]
    sensor_key: str
    gate_key: str
    # The simulated cars standing on each spot, as the sensor reported them.
    cars: Counter[str] = field(default_factory=Counter)


class Phase(Enum):
    IDLE = "idle"
    BOOKED = "booked"
    PARKED = "parked"


@dataclass(eq=False)
class Driver:
    """A simulated driver with one car; ``busy`` while one of their actions is running."""

    account: Account
    vehicle_id: int
    plate: str
    phase: Phase = Phase.IDLE
    reservation_id: int | None = None
    lot: Lot | None = None
    spot: str | None = None
    starts_at: datetime | None = None
    parked_at: float = 0.0
    busy: bool = False


@dataclass(eq=False)
class WalkIn:
    """A car without a booking: it came through the gate, or stood there when the run began."""

    lot: Lot
    spot: str
    plate: str | None
    parked_at: float
    busy: bool = False


@dataclass
class World:
    manager: Account
    lots: list[Lot]
    drivers: list[Driver]
    walk_ins: list[WalkIn]
    timezone: ZoneInfo


async def prepare(
    api: Api, manager: Account, *, lot_ids: Sequence[int], say: Callable[[str], None]
) -> World:
    """Signs the manager in and takes over one sensor and one gate on each lot they manage
    (all, or ``lot_ids``). Cars the lots' sensors already report become walk-ins that may
    leave. Raises SetupError."""
    await api.login(manager)
    found = await _managed_lots(api, manager)
    if lot_ids:
        missing = sorted(set(lot_ids) - {lot["id"] for lot in found})
        if missing:
            raise SetupError(
                f"{manager.username!r} does not manage lot(s) {', '.join(map(str, missing))}"
            )
        found = [lot for lot in found if lot["id"] in lot_ids]
    found = [lot for lot in found if lot["is_active"]]
    if not found:
        raise SetupError(
            f"{manager.username!r} manages no open lots (run `parkspot seed-demo`, or give "
            "another --manager-username)"
        )
    lots: list[Lot] = []
    walk_ins: list[WalkIn] = []
    for record in found:
        lot, occupied = await _take_over(api, manager, record)
        lots.append(lot)
        walk_ins += [WalkIn(lot, label, None, 0.0) for label in occupied]
        lot.cars.update(occupied)
    bookable = sum(lot.bookable for lot in lots)
    say(
        f"{len(lots)} lots ({bookable} bookable by drivers), a sensor and a gate on each; "
        f"{len(walk_ins)} cars already parked."
    )
    return World(manager, lots, [], walk_ins, _timezone(found[0]["timezone"]))


class SignUpsRefused(Exception):
    """The server limits sign-ups or sign-ins from this address (429)."""


async def sign_up_drivers(api: Api, world: World, count: int, say: Callable[[str], None]) -> None:
    """Signs ``count`` drivers up, each with a car, one at a time, and adds them to the
    world as they come; failures are counted like any request's. Stops at the first 429:
    the server limits sign-ups per address, and every further attempt would count too.

    Signing up and in hash a password inside the request's transaction, which on SQLite
    holds the write lock, so every other writer waits meanwhile: after each driver, a pause
    as long as their sign-up took leaves the lock free at least half of the time."""
    run = secrets.token_hex(3)
    for number in range(1, count + 1):
        started = time.monotonic()
        try:
            driver = await _sign_up(api, run, number)
        except SignUpsRefused as exc:
            signed_up = len(world.drivers)
            say(f"The server refuses more sign-ups ({exc}); going on with {signed_up} drivers.")
            return
        if driver is not None:
            world.drivers.append(driver)
            api.tally.drivers += 1
        await asyncio.sleep(time.monotonic() - started)


async def _managed_lots(api: Api, manager: Account) -> list[Json]:
    operators = await api.pages("/operators", manager)
    lots: list[Json] = []
    for operator in operators:
        lots += await api.pages("/lots", manager, {"operator_id": operator["id"]})
    return lots


async def _take_over(api: Api, manager: Account, record: Json) -> tuple[Lot, list[str]]:
    """The lot with fresh device keys, and the labels of the spots occupied now."""
    lot_id = record["id"]
    devices = await api.pages(f"/lots/{lot_id}/devices", manager)
    for device in devices:
        if device["name"] in (SENSOR_NAME, GATE_NAME) and device["status"] == "active":
            await api.setup("DELETE", f"/devices/{device['id']}", account=manager)
    keys = {}
    for kind, name in (("spot_sensor", SENSOR_NAME), ("gate", GATE_NAME)):
        created = await api.setup(
            "POST",
            f"/lots/{lot_id}/devices",
            account=manager,
            json={"name": name, "kind": kind},
        )
        keys[kind] = str(created["key"])
    spots = await api.pages(f"/lots/{lot_id}/spots", manager)
    kinds = tuple(kind for kind in CAR_KINDS if any(s["kind"] == kind for s in spots))
    lot = Lot(
        id=int(lot_id),
        name=str(record["name"]),
        bookable=record["visibility"] == "public",
        kinds=kinds,
        sensor_key=keys["spot_sensor"],
        gate_key=keys["gate"],
    )
    return lot, [str(s["label"]) for s in spots if s["state"] == "occupied"]


async def _sign_up(api: Api, run: str, number: int) -> Driver | None:
    """A driver whose name and plate hold the run's id, so runs never collide. Raises
    SignUpsRefused."""
    username = f"sim-{run}-{number:03d}"
    account = Account(username, secrets.token_urlsafe(12))
    profile = {
        "username": username,
        "email": f"{username}@example.com",
        "password": account.password,
        "full_name": f"Simulated driver {number}",
    }
    credentials = {"username": username, "password": account.password}
    for path, body in (("/auth/register", profile), ("/auth/login", credentials)):
        response = await api.attempt("POST", path, json=body)
        if response is not None and response.status_code == 429:
            retry = response.headers.get("Retry-After")
            raise SignUpsRefused(
                f"{error_code(response)} on {path}" + (f", retry after {retry} s" if retry else "")
            )
        if response is None or not response.is_success:
            return None
    assert response is not None
    account.token = str(response.json()["access_token"])
    plate = f"SIM{run.upper()}{number:03d}"
    vehicle = await api.call("POST", "/vehicles", account=account, json={"plate": plate})
    if vehicle is None:
        return None
    return Driver(account, int(vehicle["id"]), str(vehicle["plate"]))


def _timezone(name: object) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
