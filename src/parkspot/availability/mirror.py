"""Each process's in-process copy of every lot's record, the recent events (the replay
window), and the subscriptions they are fanned out to.

Reads and streams answer from here without a database or Redis round trip. A record only
replaces an older version. Each subscription keeps at most one pending record per lot, so
a slow client costs a bounded amount of memory and receives the latest state.
"""

import asyncio
import hashlib
import itertools
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from parkspot.availability.schemas import LotRecord
from parkspot.lots.geo import BBox


@dataclass(frozen=True, slots=True)
class Entry:
    """A record as published, with its response body and entity tag, made once per version
    (and again when the mirror's staleness flips)."""

    record: LotRecord
    body: bytes
    etag: str

    @classmethod
    def of(cls, record: LotRecord, *, mirror_stale: bool = False) -> "Entry":
        """``mirror_stale``: served as stale whatever the record says (this process cannot
        see other processes' changes)."""
        lot = record.lot
        if mirror_stale and not lot.stale:
            lot = lot.model_copy(update={"stale": True})
        stale = "s" if lot.stale else ""
        return cls(record, lot.model_dump_json().encode(), f'"{lot.lot_id}-{lot.version}{stale}"')


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose eyes: admins see every lot, others public lots and their operators' lots."""

    sees_all: bool = False
    operator_ids: frozenset[int] = frozenset()

    def can_see(self, record: LotRecord) -> bool:
        return self.sees_all or not record.members_only or record.operator_id in self.operator_ids


ANONYMOUS = Viewer()


@dataclass(frozen=True, slots=True)
class LotFilter:
    """Lots among ``lot_ids`` (when given) and inside ``bbox`` (when given)."""

    lot_ids: frozenset[int] | None = None
    bbox: BBox | None = None

    def matches(self, record: LotRecord) -> bool:
        lot = record.lot
        if self.lot_ids is not None and lot.lot_id not in self.lot_ids:
            return False
        return self.bbox is None or self.bbox.contains(lot.latitude, lot.longitude)


EVERY_LOT = LotFilter()

Pending = tuple[str, Entry]


