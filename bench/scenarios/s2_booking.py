"""S2: booking throughput through the HTTP API against pgbench running the same SQL.

Many drivers book given spots (POST /api/v1/reservations: token and session check, vehicle,
spot and lot, the per-driver limit, vehicle and spot overlap checks, the insert under the
exclusion constraints, the notification, the commit) at a fixed concurrency for a fixed
time; no two bookings conflict. The ceiling is pgbench running that transaction statement
for statement (bench/sql/s2_booking.pgbench; checked against a traced booking every run)
with the same plan, the same number of clients and the same duration on a copy of the
same data.

The plan: booking k (client c's n-th: k = n * clients + c) takes spot k % spots during the
one-hour slot k // spots, driven by user k % users. With users >= spots a driver's bookings
fall in different slots, and with k < 10 * users nobody passes the limit of 10 upcoming.

The machine is shared (two cores, and whatever else runs on it), so the two sides are
measured in alternating rounds (pgbench, API; API, pgbench; ...) after one warm-up each,
and the ratio is the median of each round's API/pgbench ratio: drift in the background
load falls on both sides alike. Each side's counters continue across its runs, so no
booking is ever repeated.
"""

import asyncio
import statistics
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import checks, loadgen
from bench.harness import (
    ROOT,
    TIMES,
    BenchConfig,
    CpuMeter,
    PgDatabase,
    ScenarioResult,
    Server,
    checkpoint,
    clone_database,
    discard_database,
    fmt_int,
    latency_summary,
    log,
    new_migrated_database,
    parkspot_server,
    server_errors,
    temp_databases,
    vacuum_analyze,
)
from bench.pgbench import PgbenchResult, PgbenchSide, alternate, run_pgbench
from bench.scenarios.registry import Scenario
from bench.seed import JTI_BASE, Layout, mint_tokens, seed
from bench.sqltrace import compare, script_statements, trace
from parkspot.config import Settings

SCRIPT = ROOT / "bench" / "sql" / "s2_booking.pgbench"
CONCURRENCY = 32
LOTS = 50
SPOTS_PER_LOT = 50
SLOT_SECONDS = 3600
# One client process is far from saturated at these rates (it reports its CPU use as
# figures.api.cpu.client_cpu_cores); more would only take CPU from the server.
CLIENT_PROCESSES = 1
PGBENCH_THREADS = 2
# Not measured: lets each API round's connections and the server's pool fill first.
API_ROUND_WARMUP = 1.0
RATIO_TARGET = 0.3
P99_TARGET_MS = 50.0


@dataclass(frozen=True)
class Booking:
    user_index: int
    vehicle_id: int
    spot_id: int
    lot_id: int
    starts_at: int  # epoch seconds
    ends_at: int


