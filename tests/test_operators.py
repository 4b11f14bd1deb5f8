"""Operators: creation by admins, who sees which, passkeys and manager assignment."""

import asyncio
from typing import Any

import httpx
import pytest

from parkspot.models import MembershipRole, OperatorMember, Role
from parkspot.state import AppState
from tests.conftest import PASSWORD, MakeOperator, MakeUser, assert_error

OPERATORS = "/api/v1/operators"
REGISTER = "/api/v1/auth/register"


async def add_member(state: AppState, operator_id: int, user_id: int) -> None:
    async with state.database.transaction() as session:
        session.add(
            OperatorMember(operator_id=operator_id, user_id=user_id, role=MembershipRole.member)
        )


# --- create -------------------------------------------------------------------------------


async def test_admin_creates_an_operator(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.post(OPERATORS, json={"name": " City Parking "}, headers=admin.headers)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "City Parking"
    assert body["has_passkey"] is False
    assert body["manager_ids"] == []
    assert isinstance(body["id"], int)
    fetched = await client.get(f"{OPERATORS}/{body['id']}", headers=admin.headers)
    assert fetched.json() == body


async def test_operator_created_with_a_passkey_shows_only_has_passkey(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.post(
        OPERATORS, json={"name": "Fleet", "passkey": "secret-passkey"}, headers=admin.headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["has_passkey"] is True
    assert "passkey" not in response.json()
    assert "secret-passkey" not in response.text


@pytest.mark.parametrize("name", ["City Parking", "city parking", "  CITY PARKING"])
async def test_creating_an_operator_with_a_taken_name_gets_409(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, name: str
) -> None:
    admin = await make_user(role=Role.admin)
    await make_operator("City Parking")

    response = await client.post(OPERATORS, json={"name": name}, headers=admin.headers)

    assert_error(response, 409, "operator_name_taken")


async def test_creating_an_operator_with_a_taken_passkey_gets_409(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    first = await client.post(
        OPERATORS, json={"name": "One", "passkey": "shared-passkey"}, headers=admin.headers
    )
    assert first.status_code == 201

    response = await client.post(
        OPERATORS, json={"name": "Two", "passkey": "shared-passkey"}, headers=admin.headers
    )

    assert_error(response, 409, "passkey_taken")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-name"),
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"name": "   "}, id="blank-name"),
        pytest.param({"name": "x" * 121}, id="name-too-long"),
        pytest.param({"name": "Nul\x00Parking"}, id="name-with-nul"),
        pytest.param({"name": "Two\nLines"}, id="name-with-newline"),
        pytest.param({"name": "Ok", "passkey": "short"}, id="passkey-too-short"),
        pytest.param({"name": "Ok", "passkey": "x" * 129}, id="passkey-too-long"),
        pytest.param({"name": "Ok", "manager_ids": [1]}, id="unknown-field"),
        pytest.param({"name": 42}, id="name-not-a-string"),
    ],
)
async def test_creating_an_operator_with_bad_fields_gets_422(
    client: httpx.AsyncClient, make_user: MakeUser, body: dict[str, Any]
) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.post(OPERATORS, json=body, headers=admin.headers)

    assert_error(response, 422, "validation_error")


async def test_concurrent_creation_of_one_operator_name_gives_one_201_and_409s(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)

    responses = await asyncio.gather(
        *(client.post(OPERATORS, json={"name": "Racer"}, headers=admin.headers) for _ in range(4))
    )

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "operator_name_taken")


@pytest.mark.parametrize("role", [Role.driver, Role.manager])
async def test_non_admin_creating_an_operator_gets_403(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, role: Role
) -> None:
    actor = await make_user(role=role, manages=(await make_operator(),))

    response = await client.post(OPERATORS, json={"name": "Mine"}, headers=actor.headers)

    assert_error(response, 403, "admin_required")


async def test_anonymous_creating_an_operator_gets_401(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(OPERATORS, json={"name": "Mine"}), 401, "not_authenticated")


# --- list ---------------------------------------------------------------------------------


