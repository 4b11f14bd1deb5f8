"""Lots: who may create, see and change them, search, deletion and input validation."""

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from parkspot.models import Role, User
from parkspot.state import AppState
from tests.conftest import Actor, MakeOperator, MakeUser, assert_error
from tests.lot_helpers import LOTS, add_member, create_lot, lot_body


@dataclass
class Owner:
    operator_id: int
    manager: Actor


@pytest.fixture
async def owner(make_user: MakeUser, make_operator: MakeOperator) -> Owner:
    """An operator and a manager of it."""
    operator_id = await make_operator()
    return Owner(operator_id, await make_user(Role.manager, manages=(operator_id,)))


async def test_manager_creates_lot_that_anyone_can_read(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    operator_id, manager = owner.operator_id, owner.manager
    lot = await create_lot(client, manager, operator_id)
    assert lot["operator_id"] == operator_id
    assert lot["currency"] == "EUR"
    assert lot["visibility"] == "public"
    assert lot["timezone"] == "Europe/Paris"
    assert lot["distance_km"] is None
    response = await client.get(f"{LOTS}/{lot['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == lot


async def test_money_reads_back_as_the_same_plain_text_on_every_database(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    operator_id, manager = owner.operator_id, owner.manager
    lot = await create_lot(client, manager, operator_id, hourly_rate=10, daily_max="0.0125")
    assert (lot["hourly_rate"], lot["daily_max"]) == ("10.00", "0.0125")
    read = (await client.get(f"{LOTS}/{lot['id']}")).json()
    assert (read["hourly_rate"], read["daily_max"]) == ("10.00", "0.0125")
    lot = await create_lot(client, manager, operator_id, hourly_rate="1E+1", daily_max=None)
    read = (await client.get(f"{LOTS}/{lot['id']}")).json()
    assert (read["hourly_rate"], read["daily_max"]) == ("10.00", None)
    lot = await create_lot(client, manager, operator_id, hourly_rate="-0", daily_max="12.5")
    read = (await client.get(f"{LOTS}/{lot['id']}")).json()
    assert (read["hourly_rate"], read["daily_max"]) == ("0.00", "12.50")


async def test_admin_creates_lots_for_any_operator(
    client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator
) -> None:
    operator_id = await make_operator()
    admin = await make_user(Role.admin)
    await create_lot(client, admin, operator_id)
    response = await client.post(LOTS, json=lot_body(999_999), headers=admin.headers)
    assert_error(response, 404, "operator_not_found")


async def test_only_managers_of_the_operator_create_its_lots(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
) -> None:
    operator_id = await make_operator()
    other_operator = await make_operator()
    outsider = await make_user(Role.manager, manages=(other_operator,))
    response = await client.post(LOTS, json=lot_body(operator_id), headers=outsider.headers)
    assert_error(response, 404, "operator_not_found")

    member = await make_user()
    await add_member(state, operator_id, member.id)
    response = await client.post(LOTS, json=lot_body(operator_id), headers=member.headers)
    assert_error(response, 403, "not_operator_manager")

    assert_error(await client.post(LOTS, json=lot_body(operator_id)), 401)


async def test_members_only_lots_are_seen_only_by_members_managers_and_admins(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
) -> None:
    operator_id = await make_operator()
    manager = await make_user(Role.manager, manages=(operator_id,))
    public = await create_lot(client, manager, operator_id, name="Public")
    private = await create_lot(client, manager, operator_id, name="Staff", visibility="members")
    member = await make_user()
    await add_member(state, operator_id, member.id)
    driver = await make_user()
    admin = await make_user(Role.admin)

    for headers, sees_private in (
        ({}, False),
        (driver.headers, False),
        (member.headers, True),
        (manager.headers, True),
        (admin.headers, True),
    ):
        listed = (await client.get(LOTS, headers=headers)).json()
        names = [lot["name"] for lot in listed["items"]]
        assert names == (["Public", "Staff"] if sees_private else ["Public"]), headers
        assert listed["total"] == len(names)
        response = await client.get(f"{LOTS}/{private['id']}", headers=headers)
        if sees_private:
            assert response.status_code == 200, response.text
        else:
            assert_error(response, 404, "lot_not_found")
        spots = await client.get(f"{LOTS}/{private['id']}/spots", headers=headers)
        assert spots.status_code == (200 if sees_private else 404)
    assert (await client.get(f"{LOTS}/{public['id']}")).status_code == 200


async def test_changing_a_lot_is_403_for_those_who_see_it_and_404_for_the_rest(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
) -> None:
    operator_id = await make_operator()
    manager = await make_user(Role.manager, manages=(operator_id,))
    public = await create_lot(client, manager, operator_id)
    private = await create_lot(client, manager, operator_id, visibility="members")
    other_manager = await make_user(Role.manager, manages=(await make_operator(),))
    member = await make_user()
    await add_member(state, operator_id, member.id)
    change = {"name": "Renamed"}

    for actor in (other_manager, member):
        response = await client.patch(f"{LOTS}/{public['id']}", json=change, headers=actor.headers)
        assert_error(response, 403, "not_lot_manager")
    response = await client.patch(
        f"{LOTS}/{private['id']}", json=change, headers=other_manager.headers
    )
    assert_error(response, 404, "lot_not_found")
    response = await client.patch(f"{LOTS}/{private['id']}", json=change, headers=member.headers)
    assert_error(response, 403, "not_lot_manager")
    response = await client.delete(f"{LOTS}/{public['id']}", headers=other_manager.headers)
    assert_error(response, 403, "not_lot_manager")
    assert_error(await client.patch(f"{LOTS}/{public['id']}", json=change), 401)
    assert (await client.get(f"{LOTS}/{public['id']}")).json()["name"] == "Gare du Nord"


async def test_a_manager_demoted_to_driver_no_longer_manages_the_lot(
    client: httpx.AsyncClient,
    owner: Owner,
    state: AppState,
) -> None:
    operator_id, manager = owner.operator_id, owner.manager
    lot = await create_lot(client, manager, operator_id)
    async with state.database.transaction() as session:
        user = await session.get(User, manager.id)
        assert user is not None
        user.role = Role.driver
    response = await client.patch(
        f"{LOTS}/{lot['id']}", json={"name": "Mine"}, headers=manager.headers
    )
    assert_error(response, 403, "not_lot_manager")


async def test_patch_changes_only_the_given_fields_and_null_removes_the_daily_max(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    operator_id, manager = owner.operator_id, owner.manager
    lot = await create_lot(client, manager, operator_id)
    response = await client.patch(
        f"{LOTS}/{lot['id']}",
        json={"hourly_rate": 3, "daily_max": None, "visibility": "members", "name": " New "},
        headers=manager.headers,
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["hourly_rate"] == "3.00"
    assert updated["daily_max"] is None
    assert updated["visibility"] == "members"
    assert updated["name"] == "New"
    assert updated["address"] == lot["address"]
    assert updated["updated_at"] >= lot["updated_at"]
    assert updated["operator_id"] == operator_id


@pytest.mark.parametrize(
    "change",
    [
        {"name": None},
        {"hourly_rate": None},
        {"visibility": None},
        {"operator_id": 2},
        {"timezone": "Mars/Olympus"},
        {"latitude": 90.5},
    ],
)
async def test_patch_rejects_nulls_for_required_fields_and_unknown_fields(
    client: httpx.AsyncClient,
    owner: Owner,
    change: dict[str, Any],
) -> None:
    operator_id, manager = owner.operator_id, owner.manager
    lot = await create_lot(client, manager, operator_id)
    response = await client.patch(f"{LOTS}/{lot['id']}", json=change, headers=manager.headers)
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "override",
    [
        {"name": "   "},
        {"address": ""},
        {"name": "Nul\x00byte"},
        {"address": "two\nlines"},
        {"latitude": 91},
        {"longitude": -180.5},
        {"latitude": "NaN"},
        {"timezone": "../../etc/passwd"},
        {"timezone": "Not/AZone"},
        {"hourly_rate": -1},
        {"hourly_rate": "0.00001"},
        {"hourly_rate": "123456789"},
        {"hourly_rate": "Infinity"},
        {"hourly_rate": "cheap"},
        {"daily_max": -5},
        {"currency": "EURO"},
        {"currency": "E1R"},
        {"visibility": "secret"},
        {"operator_id": 0},
        {"is_active": "sometimes"},
        # Found by tests/test_fuzz.py: numbers as flags, text or flags as numbers, and
        # money text the document did not describe.
        {"is_active": 1},
        {"hourly_rate": ""},
        {"hourly_rate": " 2.5"},
        {"hourly_rate": "2_5"},
        {"latitude": "48.85"},
        {"operator_id": True},
    ],
)
async def test_invalid_lot_bodies_are_422_in_the_error_shape(
    client: httpx.AsyncClient,
    owner: Owner,
    override: dict[str, Any],
) -> None:
    operator_id, manager = owner.operator_id, owner.manager
    response = await client.post(
        LOTS, json=lot_body(operator_id) | override, headers=manager.headers
    )
    assert_error(response, 422, "validation_error")


async def test_a_closed_lot_stays_listed_with_is_active_false(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    lot = await create_lot(client, owner.manager, owner.operator_id)
    assert lot["is_active"] is True
    response = await client.patch(
        f"{LOTS}/{lot['id']}", json={"is_active": False}, headers=owner.manager.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    listed = (await client.get(LOTS)).json()
    assert [item["id"] for item in listed["items"]] == [lot["id"]]
    assert listed["items"][0]["is_active"] is False
    assert (await client.get(f"{LOTS}/{lot['id']}")).json()["is_active"] is False


async def test_a_deleted_lot_and_its_spots_are_gone_from_every_endpoint(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    operator_id, manager = owner.operator_id, owner.manager
    lot = await create_lot(client, manager, operator_id)
    spot = (
        await client.post(
            f"{LOTS}/{lot['id']}/spots", json={"label": "A1"}, headers=manager.headers
        )
    ).json()
    response = await client.delete(f"{LOTS}/{lot['id']}", headers=manager.headers)
    assert response.status_code == 204, response.text

    assert_error(await client.get(f"{LOTS}/{lot['id']}"), 404, "lot_not_found")
    assert (await client.get(LOTS, headers=manager.headers)).json()["total"] == 0
    assert_error(await client.get(f"{LOTS}/{lot['id']}/spots"), 404, "lot_not_found")
    assert_error(await client.get(f"/api/v1/spots/{spot['id']}"), 404, "spot_not_found")
    response = await client.patch(
        f"/api/v1/spots/{spot['id']}", json={"out_of_service": True}, headers=manager.headers
    )
    assert_error(response, 404, "spot_not_found")
    response = await client.delete(f"{LOTS}/{lot['id']}", headers=manager.headers)
    assert_error(response, 404, "lot_not_found")


# --- search ----------------------------------------------------------------------------


@pytest.fixture
async def places(client: httpx.AsyncClient, owner: Owner) -> dict[str, dict[str, Any]]:
    """Lots in Paris, Versailles, London and on both sides of the antimeridian (Fiji)."""
    operator_id, manager = owner.operator_id, owner.manager
    spec = {
        "louvre": ("Louvre 100% underground", "Rue de Rivoli, Paris", 48.8606, 2.3376),
        "nord": ("Gare du Nord", "18 Rue de Dunkerque, PARIS", 48.8809, 2.3553),
        "versailles": ("Château", "Place d'Armes, Versailles", 48.8049, 2.1204),
        "london": ("King's Cross", "Euston Road, London", 51.5320, -0.1233),
        "fiji_east": ("Taveuni east", "Taveuni", -16.80, 179.99),
        "fiji_west": ("Taveuni west", "Taveuni", -16.80, -179.99),
    }
    return {
        key: await create_lot(
            client,
            manager,
            operator_id,
            name=name,
            address=address,
            latitude=lat,
            longitude=lon,
        )
        for key, (name, address, lat, lon) in spec.items()
    }


def _ids(page: dict[str, Any], places: dict[str, dict[str, Any]]) -> list[str]:
    by_id = {lot["id"]: key for key, lot in places.items()}
    return [by_id[lot["id"]] for lot in page["items"]]


async def test_q_matches_name_or_address_case_insensitively_and_literally(
    client: httpx.AsyncClient, places: dict[str, dict[str, Any]]
) -> None:
    page = (await client.get(LOTS, params={"q": "paris"})).json()
    assert _ids(page, places) == ["louvre", "nord"]
    page = (await client.get(LOTS, params={"q": "100%"})).json()
    assert _ids(page, places) == ["louvre"]
    page = (await client.get(LOTS, params={"q": "_"})).json()
    assert page["total"] == 0


async def test_near_lists_lots_within_the_radius_nearest_first_with_their_distance(
    client: httpx.AsyncClient, places: dict[str, dict[str, Any]]
) -> None:
    # The Louvre pyramid: the Louvre lot is 0.1 km away, Gare du Nord 2.8 km, Versailles 17.
    center = "48.8610,2.3358"
    page = (await client.get(LOTS, params={"near": center, "radius_km": 20})).json()
    assert _ids(page, places) == ["louvre", "nord", "versailles"]
    distances = [lot["distance_km"] for lot in page["items"]]
    assert distances == sorted(distances)
    assert 0.05 < distances[0] < 0.3
    assert 2.5 < distances[1] < 3.2
    page = (await client.get(LOTS, params={"near": center})).json()
    assert _ids(page, places) == ["louvre", "nord"]
    page = (
        await client.get(LOTS, params={"near": center, "radius_km": 20, "limit": 1, "offset": 1})
    ).json()
    assert (_ids(page, places), page["total"]) == (["nord"], 3)
    page = (await client.get(LOTS, params={"near": center, "radius_km": 500, "q": "road"})).json()
    assert _ids(page, places) == ["london"]


async def test_near_and_bbox_work_across_the_antimeridian(
    client: httpx.AsyncClient, places: dict[str, dict[str, Any]]
) -> None:
    page = (await client.get(LOTS, params={"near": "-16.8,-179.995", "radius_km": 5})).json()
    assert sorted(_ids(page, places)) == ["fiji_east", "fiji_west"]
    page = (await client.get(LOTS, params={"bbox": "179.9,-17,-179.9,-16"})).json()
    assert _ids(page, places) == ["fiji_east", "fiji_west"]


async def test_bbox_keeps_the_lots_inside_the_box(
    client: httpx.AsyncClient, places: dict[str, dict[str, Any]]
) -> None:
    page = (await client.get(LOTS, params={"bbox": "2.2,48.8,2.4,48.9"})).json()
    assert _ids(page, places) == ["louvre", "nord"]
    page = (await client.get(LOTS, params={"bbox": "-1,48,3,52", "q": "king"})).json()
    assert _ids(page, places) == ["london"]


async def test_operator_filter_keeps_that_operators_lots(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    places: dict[str, dict[str, Any]],
) -> None:
    other = await make_operator()
    admin = await make_user(Role.admin)
    mine = await create_lot(client, admin, other, name="Other")
    page = (await client.get(LOTS, params={"operator_id": other})).json()
    assert [lot["id"] for lot in page["items"]] == [mine["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {"near": "48.8"},
        {"near": "north,south"},
        {"near": "91,2"},
        {"near": "nan,2"},
        {"near": "48.8,2.3", "radius_km": 0},
        {"near": "48.8,2.3", "radius_km": 5000},
        {"bbox": "1,2,3"},
        {"bbox": "2,49,3,48"},
        {"bbox": "2,48,3,inf"},
        {"q": "x" * 101},
        {"limit": 0},
        {"offset": -1},
    ],
)
async def test_bad_search_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    assert_error(await client.get(LOTS, params=params), 422, "validation_error")


async def test_unknown_lot_ids_are_404_and_out_of_range_ids_422(
    client: httpx.AsyncClient,
) -> None:
    assert_error(await client.get(f"{LOTS}/12345"), 404, "lot_not_found")
    assert_error(await client.get(f"{LOTS}/0"), 422, "validation_error")
    assert_error(await client.get(f"{LOTS}/99999999999999"), 422, "validation_error")
    assert_error(await client.get(f"{LOTS}/abc"), 422, "validation_error")


async def test_partial_updates_document_null_only_where_null_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    # Found by tests/test_fuzz.py: every field of a PATCH was documented as nullable, and
    # a null where only "absent" was meant got a 422.
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]

    def nullable(model: str, field: str) -> bool:
        return {"type": "null"} in schemas[model]["properties"][field].get("anyOf", [])

    assert nullable("LotUpdate", "daily_max")
    assert nullable("SpotUpdate", "level")
    assert not nullable("LotUpdate", "name")
    assert not nullable("SpotUpdate", "kind")
    assert not nullable("ReservationUpdate", "ends_at")
    assert schemas["SpotUpdate"]["properties"]["kind"]["$ref"].endswith("/SpotKind")


async def test_reads_open_to_anonymous_callers_document_the_token_as_optional(
    client: httpx.AsyncClient,
) -> None:
    # Found by tests/test_fuzz.py: every route behind the bearer scheme was documented as
    # requiring the token, anonymous reads included.
    paths = (await client.get("/openapi.json")).json()["paths"]
    bearer: dict[str, list[str]] = {"OAuth2PasswordBearer": []}

    for path in (LOTS, f"{LOTS}/{{lot_id}}", "/api/v1/spots/{spot_id}", "/api/v1/availability"):
        assert paths[path]["get"]["security"] == [bearer, {}], path
    assert paths[LOTS]["post"]["security"] == [bearer]
    assert paths["/api/v1/vehicles"]["get"]["security"] == [bearer]