@dataclass(frozen=True)
class BookingPlan:
    clients: int
    spots: int
    spots_per_lot: int
    first_spot: int
    first_lot: int
    users: int
    first_user: int
    first_vehicle: int
    base: int  # epoch seconds of the first slot's start
    slot: int
    slots: int  # slots inside the booking horizon
    max_per_user: int

    @classmethod
    def make(cls, layout: Layout, clients: int, now: datetime) -> "BookingPlan":
        settings = Settings.model_construct()
        if layout.users < layout.spots:
            raise ValueError("the plan needs at least as many drivers as spots")
        first = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
        horizon = timedelta(days=settings.booking_max_days_ahead - 1) - (first - now)
        return cls(
            clients=clients,
            spots=layout.spots,
            spots_per_lot=layout.spots_per_lot,
            first_spot=layout.first_spot_id,
            first_lot=layout.first_lot_id,
            users=layout.users,
            first_user=layout.first_user_id,
            first_vehicle=layout.first_vehicle_id,
            base=int(first.timestamp()),
            slot=SLOT_SECONDS,
            slots=int(horizon.total_seconds()) // SLOT_SECONDS,
            max_per_user=settings.booking_max_active_per_user,
        )

    @property
    def capacity(self) -> int:
        return min(self.users * self.max_per_user, self.spots * self.slots)

    def booking(self, k: int) -> Booking | None:
        if k >= self.capacity:
            return None
        spot = k % self.spots
        user = k % self.users
        starts_at = self.base + (k // self.spots) * self.slot
        return Booking(
            user_index=user,
            vehicle_id=self.first_vehicle + user,
            spot_id=self.first_spot + spot,
            lot_id=self.first_lot + spot // self.spots_per_lot,
            starts_at=starts_at,
            ends_at=starts_at + self.slot,
        )

    def pgbench_variables(self, n: int) -> dict[str, object]:
        """The script's -D variables; each client's counter starts after ``n``."""
        first = datetime.fromtimestamp(self.base, UTC)
        note = (
            f"Spot {Layout.spot_label(1)} at {Layout.lot_name(1)} is booked from "
            f"{first:%Y-%m-%d %H:%M} to {first + timedelta(seconds=self.slot):%Y-%m-%d %H:%M} UTC"
        )
        return {
            "n": n,
            "clients": self.clients,
            "spots": self.spots,
            "spots_per_lot": self.spots_per_lot,
            "first_spot": self.first_spot,
            "first_lot": self.first_lot,
            "users": self.users,
            "first_user": self.first_user,
            "first_vehicle": self.first_vehicle,
            "jti_base": JTI_BASE,
            "base": self.base,
            "slot": self.slot,
            "confirmed": "confirmed",
            "checked_in": "checked_in",
            "booking": "booking",
            "price": "2.50",
            "note_kind": "reservation_confirmed",
            "note": note,
            "note_data": '{"reservation_id": 1, "lot_id": 1}',
            "unread": "false",
        }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def booking_body(booking: Booking) -> dict[str, Any]:
    return {
        "spot_id": booking.spot_id,
        "vehicle_id": booking.vehicle_id,
        "starts_at": _iso(booking.starts_at),
        "ends_at": _iso(booking.ends_at),
    }


@dataclass(frozen=True)
class BookingRequests:
    """The load's requests (sent to the worker processes)."""

    plan: BookingPlan
    host: str
    tokens: tuple[str, ...]
    first_n: int = 0  # where each client's counter starts (it continues across runs)

    def request(self, client: int, n: int) -> bytes | None:
        booking = self.plan.booking((self.first_n + n) * self.plan.clients + client)
        if booking is None:
            return None
        return loadgen.json_request(
            "POST",
            "/api/v1/reservations",
            self.host,
            booking_body(booking),
            token=self.tokens[booking.user_index],
        )


async def check_sql(
    database: PgDatabase, plan: BookingPlan, token: str, config: BenchConfig
) -> dict[str, Any]:
    """Traces the plan's first booking (``token``: its driver's) on a scratch copy of the
    data and compares the statements it sent with the pgbench script's."""
    booking = plan.booking(0)
    assert booking is not None

    async def book(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/api/v1/reservations",
            json=booking_body(booking),
            headers={"Authorization": f"Bearer {token}"},
        )

    response, api = await trace(database, config.work_dir, book)
    pgbench = script_statements(SCRIPT.read_text())
    differences = compare(api, pgbench)
    if response.status_code != 201:
        differences.insert(0, f"traced booking answered {response.status_code}: {response.text}")
    return {
        "identical": not differences,
        "differences": differences,
        "api_statements": api,
    }


def pgbench_side(database: PgDatabase, plan: BookingPlan) -> PgbenchSide:
    """The ceiling: pgbench runs the booking script on its copy of the data, each client's
    counter continuing from the previous run."""
    next_n = -1  # the script adds one before its first booking

    async def bookings(seconds: int) -> PgbenchResult:
        nonlocal next_n
        result = await run_pgbench(
            database,
            SCRIPT,
            clients=plan.clients,
            threads=PGBENCH_THREADS,
            duration=seconds,
            variables=plan.pgbench_variables(next_n),
        )
        next_n += max(result.last_transaction.values(), default=0) + 2
        return result

    return PgbenchSide(database, bookings)


class ApiSide:
    """The measured side: the load generator's runs against the served API, each client's
    counter continuing from the previous run."""

    def __init__(
        self, server: Server, plan: BookingPlan, tokens: tuple[str, ...], database: PgDatabase
    ) -> None:
        self.server = server
        self.plan = plan
        self.tokens = tokens
        self.next_n = 0
        self.meter = CpuMeter({"server": server.pid}, {"postgres": database})
        self.rounds: list[loadgen.LoadResult] = []
        self.total = loadgen.LoadResult()  # every run, warm-up included

    async def run(self, seconds: float, *, measure: bool) -> None:
        host = f"{self.server.host}:{self.server.port}"
        source = BookingRequests(self.plan, host, self.tokens, self.next_n)
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
        )
        if measure:
            await self.meter.stop()
            self.rounds.append(load)
        self.next_n += max(load.sent.values(), default=0)
        self.total.merge(load)

    def cpu(self) -> dict[str, float]:
        seconds = sum(r.window_seconds + API_ROUND_WARMUP for r in self.rounds)
        answered = sum(sum(r.all_statuses.values()) for r in self.rounds)
        cpu = self.meter.as_dict()
        cpu["client_cpu_cores"] = round(sum(r.client_cpu_seconds for r in self.rounds) / seconds, 3)
        cpu["other_cpu_cores"] = self.meter.other_cores(cpu["client_cpu_cores"])
        for name in ("server", "postgres"):
            if name in self.meter.seconds:
                cpu[f"{name}_cpu_ms_per_request"] = round(
                    1000 * self.meter.seconds[name] / max(1, answered), 3
                )
        return cpu


