"""End-to-end tests of the live availability reads, the SSE stream and the WebSockets,
against real ``parkspot serve`` processes."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from parkspot.db.session import Database
from tests.live_server import (
    WAIT,
    Stack,
    availability,
    book,
    box_around,
    cancel,
    counts,
    create_operator,
    insert_lots,
    is_reserved,
    make_driver,
    make_site,
    now,
    open_sse,
    open_ws,
    receive_json,
    single_server,
    unique_place,
    wait_for_availability,
)

AVAILABILITY = "/api/v1/availability"
AVAILABILITY_WS = "/api/v1/availability/ws"
NOTIFICATIONS_WS = "/api/v1/notifications/ws"
# The replay window is kept small so a test can push an event out of it.
EVENTS_KEPT = 10


@pytest.fixture(scope="module")
async def shared(template: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One server for the tests that need no settings of their own; each test makes its
    own lots and filters on them."""
    settings = {
        "STREAM_KEEPALIVE_SECONDS": "1",
        "AVAILABILITY_EVENTS_KEPT": str(EVENTS_KEPT),
    }
    async with single_server(template, tmp_path_factory.mktemp("live-streams"), settings) as stack:
        yield stack


@pytest.fixture
def stack(shared: Stack) -> Iterator[Stack]:
    """The shared server; a test fails if the server logged an error meanwhile."""
    errors_before = len(shared.server.errors())
    yield shared
    assert shared.server.errors()[errors_before:] == []


# --- GET -------------------------------------------------------------------------------


