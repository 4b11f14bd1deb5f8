"""S5: server-sent events fanned out to thousands of subscribers by one server process.

N subscribers (5,000 then 10,000; quick: 2,000) hold ``GET /api/v1/availability/stream``
open (every lot), spread over worker processes and loopback source addresses. The server's
memory per idle connection is read from its RSS once every snapshot went out; then spots of
LOTS lots are booked through the API on a fixed schedule (each lot every PERIOD seconds),
and every subscriber's copy of every new version is timed from the booking's 201. The
server runs as it is deployed scaled out: one uvicorn worker, PostgreSQL, Redis as the bus.

Ceilings, with the same subscriber processes and schedule, in the same run:
- raw ASGI: bench/ceiling_apps.py's fan-out app on the same uvicorn settings, fed the same
  records by ``POST /publish``: the least a Python server spends fanning a record out;
- Redis: the same records PUBLISHed to N pub/sub subscribers (a C server's fan-out), and
  the PUBLISH rate Redis sustains with N subscribers (a burst of BURST records).

The ratio is the raw ASGI app's p99 over the server's at 5,000 subscribers (1.0: the
server's fan-out costs no more than the bare loop's).
"""

import time
from typing import Any

from redis.asyncio import Redis

from bench import fanout
from bench.fanout import FanoutRun, Schedule
from bench.harness import (
    TIMES,
    BenchConfig,
    BenchRedis,
    ScenarioResult,
    bench_redis,
    fmt_int,
    log,
    temp_databases,
)
from bench.live import REDIS, SSE, LivePool, StreamSpec
from bench.scenarios.registry import Scenario

COUNTS = (5_000, 10_000)
QUICK_COUNTS = (2_000,)
TARGET_COUNT = 5_000  # where the latency target applies
LOTS = 20
# Each lot changes every 20 s: one change a second, each to every subscriber. One fan-out
# costs the server about 0.1 ms of CPU per subscriber, so at 5,000 this keeps it near half
# a core: the latency measured is the fan-out's, not a queue's (10,000 may saturate it).
PERIOD = 20.0
SECONDS, QUICK_SECONDS = 30.0, 10.0
BURST = 20
P99_TARGET_MS = 250.0
KIB_TARGET = 32.0
# Two processes hold the subscribers (10,000 sockets are within one process's open-file
# limit; the second spreads the parsing when the server leaves a core free).
CLIENT_PROCESSES = 2


async def redis_burst(
    pool: LivePool, bench: BenchRedis, count: int, lots: tuple[int, ...]
) -> dict[str, Any]:
    """PUBLISHes BURST records back to back with ``count`` subscribers listening: how many
    a second Redis takes, and how long until every subscriber has every record."""
    channel = f"{bench.prefix}:burst"
    spec = StreamSpec(REDIS, *bench.address, channel)
    connected = await pool.connect("burst", spec, count)
    client = Redis.from_url(bench.url)
    publisher = fanout.RedisPublisher(client, channel)
    try:
        await pool.collect("burst", reset=True)
        began = time.time()
        changes = [await publisher.change(lots[i % len(lots)]) for i in range(BURST)]
        published = time.time()
        finals = await fanout.settle(pool, "burst", publisher, {}, len(changes))
        delivered = await pool.collect("burst")
    finally:
        await client.aclose()
        await pool.drop("burst")
    last = max((t for times in delivered.arrivals.values() for t in times), default=published)
    summary = delivered.summary(finals)
    return {
        "subscribers": count,
        "connected": connected["connected"],
        "records": len(changes),
        "publish_per_second": round(BURST / (published - began), 1),
        "deliveries_per_second": round(delivered.events / (last - began), 1),
        "all_delivered_after_ms": round(1000 * (last - began), 1),
        "delivered_percent": summary["delivered_percent"],
    }


