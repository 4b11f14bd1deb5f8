"""S4: spot sensor events in batches of 100 through the HTTP API against pgbench's built-in
simple-update.

Every lot has one spot sensor device (seeded with a known key); clients post
POST /api/v1/device/spot-events with ``X-Device-Key``, each batch 100 events for the 100
spots of one lot (key lookup, ``last_seen_at``, validation, the spots locked, the readings
judged and written, the outbox row, the commit; then the lot's availability is recounted
in the background). The ceiling is pgbench's own ``simple-update`` script (one account row
updated, one selected, one history row inserted per transaction) on a database
``pgbench -i`` made on the same server, with the same number of clients for the same
time; its rows/s is its TPS. The API's rows/s is the events answered ``applied`` per
second.

The plan: client c owns lots c, c + clients, ... (so one lot's batches are never in flight
twice at once) and its n-th batch (its counter continues across runs) goes to its owned
lots in turn: lot ``owned[n % len(owned)]``'s batch number b = n // len(owned). Batch b of a
lot reports every spot once, starting at spot (7 b) mod 100; the event at position i is
observed at base + b ms + i µs, so a spot's reports only move forward and every event is
``applied``. Batch b leaves exactly level(lot, b) = (17 lot + 29 b) mod 101 spots occupied
(those with (37 s + 11 b + lot) mod 100 below it): each batch moves many spots and the
lot's count.

As in S2 the sides are measured in alternating rounds after one warm-up each, and the
ratio is the median of the rounds' API/pgbench ratios. At the end every spot's sensor
state in the database must be the last event sent for it, and every lot's availability
record (GET /api/v1/availability/{lot_id}) must come to the count its last batch left.
"""

import asyncio
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import loadgen
from bench.harness import (
    TIMES,
    BenchConfig,
    CpuMeter,
    PgDatabase,
    ScenarioResult,
    Server,
    checkpoint,
    create_database,
    fmt_int,
    latency_summary,
    log,
    new_migrated_database,
    parkspot_server,
    server_errors,
    temp_databases,
    vacuum_analyze,
)
from bench.pgbench import PgbenchResult, PgbenchSide, alternate, init_pgbench, run_pgbench
from bench.scenarios.registry import Scenario
from bench.seed import Layout, seed, seed_devices

