"""The availability engine of one process.

- Lots changed by a commit (``mark_dirty``) are recomputed from the database in the
  background, coalescing bursts; each recompute locks the lots' record rows, deletes their
  outbox rows, counts, raises and clears the lots' alerts, bumps the versions and commits,
  then publishes to the bus.
- The bus's events come back through ``listen`` into the mirror (also for this process's
  own changes), so every process applies the same events in the same order.
- A tick recomputes lots whose time boundary has come (a reservation starting or ending, a
  no-show due or ending, a device going silent; one process per lot, by row lock),
  lots left in the outbox by a process that died, and flags the mirror stale while the
  bus is unreachable. When the bus comes back every lot is recomputed and republished.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta

from parkspot.alerts import service as alerts
from parkspot.availability import repository, service
from parkspot.availability.mirror import Mirror
from parkspot.availability.schemas import LotRecord
from parkspot.config import Settings
from parkspot.db.engine import log_failure
from parkspot.db.session import Database
from parkspot.db.types import utcnow
from parkspot.realtime.bus import Bus, BusUnavailable
from parkspot.realtime.notifications import NotificationHub

logger = logging.getLogger(__name__)

# Lots recomputed in one transaction.
BATCH = 200
# Outbox rows older than this were left by a process that did not get to recompute them
# (a busy process may take a few seconds to get round to its own).
ORPHAN_AFTER = timedelta(seconds=10)
RETRY_SECONDS = 0.5
STOP_SECONDS = 4.0
SETTLE_SECONDS = 5.0

Clock = Callable[[], datetime]


def _earliest(*moments: datetime | None) -> datetime | None:
    return min((m for m in moments if m is not None), default=None)


class AvailabilityEngine:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        bus: Bus,
        mirror: Mirror,
        notifications: NotificationHub,
        clock: Clock,
        before_boundaries: Callable[[], Awaitable[object]],
    ) -> None:
        self.settings = settings
        self.database = database
        self.bus = bus
        self.mirror = mirror
        self.notifications = notifications
        self.clock = clock
        # Runs before due lots are recomputed (expiring no-shows, which marks their lots).
        self._before_boundaries = before_boundaries
        self._dirty: set[int] = set()
        self._in_flight: set[int] = set()
        # The last version this process published of each lot (settle waits for them).
        self._published: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._bus_down_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._local_events = 0
        self._listen_after = "0-0"
        # False until every lot has been counted into the mirror once.
        self.ready = False

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Recomputes every lot and fills the mirror before returning (the process is not
        ready before), then starts the background loops."""
        await self._first_sync()
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="parkspot-bus-listener"),
            asyncio.create_task(self._recompute_loop(), name="parkspot-availability"),
            asyncio.create_task(self._tick_loop(), name="parkspot-availability-tick"),
        ]

    async def _first_sync(self) -> None:
        """Counts every lot and fills the mirror; ``ready`` once done. A database outage
        leaves it to the tick to retry; without the bus the mirror is filled locally."""
        try:
            await self._sync_with_bus(rebuild=True)
        except BusUnavailable as exc:
            self._bus_lost(exc)
        except Exception as exc:
            log_failure(logger, "availability could not be counted yet; retrying", exc)
            return
        self.ready = True

    async def stop(self) -> None:
        """Lets each loop finish what it is doing (publishing lots already marked) and end.
        Cancelling them instead could interrupt a database or Redis call half way, which
        the drivers do not always survive cleanly."""
        self._stop.set()
        self._wake.set()
        _, late = await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        await self.bus.close()

    # --- changes -------------------------------------------------------------------------

    def mark_dirty(self, lot_ids: Collection[int]) -> None:
        if lot_ids:
            self._dirty.update(lot_ids)
            self._idle.clear()
            self._wake.set()

    async def settle(self) -> None:
        """Waits until every lot marked so far is recomputed, published and back in this
        process's mirror (through Redis, that is a moment after publishing)."""
        await self._idle.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_SECONDS):
                while any(
                    self.mirror.version_of(lot_id) < version
                    for lot_id, version in self._published.items()
                ):
                    self.mirror.updated.clear()
                    await self.mirror.updated.wait()

    async def _recompute_loop(self) -> None:
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                batch = sorted(self._dirty)[:BATCH]
                self._dirty.difference_update(batch)
                self._in_flight.update(batch)
                try:
                    await self.recompute(batch)
                except Exception as exc:
                    # The outbox keeps the change: retried here while the database is
                    # away, and by whichever process starts next if this one stops.
                    log_failure(logger, "availability recompute failed", exc)
                    self._dirty.update(batch)
                    if self._stop.is_set():
                        return
                    await asyncio.sleep(RETRY_SECONDS)
                finally:
                    self._in_flight.difference_update(batch)
            self._idle.set()

    async def recompute(self, lot_ids: Sequence[int], *, due: bool = False) -> list[LotRecord]:
        """Recomputes and publishes the lots; with ``due`` only those whose time boundary
        has come and that no other process is recomputing."""
        now = self.clock()
        grace = timedelta(minutes=self.settings.no_show_grace_minutes)
        async with self.database.transaction() as session:
            rows = await repository.lock_rows(session, lot_ids, due_at=now if due else None)
            if not rows:
                return []
            ids = [row.lot_id for row in rows]
            await repository.clear_changes(session, ids)
            counted = await service.count(
                session,
                ids,
                now,
                grace,
                self.settings.availability_almost_full_ratio,
                timedelta(seconds=self.settings.device_silence_seconds),
            )
            alert_boundaries = await alerts.reconcile(session, self.settings, ids, now)
            records, updates = [], []
            for row in rows:
                if row.lot_id not in counted:
                    continue
                boundary = _earliest(
                    counted[row.lot_id].next_boundary_at, alert_boundaries.get(row.lot_id)
                )
                lot = counted[row.lot_id].record.lot
                lot.version = row.version + 1
                record = counted[row.lot_id].record
                records.append(record)
                updates.append(
                    {
                        "lot_id": row.lot_id,
                        "version": lot.version,
                        "record": record.model_dump(mode="json"),
                        "next_boundary_at": boundary,
                    }
                )
            await repository.save_rows(session, updates)
        await self._publish(records)
        return records

    async def _publish(self, records: Sequence[LotRecord]) -> None:
        if not records:
            return
        for record in records:
            self._published[record.lot.lot_id] = record.lot.version
        try:
            await self.bus.publish(records)
        except BusUnavailable as exc:
            # This process's clients still see its own changes; the others catch up when
            # the bus returns and everything is republished.
            self._bus_lost(exc)
            for record in records:
                self._local_events += 1
                self.mirror.apply(f"local-{self._local_events}", record)

    async def rebuild(self) -> None:
        """Recomputes and republishes every lot (start, and the bus coming back)."""
        async with self.database.session(write=False) as session:
            lot_ids = await repository.all_lot_ids(session)
        for start in range(0, len(lot_ids), BATCH):
            await self.recompute(lot_ids[start : start + BATCH])

    # --- the bus -------------------------------------------------------------------------

    @property
    def bus_up(self) -> bool:
        """False from a failed bus call until the bus answers again."""
        return self._bus_down_since is None

    def _bus_lost(self, exc: Exception) -> None:
        if self._bus_down_since is None:
            logger.warning("bus unavailable: %s", exc)
            self._bus_down_since = time.monotonic()

    async def _sync_with_bus(self, *, rebuild: bool) -> None:
        """Rebuilds the cache when asked, then loads it into the mirror. Raises
        BusUnavailable."""
        if rebuild:
            await self.rebuild()
        snapshot = await self.bus.snapshot()
        self.mirror.load(snapshot.records, snapshot.events)
        self._listen_after = snapshot.last_id

    async def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._bus_down_since is not None:
                    # Recount everything only once the bus answers again.
                    await self.bus.ping()
                    await self._sync_with_bus(rebuild=True)
                    logger.warning("bus back; availability republished")
                    self._bus_down_since = None
                    self.mirror.mark_stale(False)
                await self.bus.listen(
                    self._listen_after, self.mirror.apply, self.notifications.deliver, self._stop
                )
            except BusUnavailable as exc:
                self._bus_lost(exc)
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:
                logger.exception("bus listener failed")
                self._bus_lost(RuntimeError("listener failed"))
                await asyncio.sleep(RETRY_SECONDS)

    # --- time ----------------------------------------------------------------------------

    async def tick(self) -> None:
        """One pass of what time alone changes."""
        if not self.ready:
            await self._first_sync()
        now = self.clock()
        async with self.database.session(write=False) as session:
            due = await repository.due_lot_ids(session, now)
            orphaned = await repository.pending_lot_ids(session, utcnow() - ORPHAN_AFTER)
        if due:
            await self._before_boundaries()
            for start in range(0, len(due), BATCH):
                await self.recompute(due[start : start + BATCH], due=True)
        # Lots this process is about to recount are not orphans: recounting them again
        # would only publish one more version.
        self.mark_dirty(set(orphaned) - self._dirty - self._in_flight)
        down = self._bus_down_since
        stale_after = self.settings.availability_stale_after_seconds
        if down is not None and time.monotonic() - down > stale_after:
            self.mirror.mark_stale(True)

    async def _tick_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.availability_tick_seconds)
            if self._stop.is_set():
                return
            try:
                await self.tick()
            except Exception as exc:
                log_failure(logger, "availability tick failed", exc)
