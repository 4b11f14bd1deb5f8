"""The ``parkspot`` command line, run in a worker thread because it calls asyncio.run itself."""

import io
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select

from parkspot import demo
from parkspot.cli import main
from parkspot.config import Settings, get_settings
from parkspot.models import Lot, Operator, OperatorMember, Spot, User, Vehicle
from parkspot.state import AppState

ADMIN_PASSWORD = "a-long-admin-password"
SEEDED_TABLES = (Operator, Lot, Spot, User, OperatorMember, Vehicle)


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Points the CLI's ``get_settings()`` at the test database through the environment."""
    monkeypatch.setenv("PARKSPOT_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("PARKSPOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("PARKSPOT_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("PARKSPOT_PASSWORD_HASH_MEMORY_KIB", str(settings.password_hash_memory_kib))
    monkeypatch.setenv("PARKSPOT_PASSWORD_HASH_TIME_COST", str(settings.password_hash_time_cost))
    monkeypatch.delenv("PARKSPOT_ENV", raising=False)
    if settings.redis_url:
        monkeypatch.setenv("PARKSPOT_REDIS_URL", settings.redis_url)
    else:
        monkeypatch.delenv("PARKSPOT_REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def run_cli(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


async def row_counts(state: AppState) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with state.database.session(write=False) as session:
        for model in SEEDED_TABLES:
            stmt = select(func.count()).select_from(model)
            counts[model.__name__] = (await session.execute(stmt)).scalar_one()
    return counts


@pytest.mark.usefixtures("cli_env")
async def test_create_admin_without_prompts_makes_an_admin_who_can_log_in(
    client: httpx.AsyncClient,
) -> None:
    code = await run_cli(
        "create-admin",
        "--username",
        "root",
        "--email",
        "Root@Example.com",
        "--password",
        ADMIN_PASSWORD,
    )
    assert code == 0

    response = await login(client, "root@example.com", ADMIN_PASSWORD)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "admin"
    assert me.json()["email"] == "root@example.com"


@pytest.mark.usefixtures("cli_env", "app")
async def test_create_admin_with_a_taken_username_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["create-admin", "--username", "root", "--password", ADMIN_PASSWORD]
    assert await run_cli(*argv, "--email", "root@example.com") == 0
    capsys.readouterr()

    assert await run_cli(*argv, "--email", "other@example.com") != 0
    assert "username 'root' is already registered" in capsys.readouterr().err


@pytest.mark.usefixtures("cli_env", "app")
async def test_create_admin_reads_the_password_from_stdin(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(ADMIN_PASSWORD + "\n"))
    code = await run_cli(
        "create-admin", "--username", "ops", "--email", "ops@example.com", "--password-stdin"
    )
    assert code == 0
    assert (await login(client, "ops", ADMIN_PASSWORD)).status_code == 200


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--email", "a@example.com", "--password", ADMIN_PASSWORD], "--username is required"),
        (["--username", "admin", "--email", "a@example.com"], "--password or --password-stdin"),
        (["--username", "admin", "--email", "a@example.com", "--password", "short"], "password"),
        (["--username", "admin", "--email", "nope", "--password", ADMIN_PASSWORD], "email"),
    ],
)
def test_create_admin_without_a_terminal_rejects_missing_or_bad_values(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["create-admin", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("cli_env")
async def test_seed_demo_twice_changes_nothing_and_prints_passwords_once(
    client: httpx.AsyncClient, state: AppState, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("seed-demo") == 0
    first = capsys.readouterr().out
    counts = await row_counts(state)
    assert counts["Operator"] == 1
    assert counts["Lot"] == len(demo.LOTS)
    assert counts["Spot"] == sum(b.count for lot in demo.LOTS for b in lot.blocks)
    assert counts["User"] == len(demo.ACCOUNTS)

    # "  driver   username demo-driver   password <secret>"
    credentials = {
        parts[2]: parts[4]
        for line in first.splitlines()
        if (parts := line.split())[1:2] == ["username"]
    }
    assert set(credentials) == {a.username for a in demo.ACCOUNTS}

    assert await run_cli("seed-demo") == 0
    second = capsys.readouterr().out
    assert await row_counts(state) == counts
    assert "already present" in second
    assert "passkey:" not in second
    for password in credentials.values():
        assert password not in second

    response = await login(client, demo.DRIVER.username, credentials[demo.DRIVER.username])
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert len(me.json()["operator_ids"]) == 1


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_run(app: str, **kwargs: Any) -> None:
        calls.append({"app": app, **kwargs})

    monkeypatch.setattr("uvicorn.run", fake_run)
    return calls


@pytest.fixture
def serve_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PARKSPOT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PARKSPOT_ENV", raising=False)
    monkeypatch.delenv("PARKSPOT_HOST", raising=False)
    monkeypatch.delenv("PARKSPOT_PORT", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("serve_env")
def test_serve_refuses_several_workers_without_redis(
    no_uvicorn: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PARKSPOT_REDIS_URL", raising=False)
    assert main(["serve", "--workers", "2"]) == 2
    assert "PARKSPOT_REDIS_URL" in capsys.readouterr().err
    assert no_uvicorn == []


@pytest.mark.usefixtures("serve_env")
def test_serve_runs_the_app_factory_with_several_workers_when_redis_is_set(
    no_uvicorn: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARKSPOT_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert main(["serve", "--workers", "3", "--port", "8123"]) == 0
    [call] = no_uvicorn
    assert call["app"] == "parkspot.app:create_app"
    assert call["factory"] is True
    assert (call["host"], call["port"], call["workers"]) == ("127.0.0.1", 8123, 3)
    # X-Forwarded-For is believed by the app, from PARKSPOT_TRUSTED_PROXIES only.
    assert call["proxy_headers"] is False


def test_migrate_creates_the_sqlite_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nested" / "parkspot.db"
    monkeypatch.setenv("PARKSPOT_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("PARKSPOT_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert main(["migrate"]) == 0
    finally:
        get_settings.cache_clear()
    with closing(sqlite3.connect(path)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"users", "operators", "lots", "spots"} <= tables
