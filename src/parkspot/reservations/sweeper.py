"""The background loop that applies what time alone changes: no-shows and old idempotency
keys. It runs in every process; row locks (SKIP LOCKED) keep two from expiring one row."""

import asyncio
import logging
from datetime import timedelta

from parkspot.db.engine import log_failure
from parkspot.idempotency import repository as idempotency_repository
from parkspot.reservations import service
from parkspot.state import AppState

logger = logging.getLogger(__name__)


async def expire_no_shows(state: AppState) -> int:
    """Returns how many reservations became no-shows."""
    async with state.database.transaction() as session:
        return len(await service.expire_no_shows(session, state))


async def sweep(state: AppState) -> int:
    """One pass; returns how many reservations became no-shows."""
    expired = await expire_no_shows(state)
    async with state.database.transaction() as session:
        ttl = timedelta(hours=state.settings.idempotency_ttl_hours)
        await idempotency_repository.delete_older_than(session, state.clock() - ttl)
    return expired


async def run_forever(state: AppState) -> None:
    while True:
        await asyncio.sleep(state.settings.sweep_interval_seconds)
        try:
            await sweep(state)
        except Exception as exc:
            # A database outage must not end the loop; the next pass retries.
            log_failure(logger, "sweep failed", exc)
