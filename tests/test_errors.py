"""The one error shape: bad bodies, unknown routes and methods, body limits, request ids,
infrastructure errors, and bad input thrown at every endpoint of accounts, operators and
vehicles — always a 4xx in the shape, never a 500."""

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import IntegrityError, OperationalError

from parkspot.app import create_app
from parkspot.config import Settings
from parkspot.models import Role
from tests.conftest import PASSWORD, MakeOperator, MakeUser, assert_error

LOGIN = "/api/v1/auth/login"
JSON = {"Content-Type": "application/json"}


# --- request bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"username": "alice",', id="truncated"),
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b'{"username": "alice", }', id="trailing-comma"),
        pytest.param(b"{'username': 'alice'}", id="single-quotes"),
        pytest.param(b'{"username": "\xff\xfe"}', id="invalid-utf8"),
    ],
)
async def test_malformed_json_gets_400_malformed_json(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(LOGIN, content=raw, headers=JSON)

    assert_error(response, 400, "malformed_json")


async def test_deeply_nested_json_gets_a_4xx(client: httpx.AsyncClient) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000

    response = await client.post(LOGIN, content=raw, headers=JSON)

    assert_error(response, 400, "malformed_json")


async def test_wrong_types_get_422_validation_error_with_every_problem_listed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(LOGIN, json={"username": 123, "password": ["x"]})

    assert_error(response, 422, "validation_error")
    errors = response.json()["error"]["details"]["errors"]
    assert {tuple(e["loc"]) for e in errors} == {("body", "username"), ("body", "password")}
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}
        assert error["msg"]
    assert response.json()["error"]["message"].startswith("body.username")


async def test_validation_errors_do_not_echo_the_input(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json={"username": "alice", "email": "e@example.com", "password": "s3cr3t!"},
    )

    assert_error(response, 422, "validation_error")
    assert "s3cr3t!" not in response.text


async def test_json_escape_for_a_lone_surrogate_gets_a_4xx(client: httpx.AsyncClient) -> None:
    raw = b'{"username": "al\\ud800ice", "password": "xx\\udfffxxxxxx"}'

    response = await client.post(LOGIN, content=raw, headers=JSON)

    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code)


