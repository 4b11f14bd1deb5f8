"""Registration, login (JSON and OAuth2 form), logout, deactivation and access-token checks."""

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt
from sqlalchemy import update

from parkspot.config import Settings
from parkspot.models import AuthSession, Role, User
from parkspot.state import AppState
from tests.conftest import PASSWORD, Actor, MakeOperator, MakeUser, assert_error

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/users/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"username": "alice", "email": "alice@example.com", "password": PASSWORD, **fields}
    return await client.post(REGISTER, json=body)


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    response = await client.post(LOGIN, json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


# --- registration -------------------------------------------------------------------------


async def test_registration_returns_201_with_the_profile_and_no_password_hash(
    client: httpx.AsyncClient,
) -> None:
    response = await register(client, full_name="Alice Doe", phone="+31 20 123 4567")

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["full_name"] == "Alice Doe"
    assert body["phone"] == "+31 20 123 4567"
    assert body["role"] == "driver"
    assert body["operator_ids"] == []
    assert isinstance(body["id"], int)
    assert not any("hash" in key or "password" in key for key in body)
    assert "$argon2" not in response.text


async def test_registration_stores_the_email_in_lower_case(client: httpx.AsyncClient) -> None:
    response = await register(client, email="Alice.Doe@Example.COM")

    assert response.status_code == 201, response.text
    assert response.json()["email"] == "alice.doe@example.com"


async def test_second_registration_with_same_username_gets_409(
    client: httpx.AsyncClient,
) -> None:
    assert (await register(client)).status_code == 201

    response = await register(client, email="other@example.com")

    assert_error(response, 409, "username_taken")


async def test_second_registration_with_same_email_in_other_case_gets_409(
    client: httpx.AsyncClient,
) -> None:
    assert (await register(client, username="first", email="A@x.com")).status_code == 201

    response = await register(client, username="second", email="a@X.com")

    assert_error(response, 409, "email_taken")


async def test_concurrent_registrations_of_one_username_give_one_201_and_409s(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(register(client, email=f"racer{i}@example.com") for i in range(4))
    )

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "username_taken")


async def test_concurrent_registrations_of_one_email_give_one_201_and_409s(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(register(client, username=f"racer{i}", email="same@example.com") for i in range(4))
    )

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "email_taken")


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"password": "7chars!"}, id="password-too-short"),
        pytest.param({"password": "x" * 129}, id="password-too-long"),
        pytest.param({"username": "ab"}, id="username-too-short"),
        pytest.param({"username": "a" * 33}, id="username-too-long"),
        pytest.param({"username": "has space"}, id="username-with-space"),
        pytest.param({"username": "al@ice"}, id="username-with-at"),
        pytest.param({"username": "alice\n"}, id="username-trailing-newline"),
        pytest.param({"username": ""}, id="username-empty"),
        pytest.param({"email": "not-an-email"}, id="email-without-at"),
        pytest.param({"email": "alice@"}, id="email-without-domain"),
        pytest.param({"email": "al\x00ice@example.com"}, id="email-with-nul"),
        pytest.param({"full_name": ""}, id="full-name-empty"),
        pytest.param({"full_name": "Alice\x00Doe"}, id="full-name-with-nul"),
        pytest.param({"full_name": "x" * 121}, id="full-name-too-long"),
        pytest.param({"phone": "call me"}, id="phone-letters"),
        pytest.param({"phone": "+" + "1" * 32}, id="phone-longer-than-the-column"),
        pytest.param({"role": "admin"}, id="role-cannot-be-chosen"),
        pytest.param({"passkey": ""}, id="passkey-empty"),
    ],
)
async def test_registration_with_a_bad_field_gets_422(
    client: httpx.AsyncClient, fields: dict[str, Any]
) -> None:
    response = await register(client, **fields)

    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("missing", ["username", "email", "password"])
async def test_registration_without_a_required_field_gets_422(
    client: httpx.AsyncClient, missing: str
) -> None:
    body = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    del body[missing]

    response = await client.post(REGISTER, json=body)

    assert_error(response, 422, "validation_error")
    assert [missing] == response.json()["error"]["details"]["errors"][0]["loc"][1:]


async def test_registration_with_unknown_passkey_gets_400(client: httpx.AsyncClient) -> None:
    response = await register(client, passkey="no-such-passkey")

    assert_error(response, 400, "invalid_passkey")
    # Nothing was created: the same username is still free.
    assert (await register(client)).status_code == 201


