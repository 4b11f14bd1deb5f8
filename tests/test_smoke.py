import httpx

from tests.conftest import MakeUser


async def test_register_login_me(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    actor = await make_user()
    response = await client.get("/api/v1/users/me", headers=actor.headers)
    assert response.status_code == 200, response.text
    assert response.json()["username"] == actor.username
