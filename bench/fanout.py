"""What the live scenarios (S5-S8) share: scheduled changes and one measured fan-out.

Lots change on a schedule (by bookings through the API, or by publishing records to a
ceiling); in a measured fan-out subscribers connect, the server's memory per idle
connection is read, the changes are made, and the delay from each change to each
subscriber's copy of it is measured.

A change's origin is the moment the request that made it returned (the booking's 201, the
ceiling's publish answer), on the wall clock the subscriber processes stamp arrivals with.
A booking does not say which version of its lot it produced, so each (lot, version) is
matched to the booking of that lot sent last before the record's own ``updated_at`` (the
server takes it when the recount starts, after the commit); the schedule leaves at least
``period`` seconds between two changes of one lot, so that is unambiguous while the server
keeps up. The same lot changing faster than its subscribers read would merge two versions
into one event (the server keeps one pending record per lot), which the schedule avoids.
"""

import asyncio
import bisect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.asyncio import Redis

from bench import loadgen
from bench.harness import (
    BenchConfig,
    BenchRedis,
    CpuMeter,
    PgDatabase,
    Server,
    asgi_app_server,
    fmt_int,
    latency_summary,
    log,
    new_migrated_database,
    parkspot_server,
    process_tree_rss,
    server_errors,
    vacuum_analyze,
)
from bench.live import Delivery, Key, LivePool, StreamSpec
from bench.scenarios.s2_booking import BookingPlan, booking_body
from bench.seed import Layout, mint_tokens, seed
from parkspot.availability.schemas import KindCount, LotAvailabilityRead, LotStatus
from parkspot.models import SpotKind

AVAILABILITY = "/api/v1/availability"
STREAM = f"{AVAILABILITY}/stream"
SOCKET = f"{AVAILABILITY}/ws"
# Subscribers connected, the server is left alone this long before its memory is read.
IDLE_SECONDS = 2.0
# After the last change: how long deliveries may take to complete, and how long without
# progress ends the wait.
SETTLE_LIMIT = 60.0
SETTLE_STALL = 5.0
SETTLE_POLL = 0.25
KIB = 1024
SPOTS_PER_LOT = 50


