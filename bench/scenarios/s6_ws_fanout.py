"""S6: S5's fan-out over WebSockets, against server-sent events in the same run.

N subscribers (5,000 then 10,000; quick: 2,000) open ``/api/v1/availability/ws`` and
subscribe to every lot by id; the same bookings on the same schedule are timed from their
201 to each subscriber's message.

The comparison is S5's server-sent events, measured again here in the same run (SSE then
WebSocket at the first N, the other order at the next; each on a fresh server process, so
neither's memory figure starts from what the other freed), so the ratio is
WebSocket p99 / SSE p99 at 5,000 subscribers. The raw ASGI app's WebSocket loop (bench/
ceiling_apps.py, same uvicorn settings, same records) is the ceiling of the figures; Redis
fan-out is S5's. The clients offer no extension, so no per-message deflate is negotiated
(a browser offers it, and uvicorn would then compress every message for every socket).
"""

import json

from bench import fanout
from bench.fanout import FanoutRun, Schedule
from bench.harness import (
    TIMES,
    BenchConfig,
    ScenarioResult,
    Server,
    bench_redis,
    fmt_int,
    log,
    temp_databases,
)
from bench.live import SSE, WEBSOCKET, LivePool, StreamSpec
from bench.scenarios import s5_sse_fanout as s5
from bench.scenarios.registry import Scenario

RATIO_TARGET = 1.2


async def run(config: BenchConfig) -> ScenarioResult:
    counts = s5.QUICK_COUNTS if config.quick else s5.COUNTS
    seconds = s5.QUICK_SECONDS if config.quick else s5.SECONDS
    runs: dict[int, dict[str, FanoutRun]] = {}
    async with (
        temp_databases(config.pg_url) as made,
        bench_redis(config) as redis,
        LivePool(s5.CLIENT_PROCESSES) as pool,
    ):
        seeded = await fanout.seed_lots(config, made, s5.LOTS)
        schedule = Schedule(seeded.lots, s5.PERIOD, seconds)
        subscribe = json.dumps({"op": "subscribe", "lot_ids": list(seeded.lots)})

        def sse(server: Server) -> StreamSpec:
            return StreamSpec(SSE, server.host, server.port, fanout.STREAM)

        def websocket(server: Server) -> StreamSpec:
            return StreamSpec(
                WEBSOCKET, server.host, server.port, fanout.SOCKET, subscribe=subscribe
            )

        for number, count in enumerate(counts):
            log(f"S6: {count:,} subscribers")
            order = (SSE, WEBSOCKET) if number % 2 == 0 else (WEBSOCKET, SSE)
            runs[count] = {}
            for kind in order:
                runs[count][kind] = await fanout.measure_parkspot(
                    config,
                    seeded,
                    redis,
                    pool,
                    sse if kind == SSE else websocket,
                    count,
                    schedule,
                )
            runs[count]["asgi"] = await fanout.measure_ceiling(
                config,
                pool,
                lambda s: StreamSpec(WEBSOCKET, s.host, s.port, "/ws", subscribe=subscribe),
                count,
                schedule,
            )

    target_count = s5.TARGET_COUNT if s5.TARGET_COUNT in runs else max(runs)
    at_target = runs[target_count]
    ws_p99, sse_p99 = at_target[WEBSOCKET].p99_ms, at_target[SSE].p99_ms
    ratio = ws_p99 / sse_p99 if sse_p99 > 0 else None
    memory_ok = all(r[WEBSOCKET].kib_per_connection <= s5.KIB_TARGET for r in runs.values())
    complete = all(r[WEBSOCKET].complete for r in runs.values())
    met = (
        ratio is not None
        and ratio <= RATIO_TARGET
        and ws_p99 <= s5.P99_TARGET_MS
        and memory_ok
        and complete
    )
    parts, ceilings = [], []
    for count, r in runs.items():
        ws = r[WEBSOCKET]
        parts.append(
            f"{fmt_int(count)}: p99 {ws.p99_ms:.0f} ms, {ws.delivered_percent:g} % delivered, "
            f"{ws.kib_per_connection:.1f} KiB/conn"
        )
        ceilings.append(
            f"{fmt_int(count)}: parkspot SSE p99 {r[SSE].p99_ms:.0f} ms; raw ASGI WebSocket "
            f"p99 {r['asgi'].p99_ms:.0f} ms"
        )
    result = ScenarioResult(
        id="S6",
        scenario=(
            f"WebSocket fan-out of bookings ({schedule.rate:g} changes/s) to "
            f"{' and '.join(fmt_int(c) for c in runs)} subscribers, one process"
        ),
        result="; ".join(parts),
        ceiling="; ".join(ceilings),
        ratio=round(ratio, 3) if ratio is not None else None,
        target=(
            f"WebSocket p99 ≤ {RATIO_TARGET}{TIMES} SSE p99; p99 ≤ {s5.P99_TARGET_MS:.0f} ms at "
            f"{fmt_int(target_count)}; ≤ {s5.KIB_TARGET:.0f} KiB per idle connection; "
            "100 % delivered"
        ),
        met=met,
        figures={
            "runs": {str(c): {k: v.figures() for k, v in r.items()} for c, r in runs.items()},
            "ratio_definition": f"WebSocket p99 / SSE p99 at {fmt_int(target_count)}",
            "server_settings": at_target[WEBSOCKET].server_settings,
        },
        checks={
            "ws_p99_ms_at_target_count": ws_p99,
            "sse_p99_ms_at_target_count": sse_p99,
            "kib_per_idle_connection": {
                str(c): round(r[WEBSOCKET].kib_per_connection, 2) for c, r in runs.items()
            },
            "all_delivered": complete,
        },
    )
    for count, r in runs.items():
        for name, measured in r.items():
            result.notes += fanout.notes(measured, f"{name}, {fmt_int(count)} subscribers")
    if config.quick:
        result.notes.append(
            f"Quick run: {', '.join(fmt_int(c) for c in runs)} subscribers only; the "
            f"targets are for {fmt_int(s5.TARGET_COUNT)}."
        )
    return result


SCENARIO = Scenario("S6", "WebSocket fan-out", run)
