"""Helpers shared by the availability tests: lots' counts recounted from the database, and
a published record without what every recount changes."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from parkspot.availability import service
from parkspot.state import AppState

Json = dict[str, Any]


async def recount_lots(state: AppState, lot_ids: Sequence[int]) -> dict[int, Json]:
    """The lots' counts straight from the database, as the engine would make them."""
    async with state.database.session(write=False) as session:
        counted = await service.count(
            session,
            lot_ids,
            state.clock(),
            timedelta(minutes=state.settings.no_show_grace_minutes),
            state.settings.availability_almost_full_ratio,
            timedelta(seconds=state.settings.device_silence_seconds),
        )
    return {
        lot_id: c.record.lot.model_dump(mode="json", exclude={"version", "updated_at"})
        for lot_id, c in counted.items()
    }


async def recount(state: AppState, lot_id: int) -> Json:
    return (await recount_lots(state, [lot_id]))[lot_id]


def counts(body: Json) -> Json:
    """A lot's published record less ``version`` and ``updated_at``."""
    return {k: v for k, v in body.items() if k not in ("version", "updated_at")}
