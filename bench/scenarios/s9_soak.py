"""S9: a soak. Reads, bookings, device events and 1,000 SSE subscribers together on one
server process for a long time (``--soak-seconds``, default 600; quick: 60), watching for
what only time shows: memory creeping up, file descriptors leaking, the outbox or the cache
falling behind, errors.

The server runs as it is deployed scaled out (one uvicorn worker, PostgreSQL, Redis as the
bus) on seeded data: BOOKED_LOTS lots changed by bookings and SENSED_LOTS lots changed by
their spot sensors, 50 spots each, one driver per spot. For the whole run:

- reads: READ_CONNECTIONS keep-alive connections of the load generator (a process of its
  own), paced to READ_RATE requests a second in all: anonymous
  ``GET /api/v1/availability/{lot_id}`` and the list (the fast path), and every tenth a
  filtered list (``?lot_id=..``, through the framework);
- changes on a schedule (bench/fanout.py's ``drive``): every lot changes once every PERIOD
  seconds, the lots staggered evenly; a booked lot by a booking through the API (distinct
  spots and slots, never conflicting), every CONFLICT_EVERY-th followed by a competing
  booking of the same spot and window by another driver, which must get 409; a sensed lot
  by a batch of events for its 50 spots (bench/scenarios/s4_device_events.py's plan: every
  event applied, the lot's count moved by each batch);
- SUBSCRIBERS subscribers of ``GET /api/v1/availability/stream`` (every lot) in two
  processes of bench/live.py, each receiving every version of every lot.

Watched over time (every SAMPLE_SECONDS): the server's RSS (its process tree's, from
/proc) and CPU, the served versions against the database's (``lot_availability.version``),
the reads' rate, latency and 5xx; every OUTBOX_POLL seconds, on a connection of its own,
the outbox (the ``availability_changes`` rows and their age: the outbox lag) and the open
file descriptors (/proc/<pid>/fd); every COLLECT_SECONDS the subscribers' deliveries.

Cache lag: from the moment the change's request was answered (the booking's 201, the
batch's 200: after its commit) to each subscriber's arrival of the version it made (matched
as in bench/fanout.py: the change of that lot sent last before the record's ``updated_at``).
The event stream is fed from the same in-process mirror that answers the reads, so this is
an upper bound of how long a read served an older record than the database had (plus the
delivery itself). A second, cruder check needs no matching: at each sample no lot may be
served at a version older than the one the database had at the previous sample
(``stuck_lots``).

Verdict, with warm-up W = max(20 % of the run, min(60 s, half the run)) (startup growth is
not drift) and windows of WINDOW = min(30 s, a quarter of what follows the warm-up):
- RSS drift: the median RSS of the samples in [T - WINDOW, T] against that of
  [W, W + WINDOW]: under RSS_DRIFT_TARGET (the ratio column: end / after warm-up);
- descriptors: the fewest open in the end window no more than the fewest open in the
  window after warm-up, each less the server's connections to its database at that poll
  (the least of a window, since every booking and batch comes on a connection of its own
  and the database pool opens overflow connections under bursts: a leak raises the floor;
  the pool's own connections are left out, since it opens them on demand up to its size
  and keeps them);
- outbox lag: every poll under LAG_TARGET; cache lag: p99 under LAG_TARGET, no stuck lot;
- no 5xx anywhere; every subscriber got every version (none skipped, repeated or cut off);
  and, as correctness, every read 200, every booking 201, every conflict 409, every batch
  200 with all its events applied, no transport error, nothing in the server's log, and the
  sensed lots' records at their last batch's count in the end.
"""

import asyncio
import bisect
import contextlib
import math
import os
import statistics
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench import checks, fanout, loadgen
from bench.fanout import Change, Schedule, Seeded
from bench.harness import (
    BENCH_APPLICATION,
    TIMES,
    BenchConfig,
    CpuMeter,
    PgDatabase,
    ScenarioResult,
    Server,
    bench_redis,
    fmt_int,
    latency_summary,
    log,
    parkspot_server,
    process_tree_cpu,
    process_tree_fds,
    process_tree_rss,
    server_errors,
    temp_databases,
)
from bench.live import SSE, Delivery, Key, LivePool, StreamSpec
from bench.scenarios import s4_device_events as s4
from bench.scenarios.registry import Scenario
from bench.scenarios.s2_booking import booking_body
from bench.seed import seed_devices

SECONDS, QUICK_SECONDS = 600, 60
SUBSCRIBERS = 1_000
CLIENT_PROCESSES = 2  # of the subscribers
BOOKED_LOTS = 20
SENSED_LOTS = 20
# Each lot changes every 15 s: 40 lots make 2.7 changes a second (1.3 bookings, 1.3 batches
# of 50 events), 2,700 deliveries a second to 1,000 subscribers: about a quarter of a core
# of the server, so a busy machine slows it without saturating it.
PERIOD = 15.0
CONFLICT_EVERY = 5
READ_CONNECTIONS = 4
READ_RATE = 200.0  # requests a second, all connections together
SAMPLE_SECONDS = 5.0
OUTBOX_POLL = 0.25
COLLECT_SECONDS = 30.0
WARMUP_SHARE, WARMUP_CAP = 0.2, 60.0
WINDOW_SECONDS = 30.0
RSS_DRIFT_TARGET = 0.05
FD_TOLERANCE = 0
LAG_TARGET = 1.0  # seconds, outbox and cache
MAX_POINTS = 120  # per time series in the results
LIFETIME_SETTING = "PARKSPOT_STREAM_MAX_LIFETIME_SECONDS"
DEFAULT_LIFETIME = 3600.0
GROUP = "soak"
MIB = 1024 * 1024

