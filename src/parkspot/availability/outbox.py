"""Marking lots changed inside the transaction that changes them."""

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.db.session import Database, staged
from parkspot.models import AvailabilityChange


def _publish(database: Database, lot_ids: list[int]) -> None:
    database.on_lots_changed(lot_ids)


def lot_changed(session: AsyncSession, *lot_ids: int | None) -> None:
    """Writes an outbox row per lot (once per transaction), so the change survives the
    process dying after commit; once committed, this process's engine recomputes the lots."""
    changed = staged(session, "parkspot_changed_lots", _publish)
    for lot_id in lot_ids:
        if lot_id is not None and lot_id not in changed:
            changed.append(lot_id)
            session.add(AvailabilityChange(lot_id=lot_id))
