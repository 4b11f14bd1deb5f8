"""The ``Idempotency-Key`` header as a dependency that yields the request's context."""

from typing import Annotated

from fastapi import Depends, Header, Request

from parkspot.deps import CurrentUser, SessionDep, StateDep
from parkspot.idempotency.service import Idempotency, fingerprint

KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (e.g. a UUID); a retry with the same key and body "
        "gets the first response back instead of acting twice",
    ),
]


async def get_idempotency(
    request: Request, user: CurrentUser, session: SessionDep, state: StateDep, key: KeyHeader = None
) -> Idempotency:
    assert user.id is not None
    request_fingerprint = fingerprint(request.method, request.url.path, await request.body())
    return Idempotency(session, state, user.id, key, request_fingerprint)


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