CONNECTIONS_QUERY = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND backend_type = 'client backend' "
    f"AND application_name <> '{BENCH_APPLICATION}'"
)
OUTBOX_QUERY = (
    "SELECT id, extract(epoch FROM clock_timestamp() - created_at) AS age FROM availability_changes"
)


# --- the reads -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadRequests:
    """Client c's n-th read: lot (c + 7 n) of ``lots``; every tenth the list, every tenth
    (another) the list filtered to two lots, which the fast path leaves to the routes."""

    host: str
    lots: tuple[int, ...]

    def request(self, client: int, n: int) -> bytes | None:
        lot = self.lots[(client + 7 * n) % len(self.lots)]
        path = f"{fanout.AVAILABILITY}/{lot}"
        if n % 10 == 9:
            path = fanout.AVAILABILITY
        elif n % 10 == 4:
            other = self.lots[(client + 7 * n + 1) % len(self.lots)]
            path = f"{fanout.AVAILABILITY}?lot_id={lot}&lot_id={other}"
        return loadgen.http_request("GET", path, self.host)


@dataclass
class ReadTimeline:
    """A ``loadgen.ResponseTally``: the reads answered in each ``bucket`` seconds of the
    soak (wall clock from ``t0``), their 5xx and latencies."""

    t0: float
    bucket: float
    answers: Counter[int] = field(default_factory=Counter)
    server_errors: Counter[int] = field(default_factory=Counter)
    latencies: dict[int, list[float]] = field(default_factory=dict)

    def add(self, client: int, status: int, body: bytes, latency: float, measured: bool) -> None:
        slot = int((time.time() - self.t0) // self.bucket)
        self.answers[slot] += 1
        if status >= 500:
            self.server_errors[slot] += 1
        self.latencies.setdefault(slot, []).append(latency)

    def merge(self, other: "ReadTimeline") -> None:
        self.answers.update(other.answers)
        self.server_errors.update(other.server_errors)
        for slot, values in other.latencies.items():
            self.latencies.setdefault(slot, []).extend(values)


# --- the changes -----------------------------------------------------------------------


@dataclass
class Made:
    """One scheduled change (times on the wall clock)."""

    kind: str  # "booking" or "batch"
    lot: int
    sent: float
    done: float | None = None  # None: not answered yet
    status: int = 0  # 0: no answer (transport error)
    ok: bool = False  # 201 for a booking; 200 with every event applied for a batch


class SoakChanges:
    """Changes a lot when the schedule says: a booked lot by a booking, a sensed lot by a
    batch of spot events. Keeps every change, by lot in the order sent, to match versions to
    (``origin``); a ``fanout.Publisher``."""

    def __init__(
        self,
        server: Server,
        seeded: Seeded,
        events: s4.EventPlan,
        keys: Sequence[str],
    ) -> None:
        self.server = server
        self.host = f"{server.host}:{server.port}"
        self.seeded = seeded
        self.bookings = seeded.bookings(server)
        self.events = events
        self.keys = keys
        self.by_lot: dict[int, list[Made]] = {}
        self.booked = 0  # bookings sent
        self._sent: dict[int, list[float]] = {}
        self.batches: Counter[int] = Counter()  # batches sent per sensed lot number
        self.statuses: Counter[str] = Counter()  # "<kind> <status>"
        self.event_results: Counter[str] = Counter()
        self.conflict_codes: Counter[str] = Counter()  # the error codes of the 409s
        self.transport_errors: list[str] = []
        self._used: dict[tuple[int, int], Key] = {}

    def sensed(self, lot: int) -> bool:
        return self.events.first_lot <= lot < self.events.first_lot + self.events.lots

    async def _fetch(self, raw: bytes) -> tuple[int, bytes]:
        try:
            return await loadgen.fetch(self.server.host, self.server.port, raw, seconds=30.0)
        except (OSError, TimeoutError, loadgen.ProtocolError) as exc:
            self.transport_errors.append(repr(exc))
            return 0, b""

    async def change(self, lot: int) -> Change:
        made = Made("batch" if self.sensed(lot) else "booking", lot, time.time())
        self.by_lot.setdefault(lot, []).append(made)
        self._sent.setdefault(lot, []).append(made.sent)
        if made.kind == "batch":
            number = lot - self.events.first_lot
            b = self.batches[number]
            self.batches[number] += 1
            headers = {"Content-Type": "application/json", "X-Device-Key": self.keys[number]}
            raw = loadgen.http_request(
                "POST", s4.PATH, self.host, headers=headers, body=self.events.body(number, b)
            )
            made.status, body = await self._fetch(raw)
            made.ok = made.status == 200 and self._tally(body)
        else:
            m = self.bookings.made.get(lot, 0)
            self.booked += 1
            contest = self.booked % CONFLICT_EVERY == 0
            made.status, _ = await self._fetch(self.bookings.request(lot))
            made.ok = made.status == 201
            if contest:
                status, body = await self._fetch(self._competing(lot, m))
                self.statuses[f"conflict {status}"] += 1
                if status == 409:
                    self.conflict_codes[loadgen.error_code(body)] += 1
        made.done = time.time()
        self.statuses[f"{made.kind} {made.status}"] += 1
        return Change(lot, made.sent, made.done, made.status, made.ok)

    def _tally(self, body: bytes) -> bool:
        tally = s4.EventTally(batch=self.events.spots)
        tally.add(0, 200, body, 0.0, False)
        self.event_results.update(tally.outcomes)
        self.event_results["malformed"] += tally.malformed
        return tally.outcomes["applied"] == self.events.spots and not tally.malformed

    def _competing(self, lot: int, m: int) -> bytes:
        """Another driver's booking of the spot and window of the lot's m-th booking (as
        bench/fanout.py's ``Bookings`` numbers them)."""
        plan = self.seeded.plan
        index = lot - self.seeded.layout.first_lot_id
        per_lot = plan.spots_per_lot
        k = (m // per_lot) * plan.spots + index * per_lot + m % per_lot
        booking = plan.booking(k)
        assert booking is not None
        rival = (booking.user_index + 1) % plan.users
        body = booking_body(replace(booking, vehicle_id=plan.first_vehicle + rival))
        return loadgen.json_request(
            "POST", "/api/v1/reservations", self.host, body, token=self.seeded.tokens[rival]
        )

    async def finals(self) -> dict[int, int]:
        return await fanout.lot_versions(self.server)

    def origin(self, key: Key, stamp: float | None) -> float | bool | None:
        """When the change that made version ``key`` was answered; None: no change made it
        (a recount of the server's own, or a failed change); False: its change has not
        been answered yet (ask again later)."""
        lot = key[0]
        if stamp is None:
            return None
        i = bisect.bisect_right(self._sent.get(lot, []), stamp) - 1
        if i < 0:
            return None
        made = self.by_lot[lot][i]
        if made.done is None:
            return False
        if not made.ok or self._used.setdefault((lot, i), key) != key:
            return None
        return made.done

    def origins(self, changes: Sequence[Change], delivery: Delivery) -> dict[Key, float]:
        found = {}
        for key in delivery.arrivals:
            origin = self.origin(key, delivery.updated_at.get(key))
            if isinstance(origin, float):
                found[key] = origin
        return found


# --- the subscribers' deliveries ---------------------------------------------------------


class Histogram:
    """Latencies (seconds) in 1 ms bins up to 120 s (beyond: the last bin): percentiles
    over millions of deliveries without keeping them."""

    STEP = 0.001
    BINS = 120_000

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * self.BINS))
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf

    def add(self, values: Sequence[float]) -> None:
        counts, step, last = self.counts, self.STEP, self.BINS - 1
        for value in values:
            counts[min(last, max(0, int(value / step)))] += 1
        if values:
            self.count += len(values)
            self.total += sum(values)
            self.low = min(self.low, min(values))
            self.high = max(self.high, max(values))

    def percentile(self, q: float) -> float:
        """The upper edge of the bin holding the q-th percentile (0-100), in seconds."""
        wanted = math.ceil(self.count * q / 100)
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if n and seen >= wanted:
                return min((i + 1) * self.STEP, self.high)
        return math.nan

    def summary(self) -> dict[str, float]:
        if not self.count:
            return {"count": 0}
        ms = 1000.0
        return {
            "count": self.count,
            "mean_ms": round(self.total / self.count * ms, 3),
            "p50_ms": round(self.percentile(50) * ms, 3),
            "p90_ms": round(self.percentile(90) * ms, 3),
            "p99_ms": round(self.percentile(99) * ms, 3),
            "max_ms": round(self.high * ms, 3),
            "min_ms": round(self.low * ms, 3),
        }


