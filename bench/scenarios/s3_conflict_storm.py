"""S3: a conflict storm. 100 drivers, each logged in through the API, book ONE spot for ONE
window at the same instant (100 connections opened first, every request written at once).
Exactly one may win: one 201 and 99 409s, and the database must hold one active reservation of
that spot in that window and no overlapping pair at all. Several rounds, each on a fresh
spot and window. No ceiling: the figure is correctness under contention."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import checks, loadgen
from bench.harness import (
    TIMES,
    BenchConfig,
    PgDatabase,
    ScenarioResult,
    latency_summary,
    log,
    new_migrated_database,
    parkspot_server,
    server_errors,
    temp_databases,
    vacuum_analyze,
)
from bench.scenarios.registry import Scenario
from bench.seed import Layout, login_all, seed

DRIVERS = 100
WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class StormRequests:
    """Client i sends one request: driver i books the round's spot and window."""

    host: str
    tokens: tuple[str, ...]
    first_vehicle: int
    spot_id: int
    starts_at: str
    ends_at: str

    def request(self, client: int, n: int) -> bytes | None:
        if n > 0:
            return None
        body = {
            "spot_id": self.spot_id,
            "vehicle_id": self.first_vehicle + client,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        }
        return loadgen.json_request(
            "POST", "/api/v1/reservations", self.host, body, token=self.tokens[client]
        )


async def _holders(database: PgDatabase, spot_id: int, starts: datetime, ends: datetime) -> int:
    conn = await database.connect()
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM reservations WHERE spot_id = $1 "
            "AND status IN ('confirmed', 'checked_in') AND starts_at < $3 AND ends_at > $2",
            spot_id,
            starts,
            ends,
        )
        return count
    finally:
        await conn.close()


async def run(config: BenchConfig) -> ScenarioResult:
    rounds = 1 if config.quick else 5
    results: list[dict[str, Any]] = []
    async with temp_databases(config.pg_url) as made:
        database = await new_migrated_database(config.pg_url, made)
        layout = await seed(
            database, lots=1, spots_per_lot=max(rounds, 10), users=DRIVERS, sessions=False
        )
        await vacuum_analyze(database)
        # Every driver signs in from this one address: past the server's per-address sign-in
        # limit they would be refused.
        unlimited = {"PARKSPOT_RATE_LIMIT_LOGIN_PER_ADDRESS": "0"}
        async with parkspot_server(config, database, extra_env=unlimited) as server:
            log(f"S3: logging {DRIVERS} drivers in through the API")
            usernames = [Layout.username(i + 1) for i in range(DRIVERS)]
            tokens = tuple(await login_all(server.base_url, usernames))
            first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            for r in range(rounds):
                spot_id = layout.first_spot_id + r
                starts = first + timedelta(days=1, hours=2 * r)
                ends = starts + WINDOW
                log(f"S3: round {r + 1}/{rounds}: {DRIVERS} bookings of spot {spot_id}")
                source = StormRequests(
                    f"{server.host}:{server.port}",
                    tokens,
                    layout.first_vehicle_id,
                    spot_id,
                    starts.isoformat().replace("+00:00", "Z"),
                    ends.isoformat().replace("+00:00", "Z"),
                )
                load = await asyncio.to_thread(
                    loadgen.run_load, server.host, server.port, source, DRIVERS, duration=None
                )
                holders = await _holders(database, spot_id, starts, ends)
                results.append(
                    {
                        "round": r + 1,
                        "created_201": load.statuses.get(201, 0),
                        "conflict_409": load.statuses.get(409, 0),
                        "other": load.completed - load.count(201, 202) - load.count(409, 410),
                        "transport_errors": load.transport_errors,
                        "errors": dict(load.errors),
                        "active_reservations_in_window": holders,
                        "latency": latency_summary(load.latencies),
                        "storm_seconds": round(load.window_seconds, 3),
                    }
                )
            log_errors = server_errors(server)
        overlaps = await checks.overlapping_pairs(database)

    def exact(r: dict[str, Any]) -> bool:
        return bool(
            r["created_201"] == 1
            and r["conflict_409"] == DRIVERS - 1
            and r["other"] == 0
            and r["transport_errors"] == 0
            and r["active_reservations_in_window"] == 1
        )

    met = all(exact(r) for r in results) and overlaps == {"spot": 0, "vehicle": 0}
    created = sum(r["created_201"] for r in results)
    conflicts = sum(r["conflict_409"] for r in results)
    other = sum(r["other"] + r["transport_errors"] for r in results)
    slowest = max(r["latency"].get("max_ms", 0.0) for r in results)
    return ScenarioResult(
        id="S3",
        scenario=f"conflict storm: {DRIVERS} concurrent bookings of one spot and window",
        result=(
            f"{rounds} rounds: {created}{TIMES}201, {conflicts}{TIMES}409, {other} other; "
            f"{overlaps['spot']} overlaps in the DB; slowest answer {slowest:.0f} ms"
        ),
        target=f"per round exactly 1{TIMES}201, {DRIVERS - 1}{TIMES}409; 0 overlaps in the DB",
        met=met,
        figures={"rounds": results, "server_log_errors": log_errors[:10]},
        checks={
            "rounds_exact": sum(exact(r) for r in results),
            "rounds": rounds,
            "double_bookings": overlaps["spot"],
            "vehicle_overlaps": overlaps["vehicle"],
        },
    )


SCENARIO = Scenario("S3", "conflict storm", run)