async def test_availability_reads_answer_304_for_the_current_etag_and_200_after_a_change(
    stack: Stack,
) -> None:
    http = stack.http
    latitude, longitude = unique_place()
    first = await make_site(http, stack.database, latitude=latitude, longitude=longitude)
    second = await make_site(
        http,
        stack.database,
        2,
        operator_id=first.operator_id,
        manager=first.manager,
        latitude=latitude + 0.001,
        longitude=longitude,
    )
    driver = await make_driver(http)

    # The bare URLs are answered before the framework, the filtered ones by the routes:
    # both give the same bodies and entity tags.
    everything = await http.get(AVAILABILITY)
    assert everything.status_code == 200
    listed = everything.json()["lots"]
    assert [lot["lot_id"] for lot in listed] == sorted(lot["lot_id"] for lot in listed)
    ours = [lot for lot in listed if lot["lot_id"] in (first.lot_id, second.lot_id)]
    by_ids = await http.get(AVAILABILITY, params={"lot_id": [second.lot_id, first.lot_id]})
    assert by_ids.json() == {"lots": ours}
    box = ",".join(str(v) for v in box_around(latitude, longitude))
    by_box = await http.get(AVAILABILITY, params={"bbox": box})
    assert by_box.json() == {"lots": ours}
    assert [counts(lot) for lot in ours] == [(3, 0, 0, 0), (2, 0, 0, 0)]

    one = await http.get(f"{AVAILABILITY}/{first.lot_id}")
    assert one.json() == ours[0]
    filtered_etag = by_ids.headers["etag"]
    for path, params, etag in [
        (AVAILABILITY, None, everything.headers["etag"]),
        (AVAILABILITY, {"lot_id": [first.lot_id, second.lot_id]}, filtered_etag),
        (f"{AVAILABILITY}/{first.lot_id}", None, one.headers["etag"]),
    ]:
        unchanged = await http.get(path, params=params, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304
        assert unchanged.content == b""

    await book(http, driver, lot_id=first.lot_id)
    changed = await wait_for_availability(http, first.lot_id, is_reserved(1))
    assert counts(changed) == (2, 1, 0, 0)
    assert changed["version"] > ours[0]["version"]
    for path, params, etag in [
        (AVAILABILITY, {"lot_id": [first.lot_id, second.lot_id]}, filtered_etag),
        (f"{AVAILABILITY}/{first.lot_id}", None, one.headers["etag"]),
    ]:
        fresh = await http.get(path, params=params, headers={"If-None-Match": etag})
        assert fresh.status_code == 200
        assert fresh.headers["etag"] != etag
    missing = await http.get(f"{AVAILABILITY}/999999")
    assert missing.status_code == 404


# --- SSE -------------------------------------------------------------------------------


async def test_sse_stream_starts_with_retry_hint_and_snapshot_then_sends_each_change(
    stack: Stack,
) -> None:
    http = stack.http
    site = await make_site(http, stack.database)
    other = await make_site(
        http, stack.database, operator_id=site.operator_id, manager=site.manager
    )
    driver, other_driver = await make_driver(http), await make_driver(http)

    async with open_sse(stack.server, {"lot_id": site.lot_id}) as stream:
        snapshot = await stream.next_event()
        assert stream.lines[:4] == ["retry: 3000", "", f"id: {snapshot.id}", "event: snapshot"]
        assert snapshot.id
        (initial,) = snapshot.json()["lots"]
        assert initial == await availability(http, site.lot_id)
        assert initial["lot_id"] == site.lot_id
        assert counts(initial) == (3, 0, 0, 0)
        assert initial["capacity"] == 3
        assert initial["by_kind"] == {"standard": {"capacity": 3, "free": 3}}
        assert initial["status"] == "open"
        assert initial["stale"] is False

        # The other lot changes first: were its change sent, it would come before ours.
        await book(http, other_driver, lot_id=other.lot_id)
        await wait_for_availability(http, other.lot_id, is_reserved(1))
        reservation = await book(http, driver, lot_id=site.lot_id)
        booked = await stream.next_event()
        assert booked.event == "availability"
        assert booked.id
        assert booked.id != snapshot.id
        record = booked.json()
        assert record["lot_id"] == site.lot_id
        assert counts(record) == (2, 1, 0, 0)
        assert record["by_kind"] == {"standard": {"capacity": 3, "free": 2}}
        assert record["version"] > initial["version"]
        assert record == await availability(http, site.lot_id)

        await cancel(http, driver, reservation["id"])
        cancelled = (await stream.next_event()).json()
        assert counts(cancelled) == (3, 0, 0, 0)
        assert cancelled["version"] > record["version"]


async def test_sse_resumes_with_last_event_id_without_gaps(stack: Stack) -> None:
    http = stack.http
    latitude, longitude = unique_place()
    first = await make_site(http, stack.database, latitude=latitude, longitude=longitude)
    second = await make_site(
        http,
        stack.database,
        operator_id=first.operator_id,
        manager=first.manager,
        latitude=latitude,
        longitude=longitude + 0.001,
    )
    drivers = [await make_driver(http) for _ in range(4)]
    box = {"bbox": ",".join(str(v) for v in box_around(latitude, longitude))}

    async with open_sse(stack.server, box) as stream:
        snapshot = await stream.next_event()
        assert [lot["lot_id"] for lot in snapshot.json()["lots"]] == [first.lot_id, second.lot_id]
        kept = await book(http, drivers[0], lot_id=first.lot_id)
        seen = await stream.next_event()
        assert counts(seen.json()) == (2, 1, 0, 0)

    # Missed while away: two changes of the first lot, one of the second in between
    # (each seen before the next is made, so their order is known).
    await book(http, drivers[1], lot_id=first.lot_id)
    await wait_for_availability(http, first.lot_id, is_reserved(2))
    await book(http, drivers[2], lot_id=second.lot_id)
    latest_second = await wait_for_availability(http, second.lot_id, is_reserved(1))
    await book(http, drivers[3], lot_id=first.lot_id)
    latest_first = await wait_for_availability(http, first.lot_id, is_reserved(3))

    async with open_sse(stack.server, box, {"Last-Event-ID": str(seen.id)}) as resumed:
        replayed = [await resumed.next_event(), await resumed.next_event()]
        assert resumed.lines[:2] == ["retry: 3000", ""]
        # No snapshot, the latest record of each lot, in the order of their last change.
        assert [event.event for event in replayed] == ["availability", "availability"]
        assert [event.json() for event in replayed] == [latest_second, latest_first]
        assert counts(latest_first) == (0, 3, 0, 0)
        assert latest_first["status"] == "full"

        # Then live changes, and nothing else was left over from the replay.
        await cancel(http, drivers[0], kept["id"])
        live = (await resumed.next_event()).json()
        assert live["lot_id"] == first.lot_id
        assert counts(live) == (1, 2, 0, 0)
        assert live["version"] > latest_first["version"]


async def test_sse_with_an_unknown_or_expired_last_event_id_starts_with_a_fresh_snapshot(
    stack: Stack,
) -> None:
    http = stack.http
    site = await make_site(http, stack.database)
    driver = await make_driver(http)
    query = {"lot_id": site.lot_id}

    async with open_sse(stack.server, query, {"Last-Event-ID": "1-1"}) as unknown:
        snapshot = await unknown.next_event()
        assert snapshot.event == "snapshot"
        assert snapshot.json() == {"lots": [await availability(http, site.lot_id)]}

    async with open_sse(stack.server, query) as stream:
        last_id = (await stream.next_event()).id
    reservation = await book(http, driver, lot_id=site.lot_id)
    await wait_for_availability(http, site.lot_id, is_reserved(1))
    async with open_sse(stack.server, query, {"Last-Event-ID": str(last_id)}) as recent:
        assert (await recent.next_event()).event == "availability"

    # Push that id out of the replay window: one event per change, as each change is
    # seen before the next is made.
    await cancel(http, driver, reservation["id"])
    await wait_for_availability(http, site.lot_id, is_reserved(0))
    for _ in range(EVENTS_KEPT // 2):
        reservation = await book(http, driver, lot_id=site.lot_id)
        await wait_for_availability(http, site.lot_id, is_reserved(1))
        await cancel(http, driver, reservation["id"])
        expected = await wait_for_availability(http, site.lot_id, is_reserved(0))
    async with open_sse(stack.server, query, {"Last-Event-ID": str(last_id)}) as expired:
        fresh = await expired.next_event()
        assert fresh.event == "snapshot"
        assert fresh.json() == {"lots": [expected]}


async def test_sse_streams_a_members_only_lot_only_to_viewers_who_may_see_it(
    stack: Stack,
) -> None:
    http = stack.http
    public = await make_site(http, stack.database)
    private = await make_site(
        http,
        stack.database,
        operator_id=public.operator_id,
        manager=public.manager,
        visibility="members",
    )
    driver = await make_driver(http)
    query = {"lot_id": [public.lot_id, private.lot_id]}

    async with (
        open_sse(stack.server, query) as anonymous,
        open_sse(stack.server, query, public.manager.headers) as member,
        open_sse(stack.server, query, driver.headers) as outsider,
    ):
        for stream, visible in [
            (anonymous, [public.lot_id]),
            (member, [public.lot_id, private.lot_id]),
            (outsider, [public.lot_id]),
        ]:
            snapshot = await stream.next_event()
            assert [lot["lot_id"] for lot in snapshot.json()["lots"]] == visible

        response = await http.patch(
            f"/api/v1/spots/{private.spot_ids[0]}",
            json={"out_of_service": True},
            headers=public.manager.headers,
        )
        assert response.status_code == 200, response.text
        hidden = await member.next_event()
        assert hidden.json()["lot_id"] == private.lot_id
        assert counts(hidden.json()) == (2, 0, 0, 1)

        # The public change comes after the private one: it is the first thing the
        # others receive.
        await book(http, driver, lot_id=public.lot_id)
        for stream in (anonymous, outsider, member):
            seen = (await stream.next_event()).json()
            assert seen["lot_id"] == public.lot_id
            assert counts(seen) == (2, 1, 0, 0)


async def test_sse_sends_keep_alive_comments_and_ends_after_its_maximum_lifetime(
    template: str, tmp_path: Path
) -> None:
    settings = {"STREAM_KEEPALIVE_SECONDS": "0.5", "STREAM_MAX_LIFETIME_SECONDS": "2.5"}
    async with single_server(template, tmp_path, settings) as stack:
        site = await make_site(stack.http, stack.database)
        async with open_sse(stack.server, {"lot_id": site.lot_id}) as stream:
            snapshot = await stream.next_event()
            # Ends by itself, cleanly (a cut connection would raise here).
            assert await stream.rest() == []
            assert stream.ended
            assert stream.comments
            assert set(stream.comments) == {": keep-alive"}

        # The client comes back with the id it had: nothing was missed.
        async with open_sse(
            stack.server, {"lot_id": site.lot_id}, {"Last-Event-ID": str(snapshot.id)}
        ) as again:
            driver = await make_driver(stack.http)
            await book(stack.http, driver, lot_id=site.lot_id)
            record = (await again.next_event()).json()
            assert counts(record) == (2, 1, 0, 0)
            assert "event: snapshot" not in again.lines
        assert stack.server.errors() == []


def _slow_socket() -> socket.socket:
    """A client socket that takes little before the server's sends block: a small receive
    buffer and a small segment size (so the server's send buffer stays small too)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    return sock


async def test_sse_drops_a_client_that_stops_reading_while_others_keep_receiving(
    template: str, tmp_path: Path
) -> None:
    settings = {
        "STREAM_KEEPALIVE_SECONDS": "1",
        "STREAM_STALL_TIMEOUT_SECONDS": "1",
        # Long enough that only a drop can end the slow client's stream during the test.
        "STREAM_MAX_LIFETIME_SECONDS": "300",
    }
    loop = asyncio.get_running_loop()

    async def many_lots(database: Database) -> None:
        # A snapshot far larger than the socket buffers hold; made in the database, since
        # a thousand lots through the API would take too long.
        await insert_lots(database, await create_operator(database), 1200)

    async with single_server(template, tmp_path, settings, many_lots) as stack:
        server, http = stack.server, stack.http
        site = await make_site(http, stack.database)
        drivers = [await make_driver(http) for _ in range(3)]
        async with open_sse(server, {"lot_id": site.lot_id}) as reader:
            await reader.next_event()
            slow = _slow_socket()
            try:
                await loop.sock_connect(slow, ("127.0.0.1", server.port))
                request = f"GET {AVAILABILITY}/stream HTTP/1.1\r\nHost: test\r\n\r\n"
                await loop.sock_sendall(slow, request.encode())

                # The reader gets every change while the slow client holds its stream.
                reservations = []
                for number, driver in enumerate(drivers, start=1):
                    reservations.append(await book(http, driver, lot_id=site.lot_id))
                    record = (await reader.next_event()).json()
                    assert record["reserved"] == number
                # Several keep-alive periods later, the slow client's stream has long
                # run past the stall timeout.
                await reader.comments_until(len(reader.comments) + 4)

                # Reading at last: what was buffered, then the end of the connection.
                received = bytearray()
                async with asyncio.timeout(WAIT):
                    while chunk := await loop.sock_recv(slow, 65536):
                        received += chunk
            finally:
                slow.close()
            assert received.startswith(b"HTTP/1.1 200 OK")
            assert b"event: snapshot" in received
            # Cut, not ended: the last chunk of a response that ends normally is missing.
            assert not received.endswith(b"0\r\n\r\n")

            # The server is fine and the reader still gets every change.
            assert (await http.get("/readyz")).status_code == 200
            await cancel(http, drivers[0], reservations[0]["id"])
            assert counts((await reader.next_event()).json()) == (1, 2, 0, 0)
        assert "Traceback" not in server.log()


# --- WebSocket: availability -----------------------------------------------------------


async def send_json(ws: ClientConnection, message: Any) -> None:
    await ws.send(json.dumps(message))


async def until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Sends a ping; every message up to and including the pong."""
    await send_json(ws, {"op": "ping"})
    messages = [await receive_json(ws)]
    while messages[-1] != {"type": "pong"}:
        messages.append(await receive_json(ws))
    return messages


async def test_ws_subscriptions_by_ids_and_box_get_snapshots_then_only_matching_changes(
    stack: Stack,
) -> None:
    http = stack.http
    by_id = await make_site(http, stack.database)
    latitude, longitude = unique_place()
    in_box = await make_site(
        http,
        stack.database,
        operator_id=by_id.operator_id,
        manager=by_id.manager,
        latitude=latitude,
        longitude=longitude,
    )
    drivers = [await make_driver(http) for _ in range(5)]

    async with open_ws(stack.server, AVAILABILITY_WS) as ws:
        await send_json(ws, {"op": "subscribe", "lot_ids": [by_id.lot_id]})
        assert await receive_json(ws) == {
            "type": "snapshot",
            "lots": [await availability(http, by_id.lot_id)],
        }
        await send_json(ws, {"op": "subscribe", "bbox": box_around(latitude, longitude)})
        assert await receive_json(ws) == {
            "type": "snapshot",
            "lots": [await availability(http, in_box.lot_id)],
        }

        await book(http, drivers[0], lot_id=by_id.lot_id)
        changed = await receive_json(ws)
        assert changed["type"] == "availability"
        assert changed["id"]
        assert changed["lot"]["lot_id"] == by_id.lot_id
        assert counts(changed["lot"]) == (2, 1, 0, 0)
        assert changed["lot"] == await availability(http, by_id.lot_id)
        await book(http, drivers[1], lot_id=in_box.lot_id)
        changed = await receive_json(ws)
        assert changed["lot"]["lot_id"] == in_box.lot_id
        assert counts(changed["lot"]) == (2, 1, 0, 0)

        # Dropping the id leaves the box: the lot dropped changes first, and the first
        # change received is the other's.
        await send_json(ws, {"op": "unsubscribe", "lot_ids": [by_id.lot_id]})
        assert await until_pong(ws) == [{"type": "pong"}]
        await book(http, drivers[2], lot_id=by_id.lot_id)
        await wait_for_availability(http, by_id.lot_id, is_reserved(2))
        await book(http, drivers[3], lot_id=in_box.lot_id)
        changed = await receive_json(ws)
        assert changed["lot"]["lot_id"] == in_box.lot_id
        assert counts(changed["lot"]) == (1, 2, 0, 0)

        # Unsubscribing from everything: a change the server has applied is not sent
        # (it would go out with the pong, or before the next one).
        await send_json(ws, {"op": "unsubscribe"})
        await book(http, drivers[4], lot_id=in_box.lot_id)
        await wait_for_availability(http, in_box.lot_id, is_reserved(3))
        assert await until_pong(ws) == [{"type": "pong"}]
        assert await until_pong(ws) == [{"type": "pong"}]


async def test_ws_answers_bad_messages_with_an_error_and_keeps_the_socket_open(
    stack: Stack,
) -> None:
    site = await make_site(stack.http, stack.database)
    async with open_ws(stack.server, AVAILABILITY_WS) as ws:
        for bad in [
            "not json",
            "[1, 2]",
            '{"op": "dance"}',
            '{"op": "subscribe", "lot_ids": [0]}',
            '{"op": "subscribe", "bbox": [1, 2, 3]}',
            '{"op": "subscribe", "bbox": [0, 50, 1, 40]}',
            '{"op": "subscribe", "lot_ids": [1], "extra": true}',
        ]:
            await ws.send(bad)
            error = await receive_json(ws)
            assert set(error) == {"type", "code", "message"}, bad
            assert error["type"] == "error"
            assert error["code"] == "invalid_message"
            assert isinstance(error["message"], str)
            assert error["message"]
        await send_json(ws, {"op": "subscribe", "lot_ids": [site.lot_id]})
        snapshot = await receive_json(ws)
        assert snapshot["type"] == "snapshot"
        assert [lot["lot_id"] for lot in snapshot["lots"]] == [site.lot_id]


async def test_ws_takes_a_64_kib_message_and_closes_with_1009_above(stack: Stack) -> None:
    async with open_ws(stack.server, AVAILABILITY_WS) as ws:
        # Valid JSON of exactly 64 KiB: padding is whitespace.
        largest = '{"op": "ping"' + " " * (65_536 - 14) + "}"
        assert len(largest) == 65_536
        await ws.send(largest)
        assert await receive_json(ws) == {"type": "pong"}
        await ws.send(largest + " ")
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_ws_with_an_invalid_token_is_closed_with_1008(stack: Stack) -> None:
    site = await make_site(stack.http, stack.database)
    for path in [
        f"{AVAILABILITY_WS}?token=not-a-token",
        f"{NOTIFICATIONS_WS}?token=not-a-token",
        NOTIFICATIONS_WS,
    ]:
        async with open_ws(stack.server, path) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await receive_json(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008, path

    # A valid token sees the operator's members-only lot.
    private = await make_site(
        stack.http,
        stack.database,
        operator_id=site.operator_id,
        manager=site.manager,
        visibility="members",
    )
    async with open_ws(stack.server, f"{AVAILABILITY_WS}?token={site.manager.token}") as ws:
        await send_json(ws, {"op": "subscribe", "lot_ids": [site.lot_id, private.lot_id]})
        snapshot = await receive_json(ws)
        assert [lot["lot_id"] for lot in snapshot["lots"]] == [site.lot_id, private.lot_id]


# --- WebSocket: notifications ----------------------------------------------------------


async def test_notifications_ws_delivers_the_users_notification_when_a_booking_commits(
    stack: Stack,
) -> None:
    http = stack.http
    site = await make_site(http, stack.database)
    driver, other = await make_driver(http), await make_driver(http)
    async with (
        open_ws(stack.server, f"{NOTIFICATIONS_WS}?token={driver.account.token}") as mine,
        open_ws(stack.server, f"{NOTIFICATIONS_WS}?token={other.account.token}") as theirs,
    ):
        # A pong means the socket is listening.
        assert await until_pong(mine) == [{"type": "pong"}]
        assert await until_pong(theirs) == [{"type": "pong"}]

        reservation = await book(http, driver, lot_id=site.lot_id)
        message = await receive_json(mine)
        assert message["type"] == "notification"
        notification = message["notification"]
        assert notification["kind"] == "reservation_confirmed"
        assert notification["read"] is False
        listed = await http.get("/api/v1/notifications", headers=driver.headers)
        assert listed.json()["items"][0] == notification
        assert str(reservation["id"]) in json.dumps(notification["data"])

        # The other user's socket got nothing of it: its first message is its own.
        await book(http, other, lot_id=site.lot_id)
        theirs_first = await receive_json(theirs)
        listed = await http.get("/api/v1/notifications", headers=other.headers)
        assert theirs_first == {"type": "notification", "notification": listed.json()["items"][0]}

        await mine.send("hello")
        error = await receive_json(mine)
        assert error["type"] == "error"
        assert error["code"] == "invalid_message"


async def test_spot_sensor_reports_reach_sse_subscribers_as_occupied_spots(stack: Stack) -> None:
    http = stack.http
    site = await make_site(http, stack.database)
    created = await http.post(
        f"/api/v1/lots/{site.lot_id}/devices",
        json={"name": "Level 1 sensors", "kind": "spot_sensor"},
        headers=site.manager.headers,
    )
    assert created.status_code == 201, created.text
    sensor = {"X-Device-Key": created.json()["key"]}

    async with open_sse(stack.server, {"lot_id": site.lot_id}) as stream:
        await stream.next_event()
        reported = await http.post(
            "/api/v1/device/spot-events",
            json={"events": [{"spot": "A1", "occupied": True, "observed_at": now().isoformat()}]},
            headers=sensor,
        )
        assert reported.status_code == 200, reported.text
        assert reported.json()["applied"] == 1

        record = await stream.record(site.lot_id, lambda lot: lot["occupied"] == 1)
        assert counts(record) == (2, 0, 1, 0)
        assert record["occupancy_source"] == "sensors"
        assert record == await availability(http, site.lot_id)
