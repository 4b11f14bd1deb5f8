"""The traffic of a run: which action comes next (weighted by the simulated hour of the
day), the actions themselves, each a few requests of the public API, and the loop that
starts them at the requested rate."""

import asyncio
import contextlib
import random
import signal
import string
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import httpx

from parkspot.simulator.client import (
    REQUEST_TIMEOUT_SECONDS,
    Account,
    Api,
    SetupError,
    Tally,
    describe,
)
from parkspot.simulator.progress import Progress
from parkspot.simulator.world import (
    Driver,
    Lot,
    Phase,
    WalkIn,
    World,
    prepare,
    sign_up_drivers,
)


@dataclass(frozen=True)
class Options:
    url: str
    manager_username: str
    manager_password: str
    duration: float = 60.0
    """Seconds of traffic; 0: until interrupted."""
    rate: float = 5.0
    """Actions started per second."""
    drivers: int = 20
    seed: int | None = None
    time_scale: float = 1.0
    """Simulated seconds per real second, for the time of day that shapes the traffic."""
    start_hour: float | None = None
    """Simulated hour of the day at the start; None: the time now at the first lot."""
    lot_ids: tuple[int, ...] = ()
    """Only these lots; empty: every lot the manager manages."""


# Relative demand by hour of the day (0 to 23), interpolated in between: arrivals peak in
# the morning, departures in the evening.
ARRIVALS = (0.10, 0.05, 0.05, 0.05, 0.10, 0.25, 0.50, 0.90, 1.00, 0.80, 0.60, 0.60,
            0.70, 0.60, 0.50, 0.50, 0.55, 0.50, 0.40, 0.35, 0.30, 0.25, 0.20, 0.15)  # fmt: skip
DEPARTURES = (0.20, 0.10, 0.05, 0.05, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.60,
              0.70, 0.60, 0.50, 0.60, 0.80, 1.00, 0.90, 0.70, 0.50, 0.40, 0.30, 0.25)  # fmt: skip

# Bookings: most start within minutes (the driver is on the way), the rest later today.
SOON_SHARE = 0.75
SOON = (timedelta(0), timedelta(minutes=8))
LATER = (timedelta(minutes=20), timedelta(hours=2))
# Lengths in whole quarters of an hour, 30 minutes to 4 hours.
QUARTERS = (2, 16)
KIND_WEIGHTS = {"standard": 0.8, "compact": 0.1, "ev": 0.1}
# A driver comes through the gate once check-in is open (by default 15 minutes before the
# start), and gives up a booking they could no longer check in (30 minutes after).
ARRIVE_EARLY = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(minutes=25)
# A parked car stays at least this long, so the map shows it.
MIN_STAY_SECONDS = 2.0
# Share of walk-ins whose plate the gate cannot read.
UNREAD_PLATE_SHARE = 0.05
# After the last action started, how long the ones still running may take.
DRAIN_SECONDS = REQUEST_TIMEOUT_SECONDS

Action = Coroutine[Any, Any, None]


class Claimable(Protocol):
    busy: bool


C = TypeVar("C", bound=Claimable)


def demand(table: Sequence[float], hour: float) -> float:
    low = int(hour) % 24
    share = hour - int(hour)
    return table[low] * (1 - share) + table[(low + 1) % 24] * share


def utcnow() -> datetime:
    return datetime.now(UTC)


