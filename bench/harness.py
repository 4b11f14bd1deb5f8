"""Reusable pieces of every scenario: the run's configuration, throwaway PostgreSQL
databases, a real ``parkspot serve`` process (and the bare ASGI ceilings on its uvicorn
settings), a Redis to use, free ports, CPU and memory accounting, latency percentiles,
machine facts and the result record."""

import asyncio
import contextlib
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import URL, make_url

from bench import loadgen
from parkspot.db.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Fixed so a scenario can mint tokens the server accepts; the server runs in production
# mode, which requires at least 32 characters.
SECRET_KEY = "parkspot-bench-secret-key-0123456789abcdefghijklmnop"
LOOPBACK = "127.0.0.1"
TIMES = "\u00d7"  # the multiplication sign, for the tables
BENCH_APPLICATION = "parkspot-bench"


@dataclass(frozen=True)
class BenchConfig:
    """What every scenario gets from the command line."""

    quick: bool
    pg_url: str  # any database of the server, as a libpq/asyncpg URL; used to create others
    redis_url: str | None
    work_dir: Path  # scratch space of this run (logs, pgbench scripts); deleted afterwards
    bin_dir: Path = Path(sys.executable).parent
    soak_seconds: int | None = None  # S9's duration; None: its default (quick: shorter)

    @property
    def parkspot(self) -> Path:
        return self.bin_dir / "parkspot"


# --- PostgreSQL ------------------------------------------------------------------------


@dataclass(frozen=True)
class PgDatabase:
    url: URL  # postgresql://… (asyncpg, libpq)

    @property
    def name(self) -> str:
        return str(self.url.database)

    @property
    def dsn(self) -> str:
        return self.url.render_as_string(hide_password=False)

    @property
    def sqlalchemy_url(self) -> str:
        """The URL parkspot takes (PARKSPOT_DATABASE_URL)."""
        return self.url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)

    async def connect(self) -> asyncpg.Connection:
        """A connection of the harness's own (``application_name`` BENCH_APPLICATION, so it
        can be told apart from the server's)."""
        return await asyncpg.connect(
            self.dsn, server_settings={"application_name": BENCH_APPLICATION}
        )

    def libpq_args(self) -> list[str]:
        """``-h H -p P -U U`` for pgbench and psql (the password goes in PGPASSWORD)."""
        args = ["-h", self.url.host or LOOPBACK, "-p", str(self.url.port or 5432)]
        if self.url.username:
            args += ["-U", self.url.username]
        return args

    def libpq_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.url.password:
            env["PGPASSWORD"] = str(self.url.password)
        return env


def _admin_url(pg_url: str) -> URL:
    url = make_url(pg_url)
    if url.drivername != "postgresql":
        url = url.set(drivername="postgresql")
    return url


