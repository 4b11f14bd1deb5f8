"""The profile (/users/me) and user administration (/users, admins only)."""

from typing import Any

import httpx
import pytest

from parkspot.models import Role
from tests.conftest import PASSWORD, MakeOperator, MakeUser, assert_error

ME = "/api/v1/users/me"
USERS = "/api/v1/users"
LOGIN = "/api/v1/auth/login"


async def login_status(client: httpx.AsyncClient, username: str, password: str) -> int:
    response = await client.post(LOGIN, json={"username": username, "password": password})
    return response.status_code


# --- profile ------------------------------------------------------------------------------


async def test_profile_shows_the_contract_fields(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    operator_id = await make_operator()
    manager = await make_user(role=Role.manager, manages=(operator_id,))

    response = await client.get(ME, headers=manager.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert {"id", "username", "email", "full_name", "phone", "role", "operator_ids"} <= set(body)
    assert body["id"] == manager.id
    assert body["username"] == manager.username
    assert body["email"] == manager.email
    assert body["role"] == "manager"
    assert body["operator_ids"] == [operator_id]
    assert not any("password" in key or "hash" in key for key in body)


async def test_profile_update_changes_full_name_and_phone(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()

    response = await client.patch(
        ME,
        json={"full_name": "  Ada Lovelace ", "phone": "+44 20 7946 0958"},
        headers=actor.headers,
    )

    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == "Ada Lovelace"
    assert response.json()["phone"] == "+44 20 7946 0958"
    again = (await client.get(ME, headers=actor.headers)).json()
    assert again["full_name"] == "Ada Lovelace"
    assert again["phone"] == "+44 20 7946 0958"


async def test_profile_update_with_null_clears_the_full_name(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()
    await client.patch(ME, json={"full_name": "Ada"}, headers=actor.headers)

    response = await client.patch(ME, json={"full_name": None}, headers=actor.headers)

    assert response.status_code == 200, response.text
    assert response.json()["full_name"] is None


async def test_profile_update_leaves_unsent_fields_alone(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()
    await client.patch(ME, json={"full_name": "Ada", "phone": "555 0100"}, headers=actor.headers)

    response = await client.patch(ME, json={"phone": "555 0199"}, headers=actor.headers)

    assert response.json()["full_name"] == "Ada"
    assert response.json()["phone"] == "555 0199"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"phone": "call me"}, id="phone-letters"),
        pytest.param({"phone": "+" + "1" * 32}, id="phone-longer-than-the-column"),
        pytest.param({"full_name": ""}, id="empty-full-name"),
        pytest.param({"full_name": "Ada\x00"}, id="full-name-with-nul"),
        pytest.param({"full_name": "Ada\nLovelace"}, id="full-name-with-newline"),
        pytest.param({"email": "nope"}, id="bad-email"),
        pytest.param({"password": "short", "current_password": PASSWORD}, id="short-password"),
        pytest.param({"role": "admin"}, id="role-is-not-self-service"),
        pytest.param({"is_active": True}, id="is-active-is-not-self-service"),
        pytest.param({"username": "renamed"}, id="username-is-fixed"),
    ],
)
async def test_profile_update_with_a_bad_field_gets_422(
    client: httpx.AsyncClient, make_user: MakeUser, body: dict[str, Any]
) -> None:
    actor = await make_user()

    response = await client.patch(ME, json=body, headers=actor.headers)

    assert_error(response, 422, "validation_error")
    assert (await client.get(ME, headers=actor.headers)).json()["role"] == "driver"


async def test_profile_email_change_is_stored_lower_case_and_used_for_login(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()

    response = await client.patch(
        ME, json={"email": "New.Address@Example.org"}, headers=actor.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["email"] == "new.address@example.org"
    assert await login_status(client, "NEW.address@example.org", PASSWORD) == 200
    assert await login_status(client, actor.email, PASSWORD) == 401


async def test_profile_email_change_to_another_users_email_in_other_case_gets_409(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()
    other = await make_user()

    response = await client.patch(ME, json={"email": other.email.upper()}, headers=actor.headers)

    assert_error(response, 409, "email_taken")
    assert (await client.get(ME, headers=actor.headers)).json()["email"] == actor.email


async def test_profile_email_change_to_own_email_in_other_case_is_allowed(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()

    response = await client.patch(ME, json={"email": actor.email.upper()}, headers=actor.headers)

    assert response.status_code == 200, response.text
    assert response.json()["email"] == actor.email


async def test_password_change_without_current_password_gets_400(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()

    response = await client.patch(ME, json={"password": "brand-new-secret"}, headers=actor.headers)

    assert_error(response, 400, "current_password_mismatch")
    assert await login_status(client, actor.username, PASSWORD) == 200


async def test_password_change_with_wrong_current_password_gets_400(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()

    response = await client.patch(
        ME,
        json={"password": "brand-new-secret", "current_password": "wrong-password"},
        headers=actor.headers,
    )

    assert_error(response, 400, "current_password_mismatch")
    assert await login_status(client, actor.username, "brand-new-secret") == 401
    assert await login_status(client, actor.username, PASSWORD) == 200


async def test_failed_password_change_keeps_other_changes_of_the_request_unsaved(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()

    response = await client.patch(
        ME,
        json={"full_name": "Should Not Stick", "password": "brand-new-secret"},
        headers=actor.headers,
    )

    assert_error(response, 400, "current_password_mismatch")
    assert (await client.get(ME, headers=actor.headers)).json()["full_name"] is None


async def test_password_change_with_current_password_makes_the_new_one_work(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    actor = await make_user()

    response = await client.patch(
        ME,
        json={"password": "brand-new-secret", "current_password": PASSWORD},
        headers=actor.headers,
    )

    assert response.status_code == 200, response.text
    assert await login_status(client, actor.username, "brand-new-secret") == 200
    assert await login_status(client, actor.username, PASSWORD) == 401


async def test_anonymous_profile_update_gets_401(client: httpx.AsyncClient) -> None:
    response = await client.patch(ME, json={"full_name": "Nobody"})

    assert_error(response, 401, "not_authenticated")


# --- admin: search ------------------------------------------------------------------------


async def test_admin_lists_users_paginated(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    admin = await make_user(role=Role.admin)
    drivers = [await make_user() for _ in range(3)]

    first = await client.get(USERS, params={"limit": 2}, headers=admin.headers)
    rest = await client.get(USERS, params={"limit": 2, "offset": 2}, headers=admin.headers)

    assert first.status_code == 200, first.text
    assert set(first.json()) == {"items", "total", "limit", "offset"}
    assert first.json()["total"] == 4
    assert first.json()["limit"] == 2
    assert first.json()["offset"] == 0
    assert rest.json()["offset"] == 2
    ids = [u["id"] for u in first.json()["items"] + rest.json()["items"]]
    assert ids == sorted([admin.id, *(d.id for d in drivers)])
    assert all("password_hash" not in u for u in first.json()["items"])


async def test_admin_search_matches_username_or_email_case_insensitively(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    alice = await make_user(username="AliceW")
    bob = await make_user(username="bob")
    await client.patch(ME, json={"email": "robert@corp.example"}, headers=bob.headers)
    await make_user(username="carol")

    by_username = await client.get(USERS, params={"q": "alicew"}, headers=admin.headers)
    by_email = await client.get(USERS, params={"q": "CORP.EX"}, headers=admin.headers)

    assert [u["id"] for u in by_username.json()["items"]] == [alice.id]
    assert by_username.json()["total"] == 1
    assert [u["id"] for u in by_email.json()["items"]] == [bob.id]


@pytest.mark.parametrize("q", ["%", "_", "\\"])
async def test_admin_search_treats_like_wildcards_literally(
    client: httpx.AsyncClient, make_user: MakeUser, q: str
) -> None:
    admin = await make_user(role=Role.admin)
    await make_user(username="plain")

    response = await client.get(USERS, params={"q": q}, headers=admin.headers)

    assert response.status_code == 200, response.text
    assert response.json()["total"] == 0


async def test_admin_search_finds_an_underscore_only_where_there_is_one(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    snake = await make_user(username="snake_case")
    await make_user(username="snakeXcase")

    response = await client.get(USERS, params={"q": "e_c"}, headers=admin.headers)

    assert [u["id"] for u in response.json()["items"]] == [snake.id]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": 0}, id="limit-zero"),
        pytest.param({"limit": 101}, id="limit-over-100"),
        pytest.param({"limit": "ten"}, id="limit-not-a-number"),
        pytest.param({"offset": -1}, id="negative-offset"),
        pytest.param({"offset": 10**20}, id="huge-offset"),
        pytest.param({"q": "x" * 101}, id="q-too-long"),
        pytest.param({"q": "a\x00b"}, id="q-with-nul"),
    ],
)
async def test_admin_search_with_bad_parameters_gets_422(
    client: httpx.AsyncClient, make_user: MakeUser, params: dict[str, Any]
) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.get(USERS, params=params, headers=admin.headers)

    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("role", [Role.driver, Role.manager])
async def test_non_admin_listing_users_gets_403(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, role: Role
) -> None:
    manages = (await make_operator(),) if role is Role.manager else ()
    actor = await make_user(role=role, manages=manages)

    response = await client.get(USERS, headers=actor.headers)

    assert_error(response, 403, "admin_required")


async def test_anonymous_listing_users_gets_401(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(USERS), 401, "not_authenticated")


# --- admin: role and activation -----------------------------------------------------------


@pytest.mark.parametrize("role", ["manager", "admin", "driver"])
async def test_admin_sets_a_users_role(
    client: httpx.AsyncClient, make_user: MakeUser, role: str
) -> None:
    admin = await make_user(role=Role.admin)
    target = await make_user(role=Role.manager)

    response = await client.patch(
        f"{USERS}/{target.id}", json={"role": role}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["role"] == role
    assert (await client.get(ME, headers=target.headers)).json()["role"] == role


async def test_promoted_admin_can_use_admin_endpoints_at_once(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    target = await make_user()
    assert (await client.get(USERS, headers=target.headers)).status_code == 403

    await client.patch(f"{USERS}/{target.id}", json={"role": "admin"}, headers=admin.headers)

    assert (await client.get(USERS, headers=target.headers)).status_code == 200


async def test_demoted_admin_loses_admin_endpoints_at_once(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    other_admin = await make_user(role=Role.admin)

    await client.patch(f"{USERS}/{other_admin.id}", json={"role": "driver"}, headers=admin.headers)

    assert_error(await client.get(USERS, headers=other_admin.headers), 403, "admin_required")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"role": "superuser"}, id="unknown-role"),
        pytest.param({"is_active": "maybe"}, id="is-active-not-a-bool"),
        # Found by tests/test_fuzz.py: 0 was read as false.
        pytest.param({"is_active": 0}, id="is-active-a-number"),
        pytest.param({"email": "x@example.com"}, id="email-not-admin-editable"),
        pytest.param({"password_hash": "x"}, id="hash-not-editable"),
    ],
)
async def test_admin_update_with_a_bad_field_gets_422(
    client: httpx.AsyncClient, make_user: MakeUser, body: dict[str, Any]
) -> None:
    admin = await make_user(role=Role.admin)
    target = await make_user()

    response = await client.patch(f"{USERS}/{target.id}", json=body, headers=admin.headers)

    assert_error(response, 422, "validation_error")


async def test_admin_update_of_unknown_user_gets_404(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.patch(f"{USERS}/99999", json={"role": "manager"}, headers=admin.headers)

    assert_error(response, 404, "user_not_found")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"role": "driver"}, id="demote-to-driver"),
        pytest.param({"role": "manager"}, id="demote-to-manager"),
        pytest.param({"is_active": False}, id="deactivate"),
    ],
)
async def test_admin_cannot_demote_or_deactivate_themselves(
    client: httpx.AsyncClient, make_user: MakeUser, body: dict[str, Any]
) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.patch(f"{USERS}/{admin.id}", json=body, headers=admin.headers)

    assert_error(response, 409, "cannot_change_self")
    me = (await client.get(ME, headers=admin.headers)).json()
    assert me["role"] == "admin"
    assert me["is_active"] is True


async def test_admin_may_send_their_own_unchanged_role_and_active_flag(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.patch(
        f"{USERS}/{admin.id}", json={"role": "admin", "is_active": True}, headers=admin.headers
    )

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("role", [Role.driver, Role.manager])
async def test_non_admin_updating_a_user_gets_403(
    client: httpx.AsyncClient, make_user: MakeUser, role: Role
) -> None:
    actor = await make_user(role=role)
    target = await make_user()

    response = await client.patch(
        f"{USERS}/{target.id}", json={"is_active": False}, headers=actor.headers
    )

    assert_error(response, 403, "admin_required")
    assert (await client.get(ME, headers=target.headers)).status_code == 200


async def test_driver_cannot_make_themselves_admin(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    driver = await make_user()

    response = await client.patch(
        f"{USERS}/{driver.id}", json={"role": "admin"}, headers=driver.headers
    )

    assert_error(response, 403, "admin_required")
    assert (await client.get(ME, headers=driver.headers)).json()["role"] == "driver"


async def test_anonymous_updating_a_user_gets_401(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    target = await make_user()

    response = await client.patch(f"{USERS}/{target.id}", json={"is_active": False})

    assert_error(response, 401, "not_authenticated")


USER_PATCH_EXPECTED = {
    "the_user_themselves": (403, "admin_required"),
    "another_driver": (403, "admin_required"),
    "manager_of_an_operator": (403, "admin_required"),
    "admin": (200, None),
    "anonymous": (401, "not_authenticated"),
}


@pytest.mark.parametrize("who", list(USER_PATCH_EXPECTED))
async def test_updating_a_user_by_each_kind_of_caller(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, who: str
) -> None:
    target = await make_user()
    headers = {
        "the_user_themselves": target.headers,
        "another_driver": (await make_user()).headers,
        "manager_of_an_operator": (
            await make_user(role=Role.manager, manages=(await make_operator(),))
        ).headers,
        "admin": (await make_user(role=Role.admin)).headers,
        "anonymous": {},
    }[who]

    response = await client.patch(f"{USERS}/{target.id}", json={"role": "manager"}, headers=headers)

    status, code = USER_PATCH_EXPECTED[who]
    role = (await client.get(ME, headers=target.headers)).json()["role"]
    if status == 200:
        assert response.status_code == 200, response.text
        assert role == "manager"
    else:
        assert_error(response, status, code)
        assert role == "driver"
