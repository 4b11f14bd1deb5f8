"""Real ``parkspot serve`` and ``redis-server`` processes for end-to-end tests, a small SSE
client, a Redis proxy that can swallow traffic, and helpers that make test data."""

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlmodel import col, select
from websockets.asyncio.client import ClientConnection, connect

from parkspot.config import Settings
from parkspot.db.engine import create_engine
from parkspot.db.migrations import upgrade
from parkspot.db.session import Database
from parkspot.models import (
    Lot,
    LotAvailability,
    MembershipRole,
    Operator,
    OperatorMember,
    Role,
    User,
)
from tests.conftest import PASSWORD, PG_ADMIN_URL, REDIS_URL, empty_database, pg_admin_execute

LOOPBACK = "127.0.0.1"
# Next to the interpreter running the tests: the virtualenv's console script.
PARKSPOT = Path(sys.executable).with_name("parkspot")
SECRET_KEY = "parkspot-live-tests-secret-key-0123456789abcdef"
READY_SECONDS = 60.0
# How long a test waits for something it expects (an event, a state); generous because
# the machine is shared.
WAIT = 15.0
HTTP_TIMEOUT = httpx.Timeout(WAIT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _append_log(path: Path) -> IO[bytes]:
    return path.open("ab")


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def unique_prefix() -> str:
    """A Redis key prefix of one test's own, so runs sharing a Redis never meet."""
    return f"parkspot-test-{os.getpid()}-{secrets.token_hex(4)}"


async def delete_redis_keys(url: str, prefix: str) -> None:
    redis = Redis.from_url(url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


# --- databases -------------------------------------------------------------------------


@contextmanager
def migrated_template(folder: Path) -> Iterator[str]:
    """A database of the configured backend migrated to head, for ``database_from`` to
    copy; dropped afterwards. Blocking: use it from a synchronous fixture."""
    with empty_database(folder) as url:
        upgrade(url)
        yield url


@asynccontextmanager
async def database_from(template: str, folder: Path) -> AsyncIterator[str]:
    """A database of one test's own, copied from ``template``: a file next to the test's
    servers, or a PostgreSQL database made with ``TEMPLATE`` (dropped afterwards). Never
    the shared test database, which the in-process tests truncate."""
    if PG_ADMIN_URL:
        name = f"parkspot_live_{os.getpid()}_{secrets.token_hex(4)}"
        source = make_url(template)
        await pg_admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{source.database}"')
        try:
            yield source.set(database=name).render_as_string(hide_password=False)
        finally:
            await pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        path = folder / "parkspot.db"
        shutil.copyfile(make_url(template).database or "", path)
        yield f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def direct_database(url: str) -> AsyncIterator[Database]:
    """The servers' database opened by the test itself, for what the API cannot do (roles,
    operators) or cannot do fast enough (hundreds of lots)."""
    database = Database(create_engine(Settings(database_url=url)))
    try:
        yield database
    finally:
        await database.dispose()


async def create_operator(database: Database, name: str | None = None) -> int:
    async with database.transaction() as session:
        operator = Operator(name=name or f"Operator {secrets.token_hex(4)}")
        session.add(operator)
        await session.flush()
        assert operator.id is not None
        return operator.id


async def grant(database: Database, user_id: int, role: Role, manages: Sequence[int] = ()) -> None:
    """Gives the user a role and makes them a manager of ``manages``, as an admin would."""
    async with database.transaction() as session:
        await session.execute(update(User).where(col(User.id) == user_id).values(role=role))
        for operator_id in manages:
            session.add(
                OperatorMember(
                    operator_id=operator_id, user_id=user_id, role=MembershipRole.manager
                )
            )


async def insert_lots(database: Database, operator_id: int, count: int) -> None:
    """``count`` public lots with the longest names allowed and no spots, straight into the
    database: a server started afterwards counts them into its first snapshot."""
    async with database.transaction() as session:
        session.add_all(
            Lot(
                operator_id=operator_id,
                name=(f"{n:06d} " + "Parking lot with a long name " * 5)[:120],
                address=f"{n} Long Street",
                latitude=45.0 + n / 10_000,
                longitude=5.0,
                hourly_rate=Decimal("2.00"),
            )
            for n in range(count)
        )


async def recorded_version(database: Database, lot_id: int) -> int:
    """The version of the lot's record committed by the servers (0 before the first)."""
    async with database.session(write=False) as session:
        stmt = select(LotAvailability.version).where(col(LotAvailability.lot_id) == lot_id)
        version = (await session.execute(stmt)).scalar_one_or_none()
        return version or 0


# --- redis-server ----------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on a free port, without persistence: killed and started
    again on the same port it comes back empty, as after a crash."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.log_path = folder / f"redis-{self.port}.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def start(self) -> None:
        args = ["--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.folder)]
        with _append_log(self.log_path) as log:
            self.process = await asyncio.create_subprocess_exec(
                "redis-server", *args, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + WAIT
        client = Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"redis-server exited:\n{tail(self.log_path)}")
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server not answering:\n{tail(self.log_path)}")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """SIGKILL: everything it held is gone."""
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            await process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@asynccontextmanager
async def private_redis(folder: Path) -> AsyncIterator[RedisServer]:
    redis = RedisServer(folder)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.kill()


class SwallowingProxy:
    """A TCP proxy in front of a Redis server. After ``swallow`` whatever its clients send
    is dropped instead of forwarded, so a client that has just written a command waits for
    an answer the way it would if the process had died right after the write, and Redis
    never sees the command (a stopped redis-server would still run it once resumed)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.swallowing = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def swallow(self) -> None:
        self.swallowing = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: bool
        ) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if upstream and self.swallowing:
                        continue
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        self._writers.difference_update((writer, up_writer))

    async def close(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# --- parkspot serve --------------------------------------------------------------------


@dataclass
class LiveServer:
    """One ``parkspot serve`` process. ``settings`` are extra PARKSPOT_* variables without
    the prefix (``{"STREAM_KEEPALIVE_SECONDS": "1"}``)."""

    database_url: str
    folder: Path
    redis_url: str | None = None
    redis_key_prefix: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    name: str = "server"
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{LOOPBACK}:{self.port}{path}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}-{self.port}.log"

    def environment(self) -> dict[str, str]:
        """This process's environment without any PARKSPOT_* setting, plus the server's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARKSPOT_")}
        env |= {
            "PARKSPOT_DATABASE_URL": self.database_url,
            "PARKSPOT_SECRET_KEY": SECRET_KEY,
            "PARKSPOT_DATA_DIR": str(self.folder / "data"),
            "PARKSPOT_LOG_LEVEL": "warning",
            "PARKSPOT_PASSWORD_HASH_MEMORY_KIB": "1024",
            "PARKSPOT_PASSWORD_HASH_TIME_COST": "1",
            # Tests sign many users up and in from one address.
            "PARKSPOT_RATE_LIMIT_LOGIN_PER_ACCOUNT": "0",
            "PARKSPOT_RATE_LIMIT_LOGIN_PER_ADDRESS": "0",
            "PARKSPOT_RATE_LIMIT_REGISTER_PER_ADDRESS": "0",
        }
        if self.redis_url:
            env["PARKSPOT_REDIS_URL"] = self.redis_url
        if self.redis_key_prefix:
            env["PARKSPOT_REDIS_KEY_PREFIX"] = self.redis_key_prefix
        env |= {f"PARKSPOT_{name}": value for name, value in self.settings.items()}
        return env

    async def start(self) -> None:
        """Starts the process (working directory: the test's folder, so no ``.env`` is
        read) and waits until /readyz answers 200."""
        args = [str(PARKSPOT), "serve", "--host", LOOPBACK, "--port", str(self.port)]
        with _append_log(self.log_path) as log:
            self.process = await asyncio.create_subprocess_exec(
                *args,
                env=self.environment(),
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_SECONDS
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as http:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited:\n{tail(self.log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz", timeout=2)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready:\n{tail(self.log_path)}")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGINT (uvicorn's graceful shutdown), then SIGKILL if it hangs."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), WAIT)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the process dies."""
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors(self) -> list[str]:
        """Lines of the log that report an error (ERROR records, tracebacks)."""
        return [line for line in self.log().splitlines() if "ERROR" in line or "Traceback" in line]


@asynccontextmanager
async def running(*servers: LiveServer) -> AsyncIterator[None]:
    """Starts the servers in turn and stops them all on the way out; a failure inside
    gets the end of each server's log attached."""
    started: list[LiveServer] = []
    try:
        for server in servers:
            started.append(server)
            await server.start()
        yield
    except BaseException as exc:
        for server in started:
            exc.add_note(f"--- {server.name} log ---\n{tail(server.log_path)}")
        raise
    finally:
        for server in reversed(started):
            await server.stop()


@asynccontextmanager
async def http_client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=HTTP_TIMEOUT, trust_env=False
    ) as http:
        yield http


@dataclass(frozen=True)
class Stack:
    """A running server, an HTTP client of it, and its database opened by the test."""

    server: LiveServer
    http: httpx.AsyncClient
    database: Database


@asynccontextmanager
async def single_server(
    template: str,
    folder: Path,
    settings: Mapping[str, str] | None = None,
    before_start: Callable[[Database], Awaitable[object]] | None = None,
) -> AsyncIterator[Stack]:
    """One server on a database of its own (given to ``before_start`` first); with the
    shared test Redis (PostgreSQL pass) under a key prefix of its own, deleted afterwards,
    else with the in-process bus."""
    prefix = unique_prefix()
    try:
        async with database_from(template, folder) as url, direct_database(url) as database:
            if before_start is not None:
                await before_start(database)
            server = LiveServer(
                url, folder, REDIS_URL, prefix if REDIS_URL else None, settings or {}
            )
            async with running(server), http_client(server) as http:
                yield Stack(server, http, database)
    finally:
        if REDIS_URL:
            await delete_redis_keys(REDIS_URL, prefix)


# --- server-sent events ----------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseStream:
    """Reads an ``text/event-stream`` response: ``lines`` keeps every line in order,
    ``comments`` the comment lines, ``retry`` the last retry hint."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.lines: list[str] = []
        self.comments: list[str] = []
        self.retry: int | None = None
        self.ended = False
        self._ready: deque[SseEvent] = deque()
        self._id: str | None = None
        self._name: str | None = None
        self._data: list[str] = []

    async def _read_line(self) -> bool:
        """Reads and parses one line; False once the stream has ended."""
        try:
            line = await anext(self._lines)
        except StopAsyncIteration:
            self.ended = True
            return False
        self.lines.append(line)
        if line == "":
            # A blank line dispatches the event; a block without data (the retry hint)
            # is no event.
            if self._data:
                self._ready.append(SseEvent(self._id, self._name, "\n".join(self._data)))
            self._id, self._name, self._data = None, None, []
        elif line.startswith(":"):
            self.comments.append(line)
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "id":
                self._id = value
            elif key == "event":
                self._name = value
            elif key == "data":
                self._data.append(value)
            elif key == "retry":
                self.retry = int(value)
        return True

    async def next_event(self, within: float = WAIT) -> SseEvent:
        async with asyncio.timeout(within):
            while not self._ready:
                if not await self._read_line():
                    raise AssertionError(f"the stream ended; it sent:\n{self.lines}")
        return self._ready.popleft()

    async def until(
        self, accept: Callable[[SseEvent], bool], within: float = WAIT
    ) -> tuple[SseEvent, list[SseEvent]]:
        """The first event ``accept`` takes, and the events that came before it."""
        before: list[SseEvent] = []
        async with asyncio.timeout(within):
            while True:
                event = await self.next_event(within)
                if accept(event):
                    return event, before
                before.append(event)

    async def record(
        self, lot_id: int, accept: Callable[[dict[str, Any]], bool], within: float = WAIT
    ) -> dict[str, Any]:
        """The first ``availability`` record of the lot that ``accept`` takes."""

        def wanted(event: SseEvent) -> bool:
            if event.event != "availability":
                return False
            lot: dict[str, Any] = event.json()
            return lot["lot_id"] == lot_id and accept(lot)

        event, _ = await self.until(wanted, within)
        lot: dict[str, Any] = event.json()
        return lot

    async def comments_until(self, count: int, within: float = WAIT) -> None:
        """Reads on (keeping events for ``next_event``) until ``count`` comments came."""
        async with asyncio.timeout(within):
            while len(self.comments) < count:
                if not await self._read_line():
                    raise AssertionError(f"the stream ended; it sent:\n{self.lines}")

    async def rest(self, within: float = WAIT) -> list[SseEvent]:
        """Every event until the server ends the stream."""
        async with asyncio.timeout(within):
            while await self._read_line():
                pass
        events = list(self._ready)
        self._ready.clear()
        return events


@asynccontextmanager
async def open_sse(
    server: LiveServer,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[SseStream]:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=HTTP_TIMEOUT, trust_env=False) as http,
        http.stream(
            "GET", "/api/v1/availability/stream", params=params, headers=headers
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseStream(response)


# --- WebSockets ------------------------------------------------------------------------


@asynccontextmanager
async def open_ws(server: LiveServer, path: str) -> AsyncIterator[ClientConnection]:
    async with connect(
        server.ws_url(path), proxy=None, compression=None, open_timeout=WAIT, ping_interval=None
    ) as ws:
        yield ws


async def receive_json(ws: ClientConnection, within: float = WAIT) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return message


# --- test data through the API ---------------------------------------------------------


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Site:
    """A lot with its spots and a manager of its operator."""

    operator_id: int
    manager: Account
    lot_id: int
    spot_ids: list[int]


@dataclass(frozen=True)
class Driver:
    account: Account
    vehicle_id: int

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers


async def sign_up(http: httpx.AsyncClient, username: str | None = None) -> Account:
    username = username or f"user-{secrets.token_hex(5)}"
    response = await http.post(
        "/api/v1/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    user_id: int = response.json()["id"]
    return Account(user_id, username, await sign_in(http, username))


async def sign_in(http: httpx.AsyncClient, username: str) -> str:
    response = await http.post(
        "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def make_site(
    http: httpx.AsyncClient,
    database: Database,
    spots: int = 3,
    *,
    operator_id: int | None = None,
    manager: Account | None = None,
    **lot: Any,
) -> Site:
    """A lot (public, near Lyon unless overridden) with ``spots`` spots, its operator
    and a manager; the operator and the manager's role are written to the database."""
    if operator_id is None:
        operator_id = await create_operator(database)
    if manager is None:
        account = await sign_up(http)
        await grant(database, account.id, Role.manager, (operator_id,))
        manager = Account(account.id, account.username, await sign_in(http, account.username))
    body = {
        "operator_id": operator_id,
        "name": f"Lot {secrets.token_hex(3)}",
        "address": "1 Place Bellecour, Lyon",
        "latitude": 45.7578,
        "longitude": 4.8320,
        "hourly_rate": "2.50",
        "visibility": "public",
    } | lot
    response = await http.post("/api/v1/lots", json=body, headers=manager.headers)
    assert response.status_code == 201, response.text
    lot_id: int = response.json()["id"]
    spot_ids: list[int] = []
    if spots:
        response = await http.post(
            f"/api/v1/lots/{lot_id}/spots",
            json={"prefix": "A", "count": spots},
            headers=manager.headers,
        )
        assert response.status_code == 201, response.text
        spot_ids = [spot["id"] for spot in response.json()["items"]]
    # Counted once the server's engine has caught up with both commits.
    await wait_for_availability(
        http, lot_id, lambda record: record["capacity"] == spots, headers=manager.headers
    )
    return Site(operator_id, manager, lot_id, spot_ids)


async def make_driver(http: httpx.AsyncClient) -> Driver:
    account = await sign_up(http)
    response = await http.post(
        "/api/v1/vehicles",
        json={"plate": f"T{secrets.token_hex(4).upper()}"},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return Driver(account, response.json()["id"])


def now() -> datetime:
    return datetime.now(UTC)


async def book(
    http: httpx.AsyncClient,
    driver: Driver,
    *,
    lot_id: int | None = None,
    spot_id: int | None = None,
    starts_at: datetime | None = None,
    minutes: int = 60,
) -> dict[str, Any]:
    """Books from ``starts_at`` (now by default) for ``minutes``; asserts 201."""
    start = starts_at or now()
    body: dict[str, Any] = {
        "vehicle_id": driver.vehicle_id,
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=minutes)).isoformat(),
    }
    body |= {"lot_id": lot_id} if spot_id is None else {"spot_id": spot_id}
    response = await http.post("/api/v1/reservations", json=body, headers=driver.headers)
    assert response.status_code == 201, response.text
    reservation: dict[str, Any] = response.json()
    return reservation


