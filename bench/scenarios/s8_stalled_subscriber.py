"""S8: one stalled subscriber must cost the server little memory and the others nothing.

OTHERS subscribers of the event stream follow LOTS lots, each booked once a second (20
changes a second, each to every subscriber); in every other round one more subscriber joins
and stops reading as soon as its stream has started, so the server's writes to it back up:
the kernel's buffers fill (the client announces a 4 KiB receive buffer and a 536-byte MSS,
which keeps the server's send buffer for it near 150 KB instead of the megabytes loopback's
64 KiB MSS allows), then uvicorn's transport buffer (64 KiB), then the server's send waits
until the stall limit (stream_stall_timeout_seconds, 10 s) drops the client. At this rate
(about 7.5 KB/s of events) the send blocks after 30-40 s and the drop follows 10 s later: a
round lasts longer. At the end of a round the stalled client reads again: if the server had
dropped it, its stream then ends (the server closes gracefully, so the end waits behind the
backlog), and the last record in the backlog tells when the server stopped writing.

After an unmeasured warm-up round, rounds alternate without and with the stalled client
(quick: one of each), on the same server with the same OTHERS subscribers throughout. The
server's RSS is sampled every RSS_SAMPLE seconds; a round's growth is its peak minus its
start. Targets: growth under RSS_TARGET_MIB with the stalled client, and the others'
delivery p99 (201 to arrival) with it within ±P99_TOLERANCE of the rounds without it (the
ratio column: with / without, medians over the rounds).
"""

import asyncio
import contextlib
import statistics
from dataclasses import replace
from typing import Any

from bench import fanout
from bench.fanout import FanoutRun, Schedule
from bench.harness import (
    BenchConfig,
    ScenarioResult,
    bench_redis,
    fmt_int,
    log,
    parkspot_server,
    process_tree_rss,
    server_errors,
    temp_databases,
)
from bench.live import SSE, LivePool, StreamSpec
from bench.scenarios.registry import Scenario
from parkspot.config import Settings

# At about 0.1 ms of server CPU per delivery, 200 subscribers at 20 changes a second keep
# the server near half a core: the comparison is about the stalled client, not about a
# saturated server (1,000 would need two cores).
OTHERS = 200
LOTS = 20
PERIOD = 1.0
ROUND_SECONDS, QUICK_ROUND_SECONDS = 60.0, 50.0
WARMUP_SECONDS = 10.0
PAIRS, QUICK_PAIRS = 2, 1
STALLED_RECEIVE_BUFFER = 4096
STALLED_SEGMENT_SIZE = 536
RSS_SAMPLE = 0.25
RSS_TARGET_MIB = 10.0
P99_TOLERANCE = 0.10
CLIENT_PROCESSES = 2
STALL_SETTING = "PARKSPOT_STREAM_STALL_TIMEOUT_SECONDS"
DEFAULT_STALL_SECONDS = float(Settings.model_fields["stream_stall_timeout_seconds"].default)
MIB = 1024 * 1024
_UNFINISHED = "ASGI callable returned without completing response"


