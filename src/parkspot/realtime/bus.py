"""The bus: the shared cache of lot records, the stream of their changes (which is also the
replay window) and live notifications. Redis when configured, else an in-process twin.

Publishing a record is a compare-and-set on its version and an append to the stream in one
step, so a late writer can neither overwrite a newer record nor announce an older one.
Each process reads the stream with one connection and hands every entry to its listener.
"""

import asyncio
import itertools
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from parkspot.availability.schemas import LotRecord

AvailabilityListener = Callable[[str, LotRecord], object]
NotificationListener = Callable[[int, bytes], None]

_NOTIFICATIONS_KEPT = 10_000

# KEYS: records, versions, events; ARGV: stream length kept, then (lot id, version, body)...
_PUBLISH = """
local ids = {}
for i = 2, #ARGV, 3 do
  local lot, version, body = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local current = tonumber(redis.call('HGET', KEYS[2], lot) or '0')
  if version > current then
    redis.call('HSET', KEYS[2], lot, version)
    redis.call('HSET', KEYS[1], lot, body)
    ids[#ids + 1] = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'r', body)
  else
    ids[#ids + 1] = ''
  end
end
return ids
"""


def redis_client(url: str, timeout_seconds: float, *, read_seconds: float | None = None) -> Redis:
    """A client whose every call is bounded: ``timeout_seconds`` to connect and to answer
    (``read_seconds`` when a call blocks on purpose). A dropped pooled connection (Redis
    restarted) is retried once at once; a timeout is not retried, so a Redis that accepts
    connections but does not answer costs one timeout, not several."""
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout_seconds,
        socket_timeout=read_seconds or timeout_seconds,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


class BusUnavailable(Exception):
    """The bus cannot be reached; the caller falls back to what this process knows."""


@dataclass(frozen=True)
class Snapshot:
    """Everything in the cache, the latest events (oldest first) and the id to listen on
    from."""

    records: list[LotRecord]
    events: list[tuple[str, LotRecord]]
    last_id: str


class Bus(ABC):
    @abstractmethod
    async def publish(self, records: Sequence[LotRecord]) -> None:
        """Stores and announces each record newer than the cached one."""

    @abstractmethod
    async def publish_notifications(self, items: Sequence[tuple[int, bytes]]) -> None:
        """Announces (user id, notification JSON) pairs."""

    @abstractmethod
    async def snapshot(self) -> Snapshot: ...

    async def ping(self) -> None:
        """Raises BusUnavailable unless the bus answers (the in-process bus always does)."""
        return None

    @abstractmethod
    async def listen(
        self,
        after: str,
        on_record: AvailabilityListener,
        on_notification: NotificationListener,
        stop: asyncio.Event,
    ) -> None:
        """Hands on every entry after ``after`` until ``stop`` is set; raises
        BusUnavailable."""

    async def close(self) -> None:
        return None


class InProcessBus(Bus):
    """The embedded twin: one process, the same ordering and version rules."""

    def __init__(self, events_kept: int) -> None:
        self._records: dict[int, LotRecord] = {}
        self._events: deque[tuple[str, LotRecord]] = deque(maxlen=events_kept)
        self._sequence = itertools.count(1)
        self._on_record: AvailabilityListener | None = None
        self._on_notification: NotificationListener | None = None

    async def publish(self, records: Sequence[LotRecord]) -> None:
        for record in records:
            current = self._records.get(record.lot.lot_id)
            if current is not None and current.lot.version >= record.lot.version:
                continue
            self._records[record.lot.lot_id] = record
            event_id = f"{int(time.time() * 1000)}-{next(self._sequence)}"
            self._events.append((event_id, record))
            if self._on_record is not None:
                self._on_record(event_id, record)

    async def publish_notifications(self, items: Sequence[tuple[int, bytes]]) -> None:
        if self._on_notification is not None:
            for user_id, body in items:
                self._on_notification(user_id, body)

    async def snapshot(self) -> Snapshot:
        last_id = self._events[-1][0] if self._events else "0-0"
        return Snapshot(list(self._records.values()), list(self._events), last_id)

    async def listen(
        self,
        after: str,
        on_record: AvailabilityListener,
        on_notification: NotificationListener,
        stop: asyncio.Event,
    ) -> None:
        self._on_record, self._on_notification = on_record, on_notification
        try:
            await stop.wait()
        finally:
            self._on_record = self._on_notification = None


class RedisBus(Bus):
    """Records in a hash, versions in another, changes in a capped stream (the replay
    window); notifications in a second stream. One blocking XREAD per process."""

    def __init__(self, url: str, prefix: str, events_kept: int, timeout_seconds: float) -> None:
        self._records = f"{prefix}:availability"
        self._versions = f"{prefix}:availability:versions"
        self._events = f"{prefix}:availability:events"
        self._notifications = f"{prefix}:notifications"
        self._events_kept = events_kept
        # Short blocks: stopping waits for the read in flight to return (see engine.stop).
        self._block_ms = 200
        self._redis = redis_client(url, timeout_seconds)
        # The blocking read waits up to _block_ms on top of the usual timeout.
        self._reader = redis_client(
            url, timeout_seconds, read_seconds=timeout_seconds + self._block_ms / 1000
        )
        self._publish = self._redis.register_script(_PUBLISH)

    async def publish(self, records: Sequence[LotRecord]) -> None:
        args: list[str | int] = [self._events_kept]
        for record in records:
            args += [record.lot.lot_id, record.lot.version, record.model_dump_json()]
        try:
            await self._publish(keys=[self._records, self._versions, self._events], args=args)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc

    async def publish_notifications(self, items: Sequence[tuple[int, bytes]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, body in items:
                    pipe.xadd(
                        self._notifications,
                        {"u": user_id, "n": body},
                        maxlen=_NOTIFICATIONS_KEPT,
                        approximate=True,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc

    async def snapshot(self) -> Snapshot:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hvals(self._records)
                pipe.xrange(self._events, count=self._events_kept)
                pipe.xrevrange(self._events, count=1)
                values, events, last = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc
        return Snapshot(
            records=[LotRecord.model_validate_json(v) for v in values],
            events=[(_text(i), LotRecord.model_validate_json(f[b"r"])) for i, f in events],
            last_id=_text(last[0][0]) if last else "0-0",
        )

    async def listen(
        self,
        after: str,
        on_record: AvailabilityListener,
        on_notification: NotificationListener,
        stop: asyncio.Event,
    ) -> None:
        try:
            notifications_after = await self._last_id(self._notifications)
            cursors: dict[Any, Any] = {
                self._events: after,
                self._notifications: notifications_after,
            }
            while not stop.is_set():
                reply: Any = await self._reader.xread(cursors, block=self._block_ms, count=1000)
                for stream, entries in reply or []:
                    name = _text(stream)
                    for raw_id, fields in entries:
                        entry_id = _text(raw_id)
                        cursors[name] = entry_id
                        if name == self._events:
                            on_record(entry_id, LotRecord.model_validate_json(fields[b"r"]))
                        else:
                            on_notification(int(fields[b"u"]), fields[b"n"])
        except (RedisError, OSError) as exc:
            raise BusUnavailable(str(exc)) from exc

    async def _last_id(self, stream: str) -> str:
        last: Any = await self._reader.xrevrange(stream, count=1)
        return _text(last[0][0]) if last else "0-0"

    async def close(self) -> None:
        await self._redis.aclose()
        await self._reader.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
