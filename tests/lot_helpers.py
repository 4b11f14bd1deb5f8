"""Helpers shared by the lot and spot tests: lot bodies, creating lots, plain members."""

from typing import Any

import httpx

from parkspot.models import MembershipRole, OperatorMember
from parkspot.state import AppState
from tests.conftest import Actor

LOTS = "/api/v1/lots"
SPOTS = "/api/v1/spots"


def lot_body(operator_id: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "operator_id": operator_id,
        "name": "Gare du Nord",
        "address": "18 Rue de Dunkerque, Paris",
        "latitude": 48.8809,
        "longitude": 2.3553,
        "timezone": "Europe/Paris",
        "hourly_rate": "2.50",
        "daily_max": "20",
        "currency": "eur",
    }
    return body | overrides


async def create_lot(
    client: httpx.AsyncClient, actor: Actor, operator_id: int, **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        LOTS, json=lot_body(operator_id, **overrides), headers=actor.headers
    )
    assert response.status_code == 201, response.text
    lot: dict[str, Any] = response.json()
    return lot


async def add_member(state: AppState, operator_id: int, user_id: int) -> None:
    """Makes the user a plain member of the operator, as a passkey sign-up would."""
    async with state.database.transaction() as session:
        session.add(
            OperatorMember(operator_id=operator_id, user_id=user_id, role=MembershipRole.member)
        )
