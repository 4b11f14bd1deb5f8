"""The mirror and the event stream on their own: versions, coalescing, the replay window,
keep-alives, the lifetime cap and dropping a client that stopped reading."""

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from starlette.types import Message

from parkspot.availability.mirror import ANONYMOUS, EVERY_LOT, LotFilter, Mirror, Viewer
from parkspot.availability.schemas import LotAvailabilityRead, LotRecord, LotStatus
from parkspot.lots.geo import BBox
from parkspot.realtime.sse import EventStream


def lot_record(
    lot_id: int,
    version: int,
    free: int = 5,
    *,
    members_only: bool = False,
    operator_id: int = 1,
    latitude: float = 45.0,
    longitude: float = 4.0,
) -> LotRecord:
    return LotRecord(
        lot=LotAvailabilityRead(
            lot_id=lot_id,
            name=f"Lot {lot_id}",
            latitude=latitude,
            longitude=longitude,
            capacity=10,
            free=free,
            reserved=10 - free,
            occupied=0,
            out_of_service=0,
            by_kind={},
            status=LotStatus.open,
            version=version,
            updated_at=datetime(2031, 3, 10, tzinfo=UTC),
        ),
        operator_id=operator_id,
        members_only=members_only,
    )


def test_an_older_or_equal_version_never_replaces_a_newer_one() -> None:
    mirror = Mirror(events_kept=10)
    assert mirror.apply("1-0", lot_record(1, version=5, free=4))

    assert not mirror.apply("2-0", lot_record(1, version=4, free=9))
    assert not mirror.apply("3-0", lot_record(1, version=5, free=9))
    entry = mirror.get(1, ANONYMOUS)
    assert entry is not None
    assert entry.record.lot.free == 4
    assert mirror.last_event_id == "1-0"


def test_a_stalled_subscriber_holds_one_pending_record_per_lot_the_latest() -> None:
    mirror = Mirror(events_kept=100)
    stalled = mirror.subscribe(ANONYMOUS, [EVERY_LOT])
    for version in range(1, 5001):
        mirror.apply(f"{version}-0", lot_record(version % 3 + 1, version))

    pending = stalled.take()
    assert len(pending) == 3
    assert sorted(entry.record.lot.version for _, entry in pending) == [4998, 4999, 5000]
    assert stalled.take() == []


def test_subscriptions_get_only_the_lots_they_may_see_and_asked_for() -> None:
    mirror = Mirror(events_kept=10)
    by_id = mirror.subscribe(ANONYMOUS, [LotFilter(lot_ids=frozenset({2}))])
    by_box = mirror.subscribe(ANONYMOUS, [LotFilter(bbox=BBox(3.0, 44.0, 5.0, 46.0))])
    member = mirror.subscribe(Viewer(operator_ids=frozenset({7})), [EVERY_LOT])

    mirror.apply("1-0", lot_record(1, 1, latitude=48.8, longitude=2.3))
    mirror.apply("2-0", lot_record(2, 1))
    mirror.apply("3-0", lot_record(3, 1, members_only=True, operator_id=7))
    mirror.apply("4-0", lot_record(4, 1, members_only=True, operator_id=8))

    def lots(pending: list[Any]) -> list[int]:
        return sorted(entry.record.lot.lot_id for _, entry in pending)

    assert lots(by_id.take()) == [2]
    assert lots(by_box.take()) == [2]
    assert lots(member.take()) == [1, 2, 3]


def test_replay_after_an_event_in_the_window_queues_what_came_later() -> None:
    mirror = Mirror(events_kept=5)
    for n in range(1, 8):
        mirror.apply(f"{n}-0", lot_record(n % 2 + 1, n))

    resumed = mirror.subscribe(ANONYMOUS, [EVERY_LOT])
    assert mirror.replay_after("5-0", resumed)
    assert [(event_id, e.record.lot.version) for event_id, e in resumed.take()] == [
        ("6-0", 6),
        ("7-0", 7),
    ]
    # Fallen out of the window (only the last 5 are kept), or never seen: a snapshot is due.
    assert not mirror.replay_after("2-0", resumed)
    assert not mirror.replay_after("99-0", resumed)