# --- routes, methods, body size -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/users/me", "/api/v1/"])
async def test_unknown_route_gets_404_in_the_error_shape(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/users/me"),
        ("PUT", "/api/v1/vehicles"),
        ("GET", "/api/v1/auth/login"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_gets_405_in_the_error_shape_with_allow(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]
    assert method not in response.headers["Allow"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/users/me", "GET, PATCH"),
        ("/api/v1/vehicles", "GET, POST"),
        ("/api/v1/lots/1", "DELETE, GET, PATCH"),
        ("/api/v1/lots/1/devices", "GET, POST"),
    ],
)
async def test_a_405_allows_every_method_of_the_path_not_only_the_first_route(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    # Found by tests/test_fuzz.py: FastAPI has a route per method, Starlette named one.
    response = await client.request("OPTIONS", path)

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allowed


async def test_body_over_the_limit_by_content_length_gets_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = b'{"username": "' + b"a" * settings.max_body_bytes + b'", "password": "x"}'

    response = await client.post(LOGIN, content=body, headers=JSON)

    assert_error(response, 413, "payload_too_large")
    assert response.json()["error"]["details"] == {"max_bytes": settings.max_body_bytes}


async def test_streamed_body_over_the_limit_without_content_length_gets_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    chunk = b"a" * 64 * 1024

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_bytes // len(chunk) + 2):
            yield chunk

    response = await client.post(LOGIN, content=chunks(), headers=JSON)

    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


async def test_body_just_under_the_limit_is_processed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    prefix, suffix = b'{"username": "alice", "password": "x", "pad": "', b'"}'
    body = prefix + b"a" * (settings.max_body_bytes - len(prefix) - len(suffix)) + suffix
    assert len(body) == settings.max_body_bytes

    response = await client.post(LOGIN, content=body, headers=JSON)

    assert_error(response, 422, "validation_error")  # the unknown "pad" field, not the size


async def test_form_login_over_the_body_limit_gets_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        data={"username": "a" * settings.max_body_bytes, "password": PASSWORD},
    )

    assert_error(response, 413, "payload_too_large")


# --- request ids --------------------------------------------------------------------------


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123.DEF_456"})

    assert response.headers["X-Request-ID"] == "abc-123.DEF_456"


@pytest.mark.parametrize(
    "incoming",
    [None, "", "has spaces", "x" * 65, "semi;colon", "new\\nline"],
)
async def test_a_missing_or_odd_request_id_is_replaced_by_a_generated_one(
    client: httpx.AsyncClient, incoming: str | None
) -> None:
    headers = {} if incoming is None else {"X-Request-ID": incoming}

    response = await client.get("/healthz", headers=headers)

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


async def test_each_request_gets_its_own_generated_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/nope", {}, 404),
        ("GET", "/api/v1/users/me", {}, 401),
        ("POST", LOGIN, {"content": b"{", "headers": JSON}, 400),
        ("POST", LOGIN, {"json": {}}, 422),
        ("POST", LOGIN, {"content": b"x" * 2_000_000, "headers": JSON}, 413),
    ],
)
async def test_error_responses_carry_the_request_id_too(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    headers = {**kwargs.pop("headers", {}), "X-Request-ID": "trace-me"}

    response = await client.request(method, path, headers=headers, **kwargs)

    assert_error(response, status)
    assert response.headers["X-Request-ID"] == "trace-me"


# --- infrastructure errors ----------------------------------------------------------------


def _raise(exc: Exception) -> Any:
    async def endpoint() -> None:
        raise exc

    return endpoint


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        pytest.param(
            IntegrityError("INSERT", {}, Exception("unique")), 409, "conflict", id="integrity"
        ),
        pytest.param(ConnectionRefusedError(111, "refused"), 503, "database_unavailable", id="os"),
        pytest.param(
            OperationalError("SELECT 1", {}, Exception("database is locked")),
            503,
            "database_unavailable",
            id="operational",
        ),
        pytest.param(TimeoutError(), 503, "database_unavailable", id="timeout"),
        pytest.param(RedisConnectionError("down"), 503, "cache_unavailable", id="redis"),
    ],
)
async def test_infrastructure_errors_are_rendered_in_the_error_shape(
    settings: Settings, exc: Exception, status: int, code: str
) -> None:
    app = create_app(settings)
    app.add_api_route("/boom", _raise(exc))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/boom")

    assert_error(response, status, code)
    if status == 503:
        assert int(response.headers["Retry-After"]) > 0


# --- bad input at every endpoint ----------------------------------------------------------

HUGE_ID = "99999999999999999999"

# (method, path template, a body whose field has the wrong type). {id} is a real object id.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/v1/auth/register", {"username": 123, "email": "e@example.com"}),
    ("POST", "/api/v1/auth/login", {"username": ["alice"], "password": 12345678}),
    ("PATCH", "/api/v1/users/me", {"phone": 5551234, "full_name": {"first": "x"}}),
    ("PATCH", "/api/v1/users/{user}", {"is_active": "not-a-bool", "role": 7}),
    ("POST", "/api/v1/operators", {"name": {"nested": True}, "passkey": 12345678}),
    ("PATCH", "/api/v1/operators/{operator}", {"name": [], "passkey": 1.5}),
    ("POST", "/api/v1/operators/{operator}/managers", {"user_id": "five"}),
    ("POST", "/api/v1/vehicles", {"plate": 12.5, "kind": 3}),
    ("PATCH", "/api/v1/vehicles/{vehicle}", {"plate": ["AB1"], "make": 99}),
]
BODY_ENDPOINTS = [pytest.param(m, p, b, id=f"{m} {p}") for m, p, b in ENDPOINTS]

ID_ENDPOINTS = [
    ("GET", "/api/v1/operators/{operator}"),
    ("PATCH", "/api/v1/operators/{operator}"),
    ("POST", "/api/v1/operators/{operator}/managers"),
    ("DELETE", "/api/v1/operators/{operator}/managers/{user}"),
    ("PATCH", "/api/v1/users/{user}"),
    ("GET", "/api/v1/vehicles/{vehicle}"),
    ("PATCH", "/api/v1/vehicles/{vehicle}"),
    ("DELETE", "/api/v1/vehicles/{vehicle}"),
]


