"""Liveness and readiness, with the database or Redis unreachable, and requests meanwhile."""

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from parkspot.app import create_app
from parkspot.config import Settings
from tests.conftest import PASSWORD, assert_error


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def client_for(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update=changes))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def unreachable_database_url() -> str:
    """A PostgreSQL URL on a closed port: unreachable whichever backend the suite runs on.

    (A SQLite file that cannot be opened is not used: aiosqlite's worker thread for a failed
    connect reports to the event loop after the test and fails once the loop is closed.)"""
    return f"postgresql+asyncpg://parkspot@127.0.0.1:{closed_port()}/parkspot"


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_when_the_database_is_up(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "database": "ok",
        "redis": "ok" if settings.redis_url else "not_configured",
        "availability": "ok",
    }


async def test_readyz_is_503_with_retry_after_when_the_database_is_unreachable(
    settings: Settings,
) -> None:
    url = unreachable_database_url()
    async with client_for(settings, database_url=url, redis_url=None) as http:
        response = await http.get("/readyz")
        alive = await http.get("/healthz")

    assert_error(response, 503, "not_ready")
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["details"] == {
        "database": "down",
        "redis": "not_configured",
        # Nothing could be counted yet.
        "availability": "loading",
    }
    assert alive.status_code == 200


async def test_readyz_is_503_with_retry_after_when_redis_is_unreachable(
    settings: Settings,
) -> None:
    redis_url = f"redis://127.0.0.1:{closed_port()}/0"
    async with client_for(settings, redis_url=redis_url) as http:
        response = await http.get("/readyz")

    assert_error(response, 503, "not_ready")
    assert int(response.headers["Retry-After"]) > 0
    # Availability is counted from the database and served from this process alone.
    assert response.json()["error"]["details"] == {
        "database": "ok",
        "redis": "down",
        "availability": "ok",
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}),
        (
            "POST",
            "/api/v1/auth/register",
            {"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        ),
    ],
)
async def test_requests_while_the_database_is_unreachable_get_503_not_500(
    settings: Settings, method: str, path: str, body: dict[str, str]
) -> None:
    url = unreachable_database_url()
    async with client_for(settings, database_url=url, redis_url=None) as http:
        response = await http.request(method, path, json=body)

    assert_error(response, 503, "database_unavailable")
    assert int(response.headers["Retry-After"]) > 0


async def test_the_openapi_document_and_the_interactive_docs_are_served(
    client: httpx.AsyncClient,
) -> None:
    schema = await client.get("/openapi.json")
    docs = await client.get("/docs")

    assert schema.status_code == 200, schema.text
    paths = schema.json()["paths"]
    assert (
        "text/event-stream"
        in paths["/api/v1/availability/stream"]["get"]["responses"]["200"]["content"]
    )
    assert docs.status_code == 200
