"""S7: a reconnect storm: every subscriber resumes at once with its Last-Event-ID.

CLIENTS subscribers of the event stream see a first round of changes, all disconnect, more
changes are made while they are away (half the lots, each several times), and all reconnect
at the same instant, each with the ``Last-Event-ID`` it last saw. Inside the replay window
each must get exactly the latest version of every lot changed meanwhile (one event per lot,
no snapshot), and end with the server's versions.

Answering them must not touch the database. The engine's tick and the sweeper (the only
other queries of an idle server) are slowed to once an hour for this scenario; then
- no backend of the server's database may have started a query or transaction since the
  storm began (``pg_stat_activity``, read right after it), and
- the database's transaction and row counters (``pg_stat_database``) may not move from
  before the storm to STATS_FLUSH seconds after it (a backend flushes its counters at
  most every second while busy, and ten seconds after going idle); an idle window of
  about the same length just before shows that nothing else queries.
Several rounds (quick: one). No ceiling: the figures are correctness and the storm's time.
"""

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from bench import fanout
from bench.fanout import Schedule
from bench.harness import (
    BenchConfig,
    PgDatabase,
    ScenarioResult,
    bench_redis,
    fmt_int,
    latency_summary,
    log,
    parkspot_server,
    server_errors,
    temp_databases,
)
from bench.live import SSE, LivePool, StreamSpec
from bench.scenarios.registry import Scenario

CLIENTS = 1_000
LOTS = 20
CHANGED_WHILE_AWAY = 10  # lots
CHANGES_EACH = 3  # per lot changed while away: the replay must carry only the last
STATS_FLUSH = 11.0
# The idle window before the storm: about as long as the storm's (it plus STATS_FLUSH).
IDLE_WINDOW = 2.0
CLIENT_PROCESSES = 2
# Only the storm's requests may reach the database; nothing periodic.
QUIET_SERVER = {
    "PARKSPOT_AVAILABILITY_TICK_SECONDS": "3600",
    "PARKSPOT_SWEEP_INTERVAL_SECONDS": "3600",
}
T = TypeVar("T")
_COUNTERS = (
    "SELECT xact_commit + xact_rollback AS transactions, tup_returned + tup_fetched AS rows "
    "FROM pg_stat_database WHERE datname = $1"
)
_BUSY_SINCE = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
    "AND backend_type = 'client backend' AND (query_start >= $2 OR xact_start >= $2)"
)


class DatabaseWatch:
    """Reads the server database's activity from a connection to another database (the
    admin URL's), so that reading it does not count as activity."""

    def __init__(self, conn: asyncpg.Connection, database: PgDatabase) -> None:
        self.conn = conn
        self.name = database.name

    async def counters(self) -> dict[str, int]:
        row = await self.conn.fetchrow(_COUNTERS, self.name)
        return {"transactions": int(row["transactions"]), "rows": int(row["rows"])}

    async def busy_since(self, moment: datetime) -> int:
        return int(await self.conn.fetchval(_BUSY_SINCE, self.name, moment))

    async def over(self, work: Awaitable[T]) -> tuple[dict[str, int], T]:
        """The counters' growth from before ``work`` to STATS_FLUSH seconds after it."""
        before = await self.counters()
        outcome = await work
        await asyncio.sleep(STATS_FLUSH)
        after = await self.counters()
        return {k: after[k] - before[k] for k in before}, outcome


def _ok(changes: list[fanout.Change]) -> int:
    return sum(c.ok for c in changes)