async def test_admin_lists_all_operators_paginated(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    ids = [await make_operator() for _ in range(3)]

    first = await client.get(OPERATORS, params={"limit": 2}, headers=admin.headers)
    rest = await client.get(OPERATORS, params={"limit": 2, "offset": 2}, headers=admin.headers)

    assert first.status_code == 200, first.text
    assert set(first.json()) == {"items", "total", "limit", "offset"}
    assert first.json()["total"] == 3
    assert [o["id"] for o in first.json()["items"] + rest.json()["items"]] == ids


async def test_manager_lists_only_the_operators_they_manage(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, state: AppState
) -> None:
    mine = await make_operator()
    member_of = await make_operator()
    await make_operator()
    manager = await make_user(role=Role.manager, manages=(mine,))
    await add_member(state, member_of, manager.id)

    response = await client.get(OPERATORS, headers=manager.headers)

    assert response.status_code == 200, response.text
    assert [o["id"] for o in response.json()["items"]] == [mine]
    assert response.json()["total"] == 1


async def test_driver_member_lists_no_operators(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, state: AppState
) -> None:
    operator_id = await make_operator()
    driver = await make_user()
    await add_member(state, operator_id, driver.id)

    response = await client.get(OPERATORS, headers=driver.headers)

    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
    assert response.json()["total"] == 0


async def test_demoted_manager_lists_no_operators(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    """A manager membership counts only while the role is manager, as for reads."""
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    manager = await make_user(role=Role.manager, manages=(operator_id,))
    demoted = await client.patch(
        f"/api/v1/users/{manager.id}", json={"role": "driver"}, headers=admin.headers
    )
    assert demoted.status_code == 200

    response = await client.get(OPERATORS, headers=manager.headers)

    assert response.json()["items"] == []
    assert response.json()["total"] == 0
    read = await client.get(f"{OPERATORS}/{operator_id}", headers=manager.headers)
    assert_error(read, 403, "not_operator_manager")


async def test_anonymous_listing_operators_gets_401(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(OPERATORS), 401, "not_authenticated")


# --- read and update: who may -------------------------------------------------------------

ACTORS = [
    "admin",
    "its_manager",
    "manager_of_another_operator",
    "member_driver",
    "member_manager_of_another",
    "stranger_driver",
    "anonymous",
]


async def actor_headers(
    who: str, operator_id: int, make_user: MakeUser, make_operator: MakeOperator, state: AppState
) -> dict[str, str]:
    if who == "anonymous":
        return {}
    if who == "admin":
        return (await make_user(role=Role.admin)).headers
    if who == "its_manager":
        return (await make_user(role=Role.manager, manages=(operator_id,))).headers
    if who == "stranger_driver":
        return (await make_user()).headers
    other = await make_operator()
    if who == "manager_of_another_operator":
        return (await make_user(role=Role.manager, manages=(other,))).headers
    if who == "member_driver":
        actor = await make_user()
    else:  # member_manager_of_another: manages one operator, only a member of this one
        actor = await make_user(role=Role.manager, manages=(other,))
    await add_member(state, operator_id, actor.id)
    return actor.headers


READ_EXPECTED = {
    "admin": (200, None),
    "its_manager": (200, None),
    "manager_of_another_operator": (404, "operator_not_found"),
    "member_driver": (403, "not_operator_manager"),
    "member_manager_of_another": (403, "not_operator_manager"),
    "stranger_driver": (404, "operator_not_found"),
    "anonymous": (401, "not_authenticated"),
}


@pytest.mark.parametrize("who", ACTORS)
async def test_reading_an_operator_by_each_kind_of_caller(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
    who: str,
) -> None:
    operator_id = await make_operator()
    headers = await actor_headers(who, operator_id, make_user, make_operator, state)

    response = await client.get(f"{OPERATORS}/{operator_id}", headers=headers)

    status, code = READ_EXPECTED[who]
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json()["id"] == operator_id
    else:
        assert_error(response, status, code)


@pytest.mark.parametrize("who", ACTORS)
async def test_updating_an_operator_by_each_kind_of_caller(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
    who: str,
) -> None:
    operator_id = await make_operator("Before")
    headers = await actor_headers(who, operator_id, make_user, make_operator, state)
    admin = await make_user(role=Role.admin)

    response = await client.patch(
        f"{OPERATORS}/{operator_id}", json={"name": "After"}, headers=headers
    )

    status, code = READ_EXPECTED[who]
    name = (await client.get(f"{OPERATORS}/{operator_id}", headers=admin.headers)).json()["name"]
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "After"
        assert name == "After"
    else:
        assert_error(response, status, code)
        assert name == "Before"


@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_unknown_operator_gets_404_even_for_admins(
    client: httpx.AsyncClient, make_user: MakeUser, method: str
) -> None:
    admin = await make_user(role=Role.admin)

    response = await client.request(
        method, f"{OPERATORS}/424242", json={"name": "x"}, headers=admin.headers
    )

    assert_error(response, 404, "operator_not_found")


# --- update rules and passkeys ------------------------------------------------------------


async def test_renaming_an_operator_to_another_operators_name_gets_409(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    await make_operator("Taken")
    operator_id = await make_operator("Mine")

    response = await client.patch(
        f"{OPERATORS}/{operator_id}", json={"name": "TAKEN"}, headers=admin.headers
    )

    assert_error(response, 409, "operator_name_taken")


async def test_renaming_an_operator_to_its_own_name_in_other_case_is_allowed(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator("Mine")

    response = await client.patch(
        f"{OPERATORS}/{operator_id}", json={"name": "MINE"}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "MINE"


async def test_patch_with_null_name_keeps_the_name(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator("Mine")

    response = await client.patch(
        f"{OPERATORS}/{operator_id}", json={"name": None}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Mine"


async def test_passkey_set_by_its_manager_is_never_returned_and_lets_members_sign_up(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    operator_id = await make_operator()
    manager = await make_user(role=Role.manager, manages=(operator_id,))

    response = await client.patch(
        f"{OPERATORS}/{operator_id}", json={"passkey": "members-only-2024"}, headers=manager.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["has_passkey"] is True
    assert "members-only-2024" not in response.text
    listed = await client.get(OPERATORS, headers=manager.headers)
    read = await client.get(f"{OPERATORS}/{operator_id}", headers=manager.headers)
    for body in (listed, read):
        assert "members-only-2024" not in body.text
        assert "passkey_digest" not in body.text
    signup = await client.post(
        REGISTER,
        json={
            "username": "member",
            "email": "member@example.com",
            "password": PASSWORD,
            "passkey": "members-only-2024",
        },
    )
    assert signup.status_code == 201, signup.text
    assert signup.json()["operator_ids"] == [operator_id]


async def test_patch_with_null_passkey_removes_it(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    path = f"{OPERATORS}/{operator_id}"
    await client.patch(path, json={"passkey": "old-passkey-1"}, headers=admin.headers)

    response = await client.patch(path, json={"passkey": None}, headers=admin.headers)

    assert response.status_code == 200, response.text
    assert response.json()["has_passkey"] is False
    signup = await client.post(
        REGISTER,
        json={
            "username": "late",
            "email": "late@example.com",
            "password": PASSWORD,
            "passkey": "old-passkey-1",
        },
    )
    assert_error(signup, 400, "invalid_passkey")


async def test_patch_without_passkey_keeps_it(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    path = f"{OPERATORS}/{operator_id}"
    await client.patch(path, json={"passkey": "kept-passkey"}, headers=admin.headers)

    response = await client.patch(path, json={"name": "Renamed"}, headers=admin.headers)

    assert response.json()["has_passkey"] is True


async def test_changing_the_passkey_retires_the_old_one(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    path = f"{OPERATORS}/{operator_id}"
    await client.patch(path, json={"passkey": "first-passkey"}, headers=admin.headers)

    await client.patch(path, json={"passkey": "second-passkey"}, headers=admin.headers)

    body = {"username": "joiner", "email": "joiner@example.com", "password": PASSWORD}
    old = await client.post(REGISTER, json={**body, "passkey": "first-passkey"})
    new = await client.post(REGISTER, json={**body, "passkey": "second-passkey"})
    assert_error(old, 400, "invalid_passkey")
    assert new.status_code == 201
    assert new.json()["operator_ids"] == [operator_id]


async def test_setting_another_operators_passkey_gets_409(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    first = await make_operator()
    second = await make_operator()
    await client.patch(
        f"{OPERATORS}/{first}", json={"passkey": "the-passkey"}, headers=admin.headers
    )

    response = await client.patch(
        f"{OPERATORS}/{second}", json={"passkey": "the-passkey"}, headers=admin.headers
    )

    assert_error(response, 409, "passkey_taken")


# --- managers -----------------------------------------------------------------------------


async def test_admin_adding_a_driver_as_manager_promotes_them(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    driver = await make_user()
    assert (
        await client.get(f"{OPERATORS}/{operator_id}", headers=driver.headers)
    ).status_code == 404

    response = await client.post(
        f"{OPERATORS}/{operator_id}/managers", json={"user_id": driver.id}, headers=admin.headers
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"operator_id": operator_id, "user_id": driver.id, "role": "manager"}
    me = (await client.get("/api/v1/users/me", headers=driver.headers)).json()
    assert me["role"] == "manager"
    assert me["operator_ids"] == [operator_id]
    read = await client.get(f"{OPERATORS}/{operator_id}", headers=driver.headers)
    assert read.status_code == 200
    assert read.json()["manager_ids"] == [driver.id]
    listed = await client.get(OPERATORS, headers=driver.headers)
    assert [o["id"] for o in listed.json()["items"]] == [operator_id]


async def test_adding_a_member_as_manager_upgrades_the_membership(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator, state: AppState
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    member = await make_user()
    await add_member(state, operator_id, member.id)

    response = await client.post(
        f"{OPERATORS}/{operator_id}/managers", json={"user_id": member.id}, headers=admin.headers
    )

    assert response.status_code == 201, response.text
    read = await client.get(f"{OPERATORS}/{operator_id}", headers=member.headers)
    assert read.status_code == 200
    assert read.json()["manager_ids"] == [member.id]


async def test_adding_an_admin_as_manager_keeps_them_admin(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()

    response = await client.post(
        f"{OPERATORS}/{operator_id}/managers", json={"user_id": admin.id}, headers=admin.headers
    )

    assert response.status_code == 201, response.text
    assert (await client.get("/api/v1/users/me", headers=admin.headers)).json()["role"] == "admin"


async def test_adding_the_same_manager_twice_is_harmless(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    manager = await make_user(role=Role.manager, manages=(operator_id,))

    response = await client.post(
        f"{OPERATORS}/{operator_id}/managers", json={"user_id": manager.id}, headers=admin.headers
    )

    assert response.status_code == 201, response.text
    read = await client.get(f"{OPERATORS}/{operator_id}", headers=admin.headers)
    assert read.json()["manager_ids"] == [manager.id]


async def test_adding_an_unknown_user_as_manager_gets_404(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()

    response = await client.post(
        f"{OPERATORS}/{operator_id}/managers", json={"user_id": 99999}, headers=admin.headers
    )

    assert_error(response, 404, "user_not_found")


async def test_adding_a_manager_to_an_unknown_operator_gets_404(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    admin = await make_user(role=Role.admin)
    driver = await make_user()

    response = await client.post(
        f"{OPERATORS}/99999/managers", json={"user_id": driver.id}, headers=admin.headers
    )

    assert_error(response, 404, "operator_not_found")


NON_ADMINS = [
    "its_manager",
    "manager_of_another_operator",
    "member_driver",
    "member_manager_of_another",
    "stranger_driver",
]


@pytest.mark.parametrize("who", NON_ADMINS)
async def test_non_admin_adding_a_manager_gets_403(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
    who: str,
) -> None:
    operator_id = await make_operator()
    headers = await actor_headers(who, operator_id, make_user, make_operator, state)
    target = await make_user()

    response = await client.post(
        f"{OPERATORS}/{operator_id}/managers", json={"user_id": target.id}, headers=headers
    )

    assert_error(response, 403, "admin_required")
    assert (await client.get("/api/v1/users/me", headers=target.headers)).json()["role"] == "driver"


async def test_anonymous_adding_a_manager_gets_401(
    client: httpx.AsyncClient, make_operator: MakeOperator
) -> None:
    operator_id = await make_operator()

    response = await client.post(f"{OPERATORS}/{operator_id}/managers", json={"user_id": 1})

    assert_error(response, 401, "not_authenticated")


async def test_removing_a_manager_makes_them_a_plain_member(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    manager = await make_user(role=Role.manager, manages=(operator_id,))
    path = f"{OPERATORS}/{operator_id}/managers/{manager.id}"

    response = await client.delete(path, headers=admin.headers)

    assert response.status_code == 204
    read = await client.get(f"{OPERATORS}/{operator_id}", headers=admin.headers)
    assert read.json()["manager_ids"] == []
    own_read = await client.get(f"{OPERATORS}/{operator_id}", headers=manager.headers)
    assert_error(own_read, 403, "not_operator_manager")
    assert (await client.get(OPERATORS, headers=manager.headers)).json()["items"] == []
    me = (await client.get("/api/v1/users/me", headers=manager.headers)).json()
    assert me["operator_ids"] == [operator_id]
    assert_error(await client.delete(path, headers=admin.headers), 404, "manager_not_found")


async def test_removing_a_user_who_is_not_a_manager_gets_404(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    admin = await make_user(role=Role.admin)
    operator_id = await make_operator()
    driver = await make_user()

    response = await client.delete(
        f"{OPERATORS}/{operator_id}/managers/{driver.id}", headers=admin.headers
    )

    assert_error(response, 404, "manager_not_found")


@pytest.mark.parametrize("who", NON_ADMINS)
async def test_non_admin_removing_a_manager_gets_403(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
    who: str,
) -> None:
    operator_id = await make_operator()
    manager = await make_user(role=Role.manager, manages=(operator_id,))
    headers = await actor_headers(who, operator_id, make_user, make_operator, state)

    response = await client.delete(
        f"{OPERATORS}/{operator_id}/managers/{manager.id}", headers=headers
    )

    assert_error(response, 403, "admin_required")
    read = await client.get(f"{OPERATORS}/{operator_id}", headers=manager.headers)
    assert manager.id in read.json()["manager_ids"]


async def test_anonymous_removing_a_manager_gets_401(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    operator_id = await make_operator()
    manager = await make_user(role=Role.manager, manages=(operator_id,))

    response = await client.delete(f"{OPERATORS}/{operator_id}/managers/{manager.id}")

    assert_error(response, 401, "not_authenticated")
