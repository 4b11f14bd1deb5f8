"""The simulator's HTTP side: one client of the public API that counts every answer.

During the run, a request never raises: 2xx gives the body; 409, 422 and 429 are refusals
(the server applying its rules); 5xx, other 4xx and transport errors are errors. During
setup (``Api.setup``) anything but 2xx raises SetupError with a message for the user.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

API = "/api/v1"
REQUEST_TIMEOUT_SECONDS = 15.0
# Refusals are the server applying its rules (a spot taken, a window closed).
REFUSED = frozenset({409, 422, 429})

Json = dict[str, Any]


class SetupError(Exception):
    """The run cannot start: the server is unreachable, the credentials are wrong, or the
    account manages no lots. The message is meant for the user as it is."""


@dataclass
class Tally:
    """What the run did so far; read by the progress display and the summary."""

    actions: int = 0
    requests: int = 0
    drivers: int = 0
    booked: int = 0
    cancelled: int = 0
    entries: int = 0
    exits: int = 0
    sensor_reports: int = 0
    reads: int = 0
    refused: int = 0
    errors: int = 0
    # Gate passages by the server's verdict: checked_in, unplanned, checked_out, ...
    passages: Counter[str] = field(default_factory=Counter)
    # "409 lot_full", "spot rejected unknown_spot", ...
    refusals: Counter[str] = field(default_factory=Counter)
    # "500 internal_error", "ConnectError", ...
    failures: Counter[str] = field(default_factory=Counter)

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.refusals[reason] += 1

    def fail(self, reason: str) -> None:
        self.errors += 1
        self.failures[reason] += 1


@dataclass
class Account:
    """A user the simulator signs in as; signs in again when its token expires."""

    username: str
    password: str
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def error_code(response: httpx.Response) -> str:
    """The ``error.code`` of the one error shape, or ``?``."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


def error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


class Api:
    def __init__(self, http: httpx.AsyncClient, tally: Tally) -> None:
        self.http = http
        self.tally = tally

    async def _send(
        self,
        method: str,
        path: str,
        *,
        account: Account | None = None,
        device_key: str | None = None,
        headers: dict[str, str] | None = None,
        json: Json | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One request, signing ``account`` in again once if its token was refused (it
        expired). Raises httpx.HTTPError on transport errors, SetupError when signing in
        again fails."""

        async def request() -> httpx.Response:
            sent = dict(headers or {})
            if account is not None:
                sent |= account.headers
            if device_key is not None:
                sent["X-Device-Key"] = device_key
            self.tally.requests += 1
            return await self.http.request(
                method, API + path, headers=sent, json=json, params=params
            )

        response = await request()
        if response.status_code == 401 and account is not None:
            await self.login(account)
            response = await request()
        return response

    async def login(self, account: Account) -> None:
        """Raises SetupError when the server refuses the credentials."""
        self.tally.requests += 1
        response = await self.http.post(
            f"{API}/auth/login", json={"username": account.username, "password": account.password}
        )
        if response.status_code != 200:
            raise SetupError(
                f"the server refused the login of {account.username!r} "
                f"({response.status_code} {error_code(response)}: {error_message(response)})"
            )
        account.token = str(response.json()["access_token"])

    async def attempt(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """The answer, counted as a refusal or an error unless 2xx; None (counted as an
        error) when there was none."""
        try:
            response = await self._send(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.tally.fail(type(exc).__name__)
            return None
        except SetupError:
            # Signing in again failed: the account's token is gone for good.
            self.tally.fail("401 login refused")
            return None
        if not response.is_success:
            reason = f"{response.status_code} {error_code(response)}"
            if response.status_code in REFUSED:
                self.tally.refuse(reason)
            else:
                self.tally.fail(reason)
        return response

    async def call(self, method: str, path: str, **kwargs: Any) -> Json | None:
        """The answer's body on 2xx (``{}`` when empty); None otherwise, counted as by
        ``attempt``."""
        response = await self.attempt(method, path, **kwargs)
        if response is None or not response.is_success:
            return None
        body: Json = response.json() if response.content else {}
        return body

    async def setup(self, method: str, path: str, **kwargs: Any) -> Json:
        """The answer's body; anything but 2xx raises SetupError."""
        try:
            response = await self._send(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SetupError(f"{method} {path} failed: {describe(exc)}") from exc
        if not response.is_success:
            raise SetupError(
                f"{method} {API}{path} answered {response.status_code} "
                f"{error_code(response)}: {error_message(response)}"
            )
        body: Json = response.json() if response.content else {}
        return body

    async def pages(
        self, path: str, account: Account, params: dict[str, Any] | None = None
    ) -> list[Json]:
        """Every item of a paginated list."""
        items: list[Json] = []
        while True:
            query = (params or {}) | {"limit": 100, "offset": len(items)}
            page = await self.setup("GET", path, account=account, params=query)
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items


def describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