class Traffic:
    """Picks and runs actions; everything it knows of the lots is in ``world``."""

    def __init__(self, api: Api, world: World, rng: random.Random) -> None:
        self.api = api
        self.world = world
        self.rng = rng

    @property
    def tally(self) -> Tally:
        return self.api.tally

    # --- choosing ------------------------------------------------------------------------

    def next_action(self, hour: float) -> Action:
        """The next action, its driver or car marked busy until it is done."""
        now, moment = utcnow(), time.monotonic()
        arrivals, departures = demand(ARRIVALS, hour), demand(DEPARTURES, hour)
        idle: list[Driver] = []
        booked: list[Driver] = []
        due: list[Driver] = []
        parked: list[Driver] = []
        for driver in self.world.drivers:
            if driver.busy:
                continue
            if driver.phase is Phase.BOOKED:
                assert driver.starts_at is not None
                if now > driver.starts_at + GIVE_UP_AFTER:
                    # Never came: the server makes it a no-show.
                    _forget(driver)
                else:
                    booked.append(driver)
                    if now >= driver.starts_at - ARRIVE_EARLY:
                        due.append(driver)
            if driver.phase is Phase.IDLE:
                idle.append(driver)
            elif driver.phase is Phase.PARKED and moment - driver.parked_at >= MIN_STAY_SECONDS:
                parked.append(driver)
        leaving = [
            car
            for car in self.world.walk_ins
            if not car.busy and moment - car.parked_at >= MIN_STAY_SECONDS
        ]
        bookable = [lot for lot in self.world.lots if lot.bookable and lot.kinds]
        choices: list[tuple[float, Callable[[], Action]]] = [
            (0.3 * arrivals * len(idle) * bool(bookable), lambda: self._claim(idle, self.book)),
            (1.0 * len(due), lambda: self._claim(due, self.arrive)),
            (0.05 * len(booked), lambda: self._claim(booked, self.cancel)),
            (0.15 * departures * len(parked), lambda: self._claim(parked, self.depart)),
            (1.5 * arrivals, lambda: self.walk_in(self.rng.choice(self.world.lots))),
            (0.1 * departures * len(leaving), lambda: self._claim(leaving, self.walk_out)),
            (1.0, self.look),
        ]
        weights = [weight for weight, _ in choices]
        _, make = self.rng.choices(choices, weights)[0]
        return make()

    def _claim(self, candidates: list[C], act: Callable[[C], Action]) -> Action:
        """``act`` on one of the candidates, which is busy until it is done."""
        chosen = self.rng.choice(candidates)
        chosen.busy = True

        async def holding() -> None:
            try:
                await act(chosen)
            finally:
                chosen.busy = False

        return holding()

    # --- drivers -------------------------------------------------------------------------

    async def book(self, driver: Driver) -> None:
        """A booking of a spot the server picks, starting soon or later today."""
        lot = self.rng.choice([lot for lot in self.world.lots if lot.bookable and lot.kinds])
        kind = self.rng.choices(lot.kinds, [KIND_WEIGHTS[k] for k in lot.kinds])[0]
        soon = self.rng.random() < SOON_SHARE
        earliest, latest = SOON if soon else LATER
        starts_at = utcnow() + self.rng.uniform(0, 1) * (latest - earliest) + earliest
        ends_at = starts_at + timedelta(minutes=15 * self.rng.randint(*QUARTERS))
        body = {
            "lot_id": lot.id,
            "kind": kind,
            "vehicle_id": driver.vehicle_id,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
        }
        reservation = await self.api.call(
            "POST",
            "/reservations",
            account=driver.account,
            headers={"Idempotency-Key": uuid.uuid4().hex},
            json=body,
        )
        if reservation is not None:
            self.tally.booked += 1
            driver.phase, driver.lot = Phase.BOOKED, lot
            driver.reservation_id = int(reservation["id"])
            driver.spot = str(reservation["spot_label"])
            driver.starts_at = datetime.fromisoformat(reservation["starts_at"])

    async def cancel(self, driver: Driver) -> None:
        cancelled = await self.api.call(
            "POST", f"/reservations/{driver.reservation_id}/cancel", account=driver.account
        )
        if cancelled is not None:
            self.tally.cancelled += 1
            _forget(driver)

    async def arrive(self, driver: Driver) -> None:
        """Through the gate (which checks the booking in), then onto the booked spot."""
        assert driver.lot is not None
        assert driver.spot is not None
        if await self._gate(driver.lot, "entry", driver.plate):
            driver.phase, driver.parked_at = Phase.PARKED, time.monotonic()
            await self._park(driver.lot, driver.spot)

    async def depart(self, driver: Driver) -> None:
        """Off the spot, then out through the gate (which checks the stay out)."""
        assert driver.lot is not None
        assert driver.spot is not None
        lot, spot = driver.lot, driver.spot
        _forget(driver)
        await self._unpark(lot, spot)
        await self._gate(lot, "exit", driver.plate)

    # --- cars without a booking ----------------------------------------------------------

    async def walk_in(self, lot: Lot) -> None:
        """A car without a booking takes a free spot, if the lot has one."""
        spots = await self.api.call(
            "GET", f"/lots/{lot.id}/spots", account=self.world.manager, params={"limit": 2000}
        )
        if spots is None:
            return
        self.tally.reads += 1
        free = [
            str(spot["label"])
            for spot in spots["items"]
            if spot["state"] == "available" and spot["kind"] in lot.kinds
        ]
        free = [label for label in free if not lot.cars[label]]
        if not free:
            return
        plate = None if self.rng.random() < UNREAD_PLATE_SHARE else self._plate()
        car = WalkIn(lot, self.rng.choice(free), plate, time.monotonic(), busy=True)
        try:
            if await self._gate(lot, "entry", plate):
                self.world.walk_ins.append(car)
                await self._park(lot, car.spot)
        finally:
            car.busy = False

    async def walk_out(self, car: WalkIn) -> None:
        self.world.walk_ins.remove(car)
        await self._unpark(car.lot, car.spot)
        await self._gate(car.lot, "exit", car.plate)

    async def look(self) -> None:
        """A driver's app reads the map."""
        if await self.api.call("GET", "/availability") is not None:
            self.tally.reads += 1

    def _plate(self) -> str:
        letters, digits = string.ascii_uppercase, string.digits
        pick = self.rng.choice
        return "".join(
            pick(c) for c in (letters, letters, digits, digits, digits, letters, letters)
        )

    # --- devices -------------------------------------------------------------------------

    async def _gate(self, lot: Lot, direction: str, plate: str | None) -> bool:
        event = {"direction": direction, "plate": plate, "observed_at": utcnow().isoformat()}
        passage = await self.api.call(
            "POST", "/device/gate-events", device_key=lot.gate_key, json=event
        )
        if passage is None:
            return False
        if direction == "entry":
            self.tally.entries += 1
        else:
            self.tally.exits += 1
        self.tally.passages[str(passage["result"])] += 1
        return True

    async def _park(self, lot: Lot, spot: str) -> None:
        lot.cars[spot] += 1
        if lot.cars[spot] == 1:
            await self._sensor(lot, spot, occupied=True)

    async def _unpark(self, lot: Lot, spot: str) -> None:
        lot.cars[spot] -= 1
        if lot.cars[spot] <= 0:
            del lot.cars[spot]
            await self._sensor(lot, spot, occupied=False)

    async def _sensor(self, lot: Lot, spot: str, *, occupied: bool) -> None:
        event = {"spot": spot, "occupied": occupied, "observed_at": utcnow().isoformat()}
        answer = await self.api.call(
            "POST", "/device/spot-events", device_key=lot.sensor_key, json={"events": [event]}
        )
        if answer is None:
            return
        self.tally.sensor_reports += 1
        for result in answer["results"]:
            if result["result"] == "rejected":
                self.tally.refuse(f"spot event {result['code']}")


