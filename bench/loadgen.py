"""The load generator: a minimal HTTP/1.1 keep-alive client on asyncio streams (uvloop when
installed), run in worker processes of its own, apart from the server.

A scenario describes its requests with a picklable ``RequestSource``: ``request(client, n)``
gives the raw bytes of client ``client``'s ``n``-th request (or None: that client is done).
``run_load`` opens every connection first, starts all clients at one instant, and measures
only responses completed inside the window ``[start + warmup, start + warmup + duration)``;
with ``duration=None`` every client runs until its source is exhausted (a burst). With an
``interval`` the clients are paced (a steady rate instead of as fast as the server answers).
Statuses, error codes and latencies are counted here; a scenario that needs more of each
response (its body) gives a picklable ``ResponseTally``, which the worker processes fill in
and send back with their reports.

Only the standard library (plus uvloop) is imported here, so worker processes start fast.
"""

import asyncio
import contextlib
import copy
import json
import math
import multiprocessing
import queue
import resource
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Protocol, Self

HEADER_END = b"\r\n\r\n"


class ProtocolError(Exception):
    """The server sent something this client does not understand, or closed the connection."""


def http_request(
    method: str,
    path: str,
    host: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """The raw bytes of one HTTP/1.1 request (keep-alive)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_request(
    method: str, path: str, host: str, payload: object, *, token: str | None = None
) -> bytes:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(payload, separators=(",", ":")).encode()
    return http_request(method, path, host, headers=headers, body=body)


def error_code(body: bytes) -> str:
    """The ``error.code`` of parkspot's one error shape, or ``?``."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> "HttpConnection":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """Sends one request and reads its response: (status, body)."""
        self._writer.write(raw)
        try:
            head = await self._reader.readuntil(HEADER_END)
        except asyncio.IncompleteReadError as exc:
            self.closed = True
            raise ProtocolError("connection closed before a response") from exc
        lines = head[: -len(HEADER_END)].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise ProtocolError(f"bad status line {lines[0]!r}") from exc
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                self.closed = True
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self._reader.readexactly(length)
        else:
            body = await self._reader.read()
            self.closed = True
        return status, body

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def close(self) -> None:
        self.closed = True
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def fetch(host: str, port: int, raw: bytes, *, seconds: float = 10.0) -> tuple[int, bytes]:
    """One request on a connection of its own, within ``seconds``."""
    async with asyncio.timeout(seconds):
        conn = await HttpConnection.open(host, port)
        try:
            return await conn.send(raw)
        finally:
            await conn.close()


class RequestSource(Protocol):
    """Picklable: it is sent to the worker processes."""

    def request(self, client: int, n: int) -> bytes | None: ...


class ResponseTally(Protocol):
    """Picklable: what a scenario reads from every response beyond its status and latency.
    Each worker process gets a copy of the one given to ``run_load``, ``add``s every
    response to it (warm-up included; ``measured``: completed inside the window) and sends
    it back with its report; the harness ``merge``s the copies into ``LoadResult.tally``."""

    def add(self, client: int, status: int, body: bytes, latency: float, measured: bool) -> None:
        """One response (``latency`` in seconds, from the request's send)."""

    def merge(self, other: Self) -> None:
        """Adds another copy's counts to this one's."""


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    source: RequestSource
    clients: tuple[int, ...]
    warmup: float
    duration: float | None
    tally: ResponseTally | None = None
    # Pacing: client c sends its n-th request at start + (n + c / concurrency) * interval
    # at the earliest; 0: back to back.
    interval: float = 0.0
    concurrency: int = 1


@dataclass
class LoadResult:
    """Statuses, error codes and latencies (seconds) of the responses inside the window."""

    window_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # Every response, warm-up included.
    all_statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    transport_error_samples: list[str] = field(default_factory=list)
    exhausted_clients: int = 0
    # Requests each client sent (its n reached), warm-up included.
    sent: dict[int, int] = field(default_factory=dict)
    client_cpu_seconds: float = 0.0
    processes: int = 0
    last_done: float = 0.0
    # The processes' ResponseTally copies merged (None when run_load was given none).
    tally: ResponseTally | None = None

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.completed / self.window_seconds if self.window_seconds > 0 else math.nan

    def count(self, low: int, high: int) -> int:
        """Responses inside the window with low <= status < high."""
        return sum(n for status, n in self.statuses.items() if low <= status < high)

    def merge(self, other: "LoadResult") -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.all_statuses.update(other.all_statuses)
        self.transport_errors += other.transport_errors
        self.transport_error_samples += other.transport_error_samples[:5]
        self.exhausted_clients += other.exhausted_clients
        self.sent.update(other.sent)
        self.client_cpu_seconds += other.client_cpu_seconds
        self.processes += other.processes
        self.last_done = max(self.last_done, other.last_done)
        if other.tally is not None:
            if self.tally is None:
                self.tally = copy.deepcopy(other.tally)
            else:
                self.tally.merge(other.tally)

    def summary(self) -> dict[str, Any]:
        return {
            "completed_in_window": self.completed,
            "window_seconds": round(self.window_seconds, 3),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(sorted(self.errors.items())),
            "all_statuses": {str(k): v for k, v in sorted(self.all_statuses.items())},
            "transport_errors": self.transport_errors,
            "transport_error_samples": self.transport_error_samples[:5],
            "exhausted_clients": self.exhausted_clients,
            "client_processes": self.processes,
            "client_cpu_seconds": round(self.client_cpu_seconds, 3),
        }


# --- inside a worker process -----------------------------------------------------------


def raise_open_file_limit() -> int:
    """Raises this process's open-file limit to its hard limit (thousands of connections
    per process); returns the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _client(
    spec: LoadSpec, client: int, conn: HttpConnection, start: float, result: LoadResult
) -> None:
    window_start = start + spec.warmup
    window_end = window_start + spec.duration if spec.duration is not None else math.inf
    phase = client / spec.concurrency
    n = 0
    try:
        while True:
            if spec.interval:
                due = start + (n + phase) * spec.interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() >= window_end:
                break
            raw = spec.source.request(client, n)
            if raw is None:
                result.exhausted_clients += 1
                return
            n += 1
            result.sent[client] = n
            if conn.closed:
                await conn.close()
                conn = await HttpConnection.open(spec.host, spec.port)
            sent = time.monotonic()
            try:
                status, body = await conn.send(raw)
            except ProtocolError:
                if not conn.closed:
                    raise
                # The server had closed this idle keep-alive connection: send again once.
                await conn.close()
                conn = await HttpConnection.open(spec.host, spec.port)
                sent = time.monotonic()
                status, body = await conn.send(raw)
            done = time.monotonic()
            result.all_statuses[status] += 1
            result.last_done = max(result.last_done, done)
            measured = window_start <= done < window_end
            if measured:
                result.latencies.append(done - sent)
                result.statuses[status] += 1
                if status >= 300:
                    result.errors[f"{status} {error_code(body)}"] += 1
            if result.tally is not None:
                result.tally.add(client, status, body, done - sent, measured)
    except (OSError, ProtocolError, asyncio.IncompleteReadError, ValueError) as exc:
        result.transport_errors += 1
        result.transport_error_samples.append(f"client {client}: {exc!r}")
    finally:
        await conn.close()


async def _worker(
    spec: LoadSpec,
    messages: "multiprocessing.Queue[tuple[str, Any]]",
    go: Any,
    start_at: "Synchronized[float]",
) -> LoadResult:
    conns = await asyncio.gather(*(HttpConnection.open(spec.host, spec.port) for _ in spec.clients))
    messages.put(("ready", len(conns)))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    start = start_at.value
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu0 = _cpu_seconds()
    result = LoadResult(processes=1, tally=spec.tally)
    await asyncio.gather(
        *(
            _client(spec, c, conn, start, result)
            for c, conn in zip(spec.clients, conns, strict=True)
        )
    )
    result.client_cpu_seconds = _cpu_seconds() - cpu0
    return result


def _worker_main(
    spec: LoadSpec,
    messages: "multiprocessing.Queue[tuple[str, Any]]",
    go: Any,
    start_at: "Synchronized[float]",
) -> None:
    try:
        try:
            import uvloop

            result = uvloop.run(_worker(spec, messages, go, start_at))
        except ImportError:
            result = asyncio.run(_worker(spec, messages, go, start_at))
        messages.put(("result", result))
    except BaseException:
        messages.put(("error", traceback.format_exc()))


# --- in the harness --------------------------------------------------------------------


def run_load(
    host: str,
    port: int,
    source: RequestSource,
    concurrency: int,
    *,
    warmup: float = 0.0,
    duration: float | None,
    processes: int = 1,
    timeout: float = 120.0,
    tally: ResponseTally | None = None,
    interval: float = 0.0,
) -> LoadResult:
    """Blocking (call it with ``asyncio.to_thread``): ``concurrency`` connections spread over
    ``processes`` worker processes; client ids are 0 … concurrency-1. ``tally``: see
    ``ResponseTally`` (the result's ``tally`` is a merged copy; the one given is not
    changed). ``interval``: each client sends at most one request per ``interval`` seconds,
    the clients evenly staggered (``concurrency / interval`` requests a second at most)."""
    processes = max(1, min(processes, concurrency))
    ctx = multiprocessing.get_context("spawn")
    messages: multiprocessing.Queue[tuple[str, Any]] = ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    specs = [
        LoadSpec(
            host,
            port,
            source,
            tuple(range(p, concurrency, processes)),
            warmup,
            duration,
            tally,
            interval,
            concurrency,
        )
        for p in range(processes)
    ]
    workers = [
        ctx.Process(target=_worker_main, args=(spec, messages, go, start_at), daemon=True)
        for spec in specs
    ]
    for worker in workers:
        worker.start()
    try:
        wait_for_reports(messages, "ready", processes, 60.0)
        start = time.monotonic() + 0.05
        start_at.value = start
        go.set()
        budget = warmup + (duration if duration is not None else 0.0) + timeout
        parts = wait_for_reports(messages, "result", processes, budget)
    finally:
        go.set()
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
    total = LoadResult()
    for part in parts:
        total.merge(part)
    total.window_seconds = duration if duration is not None else max(0.0, total.last_done - start)
    return total


def wait_for_reports(
    messages: "multiprocessing.Queue[tuple[str, Any]]",
    kind: str,
    count: int,
    timeout: float,
    alive: Callable[[], bool] | None = None,
) -> list[Any]:
    """Blocks until ``count`` (tag, value) reports tagged ``kind`` arrived and returns their
    values; a worker's ``error`` report raises RuntimeError, silence past ``timeout``
    TimeoutError, and so does ``alive()`` turning false (a worker died)."""
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count:
        wait = max(0.1, deadline - time.monotonic())
        try:
            tag, value = messages.get(timeout=min(wait, 1.0) if alive else wait)
        except queue.Empty:
            if alive is not None and alive() and time.monotonic() < deadline:
                continue
            problem = "died" if alive is not None and not alive() else "did not report"
            raise TimeoutError(f"load worker(s) {problem} ({kind!r})") from None
        if tag == "error":
            raise RuntimeError(f"load worker failed:\n{value}")
        if tag == kind:
            got.append(value)
        if time.monotonic() > deadline and len(got) < count:
            raise TimeoutError(f"load worker(s) did not report {kind!r} in time")
    return got
