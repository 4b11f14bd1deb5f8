"""Running pgbench as a ceiling: a custom script or a built-in one (on a database
``init_pgbench`` made), fixed clients and duration, prepared statements (as asyncpg uses),
per-transaction latencies from its log."""

import asyncio
import re
import resource
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.harness import CpuMeter, PgDatabase, latency_summary, log, require_tool


@dataclass
class PgbenchResult:
    command: list[str]
    tps: float
    transactions: int
    failed: int
    aborted: list[str]
    duration: float
    cpu_seconds: float  # pgbench's own (the load generator's) CPU time
    latencies: list[float] = field(default_factory=list)  # seconds, one per transaction
    # Highest transaction number each client reached (pgbench counts from 0 per client).
    last_transaction: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "tps": round(self.tps, 1),
            "transactions": self.transactions,
            "failed_transactions": self.failed,
            "aborted": self.aborted[:5],
            "latency": latency_summary(self.latencies),
        }


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def init_pgbench(database: PgDatabase, *, scale: int) -> None:
    """pgbench -i -q -s <scale>: pgbench's own tables (100,000 accounts per unit of scale),
    vacuumed; raises when it fails."""
    command = [require_tool("pgbench"), "-i", "-q", "-s", str(scale), *database.libpq_args()]
    proc = await asyncio.create_subprocess_exec(
        *command,
        database.name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=database.libpq_env(),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(
            f"pgbench -i failed ({proc.returncode}):\n{out.decode()}\n{err.decode()}"
        )


async def run_pgbench(
    database: PgDatabase,
    script: Path | None,
    *,
    clients: int,
    threads: int,
    duration: int,
    variables: Mapping[str, object] | None = None,
    protocol: str = "prepared",
    builtin: str | None = None,
) -> PgbenchResult:
    """pgbench -n -M <protocol> -c <clients> -j <threads> -T <duration> -f <script> (or
    ``-b <builtin>``, e.g. ``simple-update``, with ``script`` None) with ``-D name=value``
    for each variable; raises when pgbench itself fails to run."""
    if (script is None) == (builtin is None):
        raise ValueError("give either a script or a built-in script's name")
    pgbench = require_tool("pgbench")
    with tempfile.TemporaryDirectory(prefix="pgbench-") as log_dir:
        command = [
            pgbench,
            "-n",
            "-M",
            protocol,
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(duration),
            *(["-b", builtin] if builtin is not None else ["-f", str(script)]),
            "-l",
            f"--log-prefix={log_dir}/tx",
            *database.libpq_args(),
        ]
        for name, value in (variables or {}).items():
            command += ["-D", f"{name}={value}"]
        command.append(database.name)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=database.libpq_env(),
        )
        out_bytes, err_bytes = await proc.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        out, err = out_bytes.decode(errors="replace"), err_bytes.decode(errors="replace")
        tps = _number(r"^tps = ([\d.]+) \(without initial connection time\)", out)
        transactions = _number(r"^number of transactions actually processed: (\d+)", out)
        if tps is None or transactions is None:
            raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{out}\n{err}")
        failed = _number(r"^number of failed transactions: (\d+)", out) or 0
        aborted = [line for line in err.splitlines() if "aborted" in line or "ERROR" in line]
        result = PgbenchResult(command, tps, int(transactions), int(failed), aborted, duration, cpu)
        _read_logs(Path(log_dir), result)
    return result


def _read_logs(log_dir: Path, result: PgbenchResult) -> None:
    """Log lines: client_id transaction_no time_us script_no epoch epoch_us."""
    for path in log_dir.iterdir():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3 or not parts[2].isdigit():
                continue  # "failed"/"skipped" entries carry no latency
            client, number, micros = int(parts[0]), int(parts[1]), int(parts[2])
            result.latencies.append(micros / 1e6)
            result.last_transaction[client] = max(result.last_transaction.get(client, 0), number)


class Side(Protocol):
    async def run(self, seconds: int, *, measure: bool) -> None: ...


class PgbenchSide:
    """The ceiling side of a scenario: pgbench runs on its own database, PostgreSQL's CPU
    metered over the measured runs. ``pgbench(seconds)`` runs it once."""

    def __init__(
        self, database: PgDatabase, pgbench: Callable[[int], Awaitable[PgbenchResult]]
    ) -> None:
        self.database = database
        self.pgbench = pgbench
        self.meter = CpuMeter(databases={"postgres": database})
        self.rounds: list[PgbenchResult] = []

    async def run(self, seconds: int, *, measure: bool) -> None:
        if measure:
            await self.meter.start()
        result = await self.pgbench(seconds)
        if measure:
            await self.meter.stop()
            self.rounds.append(result)
        if result.aborted or result.failed:
            raise RuntimeError(f"pgbench transactions failed: {result.aborted[:3]}")

    def cpu(self) -> dict[str, float]:
        cpu = self.meter.as_dict()
        transactions = sum(r.transactions for r in self.rounds)
        seconds = sum(r.duration for r in self.rounds)
        cpu["client_cpu_cores"] = round(sum(r.cpu_seconds for r in self.rounds) / seconds, 3)
        cpu["other_cpu_cores"] = self.meter.other_cores(cpu["client_cpu_cores"])
        if "postgres" in self.meter.seconds and transactions:
            cpu["postgres_cpu_ms_per_transaction"] = round(
                1000 * self.meter.seconds["postgres"] / transactions, 3
            )
        return cpu


async def alternate(
    scenario: str, ceiling: Side, api: Side, clients: int, warmup: int, rounds: int, seconds: int
) -> list[str]:
    """Warms both sides up, then measures them in ``rounds`` rounds, alternating which goes
    first so that drift in the machine's background load falls on both alike. Returns each
    round's order."""
    log(f"{scenario}: warm-up, {warmup} s each; then {rounds} x ({seconds} s pgbench, API)")
    await ceiling.run(warmup, measure=False)
    await api.run(warmup, measure=False)
    orders = []
    for number in range(rounds):
        sides: Sequence[tuple[str, Side]] = (("pgbench", ceiling), ("API", api))
        if number % 2:
            sides = sides[::-1]
        orders.append(" then ".join(name for name, _ in sides))
        for name, side in sides:
            log(f"{scenario}: round {number + 1}/{rounds}: {name}, {clients} clients")
            await side.run(seconds, measure=True)
    return orders