async def cancel(http: httpx.AsyncClient, driver: Driver, reservation_id: int) -> None:
    response = await http.post(
        f"/api/v1/reservations/{reservation_id}/cancel", headers=driver.headers
    )
    assert response.status_code == 200, response.text


async def availability(
    http: httpx.AsyncClient, lot_id: int, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    response = await http.get(f"/api/v1/availability/{lot_id}", headers=headers)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def wait_for_availability(
    http: httpx.AsyncClient,
    lot_id: int,
    accept: Callable[[dict[str, Any]], bool],
    within: float = WAIT,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Polls the server's record of the lot until ``accept`` takes it."""
    async with asyncio.timeout(within):
        while True:
            response = await http.get(f"/api/v1/availability/{lot_id}", headers=headers)
            if response.status_code == 200:
                record: dict[str, Any] = response.json()
                if accept(record):
                    return record
            await asyncio.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    """Polls ``check`` until it is true."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


def unique_place() -> tuple[float, float]:
    """A random (latitude, longitude): lots a test puts there are alone in a small box."""
    return (secrets.randbelow(120_000) / 1000 - 60, secrets.randbelow(340_000) / 1000 - 170)


def box_around(latitude: float, longitude: float, margin: float = 0.01) -> list[float]:
    """``[min_lon, min_lat, max_lon, max_lat]`` around the point."""
    return [longitude - margin, latitude - margin, longitude + margin, latitude + margin]


def is_reserved(count: int) -> Callable[[Mapping[str, Any]], bool]:
    return lambda record: record["reserved"] == count


def counts(record: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(free, reserved, occupied, out of service) of a record."""
    return (record["free"], record["reserved"], record["occupied"], record["out_of_service"])
