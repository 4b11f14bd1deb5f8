"""Test harness: one migrated database per run (SQLite or PostgreSQL), reset per test.

The backend comes from the environment:
- nothing set: SQLite files under a temporary folder, in-process cache and bus;
- ``PARKSPOT_TEST_DATABASE_URL`` (a PostgreSQL server URL; a database of its own is created
  and dropped) and ``PARKSPOT_TEST_REDIS_URL``.
"""

import asyncio
import inspect
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from parkspot.app import create_app
from parkspot.config import Settings
from parkspot.db.migrations import upgrade
from parkspot.models import MembershipRole, Operator, OperatorMember, Role, User, metadata
from parkspot.state import AppState

PG_ADMIN_URL = os.environ.get("PARKSPOT_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("PARKSPOT_TEST_REDIS_URL") or None
PASSWORD = "correct-horse-battery"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Marks every async test for anyio before anyio's own collection hook looks for it."""
    if inspect.iscoroutinefunction(obj) and name.startswith("test"):
        pytest.mark.anyio(obj)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The embedded pass leaves out the tests of the PostgreSQL pass (deselected, so they
    are neither run nor counted as skipped)."""
    if PG_ADMIN_URL:
        return
    left_out = [item for item in items if item.get_closest_marker("postgresql_pass")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]


def pytest_report_header() -> str:
    backend = "postgresql" if PG_ADMIN_URL else "sqlite"
    return f"parkspot backend: {backend} + {'redis' if REDIS_URL else 'in-process'} cache/bus"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_admin_execute(sql: str) -> None:
    """Runs one statement on the PostgreSQL server's admin database."""
    conn = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def empty_database(folder: Path) -> Iterator[str]:
    """A new, empty database of the configured backend, dropped afterwards."""
    if PG_ADMIN_URL:
        name = f"parkspot_test_{os.getpid()}_{secrets.token_hex(4)}"
        asyncio.run(pg_admin_execute(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            asyncio.run(pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        yield f"sqlite+aiosqlite:///{folder / 'parkspot.db'}"


@pytest.fixture(scope="module")
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database migrated once per test module, which the module's real servers copy."""
    # Imported here: tests.live_server imports this module.
    from tests.live_server import migrated_template

    name = request.module.__name__.rsplit(".", 1)[-1]
    with migrated_template(tmp_path_factory.mktemp(f"{name}-template")) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a database migrated to head once for the whole run."""
    with empty_database(tmp_path_factory.mktemp("template")) as url:
        upgrade(url)
        yield url


@pytest.fixture
def database_url(migrated_database: str, tmp_path: Path) -> str:
    """A migrated database with no rows: a copied SQLite file, or the PostgreSQL test
    database (emptied by the ``app`` fixture)."""
    if PG_ADMIN_URL:
        return migrated_database
    path = tmp_path / "parkspot.db"
    shutil.copyfile(make_url(migrated_database).database or "", path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        data_dir=tmp_path,
        secret_key=secrets.token_urlsafe(48),
        password_hash_memory_kib=1024,
        password_hash_time_cost=1,
        redis_key_prefix=f"parkspot-test-{os.getpid()}-{secrets.token_hex(4)}",
        # Tests run the sweeper and the time boundaries themselves, when they choose.
        sweep_interval_seconds=3600,
        availability_tick_seconds=3600,
        # Every test signs in from one address, many times: limits on, but out of reach
        # (tests/test_abuse_limits.py lowers them).
        rate_limit_login_per_account=100_000,
        rate_limit_login_per_address=100_000,
        rate_limit_register_per_address=100_000,
    )


async def empty_tables(database_url: str) -> None:
    """Deletes every row of a PostgreSQL database, ids going on from where they were
    (twenty times faster than TRUNCATE, which matters once per test)."""
    conn = await asyncpg.connect(_asyncpg_dsn(database_url))
    try:
        async with conn.transaction():
            for table in reversed(metadata.sorted_tables):
                await conn.execute(f'DELETE FROM "{table.name}"')
    finally:
        await conn.close()


async def delete_redis_keys(settings: Settings) -> None:
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{settings.redis_key_prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app, started (its lifespan run) on an empty database; with Redis, its keys
    (under a prefix of the test's own) are deleted afterwards."""
    if PG_ADMIN_URL:
        await empty_tables(settings.effective_database_url)
    application = create_app(settings)
    try:
        async with LifespanManager(application):
            yield application
    finally:
        if settings.redis_url:
            await delete_redis_keys(settings)


@pytest.fixture
def state(app: FastAPI) -> AppState:
    parkspot_state: AppState = app.state.parkspot
    return parkspot_state


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@dataclass
class Actor:
    """A signed-in user as a test sees it."""

    id: int
    username: str
    email: str
    headers: dict[str, str]


MakeUser = Callable[..., Awaitable[Actor]]


async def sign_up(
    client: httpx.AsyncClient,
    state: AppState,
    username: str,
    role: Role = Role.driver,
    manages: tuple[int, ...] = (),
) -> Actor:
    """Registers and signs in a user; ``role`` and ``manages`` (operator ids) are set
    directly in the database, the way an admin or `parkspot create-admin` would."""
    email = f"{username}@example.com"
    response = await client.post(
        "/api/v1/auth/register",
        json={"username": username, "email": email, "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    if role != Role.driver or manages:
        async with state.database.transaction() as session:
            user = await session.get(User, user_id)
            assert user is not None
            user.role = role
            for operator_id in manages:
                session.add(
                    OperatorMember(
                        operator_id=operator_id, user_id=user_id, role=MembershipRole.manager
                    )
                )
    login = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    return Actor(user_id, username, email, {"Authorization": f"Bearer {token}"})


@pytest.fixture
def make_user(client: httpx.AsyncClient, state: AppState) -> MakeUser:
    """``sign_up`` with a fresh username unless one is given."""
    counter = 0

    async def make(
        role: Role = Role.driver, manages: tuple[int, ...] = (), username: str | None = None
    ) -> Actor:
        nonlocal counter
        counter += 1
        return await sign_up(client, state, username or f"{role.value}{counter}", role, manages)

    return make


MakeOperator = Callable[..., Awaitable[int]]


async def add_operator(state: AppState, name: str) -> int:
    async with state.database.transaction() as session:
        operator = Operator(name=name)
        session.add(operator)
        await session.flush()
        assert operator.id is not None
        return operator.id


@pytest.fixture
def make_operator(state: AppState) -> MakeOperator:
    counter = 0

    async def make(name: str | None = None) -> int:
        nonlocal counter
        counter += 1
        return await add_operator(state, name or f"Operator {counter}")

    return make


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The response is an error of that status in the one error shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
