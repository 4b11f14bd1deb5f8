"""S1: cached availability reads from the in-process mirror against a bare ASGI app.

Anonymous reads of one lot's availability (``GET /api/v1/availability/{lot_id}``) are
answered from the in-process mirror by the pure-ASGI fast path; the ceiling is a bare ASGI
"hello" app (bench/ceiling_apps.py) served by uvicorn with the same settings (one worker,
the same event loop and HTTP implementation), loaded by the same load generator with the
same requests, connections and duration.

Both servers run side by side (the idle one costs nothing) and are measured in alternating
rounds after one warm-up each, like S2; the ratio is the median of the rounds' ratios.
"""

import asyncio
import json
import statistics
from dataclasses import dataclass
from typing import Any

from bench import loadgen
from bench.harness import (
    TIMES,
    BenchConfig,
    CpuMeter,
    ScenarioResult,
    Server,
    asgi_app_server,
    fmt_int,
    latency_summary,
    log,
    new_migrated_database,
    parkspot_server,
    server_errors,
    temp_databases,
)
from bench.scenarios.registry import Scenario
from bench.seed import seed

CONCURRENCY = 64
LOTS = 50
PATH = "/api/v1/availability/{}"
# The server has one core at most (one worker); one client process takes the other.
CLIENT_PROCESSES = 1
ROUND_WARMUP = 1.0  # not measured: each round's connections settle first
RATIO_TARGET = 0.5
P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class ReadRequests:
    """Client c's n-th request reads lot (c + n) mod LOTS: every lot, in turn. The ceiling
    gets the very same bytes (it answers any path)."""

    requests: tuple[bytes, ...]

    @classmethod
    def make(cls, server: Server, first_lot: int) -> "ReadRequests":
        host = f"{server.host}:{server.port}"
        return cls(
            tuple(
                loadgen.http_request("GET", PATH.format(first_lot + i), host) for i in range(LOTS)
            )
        )

    def request(self, client: int, n: int) -> bytes | None:
        return self.requests[(client + n) % len(self.requests)]


class Side:
    """One server under the load generator, its measured rounds and CPU use."""

    def __init__(self, name: str, server: Server, source: ReadRequests) -> None:
        self.name = name
        self.server = server
        self.source = source
        self.meter = CpuMeter({"server": server.pid})
        self.rounds: list[loadgen.LoadResult] = []

    async def run(self, seconds: float, *, measure: bool) -> None:
        if measure:
            await self.meter.start()
        load = await asyncio.to_thread(
            loadgen.run_load,
            self.server.host,
            self.server.port,
            self.source,
            CONCURRENCY,
            warmup=ROUND_WARMUP if measure else 0.0,
            duration=seconds,
            processes=CLIENT_PROCESSES,
        )
        if measure:
            await self.meter.stop()
            self.rounds.append(load)

    @property
    def throughput(self) -> float:
        return statistics.median(r.throughput for r in self.rounds)

    def latency(self) -> dict[str, float]:
        return latency_summary(x for r in self.rounds for x in r.latencies)

    def cpu(self) -> dict[str, float]:
        seconds = sum(r.window_seconds + ROUND_WARMUP for r in self.rounds)
        cpu = self.meter.as_dict()
        cpu["client_cpu_cores"] = round(sum(r.client_cpu_seconds for r in self.rounds) / seconds, 3)
        cpu["other_cpu_cores"] = self.meter.other_cores(cpu["client_cpu_cores"])
        answered = sum(r.completed for r in self.rounds)
        if "server" in self.meter.seconds and answered:
            cpu["server_cpu_us_per_request"] = round(
                1e6 * self.meter.seconds["server"] / answered, 2
            )
        return cpu

    def load(self) -> dict[str, Any]:
        total = loadgen.LoadResult()
        for r in self.rounds:
            total.merge(r)
        total.window_seconds = sum(r.window_seconds for r in self.rounds)
        return total.summary()

    def unexpected(self) -> int:
        """Responses in the windows other than 200, plus transport errors."""
        return sum(r.completed - r.statuses.get(200, 0) + r.transport_errors for r in self.rounds)


async def check_reads(server: Server, lot_id: int) -> dict[str, Any]:
    """The fast path's answer is the lot's record with an entity tag, and If-None-Match
    with that tag gives 304."""
    host = f"{server.host}:{server.port}"
    path = PATH.format(lot_id)
    conn = await loadgen.HttpConnection.open(server.host, server.port)
    try:
        status, body = await conn.send(loadgen.http_request("GET", path, host))
        record = json.loads(body) if status == 200 else {}
        etag = f'"{record.get("lot_id")}-{record.get("version")}"'
        again, _ = await conn.send(
            loadgen.http_request("GET", path, host, headers={"If-None-Match": etag})
        )
    finally:
        await conn.close()
    fields = {"lot_id", "name", "capacity", "free", "version", "updated_at", "stale"}
    return {
        "status": status,
        "record_ok": record.get("lot_id") == lot_id and fields <= set(record),
        "if_none_match_status": again,
        "body_bytes": len(body),
    }


