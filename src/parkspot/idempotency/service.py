"""Replaying the first response of a request sent again with the same Idempotency-Key.

Same key and same request (method, path, body): the stored status and body, no second
effect. Same key, other request: 422 ``idempotency_key_reused``. Same key while the first
request is still being handled: 409 ``idempotency_key_in_use``. Only successful responses
are stored, in the transaction of the effect itself, so a failed attempt may be retried with
the same key. Keys are per user and kept ``idempotency_ttl_hours``.
"""

import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.db.session import after_end
from parkspot.errors import Conflict, Unprocessable
from parkspot.idempotency import repository
from parkspot.models import IdempotencyKey
from parkspot.state import AppState

REPLAYED_HEADER = "Idempotent-Replayed"


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _json(status_code: int, body: str, *, replayed: bool = False) -> Response:
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


class Idempotency:
    """One request's idempotency context; without a key, ``run`` just runs the effect."""

    def __init__(
        self,
        session: AsyncSession,
        state: AppState,
        user_id: int,
        key: str | None,
        request_fingerprint: str,
    ) -> None:
        self._session = session
        self._state = state
        self._user_id = user_id
        self._key = key
        self._fingerprint = request_fingerprint

    async def run(self, status_code: int, effect: Callable[[], Awaitable[BaseModel]]) -> Response:
        if self._key is None:
            return _json(status_code, (await effect()).model_dump_json())
        claim = (self._user_id, self._key)
        inflight = self._state.idempotency_inflight
        if claim in inflight:
            raise self._in_use()
        # Held until this request's transaction has ended, committed or not.
        inflight.add(claim)
        after_end(self._session, lambda: inflight.discard(claim))
        stored = await repository.get(self._session, self._user_id, self._key)
        if stored is not None:
            ttl = timedelta(hours=self._state.settings.idempotency_ttl_hours)
            if stored.created_at + ttl > self._state.clock():
                return self._replay(stored)
            await repository.forget(self._session, stored)
        body = (await effect()).model_dump_json()
        row = IdempotencyKey(
            user_id=self._user_id,
            key=self._key,
            fingerprint=self._fingerprint,
            response_status=status_code,
            response_body=body,
            created_at=self._state.clock(),
        )
        if not await repository.insert(self._session, row):
            # Another process stored this key while we worked: ours must not take effect.
            raise self._in_use()
        return _json(status_code, body)

    def _replay(self, stored: IdempotencyKey) -> Response:
        if stored.fingerprint != self._fingerprint:
            raise Unprocessable(
                "This Idempotency-Key was used with a different request",
                code="idempotency_key_reused",
            )
        return _json(stored.response_status, stored.response_body, replayed=True)

    @staticmethod
    def _in_use() -> Conflict:
        return Conflict(
            "A request with this Idempotency-Key is still being handled; retry shortly",
            code="idempotency_key_in_use",
            headers={"Retry-After": "1"},
        )