async def run(config: BenchConfig) -> ScenarioResult:
    rounds = 1 if config.quick else 3
    results: list[dict[str, Any]] = []
    async with temp_databases(config.pg_url) as made, bench_redis(config) as redis:
        seeded = await fanout.seed_lots(config, made, LOTS)
        env = redis.server_env() | QUIET_SERVER
        admin = await asyncpg.connect(config.pg_url)
        try:
            async with (
                parkspot_server(config, seeded.database, extra_env=env) as server,
                LivePool(CLIENT_PROCESSES) as pool,
            ):
                watch = DatabaseWatch(admin, seeded.database)
                bookings = seeded.bookings(server)
                spec = StreamSpec(SSE, server.host, server.port, fanout.STREAM)
                log(f"S7: connecting {CLIENTS:,} subscribers")
                connected = await pool.connect("storm", spec, CLIENTS)
                first = Schedule(seeded.lots, 2.0, 2.0)
                away = Schedule(seeded.lots[:CHANGED_WHILE_AWAY], 1.0, float(CHANGES_EACH))
                for number in range(rounds):
                    log(f"S7: round {number + 1}/{rounds}: changes, then all disconnect")
                    start = await bookings.finals()
                    changes = await fanout.drive(bookings, first)
                    before = await fanout.settle(pool, "storm", bookings, start, _ok(changes))
                    await pool.disconnect("storm")
                    log(f"S7: {len(away.plan())} changes while away")
                    changes = await fanout.drive(bookings, away)
                    finals = await fanout.published(bookings, before, _ok(changes))
                    expect = {k: v for k, v in finals.items() if v != before.get(k)}
                    log(f"S7: {STATS_FLUSH:.0f} s for the database's counters to settle")
                    await asyncio.sleep(STATS_FLUSH)
                    idle, _ = await watch.over(asyncio.sleep(IDLE_WINDOW))
                    log(f"S7: {CLIENTS:,} clients reconnect at once with Last-Event-ID")
                    began = datetime.now(UTC)
                    storm = pool.reconnect("storm", expect, finals, in_flight=CLIENTS)
                    during, report = await watch.over(storm)
                    busy = await watch.busy_since(began)
                    results.append(_round(number + 1, expect, report, during, idle, busy))
                log_errors = server_errors(server)
                settings = dict(server.settings)
        finally:
            await admin.close()
    return _result(results, connected, log_errors, settings, rounds)


def _round(
    number: int,
    expect: dict[int, int],
    report: dict[str, Any],
    during: dict[str, int],
    idle: dict[str, int],
    busy: int,
) -> dict[str, Any]:
    return {
        "round": number,
        "lots_changed_while_away": len(expect),
        "reconnected": report["connected"],
        "failed": report["failed"],
        "errors": report.get("errors", {}),
        "resumed_exactly": report["exact"],
        "with_snapshot": report["with_snapshot"],
        "missing_records": report["missing"],
        "extra_records": report["extra"],
        "at_server_versions": report["finals_match"],
        "storm_seconds": round(report["seconds"], 3),
        "reconnect_to_replayed": latency_summary(report["completions"]),
        "database_during_storm": during,
        "database_idle_window": idle,
        "backends_busy_since_storm": busy,
    }


def _result(
    results: list[dict[str, Any]],
    connected: dict[str, Any],
    log_errors: list[str],
    settings: dict[str, str],
    rounds: int,
) -> ScenarioResult:
    exact = sum(r["resumed_exactly"] for r in results)
    at_finals = sum(r["at_server_versions"] for r in results)
    snapshots = sum(r["with_snapshot"] for r in results)
    transactions = sum(r["database_during_storm"]["transactions"] for r in results)
    rows = sum(r["database_during_storm"]["rows"] for r in results)
    idle = sum(r["database_idle_window"]["transactions"] for r in results)
    busy = sum(r["backends_busy_since_storm"] for r in results)
    worst = max(r["reconnect_to_replayed"].get("p99_ms", 0.0) for r in results)
    slowest = max(r["storm_seconds"] for r in results)
    total = CLIENTS * rounds
    met = (
        connected["connected"] == CLIENTS
        and exact == total
        and at_finals == total
        and snapshots == 0
        and transactions == 0
        and busy == 0
    )
    return ScenarioResult(
        id="S7",
        scenario=(
            f"reconnect storm: {fmt_int(CLIENTS)} SSE clients resume at once with Last-Event-ID"
        ),
        result=(
            f"{rounds} storms: {fmt_int(exact)}/{fmt_int(total)} resumed exactly, "
            f"{snapshots} snapshots; replay p99 {worst:.0f} ms, all back in {slowest:.1f} s; "
            f"{transactions} DB transactions ({idle} in as long idle), {busy} busy backends"
        ),
        target="100 % resumed without gaps (latest versions, no snapshot); no DB query",
        met=met,
        figures={
            "rounds": results,
            "initial_connect": {k: v for k, v in connected.items() if k != "waits"},
            "plan": {
                "clients": CLIENTS,
                "lots": LOTS,
                "lots_changed_while_away": CHANGED_WHILE_AWAY,
                "changes_each": CHANGES_EACH,
                "stats_flush_seconds": STATS_FLUSH,
            },
            "database_rows_read_during_storms": rows,
            "server_settings": settings,
            "server_log_errors": log_errors[:10],
        },
        checks={
            "resumed_exactly": exact,
            "at_server_versions": at_finals,
            "expected": total,
            "snapshots_after_reconnect": snapshots,
            "db_transactions_during_storms": transactions,
            "db_transactions_idle_windows": idle,
            "backends_busy_since_storm": busy,
        },
    )


SCENARIO = Scenario("S7", "reconnect storm with Last-Event-ID", run)
