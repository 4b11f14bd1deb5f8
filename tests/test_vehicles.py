"""Drivers' own vehicles: CRUD, plate normalisation and uniqueness, and nobody else's."""

import asyncio
from typing import Any

import httpx
import pytest

from parkspot.models import Role
from tests.conftest import MakeOperator, MakeUser, assert_error

VEHICLES = "/api/v1/vehicles"


async def create_vehicle(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    response = await client.post(VEHICLES, json={"plate": "AB12CD", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- create, read, update, delete ---------------------------------------------------------


async def test_driver_creates_a_vehicle(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    driver = await make_user()

    response = await client.post(
        VEHICLES,
        json={"plate": "ab-12 cd", "kind": "ev", "make": " Tesla ", "color": "red"},
        headers=driver.headers,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["plate"] == "AB12CD"
    assert body["kind"] == "ev"
    assert body["make"] == "Tesla"
    assert body["color"] == "red"
    assert isinstance(body["id"], int)
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert "owner_id" not in body


async def test_vehicle_kind_defaults_to_car(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    driver = await make_user()

    body = await create_vehicle(client, driver.headers)

    assert body["kind"] == "car"
    assert body["make"] is None
    assert body["color"] is None


async def test_owner_reads_their_vehicle(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    driver = await make_user()
    created = await create_vehicle(client, driver.headers, make="VW")

    response = await client.get(f"{VEHICLES}/{created['id']}", headers=driver.headers)

    assert response.status_code == 200, response.text
    assert response.json() == created


async def test_owner_updates_their_vehicle(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    driver = await make_user()
    created = await create_vehicle(client, driver.headers, make="VW", color="blue")

    response = await client.patch(
        f"{VEHICLES}/{created['id']}",
        json={"plate": "xy 99 zz", "kind": "van", "color": None},
        headers=driver.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["plate"] == "XY99ZZ"
    assert body["kind"] == "van"
    assert body["color"] is None
    assert body["make"] == "VW"
    again = await client.get(f"{VEHICLES}/{created['id']}", headers=driver.headers)
    assert again.json() == body


async def test_patch_with_null_plate_or_kind_keeps_them(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    driver = await make_user()
    created = await create_vehicle(client, driver.headers, kind="ev")

    response = await client.patch(
        f"{VEHICLES}/{created['id']}", json={"plate": None, "kind": None}, headers=driver.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["plate"] == "AB12CD"
    assert response.json()["kind"] == "ev"


async def test_owner_deletes_their_vehicle(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    driver = await make_user()
    created = await create_vehicle(client, driver.headers)
    path = f"{VEHICLES}/{created['id']}"

    response = await client.delete(path, headers=driver.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get(path, headers=driver.headers), 404, "vehicle_not_found")
    assert_error(await client.delete(path, headers=driver.headers), 404, "vehicle_not_found")
    # The plate is free again.
    await create_vehicle(client, driver.headers)


# --- plates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("ab-12 cd", "AB12CD"),
        ("AB12CD", "AB12CD"),
        ("  b 123 xyz  ", "B123XYZ"),
        ("m--ab\t1234", "MAB1234"),
        ("7", "7"),
        ("a" * 15, "A" * 15),
        ("ABC-DEF-GHI-JKL-MNO", "ABCDEFGHIJKLMNO"),
    ],
)
async def test_plates_are_normalised(
    client: httpx.AsyncClient, make_user: MakeUser, sent: str, stored: str
) -> None:
    driver = await make_user()

    body = await create_vehicle(client, driver.headers, plate=sent)

    assert body["plate"] == stored


@pytest.mark.parametrize(
    "plate",
    [
        pytest.param("", id="empty"),
        pytest.param(" - - ", id="only-separators"),
        pytest.param("A" * 16, id="sixteen-characters"),
        pytest.param("AB-12-CD-34-EF-56-GHIJ", id="sixteen-after-normalising"),
        pytest.param("AB#12", id="symbol"),
        pytest.param("AB.12", id="dot"),
        pytest.param("ÄB12", id="non-ascii-letter"),
        pytest.param("AB\x0012", id="nul"),
        pytest.param("A" * 41, id="over-forty-raw"),
        pytest.param(1234, id="number"),
        pytest.param(None, id="null"),
    ],
)
async def test_invalid_plates_get_422(
    client: httpx.AsyncClient, make_user: MakeUser, plate: Any
) -> None:
    driver = await make_user()

    create = await client.post(VEHICLES, json={"plate": plate}, headers=driver.headers)

    assert_error(create, 422, "validation_error")
    if plate is not None:  # null means "keep" in a PATCH
        vehicle = await create_vehicle(client, driver.headers)
        update = await client.patch(
            f"{VEHICLES}/{vehicle['id']}", json={"plate": plate}, headers=driver.headers
        )
        assert_error(update, 422, "validation_error")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"plate": "AB1", "kind": "truck"}, id="unknown-kind"),
        pytest.param({"plate": "AB1", "make": ""}, id="empty-make"),
        pytest.param({"plate": "AB1", "make": "x" * 61}, id="make-too-long"),
        pytest.param({"plate": "AB1", "make": "VW\x00"}, id="make-with-nul"),
        pytest.param({"plate": "AB1", "color": "x" * 31}, id="color-too-long"),
        pytest.param({"plate": "AB1", "color": "red\nblue"}, id="color-with-newline"),
        pytest.param({"plate": "AB1", "owner_id": 1}, id="owner-cannot-be-chosen"),
        pytest.param({}, id="no-plate"),
    ],
)
async def test_creating_a_vehicle_with_bad_fields_gets_422(
    client: httpx.AsyncClient, make_user: MakeUser, body: dict[str, Any]
) -> None:
    driver = await make_user()

    response = await client.post(VEHICLES, json=body, headers=driver.headers)

    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("duplicate", ["AB12CD", "ab12cd", "ab-12-cd", "AB 12 CD"])
async def test_duplicate_plate_for_the_same_owner_gets_409(
    client: httpx.AsyncClient, make_user: MakeUser, duplicate: str
) -> None:
    driver = await make_user()
    await create_vehicle(client, driver.headers, plate="AB12CD")

    response = await client.post(VEHICLES, json={"plate": duplicate}, headers=driver.headers)

    assert_error(response, 409, "plate_taken")
    assert response.json()["error"]["details"] == {"plate": "AB12CD"}


async def test_two_owners_may_register_the_same_plate(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    first = await make_user()
    second = await make_user()
    await create_vehicle(client, first.headers, plate="AB12CD")

    response = await client.post(VEHICLES, json={"plate": "ab-12-cd"}, headers=second.headers)

    assert response.status_code == 201, response.text


async def test_changing_a_plate_to_another_own_vehicles_plate_gets_409(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    driver = await make_user()
    await create_vehicle(client, driver.headers, plate="AB12CD")
    other = await create_vehicle(client, driver.headers, plate="ZZ999")

    response = await client.patch(
        f"{VEHICLES}/{other['id']}", json={"plate": "ab 12 cd"}, headers=driver.headers
    )

    assert_error(response, 409, "plate_taken")
    again = await client.get(f"{VEHICLES}/{other['id']}", headers=driver.headers)
    assert again.json()["plate"] == "ZZ999"


async def test_patching_a_vehicle_with_its_own_plate_is_allowed(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    driver = await make_user()
    vehicle = await create_vehicle(client, driver.headers, plate="AB12CD")

    response = await client.patch(
        f"{VEHICLES}/{vehicle['id']}", json={"plate": "ab-12-cd"}, headers=driver.headers
    )

    assert response.status_code == 200, response.text


async def test_concurrent_creation_of_one_plate_gives_one_201_and_409s(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    driver = await make_user()

    responses = await asyncio.gather(
        *(client.post(VEHICLES, json={"plate": "RACE1"}, headers=driver.headers) for _ in range(4))
    )

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "plate_taken")


# --- listing ------------------------------------------------------------------------------


async def test_listing_shows_only_own_vehicles_paginated(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    driver = await make_user()
    other = await make_user()
    mine = [await create_vehicle(client, driver.headers, plate=f"MINE{i}") for i in range(3)]
    await create_vehicle(client, other.headers, plate="THEIRS1")

    first = await client.get(VEHICLES, params={"limit": 2}, headers=driver.headers)
    rest = await client.get(VEHICLES, params={"limit": 2, "offset": 2}, headers=driver.headers)

    assert first.status_code == 200, first.text
    assert set(first.json()) == {"items", "total", "limit", "offset"}
    assert first.json()["total"] == 3
    assert (first.json()["limit"], first.json()["offset"]) == (2, 0)
    assert first.json()["items"] == mine[:2]
    assert rest.json()["items"] == mine[2:]
    assert rest.json()["total"] == 3
    beyond = await client.get(VEHICLES, params={"offset": 10}, headers=driver.headers)
    assert beyond.json()["items"] == []
    assert beyond.json()["total"] == 3


async def test_listing_with_no_vehicles_is_empty(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    driver = await make_user()

    response = await client.get(VEHICLES, headers=driver.headers)

    assert response.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}, {"offset": 1_000_001}],
)
async def test_listing_with_out_of_range_paging_gets_422(
    client: httpx.AsyncClient, make_user: MakeUser, params: dict[str, Any]
) -> None:
    driver = await make_user()

    response = await client.get(VEHICLES, params=params, headers=driver.headers)

    assert_error(response, 422, "validation_error")


async def test_anonymous_vehicle_list_and_create_get_401(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(VEHICLES), 401, "not_authenticated")
    assert_error(await client.post(VEHICLES, json={"plate": "AB1"}), 401, "not_authenticated")


# --- another user's vehicle ---------------------------------------------------------------

WHO = ["owner", "another_driver", "manager_of_an_operator", "admin", "anonymous"]
EXPECTED = {
    "owner": 200,
    "another_driver": 404,
    "manager_of_an_operator": 404,
    "admin": 404,
    "anonymous": 401,
}


async def headers_for(
    who: str, owner_headers: dict[str, str], make_user: MakeUser, make_operator: MakeOperator
) -> dict[str, str]:
    if who == "owner":
        return owner_headers
    if who == "anonymous":
        return {}
    if who == "admin":
        return (await make_user(role=Role.admin)).headers
    if who == "manager_of_an_operator":
        return (await make_user(role=Role.manager, manages=(await make_operator(),))).headers
    return (await make_user()).headers


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_vehicle_access_by_each_kind_of_caller(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    who: str,
    method: str,
) -> None:
    owner = await make_user()
    vehicle = await create_vehicle(client, owner.headers, color="green")
    path = f"{VEHICLES}/{vehicle['id']}"
    headers = await headers_for(who, owner.headers, make_user, make_operator)

    response = await client.request(
        method, path, json={"color": "black"} if method == "PATCH" else None, headers=headers
    )

    expected = EXPECTED[who]
    if expected == 200:
        assert response.status_code == (204 if method == "DELETE" else 200), response.text
        return
    assert_error(response, expected, "vehicle_not_found" if expected == 404 else None)
    # Nothing changed for the owner.
    after = await client.get(path, headers=owner.headers)
    assert after.status_code == 200
    assert after.json()["color"] == "green"


async def test_another_users_vehicle_looks_exactly_like_a_missing_one(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    owner = await make_user()
    stranger = await make_user()
    vehicle = await create_vehicle(client, owner.headers)

    theirs = await client.get(f"{VEHICLES}/{vehicle['id']}", headers=stranger.headers)
    missing = await client.get(f"{VEHICLES}/{vehicle['id'] + 1000}", headers=stranger.headers)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