async def run(config: BenchConfig) -> ScenarioResult:
    warmup, rounds, seconds = (1, 1, 5) if config.quick else (3, 3, 10)
    async with temp_databases(config.pg_url) as made:
        database = await new_migrated_database(config.pg_url, made)
        layout = await seed(database, lots=LOTS, spots_per_lot=10, users=1, sessions=False)
        async with (
            parkspot_server(config, database) as server,
            asgi_app_server(config, "hello") as hello,
        ):
            sanity = await check_reads(server, layout.first_lot_id)
            api = Side("API", server, ReadRequests.make(server, layout.first_lot_id))
            ceiling = Side("hello", hello, ReadRequests.make(hello, layout.first_lot_id))
            log(f"S1: warm-up, {warmup} s each; then {rounds} x ({seconds} s hello, API)")
            await ceiling.run(warmup, measure=False)
            await api.run(warmup, measure=False)
            per_round: list[dict[str, Any]] = []
            for number in range(rounds):
                sides = (ceiling, api) if number % 2 == 0 else (api, ceiling)
                for side in sides:
                    log(f"S1: round {number + 1}/{rounds}: {side.name}, {CONCURRENCY} clients")
                    await side.run(seconds, measure=True)
                mine, theirs = api.rounds[-1], ceiling.rounds[-1]
                per_round.append(
                    {
                        "round": number + 1,
                        "order": " then ".join(s.name for s in sides),
                        "hello_rps": round(theirs.throughput, 1),
                        "api_rps": round(mine.throughput, 1),
                        "ratio": round(mine.throughput / theirs.throughput, 4),
                        "api_p99_ms": latency_summary(mine.latencies).get("p99_ms"),
                        "hello_p99_ms": latency_summary(theirs.latencies).get("p99_ms"),
                    }
                )
            log_errors = server_errors(server)
            settings = dict(server.settings)

    ratio = statistics.median(r["ratio"] for r in per_round)
    latency, ceiling_latency = api.latency(), ceiling.latency()
    p99 = latency.get("p99_ms", float("inf"))
    unexpected = api.unexpected()
    checks = {
        "unexpected_responses": unexpected,
        "ceiling_unexpected_responses": ceiling.unexpected(),
        "fast_path_record_ok": sanity["record_ok"],
        "if_none_match_gives_304": sanity["if_none_match_status"] == 304,
    }
    met = (
        ratio >= RATIO_TARGET
        and p99 <= P99_TARGET_MS
        and unexpected == 0
        and sanity["record_ok"]
        and sanity["if_none_match_status"] == 304
    )
    api_cpu, ceiling_cpu = api.cpu(), ceiling.cpu()
    result = ScenarioResult(
        id="S1",
        scenario=f"GET /api/v1/availability/{{lot_id}} from the mirror, {CONCURRENCY} connections",
        result=(
            f"{fmt_int(api.throughput)} req/s; p50 {latency.get('p50_ms', 0):.2f} ms, "
            f"p99 {p99:.2f} ms"
        ),
        ceiling=(
            f"bare ASGI hello, same uvicorn: {fmt_int(ceiling.throughput)} req/s "
            f"(p99 {ceiling_latency.get('p99_ms', 0):.2f} ms)"
        ),
        ratio=round(ratio, 3),
        target=f"≥ {RATIO_TARGET}{TIMES}; p99 ≤ {P99_TARGET_MS:.0f} ms",
        met=met,
        figures={
            "rounds": per_round,
            "api": {
                "requests_per_second_median": round(api.throughput, 1),
                "latency": latency,
                "load": api.load(),
                "cpu": api_cpu,
                "response": sanity,
                "server_settings": settings,
                "server_log_errors": log_errors[:10],
            },
            "hello": {
                "requests_per_second_median": round(ceiling.throughput, 1),
                "latency": ceiling_latency,
                "load": ceiling.load(),
                "cpu": ceiling_cpu,
            },
            "plan": {
                "connections": CONCURRENCY,
                "lots": LOTS,
                "client_processes": CLIENT_PROCESSES,
                "warmup_seconds": warmup,
                "rounds": rounds,
                "round_seconds": seconds,
            },
        },
        checks=checks,
    )
    client = max(api_cpu["client_cpu_cores"], ceiling_cpu["client_cpu_cores"])
    if client > 0.8:
        result.notes.append(
            f"The load generator used up to {client:.2f} cores: near one core it, not the "
            "server, sets the pace, and the ratio comes out closer to 1 than the servers' "
            "own costs (figures.*.cpu.server_cpu_us_per_request) would say."
        )
    other = max(api_cpu["other_cpu_cores"], ceiling_cpu["other_cpu_cores"])
    if other > 0.25:
        result.notes.append(
            f"Other work kept up to {other:.2f} cores busy during the measurements "
            "(figures.*.cpu.other_cpu_cores): the figures of this run are noisy."
        )
    return result


SCENARIO = Scenario("S1", "cached availability reads vs a bare ASGI app", run)