async def run(config: BenchConfig) -> ScenarioResult:
    counts = QUICK_COUNTS if config.quick else COUNTS
    schedule_seconds = QUICK_SECONDS if config.quick else SECONDS
    runs: dict[int, dict[str, FanoutRun]] = {}
    bursts: dict[int, dict[str, Any]] = {}
    async with (
        temp_databases(config.pg_url) as made,
        bench_redis(config) as redis,
        LivePool(CLIENT_PROCESSES) as pool,
    ):
        seeded = await fanout.seed_lots(config, made, LOTS)
        schedule = Schedule(seeded.lots, PERIOD, schedule_seconds)
        client = Redis.from_url(redis.url)
        try:
            for count in counts:
                log(f"S5: {count:,} subscribers")
                parkspot = await fanout.measure_parkspot(
                    config,
                    seeded,
                    redis,
                    pool,
                    lambda s: StreamSpec(SSE, s.host, s.port, fanout.STREAM),
                    count,
                    schedule,
                )
                asgi = await fanout.measure_ceiling(
                    config, pool, lambda s: StreamSpec(SSE, s.host, s.port, "/sse"), count, schedule
                )
                channel = f"{redis.prefix}:fanout"
                with_redis = await fanout.measure(
                    pool,
                    "Redis",
                    redis.pid,
                    fanout.RedisPublisher(client, channel),
                    StreamSpec(REDIS, *redis.address, channel),
                    count,
                    schedule,
                    cpu_pids={"redis": redis.pid},
                )
                runs[count] = {"parkspot": parkspot, "asgi": asgi, "redis": with_redis}
                log(f"S5: Redis PUBLISH burst with {count:,} subscribers")
                bursts[count] = await redis_burst(pool, redis, count, seeded.lots)
        finally:
            await client.aclose()
    return _result(config, runs, bursts, schedule, redis)


def _result(
    config: BenchConfig,
    runs: dict[int, dict[str, FanoutRun]],
    bursts: dict[int, dict[str, Any]],
    schedule: Schedule,
    redis: BenchRedis,
) -> ScenarioResult:
    target_count = TARGET_COUNT if TARGET_COUNT in runs else max(runs)
    at_target = runs[target_count]
    p99 = at_target["parkspot"].p99_ms
    ceiling_p99 = at_target["asgi"].p99_ms
    ratio = ceiling_p99 / p99 if p99 > 0 else None
    memory_ok = all(r["parkspot"].kib_per_connection <= KIB_TARGET for r in runs.values())
    complete = all(r["parkspot"].complete for r in runs.values())
    met = p99 <= P99_TARGET_MS and memory_ok and complete
    parts, ceilings = [], []
    for count, r in runs.items():
        park = r["parkspot"]
        parts.append(
            f"{fmt_int(count)}: p99 {park.p99_ms:.0f} ms, {park.delivered_percent:g} % delivered, "
            f"{park.kib_per_connection:.1f} KiB/conn"
        )
        ceilings.append(
            f"{fmt_int(count)}: raw ASGI p99 {r['asgi'].p99_ms:.0f} ms; Redis p99 "
            f"{r['redis'].p99_ms:.0f} ms, PUBLISH {fmt_int(bursts[count]['publish_per_second'])}/s"
        )
    result = ScenarioResult(
        id="S5",
        scenario=(
            f"SSE fan-out of bookings ({schedule.rate:g} changes/s) to "
            f"{' and '.join(fmt_int(c) for c in runs)} subscribers, one process"
        ),
        result="; ".join(parts),
        ceiling="; ".join(ceilings),
        ratio=round(ratio, 3) if ratio is not None else None,
        target=(
            f"p99 ≤ {P99_TARGET_MS:.0f} ms at {fmt_int(target_count)}; ≤ {KIB_TARGET:.0f} KiB "
            "per idle connection; 100 % delivered"
        ),
        met=met,
        figures={
            "runs": {str(c): {k: v.figures() for k, v in r.items()} for c, r in runs.items()},
            "redis_publish_burst": {str(c): b for c, b in bursts.items()},
            "ratio_definition": f"raw ASGI p99 / parkspot p99 at {fmt_int(target_count)}",
            "server_settings": at_target["parkspot"].server_settings,
            "redis": "private redis-server" if redis.pid else "--redis-url",
        },
        checks={
            "p99_ms_at_target_count": p99,
            "kib_per_idle_connection": {
                str(c): round(r["parkspot"].kib_per_connection, 2) for c, r in runs.items()
            },
            "all_delivered": complete,
        },
    )
    _notes(result, runs, config)
    return result


def _notes(
    result: ScenarioResult, runs: dict[int, dict[str, FanoutRun]], config: BenchConfig
) -> None:
    for count, r in runs.items():
        for name, measured in r.items():
            result.notes += fanout.notes(measured, f"{name}, {fmt_int(count)} subscribers")
    if config.quick:
        result.notes.append(
            f"Quick run: {', '.join(fmt_int(c) for c in runs)} subscribers only; the "
            f"latency target is for {fmt_int(TARGET_COUNT)}."
        )
    if result.ratio is not None:
        result.notes.append(
            f"ratio = raw ASGI p99 / parkspot p99 (1{TIMES}: the server fans out as fast as "
            "the bare loop)."
        )


SCENARIO = Scenario("S5", "SSE fan-out", run)