class Deliveries:
    """The subscribers' deliveries, collected (and reset) every COLLECT_SECONDS: versions
    delivered, skipped, repeated, summed over the collections from the first one's base;
    each arrival's delay from its change's answer (an arrival whose change is still
    unanswered waits for the next collection)."""

    def __init__(self, changes: SoakChanges) -> None:
        self.changes = changes
        self.first: Delivery | None = None
        self.last = Delivery()
        self.totals: Counter[str] = Counter()
        self.cpu_seconds = 0.0
        self.pending: dict[Key, list[float]] = {}
        self.stamps: dict[Key, float] = {}
        self.lag = Histogram()
        self.server_lag = Histogram()  # from the record's updated_at
        # Per version: the first subscriber's arrival (the pipeline up to the fan-out), and
        # the last one's after the first (the fan-out to every subscriber).
        self.first_lag: list[float] = []
        self.spread: list[float] = []
        self.unmatched: set[Key] = set()
        self.unmatched_deliveries = 0
        self.series: list[dict[str, Any]] = []

    def absorb(self, chunk: Delivery, at: float, *, final: bool = False) -> None:
        if self.first is None:
            self.first = chunk
        self.last = chunk
        for name in ("events", "new", "gaps", "stale", "snapshots"):
            self.totals[name] += getattr(chunk, name)
        self.cpu_seconds += chunk.cpu_seconds
        for key, times in chunk.arrivals.items():
            self.pending.setdefault(key, []).extend(times)
        for key, updated_at in chunk.updated_at.items():
            self.stamps[key] = min(updated_at, self.stamps.get(key, math.inf))
        lags: list[float] = []
        for key in list(self.pending):
            stamp = self.stamps.get(key)
            origin = self.changes.origin(key, stamp)
            if origin is False and not final:
                continue
            times = self.pending.pop(key)
            if isinstance(origin, float):
                lags += [t - origin for t in times]
                self.first_lag.append(min(times) - origin)
                self.spread.append(max(times) - min(times))
                if stamp is not None:
                    self.server_lag.add([t - stamp for t in times])
            else:
                self.unmatched.add(key)
                self.unmatched_deliveries += len(times)
        self.lag.add(lags)
        summary = latency_summary(lags)
        self.series.append(
            {
                "t": round(at, 1),
                "deliveries": chunk.events,
                "timed": len(lags),
                "lag_p50_ms": summary.get("p50_ms"),
                "lag_p99_ms": summary.get("p99_ms"),
                "lag_max_ms": summary.get("max_ms"),
            }
        )

    def summary(self, finals: Mapping[int, int]) -> dict[str, Any]:
        first = self.first or Delivery()
        merged = Delivery(
            subscribers=self.last.subscribers,
            closed_by_server=self.last.closed_by_server,
            events=self.totals["events"],
            new=self.totals["new"],
            gaps=self.totals["gaps"],
            stale=self.totals["stale"],
            snapshots=self.totals["snapshots"],
            errors=self.last.errors,
            final=self.last.final,
            base=first.base,
        )
        return merged.summary(finals)