async def _admin_execute(pg_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_admin_url(pg_url).render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(pg_url: str, *, template: PgDatabase | None = None) -> PgDatabase:
    """A new database ``parkspot_bench_<random>``, empty or a copy of ``template`` (which
    must have no open connection)."""
    name = f"parkspot_bench_{secrets.token_hex(4)}"
    clause = f' TEMPLATE "{template.name}"' if template is not None else ""
    await _admin_execute(pg_url, f'CREATE DATABASE "{name}"{clause}')
    return PgDatabase(_admin_url(pg_url).set(database=name))


async def drop_database(pg_url: str, database: PgDatabase) -> None:
    await _admin_execute(pg_url, f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


@asynccontextmanager
async def temp_databases(pg_url: str) -> AsyncIterator[list[PgDatabase]]:
    """A list to put databases in (``create_database``); each is dropped at the end."""
    made: list[PgDatabase] = []
    try:
        yield made
    finally:
        for database in made:
            with contextlib.suppress(Exception):
                await drop_database(pg_url, database)


async def new_migrated_database(pg_url: str, made: list[PgDatabase]) -> PgDatabase:
    """An empty database migrated to head with parkspot's own migrations."""
    database = await create_database(pg_url)
    made.append(database)
    await asyncio.to_thread(upgrade, database.sqlalchemy_url)
    return database


async def clone_database(pg_url: str, source: PgDatabase, made: list[PgDatabase]) -> PgDatabase:
    copy = await create_database(pg_url, template=source)
    made.append(copy)
    return copy


async def discard_database(pg_url: str, database: PgDatabase, made: list[PgDatabase]) -> None:
    """Drops one of ``made`` early (so, e.g., its autovacuum does not run during the next
    measurement)."""
    await drop_database(pg_url, database)
    made.remove(database)


async def vacuum_analyze(database: PgDatabase) -> None:
    conn = await database.connect()
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def checkpoint(database: PgDatabase) -> None:
    """Flush dirty buffers so one measured run's writes do not land on the next one."""
    conn = await database.connect()
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def server_version(database: PgDatabase) -> str:
    conn = await database.connect()
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


# --- the parkspot server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    pid: int
    log_path: Path
    settings: Mapping[str, str]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def server_env(
    database_url: str,
    work_dir: Path,
    *,
    redis_url: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The server's environment: this process's, minus any PARKSPOT_* setting, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARKSPOT_")}
    env.update(
        {
            "PARKSPOT_ENV": "production",
            "PARKSPOT_DATABASE_URL": database_url,
            "PARKSPOT_SECRET_KEY": SECRET_KEY,
            "PARKSPOT_LOG_LEVEL": "warning",
            "PARKSPOT_DATA_DIR": str(work_dir / "data"),
        }
    )
    if redis_url:
        env["PARKSPOT_REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


@asynccontextmanager
async def parkspot_server(
    config: BenchConfig,
    database: PgDatabase,
    *,
    workers: int = 1,
    redis: bool = False,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> AsyncIterator[Server]:
    """``parkspot serve`` in its own process (working directory: the scratch folder, so no
    ``.env`` is read), ready when /readyz answers 200; stopped (SIGINT, then SIGKILL) on exit."""
    port = free_port()
    env = server_env(
        database.sqlalchemy_url,
        config.work_dir,
        redis_url=config.redis_url if redis else None,
        extra=extra_env,
    )
    settings = {k: v for k, v in env.items() if k.startswith("PARKSPOT_") and "SECRET" not in k}
    settings["PARKSPOT_DATABASE_URL"] = database.url.set(
        drivername="postgresql+asyncpg"
    ).render_as_string(hide_password=True)
    args = [str(config.parkspot), "serve", "--host", LOOPBACK, "--port", str(port)]
    args += ["--workers", str(workers)]
    log_path = config.work_dir / f"server-{port}.log"
    async with _served(args, env, log_path, port, "parkspot serve", ready_timeout) as pid:
        yield Server(LOOPBACK, port, pid, log_path, settings)


@asynccontextmanager
async def asgi_app_server(
    config: BenchConfig, app: str, *, ready_timeout: float = 60.0
) -> AsyncIterator[Server]:
    """One of bench/ceiling_apps.py's bare ASGI apps, served by uvicorn with the settings
    ``parkspot serve --workers 1`` uses, in its own process; ready when /readyz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARKSPOT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "bench.ceiling_apps", app, "--port", str(port)]
    log_path = config.work_dir / f"server-{port}.log"
    async with _served(args, env, log_path, port, f"ceiling app {app}", ready_timeout) as pid:
        yield Server(LOOPBACK, port, pid, log_path, {"app": app})


@asynccontextmanager
async def _served(
    args: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    port: int,
    name: str,
    ready_timeout: float,
) -> AsyncIterator[int]:
    """The pid of a server process (working directory: the log's folder) listening on
    ``port``, once /readyz answers."""
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *args, env=dict(env), cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        await _wait_ready(proc, port, log_path, ready_timeout, name)
        yield proc.pid
    finally:
        await _stop(proc)


async def _wait_ready(
    proc: asyncio.subprocess.Process, port: int, log_path: Path, seconds: float, name: str
) -> None:
    deadline = time.monotonic() + seconds
    request = loadgen.http_request("GET", "/readyz", f"{LOOPBACK}:{port}")
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{tail(log_path)}")
        try:
            status, _ = await loadgen.fetch(LOOPBACK, port, request, seconds=2.0)
            if status == 200:
                return
        except (OSError, TimeoutError, loadgen.ProtocolError):
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{name} not ready after {seconds:.0f} s:\n{tail(log_path)}")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# --- Redis -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRedis:
    """A Redis for one scenario: ``url``, and a key prefix no other run uses."""

    url: str
    prefix: str
    pid: int | None  # a redis-server of our own, on a free port; None: --redis-url's

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or LOOPBACK, parts.port or 6379

    def server_env(self) -> dict[str, str]:
        """The parkspot server's settings to use it."""
        return {"PARKSPOT_REDIS_URL": self.url, "PARKSPOT_REDIS_KEY_PREFIX": self.prefix}


# A private server takes as many clients as its open-file limit allows (fan-out ceilings
# connect thousands of subscribers), from any loopback address (they are spread over
# 127.0.0.x; it listens on 127.0.0.1 only); no persistence, nothing on disk.
_REDIS_ARGS = (
    *("--save", "", "--appendonly", "no"),
    *("--maxclients", "19000", "--protected-mode", "no"),
)


@asynccontextmanager
async def bench_redis(config: BenchConfig) -> AsyncIterator[BenchRedis]:
    """``config.redis_url`` with a key prefix of this run's own (its keys are deleted at the
    end); without one, a private ``redis-server`` on a free port, stopped at the end."""
    prefix = f"parkspot-bench-{secrets.token_hex(4)}"
    if config.redis_url:
        try:
            yield BenchRedis(config.redis_url, prefix, pid=None)
        finally:
            await _delete_keys(config.redis_url, prefix)
        return
    port = free_port()
    args = [
        require_tool("redis-server", "install Redis, or pass --redis-url"),
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
    ]
    args += [*_REDIS_ARGS, "--dir", str(config.work_dir)]
    log_path = config.work_dir / f"redis-{port}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=config.work_dir, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"redis://{LOOPBACK}:{port}/0"
    try:
        await _wait_redis(proc, url, log_path)
        yield BenchRedis(url, prefix, pid=proc.pid)
    finally:
        await _stop(proc)


async def _wait_redis(proc: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
    client = Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        for _ in range(100):
            if proc.returncode is not None:
                raise RuntimeError(f"redis-server exited ({proc.returncode}):\n{tail(log_path)}")
            try:
                await client.ping()
                return
            except (RedisError, OSError):
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    raise TimeoutError(f"redis-server not ready:\n{tail(log_path)}")


async def _delete_keys(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def server_errors(server: Server) -> list[str]:
    """Lines of the server's log that look like errors (tracebacks, ERROR records)."""
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    return [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]


# --- CPU accounting --------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None when it is gone. The seconds include
    its children that have exited (and been waited for), so a tree's total never drops
    when, say, a PostgreSQL backend ends."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its end.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICKS


def _process_tree(pid: int) -> dict[int, float]:
    """CPU seconds of a process and of each of its descendants, by pid."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = stat
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return {p: cpu.get(p, 0.0) for p in tree}


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its descendants."""
    return sum(_process_tree(pid).values())


def process_tree_rss(pid: int) -> int:
    """Resident memory (VmRSS, bytes) of a process and its descendants, 0 when gone."""
    total = 0
    for member in _process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def process_tree_fds(pid: int) -> int:
    """Open file descriptors (sockets included) of a process and its descendants, 0 when
    gone."""
    total = 0
    for member in _process_tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{member}/fd"))
    return total


def _cpu_of(pids: Iterable[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        stat = _proc_stat(pid)
        if stat is not None:
            found[pid] = stat[1]
    return found


class BackendCpu:
    """CPU used by the PostgreSQL backends (and autovacuum workers) of one database, which
    must run on this machine: ``pg_stat_activity`` and /proc are sampled every 0.2 s. Unlike
    the whole server's CPU it leaves out other databases' work (another test run, say); a
    backend that ends loses at most its last 0.2 s."""

    INTERVAL = 0.2
    # The harness's own connections (e.g. S9's monitor) are not the measured work.
    _QUERY = (
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        f"AND application_name <> '{BENCH_APPLICATION}'"
    )

    def __init__(self, database: PgDatabase) -> None:
        self.database = database
        # Sessions (connections) the database saw opened since ``start``: a pool that keeps
        # reconnecting costs backend start-ups, which the sampling may miss.
        self.sessions = 0
        self._sessions_at_start = 0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._first, self._last = {}, {}
        self._conn = await self.database.connect()
        self._sessions_at_start = await self._sessions()
        await self._poll(initial=True)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> float:
        """CPU seconds used since ``start``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._poll()
            self.sessions = await self._sessions() - self._sessions_at_start
            await self._conn.close()
            self._conn = None
        return sum(self._last[pid] - self._first[pid] for pid in self._last)

    async def _sessions(self) -> int:
        assert self._conn is not None
        query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        return int(await self._conn.fetchval(query) or 0)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL)
            await self._poll()

    async def _poll(self, *, initial: bool = False) -> None:
        assert self._conn is not None
        pids = [row[0] for row in await self._conn.fetch(self._QUERY)]
        for pid, cpu in _cpu_of(pids).items():
            # A backend first seen later started during the measurement.
            self._first.setdefault(pid, cpu if initial else 0.0)
            self._last[pid] = cpu


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) / _TICKS for v in first[:8]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values)
    return total - idle, total


@dataclass
class CpuMeter:
    """CPU used between ``start`` and ``stop`` (summed over every such interval): by named
    process trees (``pids``, e.g. the server), by the backends of named databases
    (``databases``, see BackendCpu) and by the whole machine (which includes anything else
    running on it)."""

    pids: dict[str, int | None] = field(default_factory=dict)
    databases: dict[str, PgDatabase] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    _machine_busy: float = 0.0
    _machine_total: float = 0.0
    _start: dict[str, float] = field(default_factory=dict)
    _backends: dict[str, BackendCpu] = field(default_factory=dict)

    @property
    def machine_busy_fraction(self) -> float:
        return self._machine_busy / self._machine_total if self._machine_total > 0 else 0.0

    def _sample(self) -> dict[str, float]:
        busy, total = machine_cpu()
        sample = {"@wall": time.monotonic(), "@busy": busy, "@total": total}
        for name, pid in self.pids.items():
            if pid is not None:
                sample[name] = process_tree_cpu(pid)
        return sample

    async def start(self) -> None:
        self._backends = {name: BackendCpu(db) for name, db in self.databases.items()}
        for backends in self._backends.values():
            await backends.start()
        self._start = self._sample()

    async def stop(self) -> None:
        end, start = self._sample(), self._start
        self.wall_seconds += end["@wall"] - start["@wall"]
        self._machine_total += end["@total"] - start["@total"]
        self._machine_busy += end["@busy"] - start["@busy"]
        for name in self.pids:
            if name in end and name in start:
                self.seconds[name] = self.seconds.get(name, 0.0) + end[name] - start[name]
        for name, backends in self._backends.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + await backends.stop()
            key = f"{name}_sessions_opened"
            self.counts[key] = self.counts.get(key, 0) + backends.sessions

    def cores(self, seconds: float) -> float:
        return round(seconds / self.wall_seconds, 3) if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        """``<name>_cpu_cores`` for each process tree, and the machine's busy percentage
        (of all its cores)."""
        figures = {f"{name}_cpu_cores": self.cores(s) for name, s in self.seconds.items()}
        figures.update(self.counts)
        figures["machine_busy_percent"] = round(100 * self.machine_busy_fraction, 1)
        return figures

    def other_cores(self, *known_cores: float) -> float:
        """Cores busy with something else than the named trees and ``known_cores`` (e.g. the
        load generator): other work on the machine that made this measurement noisier."""
        busy = self.machine_busy_fraction * (os.cpu_count() or 1)
        named = sum(self.cores(s) for s in self.seconds.values())
        return round(max(0.0, busy - named - sum(known_cores)), 3)


# --- statistics ------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def latency_summary(seconds: Iterable[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99 and max of latencies given in seconds, in milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"count": 0}
    ms = 1000.0
    return {
        "count": len(values),
        "mean_ms": round(sum(values) / len(values) * ms, 3),
        "p50_ms": round(percentile(values, 50) * ms, 3),
        "p90_ms": round(percentile(values, 90) * ms, 3),
        "p99_ms": round(percentile(values, 99) * ms, 3),
        "max_ms": round(values[-1] * ms, 3),
    }


# --- machine and source facts ----------------------------------------------------------


def _command(*args: str) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def background_cores(seconds: float = 2.0) -> float:
    """How many cores the machine keeps busy while the harness does nothing: other work
    that will make the figures noisier."""
    busy0, total0 = machine_cpu()
    time.sleep(seconds)
    busy1, total1 = machine_cpu()
    fraction = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    return round(fraction * (os.cpu_count() or 1), 2)


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_kib = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024**2, 1) if memory_kib else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "pgbench": _command("pgbench", "--version"),
    }


def git_info() -> dict[str, Any]:
    status = _command("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _command("git", "rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def require_tool(name: str, hint: str = "it comes with the PostgreSQL client tools") -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not on PATH ({hint})")
    return path


# --- results ---------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """One scenario's outcome. ``result``/``ceiling`` are short human texts for the table;
    ``figures`` holds the raw numbers, ``checks`` the correctness conditions."""

    id: str
    scenario: str
    result: str
    target: str
    met: bool
    ceiling: str = "—"
    ratio: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scenario": self.scenario,
            "result": self.result,
            "ceiling": self.ceiling,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "figures": self.figures,
            "checks": self.checks,
            "notes": self.notes,
            "error": self.error,
        }


def markdown_table(results: Sequence[ScenarioResult]) -> str:
    rows = [
        "| id | scenario | result | ceiling | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r.ratio:.2f}{TIMES}" if r.ratio is not None else "—"
        met = "**error**" if r.error else ("yes" if r.met else "**no**")
        result = r.result if not r.error else f"failed: {r.error}"
        rows.append(
            f"| {r.id} | {r.scenario} | {result} | {r.ceiling} | {ratio} | {r.target} | {met} |"
        )
    return "\n".join(rows)


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def log(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the results table."""
    stamp = time.strftime("%H:%M:%S")
    sys.stderr.write(f"[{stamp}] {message}\n")
    sys.stderr.flush()
