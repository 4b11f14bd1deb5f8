"""Security defaults: headers on every response, CORS from the settings, what production
mode refuses, and secrets kept out of logs, settings' repr and error messages."""

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import text

from parkspot.app import create_app
from parkspot.config import Environment, Settings
from parkspot.db.session import Database
from parkspot.headers import API_POLICY, DOCS_POLICY, HSTS
from parkspot.models import Role, User
from parkspot.state import AppState
from tests.conftest import PASSWORD, MakeOperator, MakeUser, assert_error
from tests.device_helpers import SPOT_EVENTS, add_device
from tests.live_server import (
    open_ws,
    sign_in,
    sign_up,
    single_server,
)
from tests.reservation_helpers import make_site

LOGIN = "/api/v1/auth/login"
JSON = {"Content-Type": "application/json"}
ORIGIN = "https://map.example"


@asynccontextmanager
async def client_for(
    settings: Settings, *, raise_app_exceptions: bool = True, **changes: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings.model_copy(update=changes))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield app, http


def assert_security_headers(response: httpx.Response, *, hsts: bool = False) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff", headers
    assert headers["X-Frame-Options"] == "DENY", headers
    assert headers["Referrer-Policy"] == "no-referrer", headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], headers
    if hsts:
        assert headers["Strict-Transport-Security"] == HSTS, headers
    else:
        assert "Strict-Transport-Security" not in headers, headers


# --- security headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        pytest.param("GET", "/healthz", {}, 200, id="ok"),
        pytest.param("GET", "/nope", {}, 404, id="not-found"),
        pytest.param("GET", "/api/v1/users/me", {}, 401, id="unauthorized"),
        pytest.param("POST", LOGIN, {"json": {}}, 422, id="validation-error"),
        pytest.param(
            "POST", LOGIN, {"content": b"x" * 2_000_000, "headers": JSON}, 413, id="too-large"
        ),
        pytest.param("GET", "/api/v1/availability", {}, 200, id="availability-fast-path"),
        pytest.param("GET", "/api/v1/availability/stream?lot_id=x", {}, 422, id="stream-error"),
    ],
)
async def test_every_response_carries_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = await client.request(method, path, **kwargs)

    assert response.status_code == status, response.text
    assert_security_headers(response)
    assert response.headers["Content-Security-Policy"] == API_POLICY