# --- what is watched -------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the soak began
    rss: int
    fds: int  # the fewest open at any poll since the last sample (the floor)
    fds_most: int  # the most
    fds_other: int  # the floor of those not connections to the database
    server_cpu_cores: float
    outbox_lag_ms: float  # the oldest outbox row's age, the largest of the polls since the last
    outbox_rows: int  # the most rows any of those polls saw
    lots_behind: int  # lots served at an older version than the database's, read just before
    stuck_lots: int  # lots served older than the database's version at the previous sample
    db_connections: int  # the most the server had open to its database at a poll
    load_1m: float


class Monitor:
    """Samples the server every SAMPLE_SECONDS, and polls the outbox and counts the
    server's open files every OUTBOX_POLL seconds, from ``start`` to ``stop``."""

    def __init__(self, server: Server, database: PgDatabase, t0: float) -> None:
        self.server = server
        self.database = database
        self.t0 = t0
        self.samples: list[Sample] = []
        self.outbox_polls = 0
        self.outbox_max_lag = 0.0
        self.outbox_max_at = 0.0
        # Per outbox row seen: its age at its last sighting, and the polls that saw it
        # (first and last), i.e. how long it stayed once committed, to a poll interval.
        self.outbox_rows: dict[int, tuple[float, float, float]] = {}
        self._lag = 0.0
        self._rows = 0
        self._fds: list[tuple[int, int]] = []  # (open files, database connections)
        self._previous_db: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: list[asyncpg.Connection] = []

    async def start(self) -> None:
        self._conns = [await self.database.connect(), await self.database.connect()]
        self._cpu = (time.monotonic(), process_tree_cpu(self.server.pid))
        self._tasks = [
            asyncio.create_task(self._outbox(self._conns[0])),
            asyncio.create_task(self._sample(self._conns[1])),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        conns, self._conns = self._conns, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in conns:
            await conn.close()

    async def _outbox(self, conn: asyncpg.Connection) -> None:
        while True:
            rows = await conn.fetch(OUTBOX_QUERY)
            now = time.time()
            self.outbox_polls += 1
            for row in rows:
                age = float(row["age"])
                first = self.outbox_rows.get(row["id"], (0.0, now, now))[1]
                self.outbox_rows[row["id"]] = (age, first, now)
                self._lag = max(self._lag, age)
                if age > self.outbox_max_lag:
                    self.outbox_max_lag, self.outbox_max_at = age, now - self.t0
            self._rows = max(self._rows, len(rows))
            connections = int(await conn.fetchval(CONNECTIONS_QUERY))
            self._fds.append((process_tree_fds(self.server.pid), connections))
            await asyncio.sleep(OUTBOX_POLL)

    async def _sample(self, conn: asyncpg.Connection) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            db = {
                int(r["lot_id"]): int(r["version"])
                for r in await conn.fetch("SELECT lot_id, version FROM lot_availability")
            }
            served = await fanout.lot_versions(self.server)
            now, cpu = time.monotonic(), process_tree_cpu(self.server.pid)
            cores = (cpu - self._cpu[1]) / (now - self._cpu[0]) if now > self._cpu[0] else 0.0
            self._cpu = (now, cpu)
            self.samples.append(
                Sample(
                    t=round(time.time() - self.t0, 1),
                    rss=process_tree_rss(self.server.pid),
                    fds=min((f for f, _ in self._fds), default=0),
                    fds_most=max((f for f, _ in self._fds), default=0),
                    fds_other=min((f - c for f, c in self._fds), default=0),
                    server_cpu_cores=round(cores, 3),
                    outbox_lag_ms=round(1000 * self._lag, 1),
                    outbox_rows=self._rows,
                    lots_behind=sum(served.get(lot, 0) < v for lot, v in db.items()),
                    stuck_lots=sum(served.get(lot, 0) < v for lot, v in self._previous_db.items()),
                    db_connections=max((c for _, c in self._fds), default=0),
                    load_1m=round(os.getloadavg()[0], 2),
                )
            )
            self._previous_db = db
            self._lag, self._rows, self._fds = 0.0, 0, []


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Where the verdict compares: after the warm-up, and at the end."""

    seconds: float
    warmup: float
    width: float

    @classmethod
    def of(cls, seconds: float) -> "Windows":
        warmup = max(WARMUP_SHARE * seconds, min(WARMUP_CAP, seconds / 2))
        return cls(seconds, warmup, min(WINDOW_SECONDS, (seconds - warmup) / 4))

    def after_warmup(self, t: float) -> bool:
        return self.warmup <= t <= self.warmup + self.width

    def at_end(self, t: float) -> bool:
        return self.seconds - self.width <= t <= self.seconds


async def run(config: BenchConfig) -> ScenarioResult:
    seconds = float(config.soak_seconds or (QUICK_SECONDS if config.quick else SECONDS))
    windows = Windows.of(seconds)
    extra_env: dict[str, str] = {}
    if seconds + 300 > DEFAULT_LIFETIME:  # the subscribers do not reconnect
        extra_env[LIFETIME_SETTING] = str(int(seconds + 600))
    async with temp_databases(config.pg_url) as made, bench_redis(config) as redis:
        log(f"S9: seeding {BOOKED_LOTS} booked and {SENSED_LOTS} sensed lots")
        seeded = await fanout.seed_lots(config, made, BOOKED_LOTS + SENSED_LOTS)
        layout = seeded.layout
        capacity = seeded.plan.max_per_user * seeded.plan.spots_per_lot
        if seconds / PERIOD >= capacity:
            raise ValueError(f"the booking plan lasts {capacity * PERIOD:.0f} s at most")
        sensed = replace(layout, lots=SENSED_LOTS, first_lot_id=layout.first_lot_id + BOOKED_LOTS)
        keys = await seed_devices(seeded.database, sensed, "spot_sensor")
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        events = s4.EventPlan(
            clients=1,
            lots=SENSED_LOTS,
            spots=layout.spots_per_lot,
            first_lot=sensed.first_lot_id,
            base_us=(base - s4.EPOCH) // timedelta(microseconds=1),
        )
        # Booked and sensed lots alternate in the schedule.
        booked = seeded.lots[:BOOKED_LOTS]
        lots = tuple(
            lot for pair in zip(booked, seeded.lots[BOOKED_LOTS:], strict=True) for lot in pair
        )
        schedule = Schedule(lots, PERIOD, seconds)
        async with (
            parkspot_server(
                config, seeded.database, extra_env=redis.server_env() | extra_env
            ) as server,
            LivePool(CLIENT_PROCESSES) as pool,
            contextlib.AsyncExitStack() as stack,
        ):
            log(f"S9: connecting {SUBSCRIBERS:,} subscribers")
            spec = StreamSpec(SSE, server.host, server.port, fanout.STREAM)
            connected = await pool.connect(GROUP, spec, SUBSCRIBERS)
            changes = SoakChanges(server, seeded, events, keys)
            deliveries = Deliveries(changes)
            meter = CpuMeter(
                {"server": server.pid, "redis": redis.pid}, {"postgres": seeded.database}
            )
            await meter.start()
            t0 = time.time()
            monitor = Monitor(server, seeded.database, t0)
            await monitor.start()
            stack.push_async_callback(monitor.stop)
            log(
                f"S9: {seconds:.0f} s of {READ_RATE:g} reads/s, {schedule.rate:.2f} changes/s "
                f"and {SUBSCRIBERS:,} subscribers (warm-up {windows.warmup:.0f} s)"
            )
            reads_task = asyncio.create_task(
                asyncio.to_thread(
                    loadgen.run_load,
                    server.host,
                    server.port,
                    ReadRequests(f"{server.host}:{server.port}", seeded.lots),
                    READ_CONNECTIONS,
                    duration=seconds,
                    tally=ReadTimeline(t0, SAMPLE_SECONDS),
                    interval=READ_CONNECTIONS / READ_RATE,
                )
            )
            start_versions = await changes.finals()
            await pool.collect(GROUP, reset=True)
            drive = asyncio.create_task(fanout.drive(changes, schedule))
            while not drive.done():
                await asyncio.wait({drive}, timeout=COLLECT_SECONDS)
                deliveries.absorb(await pool.collect(GROUP, reset=True), time.time() - t0)
                _progress(monitor, deliveries, seconds)
            made_changes = drive.result()
            finals = await fanout.settle(
                pool, GROUP, changes, start_versions, sum(c.ok for c in made_changes)
            )
            deliveries.absorb(await pool.collect(GROUP, reset=True), time.time() - t0, final=True)
            reads = await reads_task
            await monitor.stop()
            await meter.stop()
            last = {n: b - 1 for n, b in changes.batches.items()}
            log("S9: checking the sensed lots' records")
            end_state = await s4.check_availability(server, events, last)
            log_errors = server_errors(server)
            settings = dict(server.settings)
        overlaps = await checks.overlapping_pairs(seeded.database)
    return _result(
        seconds,
        windows,
        schedule,
        connected,
        changes,
        deliveries,
        finals,
        reads,
        monitor,
        meter,
        end_state | {"overlapping_bookings": overlaps},
        log_errors,
        settings,
    )


def _progress(monitor: Monitor, deliveries: Deliveries, seconds: float) -> None:
    if not monitor.samples or not deliveries.series:
        return
    sample, chunk = monitor.samples[-1], deliveries.series[-1]
    log(
        f"S9: {sample.t:.0f}/{seconds:.0f} s: RSS {sample.rss / MIB:.1f} MiB, {sample.fds} fds, "
        f"outbox {sample.outbox_lag_ms:.0f} ms, delivery p99 {chunk['lag_p99_ms']} ms, "
        f"load {sample.load_1m}"
    )


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def downsample(
    rows: Sequence[Mapping[str, Any]], combine: Mapping[str, Callable[[list[Any]], Any]]
) -> list[dict[str, Any]]:
    """At most MAX_POINTS rows: consecutive rows merged, each field by ``combine``'s
    function for it (default: the group's last value)."""
    step = max(1, math.ceil(len(rows) / MAX_POINTS))
    out = []
    for i in range(0, len(rows), step):
        group = rows[i : i + step]
        out.append(
            {
                name: combine[name]([r[name] for r in group]) if name in combine else value
                for name, value in group[-1].items()
            }
        )
    return out


def _slope(samples: Sequence[Sample]) -> float | None:
    """How fast the RSS grew over the samples (least squares), in MiB an hour."""
    if len(samples) < 3:
        return None
    fit = statistics.linear_regression([s.t for s in samples], [s.rss / MIB for s in samples])
    return round(fit.slope * 3600, 2)


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def _reads_series(reads: loadgen.LoadResult) -> list[dict[str, Any]]:
    timeline = reads.tally
    assert isinstance(timeline, ReadTimeline)
    rows = []
    for slot in sorted(timeline.answers):
        values = timeline.latencies.get(slot, [])
        summary = latency_summary(values)
        rows.append(
            {
                "t": round((slot + 1) * timeline.bucket, 1),
                "per_second": round(timeline.answers[slot] / timeline.bucket, 1),
                "p99_ms": summary.get("p99_ms"),
                "server_errors": timeline.server_errors[slot],
            }
        )
    return rows


def _result(
    seconds: float,
    windows: Windows,
    schedule: Schedule,
    connected: dict[str, Any],
    changes: SoakChanges,
    deliveries: Deliveries,
    finals: dict[int, int],
    reads: loadgen.LoadResult,
    monitor: Monitor,
    meter: CpuMeter,
    end_state: dict[str, Any],
    log_errors: list[str],
    settings: dict[str, str],
) -> ScenarioResult:
    samples = monitor.samples
    early = [s for s in samples if windows.after_warmup(s.t)]
    late = [s for s in samples if windows.at_end(s.t)]
    rss_base = _median([s.rss for s in early])
    rss_end = _median([s.rss for s in late])
    drift = (rss_end - rss_base) / rss_base if rss_base > 0 else math.nan
    fds_base = min((s.fds_other for s in early), default=0)
    fds_end = min((s.fds_other for s in late), default=0)
    measured = [s for s in samples if s.t <= seconds]
    stuck = sum(s.stuck_lots for s in measured)
    lag = deliveries.lag.summary()
    lag_p99 = lag.get("p99_ms", math.inf) / 1000
    outbox_max = monitor.outbox_max_lag
    delivery = deliveries.summary(finals)

    statuses = changes.statuses
    booking_ok = statuses["booking 201"]
    bookings = sum(n for k, n in statuses.items() if k.startswith("booking "))
    conflicts = sum(n for k, n in statuses.items() if k.startswith("conflict "))
    batches = sum(n for k, n in statuses.items() if k.startswith("batch "))
    server_5xx = {
        "reads": sum(n for status, n in reads.all_statuses.items() if status >= 500),
        "changes": sum(n for k, n in statuses.items() if int(k.split()[1]) >= 500),
    }
    reads_answered = sum(reads.all_statuses.values())
    unexpected = {
        "reads_not_200": reads_answered - reads.all_statuses.get(200, 0),
        "bookings_not_201": bookings - booking_ok,
        "conflicts_not_409": conflicts - statuses["conflict 409"],
        "batches_not_applied": batches
        - sum(m.ok for ms in changes.by_lot.values() for m in ms if m.kind == "batch"),
        "transport_errors": reads.transport_errors + len(changes.transport_errors),
    }
    complete = bool(
        connected.get("connected") == SUBSCRIBERS
        and not connected.get("failed")
        and delivery["versions_delivered"] == delivery["versions_expected"]
        and delivery["skipped_versions"] == 0
        and delivery["stale_records"] == 0
        and delivery["closed_by_server"] == 0
        and not delivery["errors"]
    )
    verdict = {
        "rss_drift_under_5_percent": bool(drift < RSS_DRIFT_TARGET),
        "no_fd_growth": fds_end <= fds_base + FD_TOLERANCE,
        "outbox_lag_under_1_s": outbox_max < LAG_TARGET,
        "cache_lag_p99_under_1_s": lag_p99 < LAG_TARGET and stuck == 0,
        "zero_5xx": sum(server_5xx.values()) == 0,
        "all_delivered": complete,
    }
    correct = (
        not any(unexpected.values())
        and not log_errors
        and end_state["mismatched"] == 0
        and not any(end_state["overlapping_bookings"].values())
    )
    met = all(verdict.values()) and correct

    cpu = meter.as_dict()
    client = (deliveries.cpu_seconds + reads.client_cpu_seconds) / max(1e-9, meter.wall_seconds)
    cpu["client_cpu_cores"] = round(client, 3)
    cpu["other_cpu_cores"] = meter.other_cores(client)
    loads = [s.load_1m for s in measured]
    series = downsample(
        [
            {
                "t": s.t,
                "rss_mib": round(s.rss / MIB, 2),
                "fds": s.fds,
                "fds_most": s.fds_most,
                "fds_other": s.fds_other,
                "server_cpu_cores": s.server_cpu_cores,
                "outbox_lag_ms": s.outbox_lag_ms,
                "outbox_rows": s.outbox_rows,
                "lots_behind": s.lots_behind,
                "stuck_lots": s.stuck_lots,
                "db_connections": s.db_connections,
                "load_1m": s.load_1m,
            }
            for s in samples
        ],
        {
            "fds": min,
            "fds_most": max,
            "fds_other": min,
            "server_cpu_cores": _mean,
            "outbox_lag_ms": max,
            "outbox_rows": max,
            "lots_behind": max,
            "stuck_lots": sum,
            "db_connections": max,
            "load_1m": _mean,
        },
    )
    reads_series = downsample(
        _reads_series(reads), {"per_second": _mean, "p99_ms": max, "server_errors": sum}
    )
    delivery_series = downsample(
        deliveries.series,
        {"deliveries": sum, "timed": sum, "lag_p99_ms": max, "lag_max_ms": max},
    )
    result = ScenarioResult(
        id="S9",
        scenario=(
            f"soak, {seconds:.0f} s: {READ_RATE:g} reads/s, {schedule.rate / 2:.2f} bookings/s "
            f"(1 in {CONFLICT_EVERY} contested), {schedule.rate / 2:.2f} sensor batches/s, "
            f"{fmt_int(SUBSCRIBERS)} SSE subscribers"
        ),
        result=(
            f"RSS {rss_base / MIB:.0f} → {rss_end / MIB:.0f} MiB ({100 * drift:+.1f} %); "
            f"fds {fds_base} → {fds_end}; outbox lag max {1000 * outbox_max:.0f} ms; cache lag "
            f"p99 {lag.get('p99_ms', math.nan):.0f} ms; {sum(server_5xx.values())} 5xx; "
            f"{delivery['delivered_percent']:g} % delivered"
        ),
        ratio=round(rss_end / rss_base, 3) if rss_base > 0 else None,
        target=(
            f"RSS drift < {RSS_DRIFT_TARGET:.0%} (ratio < {1 + RSS_DRIFT_TARGET:g}{TIMES}); no fd "
            f"growth; outbox lag < {LAG_TARGET:g} s; cache lag p99 < {LAG_TARGET:g} s; 0 5xx; "
            "100 % delivered"
        ),
        met=met,
        figures={
            "seconds": seconds,
            "windows": {
                "warmup_seconds": round(windows.warmup, 1),
                "window_seconds": round(windows.width, 1),
                "after_warmup_samples": len(early),
                "end_samples": len(late),
            },
            "memory": {
                "rss_after_warmup_mib": round(rss_base / MIB, 2),
                "rss_end_mib": round(rss_end / MIB, 2),
                "drift_percent": round(100 * drift, 2),
                "rss_first_sample_mib": round(samples[0].rss / MIB, 2) if samples else None,
                "rss_peak_mib": round(max(s.rss for s in samples) / MIB, 2) if samples else None,
                # Least-squares slopes: a bounded structure filling (e.g. the replay window
                # of PARKSPOT_AVAILABILITY_EVENTS_KEPT events) flattens out, a leak does not.
                "slope_after_warmup_mib_per_hour": _slope(
                    [s for s in measured if s.t >= windows.warmup]
                ),
                "slope_last_half_mib_per_hour": _slope([s for s in measured if s.t >= seconds / 2]),
            },
            "file_descriptors": {
                "definition": (
                    "the fewest open at any poll of the window, less the server's "
                    "connections to its database at that poll (its pool opens them on "
                    "demand, up to its size, and keeps them)"
                ),
                "after_warmup_least": fds_base,
                "end_least": fds_end,
                "after_warmup_least_all": min((s.fds for s in early), default=0),
                "end_least_all": min((s.fds for s in late), default=0),
                "most": max((s.fds_most for s in samples), default=0),
                "db_connections_after_warmup": max((s.db_connections for s in early), default=0),
                "db_connections_end": max((s.db_connections for s in late), default=0),
                "polled_every_seconds": OUTBOX_POLL,
            },
            "outbox": {
                "definition": (
                    "a row's age: from its created_at (staged inside the writing transaction, "
                    "so the rest of that transaction counts) to the last poll that saw it; "
                    "visible: from the first poll that saw it (after the commit) to the last"
                ),
                "max_lag_ms": round(1000 * outbox_max, 1),
                "max_lag_at_seconds": round(monitor.outbox_max_at, 1),
                "rows_seen": len(monitor.outbox_rows),
                "age": latency_summary(a for a, _, _ in monitor.outbox_rows.values()),
                "visible": latency_summary(
                    last - first for _, first, last in monitor.outbox_rows.values()
                ),
                "polls": monitor.outbox_polls,
                "poll_seconds": OUTBOX_POLL,
            },
            "cache_lag": {
                "definition": (
                    "each subscriber's arrival of a version minus the moment its change was "
                    "answered (201 / 200); from_updated_at: minus the record's updated_at"
                ),
                "latency": lag,
                "from_updated_at": deliveries.server_lag.summary(),
                "first_subscriber_per_version": latency_summary(deliveries.first_lag),
                "last_after_first_subscriber_per_version": latency_summary(deliveries.spread),
                "stuck_lots": stuck,
                "unmatched_versions": len(deliveries.unmatched),
                "unmatched_deliveries": deliveries.unmatched_deliveries,
            },
            "delivery": delivery
            | {"connect": {k: v for k, v in connected.items() if k != "waits"}},
            "reads": {
                "latency": latency_summary(reads.latencies),
                "load": reads.summary(),
                "rate_target": READ_RATE,
            },
            "changes": {
                "statuses": dict(sorted(statuses.items())),
                "event_results": dict(sorted(changes.event_results.items())),
                "conflict_codes": dict(sorted(changes.conflict_codes.items())),
                "transport_error_samples": changes.transport_errors[:5],
                "schedule": schedule.as_dict(),
            },
            "server_5xx": server_5xx,
            "unexpected": unexpected,
            "end_state": end_state,
            "cpu": cpu,
            "load_average_1m": {
                "min": min(loads, default=0.0),
                "mean": _mean(loads),
                "max": max(loads, default=0.0),
            },
            "series": series,
            "reads_series": reads_series,
            "delivery_series": delivery_series,
            "server_settings": settings,
            "server_log_errors": log_errors[:10],
        },
        checks=verdict
        | {
            "rss_drift_percent": round(100 * drift, 2),
            "fd_growth": fds_end - fds_base,
            "outbox_max_lag_ms": round(1000 * outbox_max, 1),
            "cache_lag_p99_ms": lag.get("p99_ms"),
            "stuck_lots": stuck,
            "server_5xx": sum(server_5xx.values()),
            "unexpected_answers": sum(unexpected.values()),
            "sensed_lots_not_caught_up": end_state["mismatched"],
            "double_bookings": sum(end_state["overlapping_bookings"].values()),
            "server_log_errors": len(log_errors),
        },
    )
    _notes(result, seconds, cpu, loads, log_errors, deliveries)
    return result


def _notes(
    result: ScenarioResult,
    seconds: float,
    cpu: Mapping[str, float],
    loads: Sequence[float],
    log_errors: Sequence[str],
    deliveries: Deliveries,
) -> None:
    result.notes.append(
        f"ratio = the server's RSS at the end / after the warm-up (medians over "
        f"{result.figures['windows']['window_seconds']:g} s windows); target < "
        f"{1 + RSS_DRIFT_TARGET:g}{TIMES}."
    )
    if seconds < SECONDS:
        result.notes.append(
            f"A {seconds:.0f} s run: too short to tell drift from noise; the full soak runs "
            f"{SECONDS} s."
        )
    if log_errors:
        result.notes.append(f"The server logged errors: {list(log_errors[:3])}")
    if deliveries.unmatched:
        result.notes.append(
            f"{len(deliveries.unmatched)} versions no change made reached the subscribers "
            f"({fmt_int(deliveries.unmatched_deliveries)} deliveries, not in the cache lag): "
            "the server recounted lots on its own."
        )
    other = cpu.get("other_cpu_cores", 0.0)
    if other > 0.25 or (loads and max(loads) > (os.cpu_count() or 1)):
        result.notes.append(
            f"Other work kept {other:.2f} cores busy on average (load average "
            f"{min(loads, default=0):.1f} to {max(loads, default=0):.1f} on "
            f"{os.cpu_count()} cores): the lags are noisier than on an idle machine."
        )


SCENARIO = Scenario("S9", "soak", run)