# As S2: enough requests in flight to keep the one server process and PostgreSQL busy on
# two cores (the server's pool holds 5 + 5 connections; more wait for one), and pgbench's
# TPS on this machine is near its peak from about 10 clients up. With 50 lots every client
# owns one or two lots, so no lot has two batches in flight.
CONCURRENCY = 32
LOTS = 50
SPOTS_PER_LOT = 100
BATCH = SPOTS_PER_LOT  # events per request: every spot of the lot once
# simple-update touches no branch or teller row (pgbench's "scale >= clients" advice is
# about those), so the scale only sets the table size: 1,000,000 accounts (about 150 MB),
# far more rows than clients (random picks almost never wait on one another, as the API's
# clients never share a spot), and still in memory, as the spots are.
PGBENCH_SCALE = 10
PGBENCH_THREADS = 2
# One client process: building and parsing the batches takes a few percent of a core
# (figures.api.cpu.client_cpu_cores).
CLIENT_PROCESSES = 1
# Not measured: lets each API round's connections and the server's pool fill first.
API_ROUND_WARMUP = 1.0
RATIO_TARGET = 0.3
STEP_US = 1000  # how far observed_at moves from one batch of a lot to the next
SETTLE_TIMEOUT = 30.0  # for the availability records to reach the last batches' counts
PATH = "/api/v1/device/spot-events"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class EventPlan:
    """Which batch a client sends next and what it says; picklable (the load workers get
    it). Lots are numbered 0 … lots-1 here (lot id = first_lot + number), spots 0 … spots-1
    within a lot (label ``Layout.spot_label(s + 1)``)."""

    clients: int
    lots: int
    spots: int
    first_lot: int
    base_us: int  # epoch microseconds of every spot's first report

    def __post_init__(self) -> None:
        # 37 s mod spots must run through every spot once, so that exactly level(lot, b)
        # spots are occupied.
        if math.gcd(37, self.spots) != 1:
            raise ValueError("the occupancy pattern needs a number of spots coprime with 37")

    def owned(self, client: int) -> range:
        return range(client, self.lots, self.clients)

    def batch(self, client: int, n: int) -> tuple[int, int] | None:
        """(lot, batch number of that lot) of the client's n-th batch."""
        owned = self.owned(client)
        if not owned:
            return None
        return owned[n % len(owned)], n // len(owned)

    def level(self, lot: int, b: int) -> int:
        """How many spots batch b of the lot leaves occupied."""
        return (17 * lot + 29 * b) % (self.spots + 1)

    def occupied(self, lot: int, b: int, spot: int) -> bool:
        return (37 * spot + 11 * b + lot) % self.spots < self.level(lot, b)

    def events(self, lot: int, b: int) -> list[tuple[int, bool, int]]:
        """(spot, occupied, observed_at in epoch µs) in the order sent."""
        start = 7 * b % self.spots
        base = self.base_us + b * STEP_US
        return [
            (spot, self.occupied(lot, b, spot), base + i)
            for i, spot in ((i, (start + i) % self.spots) for i in range(self.spots))
        ]

    def body(self, lot: int, b: int) -> bytes:
        events = [
            {
                "spot": Layout.spot_label(spot + 1),
                "occupied": occupied,
                "observed_at": _instant(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
            for spot, occupied, micros in self.events(lot, b)
        ]
        return json.dumps({"events": events}, separators=(",", ":")).encode()

    def last_batches(self, sent: Mapping[int, int]) -> dict[int, int]:
        """The last batch number sent to each lot, given how many batches each client sent
        in all (lots never sent to are left out)."""
        last = {}
        for client, total in sent.items():
            owned = self.owned(client)
            for position, lot in enumerate(owned):
                if total > position:
                    last[lot] = (total - 1 - position) // len(owned)
        return last


# --- the load: bench/loadgen.py's, with each response's per-event results counted -------


@dataclass(frozen=True)
class BatchRequests:
    """The load's requests (sent to the worker processes): client c's n-th batch is its
    ``first_n[c] + n``-th in the plan (each client's counter continues across runs)."""

    plan: EventPlan
    host: str
    keys: tuple[str, ...]  # by lot number
    first_n: tuple[int, ...]

    def request(self, client: int, n: int) -> bytes | None:
        batch = self.plan.batch(client, self.first_n[client] + n)
        if batch is None:
            return None
        lot, b = batch
        headers = {"Content-Type": "application/json", "X-Device-Key": self.keys[lot]}
        return loadgen.http_request(
            "POST", PATH, self.host, headers=headers, body=self.plan.body(lot, b)
        )


@dataclass
class EventTally:
    """A ``loadgen.ResponseTally``: every 200's per-event results summed (warm-up
    included), and the events applied by the responses inside the window."""

    batch: int = BATCH  # events per request
    outcomes: Counter[str] = field(default_factory=Counter)
    malformed: int = 0  # 200s whose results do not account for the batch's events
    applied_in_window: int = 0

    def add(self, client: int, status: int, body: bytes, latency: float, measured: bool) -> None:
        if status != 200:
            return
        try:
            answer = json.loads(body)
            counts = {
                "applied": int(answer["applied"]),
                "duplicate": int(answer["duplicates"]),
                "stale": int(answer["stale"]),
                "rejected": int(answer["rejected"]),
            }
            results = len(answer["results"])
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        self.outcomes.update(counts)
        if results != self.batch or sum(counts.values()) != self.batch:
            self.malformed += 1
        if measured:
            self.applied_in_window += counts["applied"]

    def merge(self, other: "EventTally") -> None:
        self.outcomes.update(other.outcomes)
        self.malformed += other.malformed
        self.applied_in_window += other.applied_in_window


def events_of(load: loadgen.LoadResult) -> EventTally:
    """The EventTally a run of the load filled in."""
    tally = load.tally if load.tally is not None else EventTally()
    assert isinstance(tally, EventTally)
    return tally


def applied_per_second(load: loadgen.LoadResult) -> float:
    return events_of(load).applied_in_window / load.window_seconds if load.window_seconds else 0.0


def batches_per_second(load: loadgen.LoadResult) -> float:
    return load.completed / load.window_seconds if load.window_seconds else 0.0


# --- the two sides -----------------------------------------------------------------------


def pgbench_side(database: PgDatabase, clients: int) -> PgbenchSide:
    """The ceiling: pgbench -b simple-update on its own database."""

    async def updates(seconds: int) -> PgbenchResult:
        return await run_pgbench(
            database,
            None,
            builtin="simple-update",
            clients=clients,
            threads=PGBENCH_THREADS,
            duration=seconds,
        )

    return PgbenchSide(database, updates)


class ApiSide:
    """The measured side: batches of events through the served API, each client's counter
    continuing from the previous run."""

    def __init__(
        self, server: Server, plan: EventPlan, keys: tuple[str, ...], database: PgDatabase
    ) -> None:
        self.server = server
        self.plan = plan
        self.keys = keys
        self.next_n = [0] * plan.clients
        self.meter = CpuMeter({"server": server.pid}, {"postgres": database})
        self.rounds: list[loadgen.LoadResult] = []
        self.total = loadgen.LoadResult()  # every run, warm-up included

    @property
    def sent(self) -> dict[int, int]:
        """Batches each client sent, over every run."""
        return dict(enumerate(self.next_n))

    async def run(self, seconds: float, *, measure: bool) -> None:
        host = f"{self.server.host}:{self.server.port}"
        source = BatchRequests(self.plan, host, self.keys, tuple(self.next_n))
        if measure:
            await self.meter.start()
        load = await asyncio.to_thread(
            loadgen.run_load,
            self.server.host,
            self.server.port,
            source,
            self.plan.clients,
            warmup=API_ROUND_WARMUP if measure else 0.0,
            duration=seconds,
            processes=CLIENT_PROCESSES,
            tally=EventTally(),
        )
        if measure:
            await self.meter.stop()
            self.rounds.append(load)
        for client, sent in load.sent.items():
            self.next_n[client] += sent
        self.total.merge(load)
        self.total.processes = load.processes  # per run, not summed over the runs

    def cpu(self) -> dict[str, float]:
        seconds = sum(r.window_seconds + API_ROUND_WARMUP for r in self.rounds)
        answered = sum(sum(r.all_statuses.values()) for r in self.rounds)
        applied = sum(events_of(r).outcomes["applied"] for r in self.rounds)
        cpu = self.meter.as_dict()
        cpu["client_cpu_cores"] = round(sum(r.client_cpu_seconds for r in self.rounds) / seconds, 3)
        cpu["other_cpu_cores"] = self.meter.other_cores(cpu["client_cpu_cores"])
        for name in ("server", "postgres"):
            if name in self.meter.seconds:
                cpu[f"{name}_cpu_ms_per_batch"] = round(
                    1000 * self.meter.seconds[name] / max(1, answered), 3
                )
                cpu[f"{name}_cpu_us_per_event"] = round(
                    1e6 * self.meter.seconds[name] / max(1, applied), 2
                )
        return cpu


# --- the end state -----------------------------------------------------------------------


async def check_spots(
    database: PgDatabase, plan: EventPlan, last: Mapping[int, int]
) -> dict[str, Any]:
    """Every spot's sensor state in the database against the last event sent for it."""
    expected: dict[tuple[int, str], tuple[bool | None, datetime | None]] = {}
    for lot in range(plan.lots):
        b = last.get(lot)
        for spot, occupied, micros in plan.events(lot, b) if b is not None else []:
            expected[plan.first_lot + lot, Layout.spot_label(spot + 1)] = (
                occupied,
                _instant(micros),
            )
    conn = await database.connect()
    try:
        rows = await conn.fetch(
            "SELECT lot_id, label, sensor_occupied, sensor_observed_at FROM spots"
        )
    finally:
        await conn.close()
    wrong = []
    for row in rows:
        want = expected.get((row["lot_id"], row["label"]), (None, None))
        got = (row["sensor_occupied"], row["sensor_observed_at"])
        if got != want:
            wrong.append(f"lot {row['lot_id']} spot {row['label']}: {got} instead of {want}")
    return {"spots": len(rows), "mismatched": len(wrong), "samples": wrong[:5]}


async def check_availability(
    server: Server, plan: EventPlan, last: Mapping[int, int]
) -> dict[str, Any]:
    """Polls GET /api/v1/availability/{lot_id} of every lot until each says the occupancy
    its last batch left (from sensors), or SETTLE_TIMEOUT passes."""
    expected = {
        plan.first_lot + lot: plan.level(lot, last[lot]) if lot in last else 0
        for lot in range(plan.lots)
    }
    started = time.monotonic()
    wrong: dict[int, Any] = {}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        while True:
            wrong = {}
            for lot_id, occupied in expected.items():
                response = await client.get(f"/api/v1/availability/{lot_id}")
                record = response.json() if response.status_code == 200 else {}
                if (
                    record.get("occupied") != occupied
                    or record.get("occupancy_source") != "sensors"
                    or record.get("capacity") != plan.spots
                ):
                    wrong[lot_id] = {
                        "expected_occupied": occupied,
                        "status": response.status_code,
                        "occupied": record.get("occupied"),
                        "occupancy_source": record.get("occupancy_source"),
                    }
            elapsed = time.monotonic() - started
            if not wrong or elapsed > SETTLE_TIMEOUT:
                break
            await asyncio.sleep(0.2)
    return {
        "lots": len(expected),
        "mismatched": len(wrong),
        "samples": dict(list(wrong.items())[:5]),
        "seconds_to_catch_up": round(elapsed, 2) if not wrong else None,
    }


def _round_figures(
    number: int, order: str, ceiling: PgbenchResult, load: loadgen.LoadResult
) -> dict[str, Any]:
    events = applied_per_second(load)
    return {
        "round": number,
        "order": order,
        "pgbench_rows_per_second": round(ceiling.tps, 1),
        "api_events_per_second": round(events, 1),
        "api_batches_per_second": round(batches_per_second(load), 1),
        "ratio": round(events / ceiling.tps, 4) if ceiling.tps else 0.0,
        "api_p99_ms": latency_summary(load.latencies).get("p99_ms"),
        "pgbench_p99_ms": latency_summary(ceiling.latencies).get("p99_ms"),
    }


async def run(config: BenchConfig) -> ScenarioResult:
    quick = config.quick
    warmup, rounds, seconds = (1, 1, 5) if quick else (5, 3, 15)
    async with temp_databases(config.pg_url) as made:
        log(f"S4: seeding {LOTS} lots x {SPOTS_PER_LOT} spots, one spot sensor each")
        api_db = await new_migrated_database(config.pg_url, made)
        now = datetime.now(UTC)
        layout = await seed(api_db, lots=LOTS, spots_per_lot=SPOTS_PER_LOT, users=1, sessions=False)
        keys = tuple(await seed_devices(api_db, layout, "spot_sensor", now))
        await vacuum_analyze(api_db)
        await checkpoint(api_db)
        log(f"S4: pgbench -i -s {PGBENCH_SCALE}")
        pgbench_db = await create_database(config.pg_url)
        made.append(pgbench_db)
        await init_pgbench(pgbench_db, scale=PGBENCH_SCALE)
        await checkpoint(pgbench_db)
        # Reports start an hour back, so however many batches a run sends (1 ms apart
        # per lot) none is ahead of the server's clock.
        base = now.replace(microsecond=0) - timedelta(hours=1)
        plan = EventPlan(
            clients=CONCURRENCY,
            lots=layout.lots,
            spots=layout.spots_per_lot,
            first_lot=layout.first_lot_id,
            base_us=(base - EPOCH) // timedelta(microseconds=1),
        )

        async with parkspot_server(config, api_db) as server:
            ceiling = pgbench_side(pgbench_db, CONCURRENCY)
            api = ApiSide(server, plan, keys, api_db)
            orders = await alternate("S4", ceiling, api, CONCURRENCY, warmup, rounds, seconds)
            last = plan.last_batches(api.sent)
            log("S4: checking the availability records and the spots")
            availability = await check_availability(server, plan, last)
            log_errors = server_errors(server)
            server_settings = dict(server.settings)
        spots = await check_spots(api_db, plan, last)

    per_round = [
        _round_figures(i + 1, orders[i], c, a)
        for i, (c, a) in enumerate(zip(ceiling.rounds, api.rounds, strict=True))
    ]
    events = statistics.median(r["api_events_per_second"] for r in per_round)
    batches = statistics.median(r["api_batches_per_second"] for r in per_round)
    tps = statistics.median(r["pgbench_rows_per_second"] for r in per_round)
    ratio = statistics.median(r["ratio"] for r in per_round)
    latency = latency_summary(x for r in api.rounds for x in r.latencies)
    pgbench_latency = latency_summary(x for r in ceiling.rounds for x in r.latencies)
    # Correctness counts cover every API run, warm-ups included.
    total = api.total
    tally = events_of(total)
    answered = sum(total.all_statuses.values())
    server_5xx = sum(n for status, n in total.all_statuses.items() if 500 <= status < 600)
    non_200 = answered - total.all_statuses.get(200, 0)
    not_applied = sum(n for outcome, n in tally.outcomes.items() if outcome != "applied")
    correct = (
        non_200 == 0
        and total.transport_errors == 0
        and not_applied == 0
        and tally.malformed == 0
        and spots["mismatched"] == 0
        and availability["mismatched"] == 0
        and not log_errors
    )
    met = ratio >= RATIO_TARGET and correct
    api_cpu = api.cpu()
    ceiling_cpu = ceiling.cpu()
    result = ScenarioResult(
        id="S4",
        scenario=(
            f"POST /api/v1/device/spot-events, batches of {BATCH}, {CONCURRENCY} connections"
        ),
        result=(
            f"{fmt_int(events)} events/s ({fmt_int(batches)} batches/s); per batch "
            f"p50 {latency.get('p50_ms', 0):.1f} ms, p99 {latency.get('p99_ms', 0):.1f} ms; "
            f"{not_applied} not applied; {server_5xx} 5xx"
        ),
        ceiling=f"pgbench simple-update (scale {PGBENCH_SCALE}): {fmt_int(tps)} rows/s",
        ratio=round(ratio, 3),
        target=f"≥ {RATIO_TARGET}{TIMES} rows/s; every event applied; state and counts caught up",
        met=met,
        figures={
            "rounds": per_round,
            "api": {
                "events_per_second_median": events,
                "batches_per_second_median": batches,
                "events_applied": tally.outcomes["applied"],
                "latency_per_batch": latency,
                "load": total.summary()
                | {
                    "event_results": dict(sorted(tally.outcomes.items())),
                    "malformed_responses": tally.malformed,
                },
                "cpu": api_cpu,
                "server_settings": server_settings,
                "server_log_errors": log_errors[:10],
            },
            "pgbench": {
                "rows_per_second_median": tps,
                "latency": pgbench_latency,
                "transactions": sum(r.transactions for r in ceiling.rounds),
                "failed_transactions": sum(r.failed for r in ceiling.rounds),
                "cpu": ceiling_cpu,
                "clients": CONCURRENCY,
                "threads": PGBENCH_THREADS,
                "scale": PGBENCH_SCALE,
                "protocol": "prepared",
                "command": ceiling.rounds[-1].command if ceiling.rounds else [],
            },
            "plan": asdict(plan)
            | {
                "batch": BATCH,
                "base": _instant(plan.base_us).isoformat(),
                "warmup_seconds": warmup,
                "rounds": rounds,
                "round_seconds": seconds,
            },
            "end_state": {"availability": availability, "spots": spots},
        },
        checks={
            "server_5xx": server_5xx,
            "non_200": non_200,
            "transport_errors": total.transport_errors,
            "events_not_applied": not_applied,
            "malformed_responses": tally.malformed,
            "spots_not_at_last_event": spots["mismatched"],
            "lots_availability_not_caught_up": availability["mismatched"],
            "availability_caught_up_seconds": availability["seconds_to_catch_up"],
            "server_log_errors": len(log_errors),
        },
    )
    if not met:
        result.notes.append(
            f"The server process used {api_cpu.get('server_cpu_cores', 0):.2f} cores, "
            f"{api_cpu.get('server_cpu_ms_per_batch', 0):.1f} ms of CPU per batch of {BATCH} "
            f"(one worker: at most one core); PostgreSQL used "
            f"{api_cpu.get('postgres_cpu_ms_per_batch', 0):.2f} ms per batch and "
            f"{ceiling_cpu.get('postgres_cpu_ms_per_transaction', 0):.3f} ms per pgbench "
            "transaction."
        )
    other = max(api_cpu["other_cpu_cores"], ceiling_cpu["other_cpu_cores"])
    if other > 0.25:
        result.notes.append(
            f"Other work kept up to {other:.2f} cores busy during the measurements "
            "(figures.*.cpu.other_cpu_cores): the figures of this run are noisy."
        )
    return result


SCENARIO = Scenario("S4", "device spot events vs pgbench simple-update", run)