async def test_the_availability_fast_path_answers_carry_the_security_headers(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/api/v1/availability")
    again = await client.get(
        "/api/v1/availability", headers={"If-None-Match": first.headers["ETag"]}
    )

    # Answered in front of the framework: no request id.
    assert "X-Request-ID" not in first.headers
    assert again.status_code == 304
    assert_security_headers(first)
    assert_security_headers(again)


async def test_an_unhandled_error_gets_a_500_with_the_security_headers(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="parkspot.errors")

    async def boom() -> None:
        raise RuntimeError("a bug")

    for env in (Environment.development, Environment.production):
        async with client_for(settings, raise_app_exceptions=False, env=env) as (app, http):
            app.add_api_route("/boom", boom)
            response = await http.get("/boom")

        assert_error(response, 500, "internal_error")
        assert_security_headers(response, hsts=env is Environment.production)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_the_interactive_docs_may_load_their_cdn_scripts_but_not_be_framed(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert_security_headers(response)
    # Swagger UI and ReDoc come from a CDN and start with an inline script.
    policy = response.headers["Content-Security-Policy"]
    assert policy == DOCS_POLICY
    assert "default-src" not in policy
    assert "script-src" not in policy
    if path != "/docs/oauth2-redirect":
        assert "cdn.jsdelivr.net" in response.text


async def test_production_adds_strict_transport_security(settings: Settings) -> None:
    async with client_for(settings, env=Environment.production) as (_, http):
        responses = [
            await http.get("/healthz"),
            await http.get("/nope"),
            await http.get("/api/v1/availability"),
            await http.get("/docs"),
        ]

    for response in responses:
        assert_security_headers(response, hsts=True)


# --- CORS ---------------------------------------------------------------------------------------


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }


async def test_cors_allows_the_configured_origins_only(settings: Settings) -> None:
    async with client_for(settings, cors_origins=[ORIGIN]) as (_, http):
        allowed = await http.options("/api/v1/reservations", headers=_preflight(ORIGIN))
        refused = await http.options(
            "/api/v1/reservations", headers=_preflight("https://evil.example")
        )
        # With an Origin, availability reads leave the fast path for the CORS layer.
        read = await http.get("/api/v1/availability", headers={"Origin": ORIGIN})
        other = await http.get("/api/v1/availability", headers={"Origin": "https://evil.example"})

    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in allowed.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    assert refused.status_code == 400
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert read.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "ETag" in read.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in other.headers
    assert_security_headers(allowed)


async def test_without_cors_origins_no_cors_headers_are_sent(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/api/v1/reservations", headers=_preflight(ORIGIN))
    read = await client.get("/api/v1/availability", headers={"Origin": ORIGIN})

    assert preflight.status_code == 405
    for response in (preflight, read):
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


def test_cors_origins_are_read_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARKSPOT_CORS_ORIGINS", f"{ORIGIN}, https://ops.example ,")

    assert Settings(_env_file=None).cors_origins == [ORIGIN, "https://ops.example"]


# --- production mode --------------------------------------------------------------------------

SECRET = "s3cret-" + "k" * 40
DB_PASSWORD = "db-pa55word-xyz"
DB_URL = f"postgresql+asyncpg://parkspot:{DB_PASSWORD}@db.internal:5432/parkspot"
REDIS_PASSWORD = "redis-pa55word-xyz"
REDIS = f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0"


def production(**changes: Any) -> Settings:
    fields: dict[str, Any] = {
        "env": "production",
        "secret_key": SECRET,
        "database_url": DB_URL,
        "redis_url": REDIS,
    }
    return Settings(_env_file=None, **(fields | changes))


def test_production_starts_with_a_long_secret_and_debug_off() -> None:
    settings = production()

    assert settings.env is Environment.production
    assert settings.debug is False


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        pytest.param({"debug": True}, "PARKSPOT_DEBUG", id="debug-on"),
        pytest.param({"secret_key": ""}, "PARKSPOT_SECRET_KEY", id="no-secret-key"),
        pytest.param({"secret_key": "k" * 31}, "PARKSPOT_SECRET_KEY", id="short-secret-key"),
    ],
)
def test_production_refuses_debug_settings(changes: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as refused:
        production(**changes)

    message = str(refused.value)
    assert complaint in message
    # The refusal does not quote the other settings.
    assert "input_value" not in message
    for secret in (SECRET, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in message


def test_development_accepts_debug_and_no_secret_key() -> None:
    settings = Settings(_env_file=None, debug=True)

    assert settings.env is Environment.development
    assert settings.debug is True


def test_the_settings_repr_shows_no_secret() -> None:
    settings = production()

    for shown in (repr(settings), str(settings)):
        for secret in (SECRET, DB_PASSWORD, REDIS_PASSWORD):
            assert secret not in shown
    assert "jwt_issuer" in repr(settings)


# --- secrets in logs ------------------------------------------------------------------------


async def test_database_errors_do_not_quote_the_statements_parameters(state: AppState) -> None:
    secret = secrets.token_urlsafe(16)

    with pytest.raises(Exception) as failed:  # noqa: PT011 - each backend has its own class
        async with state.database.session(write=False) as session:
            await session.execute(
                text("SELECT * FROM no_such_table WHERE name = :name"), {"name": secret}
            )

    assert "no_such_table" in str(failed.value)
    assert secret not in str(failed.value)


async def password_hash(database: Database, user_id: int) -> str:
    async with database.session(write=False) as session:
        user = await session.get(User, user_id)
        assert user is not None
        assert user.password_hash
        return user.password_hash


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record: its message, arguments, extras and traceback."""
    return "\n".join(
        f"{record.getMessage()} {record.__dict__!r} {record.exc_text or ''}"
        for record in caplog.records
    )


async def test_passwords_tokens_and_keys_are_never_logged(
    client: httpx.AsyncClient,
    state: AppState,
    make_user: MakeUser,
    make_operator: MakeOperator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = await make_user(Role.admin)
    passkey = "passkey-" + secrets.token_urlsafe(12)
    operator = await client.post(
        "/api/v1/operators", json={"name": "Fleet", "passkey": passkey}, headers=admin.headers
    )
    assert operator.status_code == 201, operator.text
    password = "pw-" + secrets.token_urlsafe(16)
    new_password = "pw-" + secrets.token_urlsafe(16)
    account = {"username": "carol", "email": "carol@example.com", "password": password}
    registered = await client.post("/api/v1/auth/register", json=account | {"passkey": passkey})
    assert registered.status_code == 201, registered.text
    assert_error(
        await client.post(LOGIN, json={"username": "carol", "password": password + "x"}),
        401,
    )
    token = (await client.post(LOGIN, json={"username": "carol", "password": password})).json()[
        "access_token"
    ]
    form = await client.post("/api/v1/auth/token", data={"username": "carol", "password": password})
    bearer = {"Authorization": f"Bearer {token}"}
    changed = await client.patch(
        "/api/v1/users/me",
        json={"password": new_password, "current_password": password},
        headers=bearer,
    )
    assert changed.status_code == 200, changed.text
    assert_error(
        await client.get("/api/v1/users/me", headers={"Authorization": "Bearer x" + token}), 401
    )
    site = await make_site(client, make_user, make_operator, spots=1)
    sensor = await add_device(client, site)
    event = {"spot": "A1", "occupied": True, "observed_at": datetime.now(UTC).isoformat()}
    reported = await client.post(SPOT_EVENTS, json={"events": [event]}, headers=sensor.headers)
    assert reported.status_code == 200, reported.text
    wrong_key = await client.post(
        SPOT_EVENTS, json={"events": [event]}, headers={"X-Device-Key": sensor.key + "x"}
    )
    assert wrong_key.status_code == 401

    logged = _logged(caplog)
    # The capture works: request lines and SQL were logged.
    assert "/api/v1/auth/login" in logged
    secrets_sent = {
        "password": password,
        "password hash": await password_hash(state.database, registered.json()["id"]),
        "new password": new_password,
        "passkey": passkey,
        "access token": token,
        "form token": form.json()["access_token"],
        "admin token": admin.headers["Authorization"].removeprefix("Bearer "),
        "device key": sensor.key,
    }
    for what, secret in secrets_sent.items():
        assert secret not in logged, what


async def test_the_server_logs_no_password_or_token_even_at_debug_level(
    template: str, tmp_path: Path
) -> None:
    async with single_server(template, tmp_path, settings={"LOG_LEVEL": "debug"}) as stack:
        account = await sign_up(stack.http)
        token = await sign_in(stack.http, account.username)
        me = await stack.http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        # Browsers cannot give a WebSocket headers: the token travels in the URL.
        async with open_ws(stack.server, f"/api/v1/notifications/ws?token={token}"):
            pass
        await stack.server.stop()
        log = stack.server.log()
        hashed = await password_hash(stack.database, account.id)

    for what, secret in {
        "password": PASSWORD,
        "password hash": hashed,
        "token": token,
        "first token": account.token,
    }.items():
        assert secret not in log, what
    assert "WebSocket /api/v1/notifications/ws?token=[redacted]" in log, log[-3000:]