def test_marking_stale_flags_every_record_and_changes_the_etags() -> None:
    mirror = Mirror(events_kept=5)
    mirror.apply("1-0", lot_record(1, 1))
    watcher = mirror.subscribe(ANONYMOUS, [EVERY_LOT])
    fresh = mirror.get(1, ANONYMOUS)

    mirror.mark_stale(True)
    stale = mirror.get(1, ANONYMOUS)

    assert fresh is not None
    assert stale is not None
    assert b'"stale":true' in stale.body
    assert stale.etag != fresh.etag
    assert [b'"stale":true' in entry.body for _, entry in watcher.take()] == [True]
    mirror.apply("2-0", lot_record(1, 2))
    assert b'"stale":true' in mirror.entries[1].body

    mirror.mark_stale(False)
    assert b'"stale":false' in mirror.entries[1].body


# --- the event stream ------------------------------------------------------------------


class Client:
    """The ASGI side of one SSE client: what the server sent, and its disconnect."""

    def __init__(self, *, reading: bool = True) -> None:
        self.messages: list[Message] = []
        self.reading = reading
        self.gone = anyio.Event()

    async def send(self, message: Message) -> None:
        if not self.reading and message["type"] == "http.response.body":
            await anyio.sleep_forever()
        self.messages.append(message)

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages)


async def serve(response: EventStream, client: Client) -> None:
    await response({"type": "http"}, client.receive, client.send)


def stream(mirror: Mirror, **settings: float) -> EventStream:
    options: dict[str, Any] = {
        "keepalive_seconds": 30.0,
        "lifetime_seconds": 30.0,
        "stall_seconds": 5.0,
    }
    options.update(settings)
    subscription = mirror.subscribe(ANONYMOUS, [EVERY_LOT])
    return EventStream(subscription, b"retry: 3000\n\n", on_close=mirror.unsubscribe, **options)


async def test_the_stream_sends_its_first_chunk_then_each_change_until_the_client_leaves() -> None:
    mirror = Mirror(events_kept=10)
    client = Client()

    async with anyio.create_task_group() as group:
        group.start_soon(serve, stream(mirror), client)
        await anyio.sleep(0.05)
        mirror.apply("1-0", lot_record(1, 1, free=3))
        await anyio.sleep(0.05)
        client.gone.set()

    assert client.messages[0]["type"] == "http.response.start"
    assert client.body.startswith(b"retry: 3000\n\n")
    assert b'id: 1-0\nevent: availability\ndata: {"lot_id":1,' in client.body
    assert mirror.subscriptions == set()


async def test_the_stream_keeps_alive_and_ends_at_its_lifetime() -> None:
    mirror = Mirror(events_kept=10)
    client = Client()

    with anyio.fail_after(5):
        await serve(stream(mirror, keepalive_seconds=0.05, lifetime_seconds=0.3), client)

    assert client.body.count(b": keep-alive\n\n") >= 2
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert mirror.subscriptions == set()


async def test_a_client_that_stops_reading_is_dropped_and_others_keep_receiving() -> None:
    mirror = Mirror(events_kept=10)
    stalled, reader = Client(reading=False), Client()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(serve, stream(mirror, stall_seconds=0.2), stalled)
            group.start_soon(serve, stream(mirror), reader)
            for version in range(1, 21):
                mirror.apply(f"{version}-0", lot_record(1, version))
                await anyio.sleep(0.02)
            reader.gone.set()

    # The stalled stream gave up on its own (the task group could end); the other saw all.
    assert mirror.subscriptions == set()
    assert reader.body.count(b"event: availability") == 20


@pytest.mark.parametrize("last", ["", "9-0"])
def test_an_unknown_last_event_id_is_not_a_resume(last: str) -> None:
    mirror = Mirror(events_kept=5)
    mirror.apply("1-0", lot_record(1, 1))
    assert not mirror.replay_after(last, mirror.subscribe(ANONYMOUS, [EVERY_LOT]))