class Subscription:
    """One client's filters and its pending records, at most one per lot."""

    __slots__ = ("closed", "filters", "pending", "viewer", "wake")

    def __init__(self, viewer: Viewer, filters: Sequence[LotFilter]) -> None:
        self.viewer = viewer
        self.filters = list(filters)
        self.pending: dict[int, Pending] = {}
        self.wake = asyncio.Event()
        self.closed = False

    def matches(self, record: LotRecord) -> bool:
        # Runs once per subscriber for every change: a plain loop, no generator.
        if not self.viewer.can_see(record):
            return False
        for lot_filter in self.filters:  # noqa: SIM110
            if lot_filter.matches(record):
                return True
        return False

    def push(self, event_id: str, entry: Entry) -> bool:
        """True when it replaced a record of the lot the client had not taken yet."""
        # Re-inserted so the lots go out in the order of their latest change.
        replaced = self.pending.pop(entry.record.lot.lot_id, None) is not None
        self.pending[entry.record.lot.lot_id] = (event_id, entry)
        self.wake.set()
        return replaced

    def take(self) -> list[Pending]:
        items = list(self.pending.values())
        self.pending.clear()
        self.wake.clear()
        return items

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Mirror:
    def __init__(self, events_kept: int) -> None:
        self.entries: dict[int, Entry] = {}
        self.last_event_id = "0-0"
        self.stale = False
        self.subscriptions: set[Subscription] = set()
        self._events: deque[tuple[int, str, Entry]] = deque(maxlen=events_kept)
        self._position: dict[str, int] = {}
        self._counter = itertools.count()
        self._versions: dict[int, int] = {}
        # Set on every record applied, for whoever waits for a version to arrive.
        self.updated = asyncio.Event()
        # For the metrics: when a record was last applied (time.monotonic), and how many
        # records subscribers had not taken before a newer one of the lot replaced them.
        self.applied_at: float | None = None
        self.coalesced = 0

    # --- changes -------------------------------------------------------------------------

    def apply(self, event_id: str, record: LotRecord) -> bool:
        """Takes an event from the bus; False (and nothing sent) when not newer."""
        if event_id not in self._position:
            self._remember(event_id, record)
        return self._update(event_id, record)

    def _update(self, event_id: str, record: LotRecord) -> bool:
        current = self.entries.get(record.lot.lot_id)
        if current is not None and current.record.lot.version >= record.lot.version:
            return False
        entry = Entry.of(record, mirror_stale=self.stale)
        self._versions[record.lot.lot_id] = record.lot.version
        self.updated.set()
        self.applied_at = time.monotonic()
        if record.deleted:
            self.entries.pop(record.lot.lot_id, None)
        else:
            self.entries[record.lot.lot_id] = entry
        self.last_event_id = event_id
        coalesced = 0
        for subscription in self.subscriptions:
            if subscription.matches(record) and subscription.push(event_id, entry):
                coalesced += 1
        self.coalesced += coalesced
        return True

    def _remember(self, event_id: str, record: LotRecord) -> None:
        events = self._events
        if len(events) == events.maxlen:
            del self._position[events[0][1]]
        position = next(self._counter)
        events.append((position, event_id, Entry.of(record)))
        self._position[event_id] = position

    def load(self, records: Iterable[LotRecord], events: Iterable[tuple[str, LotRecord]]) -> None:
        """Fills from the shared cache and its recent events (on start and reconnect)."""
        for event_id, record in events:
            self.apply(event_id, record)
        for record in records:
            self._update(self.last_event_id, record)

    def mark_stale(self, stale: bool) -> None:
        """Serves every record as stale (and tells subscribers) while other processes'
        changes may be missing; a record stale of itself stays so afterwards."""
        if stale == self.stale:
            return
        self.stale = stale
        for lot_id, entry in list(self.entries.items()):
            fresh = Entry.of(entry.record, mirror_stale=stale)
            self.entries[lot_id] = fresh
            for subscription in self.subscriptions:
                if subscription.matches(entry.record):
                    subscription.push(self.last_event_id, fresh)

    # --- reads ---------------------------------------------------------------------------

    def version_of(self, lot_id: int) -> int:
        """The latest version applied of the lot (deleted ones too); 0 if never seen."""
        return self._versions.get(lot_id, 0)

    def get(self, lot_id: int, viewer: Viewer) -> Entry | None:
        entry = self.entries.get(lot_id)
        if entry is None or not viewer.can_see(entry.record):
            return None
        return entry

    def select(self, viewer: Viewer, lot_filter: LotFilter) -> list[Entry]:
        if lot_filter.lot_ids is not None:
            candidates: Iterable[Entry] = (
                self.entries[i] for i in sorted(lot_filter.lot_ids) if i in self.entries
            )
        else:
            candidates = (self.entries[i] for i in sorted(self.entries))
        return [e for e in candidates if viewer.can_see(e.record) and lot_filter.matches(e.record)]

    # --- subscriptions -------------------------------------------------------------------

    def subscribe(self, viewer: Viewer, filters: Sequence[LotFilter]) -> Subscription:
        subscription = Subscription(viewer, filters)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        subscription.close()

    def replay_after(self, event_id: str, subscription: Subscription) -> bool:
        """Queues, coalesced per lot, the events after ``event_id`` that the subscription
        matches; False when that event is no longer (or never was) in the window."""
        position = self._position.get(event_id)
        if position is None:
            return False
        start = position - self._events[0][0] + 1
        for _, later_id, entry in itertools.islice(self._events, start, None):
            if subscription.matches(entry.record):
                subscription.push(later_id, entry)
        return True


def lots_json(entries: Sequence[Entry]) -> bytes:
    return b"[" + b",".join(e.body for e in entries) + b"]"


def list_body(entries: Sequence[Entry]) -> bytes:
    return b'{"lots":' + lots_json(entries) + b"}"


def list_etag(entries: Sequence[Entry]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for entry in entries:
        digest.update(entry.etag.encode())
    return f'"{digest.hexdigest()}"'