async def _objects(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> tuple[dict[str, str], dict[str, str]]:
    """An admin's headers and ids of real objects the admin may touch."""
    admin = await make_user(role=Role.admin)
    target = await make_user()
    vehicle = await client.post("/api/v1/vehicles", json={"plate": "FUZZ1"}, headers=admin.headers)
    assert vehicle.status_code == 201, vehicle.text
    ids = {
        "user": str(target.id),
        "operator": str(await make_operator()),
        "vehicle": str(vehicle.json()["id"]),
    }
    return admin.headers, ids


def _assert_client_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert_error(response, response.status_code)


@pytest.mark.parametrize("as_admin", [True, False], ids=["admin", "anonymous"])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="empty-list"),
        pytest.param([{"name": "x"}], id="list-of-objects"),
        pytest.param("a string", id="string"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
        pytest.param("wrong-types", id="fields-of-wrong-types"),
        pytest.param({"unexpected": "field"}, id="unknown-field"),
    ],
)
@pytest.mark.parametrize(("method", "path", "wrong_types"), BODY_ENDPOINTS)
async def test_bad_bodies_at_every_endpoint_get_a_4xx_never_a_500(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    method: str,
    path: str,
    wrong_types: dict[str, Any],
    body: Any,
    as_admin: bool,
) -> None:
    headers, ids = await _objects(client, make_user, make_operator)
    payload = wrong_types if body == "wrong-types" else body

    response = await client.request(
        method, path.format(**ids), json=payload, headers=headers if as_admin else {}
    )

    _assert_client_error(response)
    if as_admin:
        assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "bad_id",
    [HUGE_ID, "-1", "0", "2147483648", "abc", "1.5", "1e3", "%00"],
)
@pytest.mark.parametrize(
    ("method", "path"), ID_ENDPOINTS, ids=[f"{m} {p}" for m, p in ID_ENDPOINTS]
)
async def test_bad_ids_in_paths_get_422_never_a_500(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    method: str,
    path: str,
    bad_id: str,
) -> None:
    headers, ids = await _objects(client, make_user, make_operator)
    # Every id placeholder in turn gets the bad value; the others stay real.
    for name in re.findall(r"{(\w+)}", path):
        url = path.format(**{**ids, name: bad_id})
        body = {"user_id": int(ids["user"])} if path.endswith("/managers") else {}

        response = await client.request(method, url, json=body, headers=headers)

        assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("user_id", [int(HUGE_ID), -1, 0, 2**31, 1.5, "five", "7", True, None])
async def test_bad_manager_user_ids_get_422(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, user_id: Any
) -> None:
    headers, ids = await _objects(client, make_user, make_operator)

    response = await client.post(
        f"/api/v1/operators/{ids['operator']}/managers",
        json={"user_id": user_id},
        headers=headers,
    )

    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/api/v1/auth/register", "full_name"),
        ("POST", "/api/v1/auth/register", "password"),
        ("POST", "/api/v1/auth/register", "passkey"),
        ("POST", "/api/v1/auth/login", "username"),
        ("POST", "/api/v1/auth/login", "password"),
        ("PATCH", "/api/v1/users/me", "full_name"),
        ("PATCH", "/api/v1/users/me", "phone"),
        ("POST", "/api/v1/operators", "name"),
        ("POST", "/api/v1/operators", "passkey"),
        ("POST", "/api/v1/vehicles", "make"),
        ("POST", "/api/v1/vehicles", "color"),
    ],
)
async def test_nul_characters_in_text_fields_never_give_a_500(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    method: str,
    path: str,
    field: str,
) -> None:
    admin = await make_user(role=Role.admin)
    base: dict[str, dict[str, Any]] = {
        "/api/v1/auth/register": {
            "username": "nul",
            "email": "nul@example.com",
            "password": PASSWORD,
        },
        "/api/v1/auth/login": {"username": admin.username, "password": PASSWORD},
        "/api/v1/users/me": {},
        "/api/v1/operators": {"name": "Nul Parking"},
        "/api/v1/vehicles": {"plate": "NUL1"},
    }
    body = {**base[path], field: "with\x00nul-inside"}

    response = await client.request(method, path, json=body, headers=admin.headers)

    if response.status_code < 400:
        # Passwords and passkeys are hashed, never stored: NUL is harmless there.
        assert field in ("password", "passkey"), response.text
    else:
        _assert_client_error(response)