def _round_figures(
    number: int, order: str, ceiling: PgbenchResult, load: loadgen.LoadResult
) -> dict[str, Any]:
    bookings = load.statuses.get(201, 0) / load.window_seconds
    return {
        "round": number,
        "order": order,
        "pgbench_tps": round(ceiling.tps, 1),
        "api_bookings_per_second": round(bookings, 1),
        "ratio": round(bookings / ceiling.tps, 4) if ceiling.tps else 0.0,
        "api_p99_ms": latency_summary(load.latencies).get("p99_ms"),
        "pgbench_p99_ms": latency_summary(ceiling.latencies).get("p99_ms"),
    }


async def run(config: BenchConfig) -> ScenarioResult:
    quick = config.quick
    users = LOTS * SPOTS_PER_LOT if quick else 10_000
    warmup, rounds, seconds = (1, 1, 5) if quick else (5, 3, 15)
    async with temp_databases(config.pg_url) as made:
        log(f"S2: seeding {LOTS} lots x {SPOTS_PER_LOT} spots, {users} drivers")
        api_db = await new_migrated_database(config.pg_url, made)
        layout = await seed(
            api_db, lots=LOTS, spots_per_lot=SPOTS_PER_LOT, users=users, sessions=True
        )
        await vacuum_analyze(api_db)
        pgbench_db = await clone_database(config.pg_url, api_db, made)
        trace_db = await clone_database(config.pg_url, api_db, made)
        plan = BookingPlan.make(layout, CONCURRENCY, datetime.now(UTC))
        tokens = tuple(mint_tokens(layout))

        log("S2: tracing one booking's SQL against the pgbench script")
        first = plan.booking(0)
        assert first is not None
        sql = await check_sql(trace_db, plan, tokens[first.user_index], config)
        await discard_database(config.pg_url, trace_db, made)
        await checkpoint(api_db)

        async with parkspot_server(config, api_db) as server:
            ceiling = pgbench_side(pgbench_db, plan)
            api = ApiSide(server, plan, tokens, api_db)
            orders = await alternate("S2", ceiling, api, CONCURRENCY, warmup, rounds, seconds)
            log_errors = server_errors(server)
            server_settings = dict(server.settings)
        overlaps = await checks.overlapping_pairs(api_db)
        pgbench_overlaps = await checks.overlapping_pairs(pgbench_db)
        rows = await checks.row_counts(api_db, "reservations", "notifications")

    per_round = [
        _round_figures(i + 1, orders[i], c, a)
        for i, (c, a) in enumerate(zip(ceiling.rounds, api.rounds, strict=True))
    ]
    throughput = statistics.median(r["api_bookings_per_second"] for r in per_round)
    tps = statistics.median(r["pgbench_tps"] for r in per_round)
    ratio = statistics.median(r["ratio"] for r in per_round)
    latency = latency_summary(x for r in api.rounds for x in r.latencies)
    pgbench_latency = latency_summary(x for r in ceiling.rounds for x in r.latencies)
    p99 = latency.get("p99_ms", float("inf"))
    # Correctness counts cover every API run, warm-ups included.
    total = api.total
    answered = sum(total.all_statuses.values())
    created = total.all_statuses.get(201, 0)
    server_5xx = sum(n for status, n in total.all_statuses.items() if 500 <= status < 600)
    unexpected = answered - created - server_5xx
    wrote_all = rows["reservations"] == created == rows["notifications"]
    met = (
        ratio >= RATIO_TARGET
        and p99 <= P99_TARGET_MS
        and server_5xx == 0
        and overlaps == {"spot": 0, "vehicle": 0}
        and unexpected == 0
        and total.transport_errors == 0
    )
    api_cpu = api.cpu()
    ceiling_cpu = ceiling.cpu()
    result = ScenarioResult(
        id="S2",
        scenario=f"POST /api/v1/reservations, {CONCURRENCY} connections, no conflicts",
        result=(
            f"{fmt_int(throughput)} bookings/s; p50 {latency.get('p50_ms', 0):.1f} ms, "
            f"p99 {p99:.1f} ms; {server_5xx} 5xx; {overlaps['spot']} double bookings"
        ),
        ceiling=(
            f"pgbench, same SQL: {fmt_int(tps)} TPS (p99 {pgbench_latency.get('p99_ms', 0):.1f} ms)"
        ),
        ratio=round(ratio, 3),
        target=f"≥ {RATIO_TARGET}{TIMES}; p99 ≤ {P99_TARGET_MS:.0f} ms; 0 5xx; 0 double bookings",
        met=met,
        figures={
            "rounds": per_round,
            "api": {
                "bookings_per_second_median": throughput,
                "latency": latency,
                "load": total.summary(),
                "cpu": api_cpu,
                "server_settings": server_settings,
                "server_log_errors": log_errors[:10],
            },
            "pgbench": {
                "tps_median": tps,
                "latency": pgbench_latency,
                "transactions": sum(r.transactions for r in ceiling.rounds),
                "failed_transactions": sum(r.failed for r in ceiling.rounds),
                "cpu": ceiling_cpu,
                "clients": CONCURRENCY,
                "threads": PGBENCH_THREADS,
                "protocol": "prepared",
                "command": ceiling.rounds[-1].command if ceiling.rounds else [],
            },
            "plan": asdict(plan)
            | {"warmup_seconds": warmup, "rounds": rounds, "round_seconds": seconds},
            "sql_check": sql,
        },
        checks={
            "server_5xx": server_5xx,
            "unexpected_non_201": unexpected,
            "transport_errors": total.transport_errors,
            "double_bookings": overlaps["spot"],
            "vehicle_overlaps": overlaps["vehicle"],
            "rows_match_201s": wrote_all,
            "pgbench_overlaps": pgbench_overlaps["spot"] + pgbench_overlaps["vehicle"],
            "ceiling_sql_identical": sql["identical"],
        },
    )
    if not sql["identical"]:
        result.notes.append(
            "The pgbench script no longer matches the SQL the API sends "
            "(figures.sql_check.differences): update bench/sql/s2_booking.pgbench."
        )
    if not met:
        result.notes.append(
            f"The server process used {api_cpu.get('server_cpu_cores', 0):.2f} cores, "
            f"{api_cpu.get('server_cpu_ms_per_request', 0):.1f} ms of CPU per booking (one "
            f"worker: at most one core); PostgreSQL used "
            f"{api_cpu.get('postgres_cpu_ms_per_request', 0):.2f} ms per API booking and "
            f"{ceiling_cpu.get('postgres_cpu_ms_per_transaction', 0):.2f} ms per pgbench "
            "transaction."
        )
    other = max(api_cpu["other_cpu_cores"], ceiling_cpu["other_cpu_cores"])
    if other > 0.25:
        result.notes.append(
            f"Other work kept up to {other:.2f} cores busy during the measurements "
            "(figures.*.cpu.other_cpu_cores): the figures of this run are noisy."
        )
    if total.exhausted_clients:
        result.notes.append("The booking plan ran out: raise the number of drivers.")
    return result


SCENARIO = Scenario("S2", "booking throughput vs pgbench", run)