async def test_registration_with_operator_passkey_makes_the_user_a_member(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    await make_operator()  # another operator the user must not join
    set_passkey = await client.patch(
        f"/api/v1/operators/{operator_id}", json={"passkey": "fleet-2024"}, headers=admin.headers
    )
    assert set_passkey.status_code == 200, set_passkey.text

    response = await register(client, passkey="fleet-2024")

    assert response.status_code == 201, response.text
    assert response.json()["operator_ids"] == [operator_id]
    assert response.json()["role"] == "driver"
    token = await login(client, "alice")
    me = await client.get(ME, headers=bearer(token))
    assert me.json()["operator_ids"] == [operator_id]


# --- login --------------------------------------------------------------------------------


async def test_login_by_username_returns_a_bearer_token(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await register(client)

    response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    me = await client.get(ME, headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "alice"


@pytest.mark.parametrize("login_name", ["alice@example.com", "ALICE@Example.Com"])
async def test_login_by_email_in_any_case_works(client: httpx.AsyncClient, login_name: str) -> None:
    await register(client)

    token = await login(client, login_name)

    me = await client.get(ME, headers=bearer(token))
    assert me.json()["username"] == "alice"


async def test_wrong_password_and_unknown_user_get_the_same_401(
    client: httpx.AsyncClient,
) -> None:
    await register(client)

    wrong_password = await client.post(
        LOGIN, json={"username": "alice", "password": "not-the-password"}
    )
    unknown_user = await client.post(LOGIN, json={"username": "nobody", "password": PASSWORD})

    assert_error(wrong_password, 401, "invalid_credentials")
    assert_error(unknown_user, 401, "invalid_credentials")
    assert wrong_password.json() == unknown_user.json()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"username": "alice"}, id="no-password"),
        pytest.param({"password": PASSWORD}, id="no-username"),
        pytest.param({"username": "", "password": PASSWORD}, id="empty-username"),
        pytest.param({"username": "alice", "password": ""}, id="empty-password"),
    ],
)
async def test_login_with_missing_fields_gets_422(
    client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await client.post(LOGIN, json=body)

    assert_error(response, 422, "validation_error")


async def test_login_with_nul_in_the_username_gets_401(client: httpx.AsyncClient) -> None:
    await register(client)

    as_json = await client.post(LOGIN, json={"username": "ali\x00ce", "password": PASSWORD})
    as_form = await client.post(TOKEN, data={"username": "ali\x00ce", "password": PASSWORD})

    assert_error(as_json, 401, "invalid_credentials")
    assert_error(as_form, 401, "invalid_credentials")


async def test_oauth2_password_form_at_token_endpoint_logs_in(
    client: httpx.AsyncClient,
) -> None:
    await register(client)

    response = await client.post(
        TOKEN, data={"grant_type": "password", "username": "alice", "password": PASSWORD}
    )

    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"
    me = await client.get(ME, headers=bearer(response.json()["access_token"]))
    assert me.status_code == 200


async def test_oauth2_password_form_with_wrong_password_gets_401(
    client: httpx.AsyncClient,
) -> None:
    await register(client)

    response = await client.post(TOKEN, data={"username": "alice", "password": "wrong-one!"})

    assert_error(response, 401, "invalid_credentials")


async def test_oauth2_token_endpoint_without_form_fields_gets_422(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(TOKEN, json={"username": "alice", "password": PASSWORD})

    assert_error(response, 422, "validation_error")


# --- logout -------------------------------------------------------------------------------


async def test_logout_revokes_that_token_at_once_but_not_other_sessions(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    first = await login(client, "alice")
    second = await login(client, "alice")

    response = await client.post(LOGOUT, headers=bearer(first))

    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get(ME, headers=bearer(first)), 401, "invalid_token")
    assert (await client.get(ME, headers=bearer(second))).status_code == 200


async def test_logout_twice_with_the_same_token_gets_401(client: httpx.AsyncClient) -> None:
    await register(client)
    token = await login(client, "alice")
    assert (await client.post(LOGOUT, headers=bearer(token))).status_code == 204

    response = await client.post(LOGOUT, headers=bearer(token))

    assert_error(response, 401, "invalid_token")


async def test_logout_without_a_token_gets_401(client: httpx.AsyncClient) -> None:
    response = await client.post(LOGOUT)

    assert_error(response, 401, "not_authenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"


# --- deactivation -------------------------------------------------------------------------


async def test_deactivated_user_cannot_log_in_and_their_token_stops_working(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    driver = await make_user()

    response = await client.patch(
        f"/api/v1/users/{driver.id}", json={"is_active": False}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert_error(await client.get(ME, headers=driver.headers), 401, "invalid_token")
    login_response = await client.post(
        LOGIN, json={"username": driver.username, "password": PASSWORD}
    )
    assert_error(login_response, 401, "account_inactive")


async def test_deactivated_user_with_wrong_password_learns_nothing_about_the_account(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    driver = await make_user()
    await client.patch(
        f"/api/v1/users/{driver.id}", json={"is_active": False}, headers=admin.headers
    )

    response = await client.post(
        LOGIN, json={"username": driver.username, "password": "wrong-password"}
    )

    assert_error(response, 401, "invalid_credentials")


async def test_reactivated_user_can_log_in_again(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    driver = await make_user()
    path = f"/api/v1/users/{driver.id}"
    await client.patch(path, json={"is_active": False}, headers=admin.headers)

    response = await client.patch(path, json={"is_active": True}, headers=admin.headers)

    assert response.status_code == 200, response.text
    token = await login(client, driver.username)
    assert (await client.get(ME, headers=bearer(token))).status_code == 200


# --- access tokens ------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _valid_claims(actor: Actor) -> dict[str, Any]:
    token = actor.headers["Authorization"].removeprefix("Bearer ")
    claims: dict[str, Any] = jwt.get_unverified_claims(token)
    return claims


def _sign(claims: dict[str, Any], settings: Settings, key: str | None = None) -> str:
    token: str = jwt.encode(claims, key or settings.secret_key, algorithm="HS256")
    return token


async def test_a_token_re_signed_with_the_server_key_and_same_claims_is_accepted(
    client: httpx.AsyncClient, make_user: MakeUser, settings: Settings
) -> None:
    """Guards the forging helpers below: only the one changed claim makes them fail."""
    actor = await make_user()
    claims = _valid_claims(actor)

    response = await client.get(ME, headers=bearer(_sign(claims, settings)))

    assert response.status_code == 200, response.text


def _expired(claims: dict[str, Any], settings: Settings) -> str:
    past = datetime.now(UTC) - timedelta(minutes=5)
    return _sign(
        {**claims, "iat": int(past.timestamp()) - 60, "exp": int(past.timestamp())}, settings
    )


def _other_key(claims: dict[str, Any], settings: Settings) -> str:
    return _sign(claims, settings, key="another-secret-key-of-enough-length-000000")


def _alg_none(claims: dict[str, Any], settings: Settings) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _hs512(claims: dict[str, Any], settings: Settings) -> str:
    token: str = jwt.encode(claims, settings.secret_key, algorithm="HS512")
    return token


def _rs256(claims: dict[str, Any], settings: Settings) -> str:
    """Signed with an RSA key of the forger's own: only HS256 may be accepted."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token: str = jwt.encode(claims, pem.decode(), algorithm="RS256")
    return token


def _without(name: str) -> Any:
    def make(claims: dict[str, Any], settings: Settings) -> str:
        return _sign({k: v for k, v in claims.items() if k != name}, settings)

    return make


def _with(**changes: Any) -> Any:
    def make(claims: dict[str, Any], settings: Settings) -> str:
        return _sign({**claims, **changes}, settings)

    return make


def _tampered_payload(claims: dict[str, Any], settings: Settings) -> str:
    header, _, signature = _sign(claims, settings).split(".")
    return f"{header}.{_b64({**claims, 'sub': '999'})}.{signature}"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(_expired, id="expired"),
        pytest.param(_with(aud="someone-else"), id="wrong-audience"),
        pytest.param(_with(iss="evil-issuer"), id="wrong-issuer"),
        pytest.param(_alg_none, id="alg-none"),
        pytest.param(_hs512, id="other-algorithm"),
        pytest.param(_rs256, id="rs256-with-the-forgers-key"),
        pytest.param(_other_key, id="signed-with-another-key"),
        pytest.param(_tampered_payload, id="payload-changed-after-signing"),
        pytest.param(_with(jti="no-such-session"), id="unknown-session-jti"),
        pytest.param(_with(sub="999999"), id="unknown-user"),
        pytest.param(_with(sub="not-a-number"), id="non-numeric-subject"),
        pytest.param(_with(sub="99999999999999999999"), id="huge-subject"),
        pytest.param(_with(sub="-1"), id="negative-subject"),
        pytest.param(_with(jti=12345), id="non-string-jti"),
        pytest.param(_without("exp"), id="no-expiry"),
        pytest.param(_without("aud"), id="no-audience"),
        pytest.param(_without("iss"), id="no-issuer"),
        pytest.param(_without("sub"), id="no-subject"),
        pytest.param(_without("jti"), id="no-jti"),
        pytest.param(lambda claims, settings: "not.a.token", id="garbage"),
        pytest.param(lambda claims, settings: "x" * 5000, id="long-garbage"),
        pytest.param(lambda claims, settings: "", id="empty"),
    ],
)
async def test_a_bad_access_token_gets_401_invalid_token(
    client: httpx.AsyncClient, make_user: MakeUser, settings: Settings, forge: Any
) -> None:
    actor = await make_user()
    token = forge(_valid_claims(actor), settings)

    response = await client.get(ME, headers=bearer(token))

    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_token_of_a_deleted_user_gets_401(
    client: httpx.AsyncClient, make_user: MakeUser, state: AppState
) -> None:
    actor = await make_user()
    async with state.database.transaction() as session:
        user = await session.get(User, actor.id)
        await session.delete(user)

    response = await client.get(ME, headers=actor.headers)

    assert_error(response, 401, "invalid_token")


async def test_token_whose_session_expired_in_the_database_gets_401(
    client: httpx.AsyncClient, make_user: MakeUser, state: AppState
) -> None:
    actor = await make_user()
    async with state.database.transaction() as session:
        await session.execute(
            update(AuthSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    response = await client.get(ME, headers=actor.headers)

    assert_error(response, 401, "invalid_token")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic-scheme"),
        pytest.param("Token abc", id="other-scheme"),
        pytest.param("", id="empty-header"),
    ],
)
async def test_a_non_bearer_authorization_header_counts_as_anonymous(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.get(ME, headers={"Authorization": header})

    assert_error(response, 401, "not_authenticated")


async def test_anonymous_profile_request_gets_401(client: httpx.AsyncClient) -> None:
    response = await client.get(ME)

    assert_error(response, 401, "not_authenticated")