@dataclass(frozen=True)
class Schedule:
    """Each lot of ``lots`` changes every ``period`` seconds, the lots evenly staggered,
    for ``seconds``: ``len(lots) / period`` changes a second."""

    lots: tuple[int, ...]
    period: float
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.lots) / self.period

    def plan(self) -> list[tuple[float, int]]:
        """(seconds from the start, lot id) of every change, in time order."""
        step = self.period / len(self.lots)
        changes = []
        m = 0
        while m * self.period < self.seconds:
            for i, lot in enumerate(self.lots):
                offset = m * self.period + i * step
                if offset < self.seconds:
                    changes.append((offset, lot))
            m += 1
        return changes

    def as_dict(self) -> dict[str, Any]:
        return {
            "lots_changing": len(self.lots),
            "period_seconds": self.period,
            "changes_per_second": round(self.rate, 3),
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Change:
    lot: int
    sent: float  # wall clock
    done: float  # when the answer came
    status: int  # HTTP status (0: no answer), or Redis's count of receivers
    ok: bool  # made: 201 for a booking, 204 for a ceiling's publish, any PUBLISH reply
    version: int | None = None  # when the publisher chose it


class Publisher(Protocol):
    """Makes one change of a lot, and tells where every lot ended up."""

    async def change(self, lot: int) -> Change: ...

    async def finals(self) -> dict[int, int]: ...

    def origins(self, changes: Sequence[Change], delivery: Delivery) -> dict[Key, float]: ...


async def _timed_fetch(host: str, port: int, raw: bytes) -> tuple[int, float, float]:
    """(status, sent, done) of one request on a connection of its own (the server closes
    idle keep-alive connections after 5 s, longer than a lot's period)."""
    sent = time.time()
    try:
        status, _ = await loadgen.fetch(host, port, raw, seconds=30.0)
    except (OSError, TimeoutError, loadgen.ProtocolError):
        status = 0
    return status, sent, time.time()


class Bookings:
    """Changes a lot by booking one of its spots through the API: lot ``i``'s ``m``-th
    booking takes its spot ``m % spots_per_lot`` in slot ``m // spots_per_lot`` of the
    plan, driven by that spot's driver (the plan has one driver per spot), so no two
    bookings conflict and nobody passes the limit of upcoming bookings for the first
    ``max_per_user * spots_per_lot`` changes of a lot."""

    def __init__(
        self,
        server: Server,
        layout: Layout,
        plan: BookingPlan,
        tokens: Sequence[str],
        made: dict[int, int],
    ) -> None:
        self.server = server
        self.layout = layout
        self.plan = plan
        self.tokens = tokens
        self.made = made  # lot id -> bookings made so far (shared; see Seeded)

    def request(self, lot: int) -> bytes:
        index = lot - self.layout.first_lot_id
        m = self.made.get(lot, 0)
        self.made[lot] = m + 1
        per_lot = self.plan.spots_per_lot
        if m // per_lot >= self.plan.max_per_user:
            raise RuntimeError(f"the booking plan of lot {lot} is used up")
        k = (m // per_lot) * self.plan.spots + index * per_lot + m % per_lot
        booking = self.plan.booking(k)
        if booking is None or booking.lot_id != lot:
            raise RuntimeError(f"no booking {k} for lot {lot} in the plan")
        host = f"{self.server.host}:{self.server.port}"
        return loadgen.json_request(
            "POST",
            "/api/v1/reservations",
            host,
            booking_body(booking),
            token=self.tokens[booking.user_index],
        )

    async def change(self, lot: int) -> Change:
        status, sent, done = await _timed_fetch(
            self.server.host, self.server.port, self.request(lot)
        )
        return Change(lot, sent, done, status, status == 201)

    async def finals(self) -> dict[int, int]:
        return await lot_versions(self.server)

    def origins(self, changes: Sequence[Change], delivery: Delivery) -> dict[Key, float]:
        by_lot: dict[int, list[Change]] = {}
        for change in sorted(changes, key=lambda c: c.sent):
            if change.ok:
                by_lot.setdefault(change.lot, []).append(change)
        sent = {lot: [c.sent for c in made] for lot, made in by_lot.items()}
        origins: dict[Key, float] = {}
        used: set[tuple[int, int]] = set()
        for (lot, version), stamp in sorted(delivery.updated_at.items()):
            if lot not in by_lot:
                continue
            i = bisect.bisect_right(sent[lot], stamp) - 1
            # A second version for one booking is a recount with nothing new in it.
            if i >= 0 and (lot, i) not in used:
                used.add((lot, i))
                origins[(lot, version)] = by_lot[lot][i].done
        return origins


@dataclass(frozen=True)
class Seeded:
    """A bench database with lots of SPOTS_PER_LOT spots and one driver (with a session
    and a minted token) per spot."""

    database: PgDatabase
    layout: Layout
    plan: BookingPlan
    tokens: tuple[str, ...]
    # Bookings made per lot id, over every server on this database: the next one of a lot
    # takes the plan's next spot and slot.
    made: dict[int, int] = field(default_factory=dict)

    @property
    def lots(self) -> tuple[int, ...]:
        return tuple(range(self.layout.first_lot_id, self.layout.first_lot_id + self.layout.lots))

    def bookings(self, server: Server) -> "Bookings":
        """A booking driver for ``server``, continuing the plan where the last one left it."""
        return Bookings(server, self.layout, self.plan, self.tokens, self.made)


async def seed_lots(config: BenchConfig, made: list[PgDatabase], lots: int) -> Seeded:
    database = await new_migrated_database(config.pg_url, made)
    users = lots * SPOTS_PER_LOT
    layout = await seed(
        database, lots=lots, spots_per_lot=SPOTS_PER_LOT, users=users, sessions=True
    )
    await vacuum_analyze(database)
    plan = BookingPlan.make(layout, 1, datetime.now(UTC))
    return Seeded(database, layout, plan, tuple(mint_tokens(layout)))


async def lot_versions(server: Server) -> dict[int, int]:
    """Every lot's current version, from the anonymous availability list."""
    request = loadgen.http_request("GET", AVAILABILITY, f"{server.host}:{server.port}")
    status, body = await loadgen.fetch(server.host, server.port, request)
    if status != 200:
        raise RuntimeError(f"GET {AVAILABILITY} answered {status}")
    return {int(lot["lot_id"]): int(lot["version"]) for lot in json.loads(body)["lots"]}


def lot_record(lot: int, version: int) -> bytes:
    """A record shaped exactly like the server's, for the ceilings to publish."""
    return (
        LotAvailabilityRead(
            lot_id=lot,
            name=Layout.lot_name(lot),
            latitude=48.85 + lot * 0.001,
            longitude=2.35 + lot * 0.001,
            capacity=50,
            free=50 - version % 50,
            reserved=version % 50,
            occupied=0,
            out_of_service=0,
            by_kind={SpotKind.standard: KindCount(capacity=50, free=50 - version % 50)},
            status=LotStatus.open,
            version=version,
            updated_at=datetime.now(UTC),
        )
        .model_dump_json()
        .encode()
    )


class _NumberedPublisher:
    """A ceiling's publisher numbers each lot's versions itself (1, 2, ...)."""

    def __init__(self) -> None:
        self.versions: dict[int, int] = {}

    def next_record(self, lot: int) -> tuple[int, bytes]:
        version = self.versions.get(lot, 0) + 1
        self.versions[lot] = version
        return version, lot_record(lot, version)

    async def finals(self) -> dict[int, int]:
        return dict(self.versions)

    def origins(self, changes: Sequence[Change], delivery: Delivery) -> dict[Key, float]:
        return {(c.lot, c.version): c.done for c in changes if c.version is not None}


class AsgiPublisher(_NumberedPublisher):
    """``POST /publish`` to bench/ceiling_apps.py's fan-out app."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server

    async def change(self, lot: int) -> Change:
        version, record = self.next_record(lot)
        host = f"{self.server.host}:{self.server.port}"
        raw = loadgen.http_request("POST", "/publish", host, body=record)
        status, sent, done = await _timed_fetch(self.server.host, self.server.port, raw)
        return Change(lot, sent, done, status, status == 204, version)


class RedisPublisher(_NumberedPublisher):
    """``PUBLISH channel record`` on one connection."""

    def __init__(self, client: Redis, channel: str) -> None:
        super().__init__()
        self.client = client
        self.channel = channel

    async def change(self, lot: int) -> Change:
        version, record = self.next_record(lot)
        sent = time.time()
        receivers = await self.client.publish(self.channel, record)
        return Change(lot, sent, time.time(), receivers, True, version)


async def drive(publisher: Publisher, schedule: Schedule) -> list[Change]:
    """Makes the schedule's changes on time, each in a task of its own (a slow answer
    does not delay the next change)."""
    start = time.monotonic() + 0.1
    tasks = []
    for offset, lot in schedule.plan():
        await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
        tasks.append(asyncio.create_task(publisher.change(lot)))
    return list(await asyncio.gather(*tasks))


def _grown(finals: Mapping[int, int], start: Mapping[int, int]) -> int:
    return sum(v - start.get(lot, 0) for lot, v in finals.items())


async def published(
    publisher: Publisher, start: Mapping[int, int], made: int, limit: float = SETTLE_LIMIT
) -> dict[int, int]:
    """The lots' versions once they have grown by ``made`` (each change made a version)
    since ``start`` and two reads SETTLE_POLL apart agree (a booking's version comes a
    little after its 201, later when the server is busy), or after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    previous: dict[int, int] | None = None
    while True:
        finals = await publisher.finals()
        if finals == previous and _grown(finals, start) >= made:
            return finals
        if time.monotonic() > deadline:
            return finals
        previous = finals
        await asyncio.sleep(SETTLE_POLL)


async def settle(
    pool: LivePool, group: str, publisher: Publisher, start: Mapping[int, int], made: int
) -> dict[int, int]:
    """Waits until the ``made`` changes since ``start`` (the lots' versions before them)
    are all published and every subscriber of the group has every version up to the lots'
    final ones; or until nothing arrived for SETTLE_STALL seconds, or SETTLE_LIMIT passed.
    Returns the final versions."""
    deadline = time.monotonic() + SETTLE_LIMIT
    last_progress, last_count = time.monotonic(), -1
    previous: dict[int, int] | None = None
    while True:
        await asyncio.sleep(SETTLE_POLL)
        finals = await publisher.finals()
        received, behind = await pool.count(group, finals)
        now = time.monotonic()
        if received != last_count:
            last_progress, last_count = now, received
        if not behind and finals == previous and _grown(finals, start) >= made:
            return finals
        if now > deadline or now - last_progress > SETTLE_STALL:
            return finals
        previous = finals


@dataclass
class FanoutRun:
    """One measured fan-out: ``count`` subscribers of one kind on one target."""

    target: str
    kind: str
    count: int
    schedule: Schedule
    connect: dict[str, Any] = field(default_factory=dict)
    rss_before: int = 0
    rss_idle: int = 0
    changes: list[Change] = field(default_factory=list)
    delivery: Delivery = field(default_factory=Delivery)
    finals: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    server_latencies: list[float] = field(default_factory=list)  # from the record's updated_at
    origins: dict[Key, float] = field(default_factory=dict)
    unmatched_versions: int = 0  # versions received that no change of the schedule made
    cpu: dict[str, float] = field(default_factory=dict)
    server_log_errors: list[str] = field(default_factory=list)
    server_settings: dict[str, str] = field(default_factory=dict)

    @property
    def kib_per_connection(self) -> float:
        connected = self.connect.get("connected", 0)
        return (self.rss_idle - self.rss_before) / KIB / connected if connected else 0.0

    @property
    def delivered_percent(self) -> float:
        return float(self.delivery.summary(self.finals)["delivered_percent"])

    @property
    def p99_ms(self) -> float:
        return float(latency_summary(self.latencies).get("p99_ms", float("inf")))

    @property
    def complete(self) -> bool:
        """Every subscriber connected and got every version, nothing else went wrong."""
        summary = self.delivery.summary(self.finals)
        return bool(
            self.connect.get("failed", 0) == 0
            and self.connect.get("connected", 0) == self.count
            and summary["versions_delivered"] == summary["versions_expected"]
            and summary["skipped_versions"] == 0
            and summary["stale_records"] == 0
            and summary["closed_by_server"] == 0
            and not summary["errors"]
            and all(c.ok for c in self.changes)
        )

    def figures(self) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        for change in self.changes:
            statuses[str(change.status)] = statuses.get(str(change.status), 0) + 1
        waits = latency_summary(self.connect.get("waits", []))
        return {
            "target": self.target,
            "kind": self.kind,
            "subscribers": self.count,
            "schedule": self.schedule.as_dict(),
            "connect": {
                "connected": self.connect.get("connected", 0),
                "failed": self.connect.get("failed", 0),
                "errors": self.connect.get("errors", {}),
                "seconds": round(self.connect.get("seconds", 0.0), 3),
                "subscribe_latency": waits,
            },
            "memory": {
                "rss_before_mib": round(self.rss_before / KIB**2, 1),
                "rss_idle_mib": round(self.rss_idle / KIB**2, 1),
                "kib_per_idle_connection": round(self.kib_per_connection, 2),
            },
            "changes": len(self.changes),
            "change_statuses": statuses,
            "latency": latency_summary(self.latencies),
            "latency_from_updated_at": latency_summary(self.server_latencies),
            "unmatched_versions": self.unmatched_versions,
            "delivery": self.delivery.summary(self.finals),
            "cpu": self.cpu,
            "server_log_errors": self.server_log_errors[:10],
        }


def notes(run: FanoutRun, label: str) -> list[str]:
    """What a scenario should say about a run beside its figures."""
    said = []
    errors = run.connect.get("errors") or run.delivery.errors
    if errors:
        said.append(f"{label}: {dict(errors)}")
    if run.unmatched_versions:
        extra = sum(
            len(times) for key, times in run.delivery.arrivals.items() if key not in run.origins
        )
        said.append(
            f"{label}: {run.unmatched_versions} versions that no booking made reached the "
            f"subscribers ({fmt_int(extra)} deliveries, not in the latency figures): the server "
            "recounted lots on its own (after losing the bus?)."
        )
    if run.server_log_errors:
        said.append(f"{label}: the server logged errors: {run.server_log_errors[:3]}")
    other = run.cpu.get("other_cpu_cores", 0.0)
    if other > 0.25:
        said.append(
            f"{label}: other work kept {other:.2f} cores busy during the measurement: its "
            "figures are noisy."
        )
    return said


async def idle_rss(pid: int | None) -> int:
    if pid is None:
        return 0
    await asyncio.sleep(IDLE_SECONDS / 2)
    return process_tree_rss(pid)


async def measure(
    pool: LivePool,
    name: str,
    pid: int | None,
    publisher: Publisher,
    spec: StreamSpec,
    count: int,
    schedule: Schedule,
    *,
    cpu_pids: Mapping[str, int | None] | None = None,
    database: PgDatabase | None = None,
) -> FanoutRun:
    """Connects ``count`` subscribers (``spec``), reads the memory of process ``pid``
    before and after, makes the schedule's changes and measures their delivery; the
    subscribers are dropped afterwards."""
    run = FanoutRun(name, spec.kind, count, schedule)
    group = f"{name}-{spec.kind}-{count}"
    run.rss_before = await idle_rss(pid)
    log(f"  {name}: connecting {count:,} {spec.kind} subscribers")
    run.connect = await pool.connect(group, spec, count)
    if run.connect["failed"]:
        log(f"  {name}: {run.connect['failed']} failed: {run.connect['errors']}")
    await asyncio.sleep(IDLE_SECONDS)
    run.rss_idle = process_tree_rss(pid) if pid is not None else 0
    await deliver(run, pool, group, publisher, cpu_pids=cpu_pids, database=database)
    await pool.drop(group)
    return run


async def deliver(
    run: FanoutRun,
    pool: LivePool,
    group: str,
    publisher: Publisher,
    *,
    cpu_pids: Mapping[str, int | None] | None = None,
    database: PgDatabase | None = None,
) -> None:
    """Makes ``run.schedule``'s changes while ``group`` listens, waits until they are
    delivered, and fills ``run`` in: changes, delivery, latencies, CPU use."""
    await pool.collect(group, reset=True)
    meter = CpuMeter(dict(cpu_pids or {}), {"postgres": database} if database else {})
    await meter.start()
    log(f"  {run.target}: {len(run.schedule.plan())} changes over {run.schedule.seconds:.0f} s")
    start = await publisher.finals()
    run.changes = await drive(publisher, run.schedule)
    made = sum(c.ok for c in run.changes)
    run.finals = await settle(pool, group, publisher, start, made)
    await meter.stop()
    run.delivery = await pool.collect(group)
    run.origins = origins = publisher.origins(run.changes, run.delivery)
    for key, times in run.delivery.arrivals.items():
        origin = origins.get(key)
        if origin is None:
            run.unmatched_versions += 1
            continue
        run.latencies += [t - origin for t in times]
        stamp = run.delivery.updated_at.get(key)
        if stamp is not None:
            run.server_latencies += [t - stamp for t in times]
    run.cpu = meter.as_dict()
    client = run.delivery.cpu_seconds / meter.wall_seconds if meter.wall_seconds else 0.0
    run.cpu["client_cpu_cores"] = round(client, 3)
    run.cpu["other_cpu_cores"] = meter.other_cores(client)
    deliveries = run.delivery.events
    if "server" in meter.seconds and deliveries:
        run.cpu["server_cpu_us_per_delivery"] = round(1e6 * meter.seconds["server"] / deliveries, 2)


async def measure_parkspot(
    config: BenchConfig,
    seeded: Seeded,
    redis: BenchRedis,
    pool: LivePool,
    spec_of: Callable[[Server], StreamSpec],
    count: int,
    schedule: Schedule,
) -> FanoutRun:
    """``measure`` on a parkspot server of its own (Redis as the bus), so that its memory
    per connection starts from a fresh process, not from what an earlier run freed."""
    async with parkspot_server(config, seeded.database, extra_env=redis.server_env()) as server:
        run = await measure(
            pool,
            "parkspot",
            server.pid,
            seeded.bookings(server),
            spec_of(server),
            count,
            schedule,
            cpu_pids={"server": server.pid, "redis": redis.pid},
            database=seeded.database,
        )
        run.server_log_errors = server_errors(server)
        run.server_settings = dict(server.settings)
    return run


async def measure_ceiling(
    config: BenchConfig,
    pool: LivePool,
    spec_of: Callable[[Server], StreamSpec],
    count: int,
    schedule: Schedule,
) -> FanoutRun:
    """``measure`` on a fresh bench/ceiling_apps.py ``fanout`` app."""
    async with asgi_app_server(config, "fanout") as ceiling:
        run = await measure(
            pool,
            "raw ASGI",
            ceiling.pid,
            AsgiPublisher(ceiling),
            spec_of(ceiling),
            count,
            schedule,
            cpu_pids={"server": ceiling.pid},
        )
        run.server_log_errors = server_errors(ceiling)
    return run
