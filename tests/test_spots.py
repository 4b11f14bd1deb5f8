"""Spots: single and batch creation, labels, out of service, deletion, free spots, quotes."""

import asyncio
from typing import Any

import httpx
import pytest

from parkspot.models import Role
from parkspot.state import AppState
from tests.conftest import Actor, MakeOperator, MakeUser, assert_error
from tests.lot_helpers import LOTS, SPOTS, add_member, create_lot


class Setup:
    def __init__(self, manager: Actor, lot: dict[str, Any]) -> None:
        self.manager = manager
        self.lot = lot
        self.spots = f"{LOTS}/{lot['id']}/spots"

    async def add(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
        response = await client.post(self.spots, json=body, headers=self.manager.headers)
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
async def lot(client: httpx.AsyncClient, make_user: MakeUser, make_operator: MakeOperator) -> Setup:
    operator_id = await make_operator()
    manager = await make_user(Role.manager, manages=(operator_id,))
    return Setup(manager, await create_lot(client, manager, operator_id))


async def test_one_spot_is_created_with_an_upper_case_label(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    spot = await lot.add(client, {"label": " b12 ", "level": "-1", "kind": "ev"})
    assert spot == {
        "id": spot["id"],
        "lot_id": lot.lot["id"],
        "label": "B12",
        "level": "-1",
        "kind": "ev",
        "state": "available",
    }
    assert (await client.get(f"{SPOTS}/{spot['id']}")).json() == spot


async def test_a_batch_creates_prefix_numbered_spots_in_order(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    created = await lot.add(client, {"prefix": "A", "count": 30})
    labels = [s["label"] for s in created["items"]]
    assert labels == [f"A{n}" for n in range(1, 31)]
    assert {s["kind"] for s in created["items"]} == {"standard"}
    created = await lot.add(client, {"prefix": "m", "count": 3, "start": 8, "kind": "motorcycle"})
    assert [s["label"] for s in created["items"]] == ["M8", "M9", "M10"]

    page = (await client.get(lot.spots, params={"limit": 10, "offset": 28})).json()
    assert page["total"] == 33
    assert [s["label"] for s in page["items"]] == ["A29", "A30", "M8", "M9", "M10"]
    page = (await client.get(lot.spots, params={"kind": "motorcycle"})).json()
    assert (page["total"], page["limit"]) == (3, 500)


async def test_a_batch_with_a_taken_label_creates_nothing_and_names_the_clash(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    await lot.add(client, {"label": "A5"})
    response = await client.post(
        lot.spots, json={"prefix": "A", "count": 10}, headers=lot.manager.headers
    )
    assert_error(response, 409, "spot_label_taken")
    assert response.json()["error"]["details"] == {"labels": ["A5"]}
    response = await client.post(lot.spots, json={"label": "a5"}, headers=lot.manager.headers)
    assert_error(response, 409, "spot_label_taken")
    assert (await client.get(lot.spots)).json()["total"] == 1


async def test_the_same_label_in_another_lot_is_fine(client: httpx.AsyncClient, lot: Setup) -> None:
    await lot.add(client, {"label": "A1"})
    other = Setup(
        lot.manager, await create_lot(client, lot.manager, lot.lot["operator_id"], name="Other")
    )
    await other.add(client, {"label": "A1"})


async def test_concurrent_batches_with_the_same_labels_create_them_once(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(lot.spots, json={"prefix": "C", "count": 50}, headers=lot.manager.headers)
            for _ in range(4)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "spot_label_taken")
    assert (await client.get(lot.spots)).json()["total"] == 50


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"label": ""},
        {"label": "A 1"},
        {"label": "-A1"},
        {"label": "A" * 17},
        {"label": "A1", "kind": "truck"},
        {"label": "A1", "level": "B\x001"},
        {"label": "A1", "out_of_service": True},
        {"label": "A1", "count": 3},
        {"prefix": "A"},
        {"prefix": "A", "count": 0},
        {"prefix": "A", "count": 1001},
        {"prefix": "A", "count": 2, "start": -1},
        # Found by tests/test_fuzz.py: JSON false and "2" were read as numbers.
        {"prefix": "A", "count": 2, "start": False},
        {"prefix": "A", "count": "2"},
        {"prefix": "A" * 15, "count": 10},
        {"prefix": "A B", "count": 2},
        {"prefix": "A", "count": 2, "label": "A1"},
        [],
        "A1",
    ],
)
async def test_invalid_spot_bodies_are_422(
    client: httpx.AsyncClient, lot: Setup, body: Any
) -> None:
    response = await client.post(lot.spots, json=body, headers=lot.manager.headers)
    assert_error(response, 422, "validation_error")


async def test_only_managers_add_change_or_delete_spots(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    make_operator: MakeOperator,
    state: AppState,
    lot: Setup,
) -> None:
    spot = await lot.add(client, {"label": "A1"})
    private = Setup(
        lot.manager,
        await create_lot(client, lot.manager, lot.lot["operator_id"], visibility="members"),
    )
    hidden_spot = await private.add(client, {"label": "A1"})
    driver = await make_user()
    member = await make_user()
    await add_member(state, lot.lot["operator_id"], member.id)

    for actor in (driver, member):
        response = await client.post(lot.spots, json={"label": "X"}, headers=actor.headers)
        assert_error(response, 403, "not_lot_manager")
        response = await client.patch(
            f"{SPOTS}/{spot['id']}", json={"out_of_service": True}, headers=actor.headers
        )
        assert_error(response, 403, "not_lot_manager")
        assert_error(
            await client.delete(f"{SPOTS}/{spot['id']}", headers=actor.headers),
            403,
            "not_lot_manager",
        )
    response = await client.post(private.spots, json={"label": "X"}, headers=driver.headers)
    assert_error(response, 404, "lot_not_found")
    response = await client.patch(
        f"{SPOTS}/{hidden_spot['id']}", json={"label": "Z"}, headers=driver.headers
    )
    assert_error(response, 404, "spot_not_found")
    assert_error(await client.get(f"{SPOTS}/{hidden_spot['id']}"), 404, "spot_not_found")
    assert_error(await client.post(lot.spots, json={"label": "X"}), 401)
    assert_error(await client.delete(f"{SPOTS}/{spot['id']}"), 401)

    admin = await make_user(Role.admin)
    response = await client.patch(
        f"{SPOTS}/{hidden_spot['id']}", json={"kind": "ev"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text


async def test_patch_takes_a_spot_out_of_service_and_back(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    spot = await lot.add(client, {"label": "A1", "level": "1"})
    url = f"{SPOTS}/{spot['id']}"
    response = await client.patch(url, json={"out_of_service": True}, headers=lot.manager.headers)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "out_of_service"
    assert (await client.get(lot.spots)).json()["items"][0]["state"] == "out_of_service"
    response = await client.patch(
        url,
        json={"out_of_service": False, "kind": "accessible", "label": "h1", "level": None},
        headers=lot.manager.headers,
    )
    assert response.json() == spot | {
        "state": "available",
        "kind": "accessible",
        "label": "H1",
        "level": None,
    }


async def test_renaming_a_spot_to_a_taken_label_is_409(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    await lot.add(client, {"label": "A1"})
    spot = await lot.add(client, {"label": "A2"})
    url = f"{SPOTS}/{spot['id']}"
    response = await client.patch(url, json={"label": "a1"}, headers=lot.manager.headers)
    assert_error(response, 409, "spot_label_taken")
    response = await client.patch(url, json={"label": "A2"}, headers=lot.manager.headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "change",
    [{"label": None}, {"kind": None}, {"out_of_service": None}, {"lot_id": 2}, {"state": "x"}],
)
async def test_spot_patch_rejects_nulls_and_unknown_fields(
    client: httpx.AsyncClient, lot: Setup, change: dict[str, Any]
) -> None:
    spot = await lot.add(client, {"label": "A1"})
    response = await client.patch(f"{SPOTS}/{spot['id']}", json=change, headers=lot.manager.headers)
    assert_error(response, 422, "validation_error")


async def test_a_deleted_spot_is_gone(client: httpx.AsyncClient, lot: Setup) -> None:
    spot = await lot.add(client, {"label": "A1"})
    response = await client.delete(f"{SPOTS}/{spot['id']}", headers=lot.manager.headers)
    assert response.status_code == 204, response.text
    assert_error(await client.get(f"{SPOTS}/{spot['id']}"), 404, "spot_not_found")
    assert (await client.get(lot.spots)).json()["total"] == 0
    await lot.add(client, {"label": "A1"})


# --- free spots and quotes -------------------------------------------------------------

WINDOW = {"starts_at": "2030-03-01T08:00:00+01:00", "ends_at": "2030-03-01T10:30:00+01:00"}


async def test_free_spots_leave_out_spots_out_of_service_and_filter_by_kind(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    created = await lot.add(client, {"prefix": "A", "count": 3})
    ev = await lot.add(client, {"label": "E1", "kind": "ev"})
    broken = created["items"][1]
    await client.patch(
        f"{SPOTS}/{broken['id']}", json={"out_of_service": True}, headers=lot.manager.headers
    )
    response = await client.get(f"{LOTS}/{lot.lot['id']}/free-spots", params=WINDOW)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["label"] for s in body["items"]] == ["A1", "A3", "E1"]
    assert body["starts_at"] == "2030-03-01T07:00:00Z"
    assert body["ends_at"] == "2030-03-01T09:30:00Z"
    body = (
        await client.get(f"{LOTS}/{lot.lot['id']}/free-spots", params=WINDOW | {"kind": "ev"})
    ).json()
    assert [s["id"] for s in body["items"]] == [ev["id"]]
    response = await client.get(
        f"{LOTS}/{lot.lot['id']}/free-spots", params=WINDOW | {"kind": "truck"}
    )
    assert_error(response, 422, "validation_error")


async def test_quote_prices_the_window_from_the_lot_rates(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    # 2.50 an hour, at most 20 a day, billed per started 15 minutes:
    # 26 h 20 min = one capped day + 2 h 30 min (6.25).
    params = {"starts_at": "2030-03-01T08:00:00+01:00", "ends_at": "2030-03-02T09:20:00Z"}
    response = await client.get(f"{LOTS}/{lot.lot['id']}/quote", params=params)
    assert response.status_code == 200, response.text
    quote = response.json()
    assert quote["amount"] == "26.25"
    assert quote["currency"] == "EUR"
    assert quote["starts_at"] == "2030-03-01T07:00:00Z"
    assert [(p["billed_minutes"], p["amount"], p["capped"]) for p in quote["breakdown"]] == [
        (1440, "20.00", True),
        (150, "6.25", False),
    ]
    assert quote["breakdown"][1]["starts_at"] == "2030-03-02T07:00:00Z"


async def test_quote_ignores_any_price_sent_by_the_client(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    params = WINDOW | {"amount": "0.01", "hourly_rate": "0"}
    quote = (await client.get(f"{LOTS}/{lot.lot['id']}/quote", params=params)).json()
    assert quote["amount"] == "6.25"


@pytest.mark.parametrize("path", ["quote", "free-spots"])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"starts_at": "2030-03-01T08:00:00Z"},
        {"starts_at": "2030-03-01T08:00:00", "ends_at": "2030-03-01T09:00:00"},
        {"starts_at": "2030-03-01T09:00:00Z", "ends_at": "2030-03-01T09:00:00Z"},
        {"starts_at": "2030-03-01T10:00:00Z", "ends_at": "2030-03-01T09:00:00Z"},
        {"starts_at": "2030-03-01T00:00:00Z", "ends_at": "2030-04-02T00:00:00Z"},
        {"starts_at": "0001-01-01T00:00:00+01:00", "ends_at": "0001-01-01T05:00:00+01:00"},
        {"starts_at": "9999-12-31T20:00:00-05:00", "ends_at": "9999-12-31T22:00:00-05:00"},
        {"starts_at": "tomorrow", "ends_at": "2030-03-01T09:00:00Z"},
    ],
)
async def test_bad_windows_are_422(
    client: httpx.AsyncClient, lot: Setup, path: str, params: dict[str, str]
) -> None:
    response = await client.get(f"{LOTS}/{lot.lot['id']}/{path}", params=params)
    assert_error(response, 422, "validation_error")


async def test_free_spots_and_quotes_of_hidden_lots_are_404(
    client: httpx.AsyncClient, lot: Setup
) -> None:
    private = await create_lot(client, lot.manager, lot.lot["operator_id"], visibility="members")
    for path in ("quote", "free-spots"):
        response = await client.get(f"{LOTS}/{private['id']}/{path}", params=WINDOW)
        assert_error(response, 404, "lot_not_found")
        response = await client.get(
            f"{LOTS}/{private['id']}/{path}", params=WINDOW, headers=lot.manager.headers
        )
        assert response.status_code == 200, response.text