def _forget(driver: Driver) -> None:
    driver.phase, driver.reservation_id = Phase.IDLE, None
    driver.lot, driver.spot, driver.starts_at = None, None, None


# --- the run -----------------------------------------------------------------------------


async def simulate(
    options: Options, progress: Progress, stop: asyncio.Event | None = None
) -> Tally:
    """Sets the lots up, then starts ``options.rate`` actions a second (while drivers sign
    up) until ``options.duration`` is over, ``stop`` is set or, on the main thread, the
    first Ctrl-C comes, and waits for the actions still running. Raises SetupError when the
    run cannot start."""
    rng = random.Random(options.seed)
    async with httpx.AsyncClient(base_url=options.url, timeout=REQUEST_TIMEOUT_SECONDS) as http:
        api = Api(http, Tally())
        await _check_server(http, options.url)
        manager = Account(options.manager_username, options.manager_password)
        try:
            world = await prepare(api, manager, lot_ids=options.lot_ids, say=progress.say)
        except httpx.HTTPError as exc:
            raise SetupError(f"lost the server at {options.url}: {describe(exc)}") from exc
        # The run's own count, without the setup's requests.
        api.tally = Tally()
        start_hour = options.start_hour
        if start_hour is None:
            local = datetime.now(world.timezone)
            start_hour = local.hour + local.minute / 60
        traffic = Traffic(api, world, rng)
        await _run(traffic, options, start_hour, progress, stop or asyncio.Event())
        return api.tally


async def _check_server(http: httpx.AsyncClient, url: str) -> None:
    try:
        response = await http.get("/healthz")
    except httpx.HTTPError as exc:
        raise SetupError(f"cannot reach the server at {url}: {describe(exc)}") from exc
    if response.status_code != 200:
        raise SetupError(
            f"{url} does not answer like a parkspot server (GET /healthz: "
            f"{response.status_code} {response.reason_phrase})"
        )


async def _run(
    traffic: Traffic, options: Options, start_hour: float, progress: Progress, stop: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    interrupts = threading.current_thread() is threading.main_thread()
    if interrupts:

        def interrupted() -> None:
            # A second Ctrl-C interrupts at once.
            loop.remove_signal_handler(signal.SIGINT)
            stop.set()

        loop.add_signal_handler(signal.SIGINT, interrupted)
    started = loop.time()
    end = started + options.duration if options.duration else float("inf")

    def hour() -> float:
        return (start_hour + (loop.time() - started) * options.time_scale / 3600) % 24

    slots = asyncio.Semaphore(max(4, min(100, int(options.rate * 2))))
    running: set[asyncio.Task[None]] = set()

    async def guarded(work: Action) -> None:
        try:
            await work
        except Exception as exc:  # a surprising answer must not end the run
            traffic.tally.fail(type(exc).__name__)

    async def perform(action: Action) -> None:
        try:
            await guarded(action)
            traffic.tally.actions += 1
        finally:
            slots.release()

    mode = f"for {options.duration:g} s" if options.duration else "until Ctrl-C"
    progress.say(
        f"Simulating {options.rate:g} actions/s {mode}; {options.drivers} drivers sign up "
        "as it goes."
    )
    signing_up = asyncio.create_task(
        guarded(sign_up_drivers(traffic.api, traffic.world, options.drivers, progress.say))
    )
    display = asyncio.create_task(
        progress.follow(traffic.tally, lambda: loop.time() - started, hour)
    )
    try:
        due = started
        while not stop.is_set() and loop.time() < end:
            await slots.acquire()
            task = asyncio.create_task(perform(traffic.next_action(hour())))
            running.add(task)
            task.add_done_callback(running.discard)
            # Catch up after a stall by at most a second's worth of actions.
            due = max(due + 1 / options.rate, loop.time() - 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, min(due, end) - loop.time()))
        if running:
            _, late = await asyncio.wait(running, timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
    finally:
        for task in (signing_up, display):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if interrupts:
            loop.remove_signal_handler(signal.SIGINT)
        progress.finish(traffic.tally, loop.time() - started, hour())