class RssSampler:
    """The peak resident memory of a process tree while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = process_tree_rss(pid)
        self.peak = self.start
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, process_tree_rss(self.pid))
            await asyncio.sleep(RSS_SAMPLE)

    async def stop(self) -> dict[str, float]:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        end = process_tree_rss(self.pid)
        return {
            "start_mib": round(self.start / MIB, 2),
            "peak_mib": round(max(self.peak, end) / MIB, 2),
            "end_mib": round(end / MIB, 2),
            "growth_mib": round((max(self.peak, end) - self.start) / MIB, 2),
        }


async def run(config: BenchConfig) -> ScenarioResult:
    pairs = QUICK_PAIRS if config.quick else PAIRS
    seconds = QUICK_ROUND_SECONDS if config.quick else ROUND_SECONDS
    rounds: list[dict[str, Any]] = []
    runs: list[FanoutRun] = []
    async with temp_databases(config.pg_url) as made, bench_redis(config) as redis:
        seeded = await fanout.seed_lots(config, made, LOTS)
        schedule = Schedule(seeded.lots, PERIOD, seconds)
        async with (
            parkspot_server(config, seeded.database, extra_env=redis.server_env()) as server,
            LivePool(CLIENT_PROCESSES) as pool,
        ):
            bookings = seeded.bookings(server)
            spec = StreamSpec(SSE, server.host, server.port, fanout.STREAM)
            stalled = replace(
                spec,
                stall=True,
                receive_buffer=STALLED_RECEIVE_BUFFER,
                segment_size=STALLED_SEGMENT_SIZE,
            )
            settings_stall = float(server.settings.get(STALL_SETTING, DEFAULT_STALL_SECONDS))
            log(f"S8: connecting {OTHERS:,} subscribers")
            connected = await pool.connect("others", spec, OTHERS)
            log("S8: warm-up round")
            warmup = FanoutRun("parkspot", SSE, OTHERS, replace(schedule, seconds=WARMUP_SECONDS))
            await fanout.deliver(warmup, pool, "others", bookings)
            for number in range(2 * pairs):
                with_stall = number % 2 == 1
                log(f"S8: round {number + 1}/{2 * pairs}, {'with' if with_stall else 'without'}")
                sampler = RssSampler(server.pid)
                if with_stall:
                    await pool.connect("stalled", stalled, 1, first=OTHERS)
                measured = FanoutRun("parkspot", SSE, OTHERS, schedule, connect=connected)
                await fanout.deliver(
                    measured,
                    pool,
                    "others",
                    bookings,
                    cpu_pids={"server": server.pid, "redis": redis.pid},
                    database=seeded.database,
                )
                memory = await sampler.stop()
                stall: dict[str, Any] = {}
                if with_stall:
                    stall = _stall(await pool.release("stalled"), settings_stall)
                    await pool.drop("stalled")
                runs.append(measured)
                rounds.append(
                    {
                        "round": number + 1,
                        "stalled_client": with_stall,
                        "others_p99_ms": measured.p99_ms,
                        "others_delivered_percent": measured.delivered_percent,
                        "others_complete": measured.complete,
                        "memory": memory,
                        "stalled": stall,
                        "figures": measured.figures(),
                    }
                )
            log_errors = server_errors(server)
            settings = dict(server.settings)
    return _result(rounds, schedule, log_errors, settings)


def _stall(found: list[dict[str, Any]], stall_seconds: float) -> dict[str, Any]:
    """What became of the stalled client: whether the server ended its stream, and when
    the server stopped writing to it (the last record it got) counted from the stall."""
    if not found:
        return {"connected": False}
    client = found[0]
    stalled_at, last = client["stalled_at"], client["last_written_at"]
    writes_for = round(last - stalled_at, 2) if last and stalled_at else None
    return {
        "connected": stalled_at is not None,
        "dropped_by_server": client["ended_by_server"],
        "writes_stopped_after_seconds": writes_for,
        # The server gives up a write after the stall limit.
        "dropped_after_seconds": round(writes_for + stall_seconds, 2) if writes_for else None,
        "records_received": client["records_received"],
    }


def _result(
    rounds: list[dict[str, Any]],
    schedule: Schedule,
    log_errors: list[str],
    settings: dict[str, str],
) -> ScenarioResult:
    with_stall = [r for r in rounds if r["stalled_client"]]
    without = [r for r in rounds if not r["stalled_client"]]
    p99_with = statistics.median(r["others_p99_ms"] for r in with_stall)
    p99_without = statistics.median(r["others_p99_ms"] for r in without)
    ratio = p99_with / p99_without if p99_without > 0 else None
    growth = max(r["memory"]["growth_mib"] for r in with_stall)
    growth_without = max(r["memory"]["growth_mib"] for r in without)
    complete = all(r["others_complete"] for r in rounds)
    dropped = [
        r["stalled"].get("dropped_after_seconds") if r["stalled"].get("dropped_by_server") else None
        for r in with_stall
    ]
    met = (
        ratio is not None
        and abs(ratio - 1) <= P99_TOLERANCE
        and growth < RSS_TARGET_MIB
        and complete
        and all(r["stalled"].get("connected") for r in with_stall)
    )
    drop_text = ", ".join(f"~{d:.0f} s" if d is not None else "never" for d in dropped)
    result = ScenarioResult(
        id="S8",
        scenario=(
            f"one stalled SSE subscriber among {fmt_int(OTHERS)}, {schedule.rate:g} changes/s"
        ),
        result=(
            f"others' p99 {p99_with:.0f} ms with it, {p99_without:.0f} ms without; server RSS "
            f"+{growth:.1f} MiB with it (+{growth_without:.1f} MiB without); stalled client "
            f"dropped after {drop_text}"
        ),
        ratio=round(ratio, 3) if ratio is not None else None,
        target=(
            f"RSS growth < {RSS_TARGET_MIB:.0f} MB; others' p99 within ±{P99_TOLERANCE:.0%} "
            "of the run without it; 100 % delivered"
        ),
        met=met,
        figures={
            "rounds": rounds,
            "ratio_definition": "others' p99 with the stalled client / without (medians)",
            "server_settings": settings,
            "server_log_errors": log_errors[:10],
        },
        checks={
            "p99_ratio": ratio,
            "rss_growth_mib_with_stalled_client": growth,
            "others_all_delivered": complete,
            "stalled_client_dropped": all(d is not None for d in dropped),
        },
    )
    if any(_UNFINISHED in line for line in log_errors):
        result.notes.append(
            f"The server logged {_UNFINISHED!r}: uvicorn's complaint when the event stream "
            "gives up on the stalled client and returns without ending the response. uvicorn "
            "then closes the connection gracefully, behind the data the client never read, "
            "so the socket and its buffers stay until the client reads or leaves."
        )
    elif log_errors:
        result.notes.append(f"The server logged errors: {log_errors[:3]}")
    if len(rounds) <= 2:
        result.notes.append(
            "One round each way: the p99 comparison is as noisy as the machine; the full run "
            "alternates more rounds."
        )
    return result


SCENARIO = Scenario("S8", "stalled subscriber", run)
