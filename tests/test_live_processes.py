"""End-to-end tests of live availability across processes: two servers sharing a Redis,
Redis dying and coming back, a server killed between its commit and its publish, and a
reservation's start reaching subscribers by time alone."""

from datetime import datetime, timedelta
from pathlib import Path

import httpx
from redis.asyncio import Redis

from parkspot.db.session import Database
from parkspot.db.types import utcnow
from parkspot.models import AvailabilityChange, Spot
from tests.live_server import (
    LiveServer,
    SwallowingProxy,
    availability,
    book,
    counts,
    database_from,
    direct_database,
    eventually,
    http_client,
    is_reserved,
    make_driver,
    make_site,
    now,
    open_sse,
    open_ws,
    private_redis,
    receive_json,
    recorded_version,
    running,
    single_server,
    wait_for_availability,
)

NOTIFICATIONS_WS = "/api/v1/notifications/ws"
# The key prefix of a server started without PARKSPOT_REDIS_KEY_PREFIX.
DEFAULT_PREFIX = "parkspot"


async def is_newer(database: Database, lot_id: int, version: int) -> bool:
    """Whether a server has committed a newer record of the lot than ``version``."""
    return await recorded_version(database, lot_id) > version


async def ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_a_booking_through_one_server_reaches_streams_and_notifications_on_another(
    template: str, tmp_path: Path
) -> None:
    async with database_from(template, tmp_path) as url, private_redis(tmp_path) as redis:
        first = LiveServer(url, tmp_path, redis.url, name="first")
        second = LiveServer(url, tmp_path, redis.url, name="second")
        async with (
            direct_database(url) as database,
            running(first, second),
            http_client(first) as http_first,
            http_client(second) as http_second,
        ):
            site = await make_site(http_first, database)
            await wait_for_availability(http_second, site.lot_id, lambda r: r["capacity"] == 3)
            driver = await make_driver(http_first)
            token = driver.account.token
            async with (
                open_sse(second, {"lot_id": site.lot_id}) as stream,
                open_ws(second, f"{NOTIFICATIONS_WS}?token={token}") as notifications,
            ):
                snapshot = (await stream.next_event()).json()
                assert [counts(lot) for lot in snapshot["lots"]] == [(3, 0, 0, 0)]
                await notifications.send('{"op": "ping"}')
                assert await receive_json(notifications) == {"type": "pong"}

                reservation = await book(http_first, driver, lot_id=site.lot_id)
                record = (await stream.next_event()).json()
                assert counts(record) == (2, 1, 0, 0)
                assert record == await availability(http_first, site.lot_id)
                assert record == await availability(http_second, site.lot_id)

                message = await receive_json(notifications)
                assert message["type"] == "notification"
                assert message["notification"]["kind"] == "reservation_confirmed"
                listed = await http_second.get("/api/v1/notifications", headers=driver.headers)
                assert listed.json()["items"] == [message["notification"]]
                assert reservation["id"]
            assert first.errors() == []
            assert second.errors() == []


async def test_while_redis_is_down_reads_and_bookings_work_and_streams_converge_after(
    template: str, tmp_path: Path
) -> None:
    settings = {
        "AVAILABILITY_STALE_AFTER_SECONDS": "1",
        "REDIS_TIMEOUT_SECONDS": "1",
        "STREAM_KEEPALIVE_SECONDS": "1",
    }
    async with database_from(template, tmp_path) as url, private_redis(tmp_path) as redis:
        first = LiveServer(url, tmp_path, redis.url, settings=settings, name="first")
        second = LiveServer(url, tmp_path, redis.url, settings=settings, name="second")
        async with (
            direct_database(url) as database,
            running(first, second),
            http_client(first) as http_first,
            http_client(second) as http_second,
        ):
            site = await make_site(http_first, database)
            await wait_for_availability(http_second, site.lot_id, lambda r: r["capacity"] == 3)
            drivers = [await make_driver(http_first) for _ in range(3)]
            query = {"lot_id": site.lot_id}
            async with open_sse(first, query) as on_first, open_sse(second, query) as on_second:
                for stream in (on_first, on_second):
                    (lot,) = (await stream.next_event()).json()["lots"]
                    assert counts(lot) == (3, 0, 0, 0)
                    assert lot["stale"] is False

                await redis.kill()
                # Bookings do not need Redis; each server still answers reads and shows
                # its own changes, and after a while flags its records stale.
                await book(http_first, drivers[0], lot_id=site.lot_id)
                own = await on_first.record(site.lot_id, is_reserved(1))
                assert counts(own) == (2, 1, 0, 0)
                await book(http_second, drivers[1], lot_id=site.lot_id)
                for stream in (on_first, on_second):
                    stale = await stream.record(site.lot_id, lambda r: r["stale"] is True)
                    assert stale["stale"] is True
                for http in (http_first, http_second):
                    read = await wait_for_availability(http, site.lot_id, lambda r: r["stale"])
                    assert read["stale"] is True
                    everything = await http.get("/api/v1/availability")
                    assert everything.status_code == 200
                    readiness = await http.get("/readyz")
                    assert readiness.status_code == 503
                    assert readiness.json()["error"]["details"]["redis"] == "down"

                # Redis comes back empty on the same port: both servers recount and
                # republish, and the same streams carry the database's truth.
                await redis.start()
                for stream in (on_first, on_second):
                    record = await stream.record(
                        site.lot_id, lambda r: not r["stale"] and r["reserved"] == 2
                    )
                    assert counts(record) == (1, 2, 0, 0)
                for http in (http_first, http_second):
                    read = await wait_for_availability(
                        http, site.lot_id, lambda r: not r["stale"] and r["reserved"] == 2
                    )
                    assert counts(read) == (1, 2, 0, 0)

                # A change after the outage reaches both streams as one and the same record.
                await book(http_second, drivers[2], lot_id=site.lot_id)
                latest = [
                    await stream.record(site.lot_id, is_reserved(3))
                    for stream in (on_first, on_second)
                ]
                assert latest[0] == latest[1]
                assert counts(latest[0]) == (0, 3, 0, 0)
                assert latest[0]["status"] == "full"
                assert latest[0]["stale"] is False
                assert latest[0] == await availability(http_first, site.lot_id)
                assert latest[0] == await availability(http_second, site.lot_id)
            # Ready again (a first probe may still fail on a connection from before).
            await eventually(lambda: ready(http_first))
            await eventually(lambda: ready(http_second))


async def test_a_hanging_redis_holds_up_neither_bookings_nor_the_servers_own_stream(
    template: str, tmp_path: Path
) -> None:
    settings = {"REDIS_TIMEOUT_SECONDS": "1", "AVAILABILITY_STALE_AFTER_SECONDS": "1"}
    async with database_from(template, tmp_path) as url, private_redis(tmp_path) as redis:
        server = LiveServer(url, tmp_path, redis.url, settings=settings)
        async with (
            direct_database(url) as database,
            running(server),
            http_client(server) as http,
        ):
            site = await make_site(http, database)
            driver = await make_driver(http)
            async with open_sse(server, {"lot_id": site.lot_id}) as stream:
                await stream.next_event()
                # Stopped, Redis keeps its connections open and answers nothing: every
                # call waits for its timeout.
                redis.pause()
                try:
                    await book(http, driver, lot_id=site.lot_id)
                    assert (await http.get("/api/v1/availability")).status_code == 200
                    own = await stream.record(
                        site.lot_id, lambda r: r["reserved"] == 1 and r["stale"]
                    )
                    assert counts(own) == (2, 1, 0, 0)
                finally:
                    redis.resume()
                back = await stream.record(site.lot_id, lambda r: not r["stale"])
                assert counts(back) == (2, 1, 0, 0)
                assert back["version"] > own["version"]
                await wait_for_availability(http, site.lot_id, lambda r: r == back)
            assert server.errors() == []


async def test_a_recount_committed_by_a_server_killed_before_publishing_is_streamed_after_restart(
    template: str, tmp_path: Path
) -> None:
    async with database_from(template, tmp_path) as url, private_redis(tmp_path) as redis:
        proxy = SwallowingProxy(redis.port)
        await proxy.start()
        # The doomed server reaches Redis through the proxy; its publishes wait long
        # enough for the test to kill it while one hangs.
        doomed = LiveServer(
            url, tmp_path, proxy.url, settings={"REDIS_TIMEOUT_SECONDS": "10"}, name="doomed"
        )
        watcher = LiveServer(url, tmp_path, redis.url, name="watcher")
        restarted = LiveServer(url, tmp_path, redis.url, name="restarted")
        try:
            async with (
                direct_database(url) as database,
                running(watcher, doomed),
                http_client(watcher) as http,
                http_client(doomed) as http_doomed,
                Redis.from_url(redis.url) as redis_client,
            ):
                site = await make_site(http_doomed, database)
                await wait_for_availability(http, site.lot_id, lambda r: r["capacity"] == 3)
                driver = await make_driver(http)
                async with open_sse(watcher, {"lot_id": site.lot_id}) as stream:
                    (before,) = (await stream.next_event()).json()["lots"]
                    assert counts(before) == (3, 0, 0, 0)
                    assert before["version"] == await recorded_version(database, site.lot_id)

                    proxy.swallow()
                    await book(http_doomed, driver, lot_id=site.lot_id)
                    # Its recount is committed; its publish is stuck on the way to Redis.
                    await eventually(lambda: is_newer(database, site.lot_id, before["version"]))
                    await doomed.kill()

                    versions = f"{DEFAULT_PREFIX}:availability:versions"
                    published = await redis_client.hget(versions, str(site.lot_id))
                    assert published is not None
                    assert int(published) == before["version"]
                    assert await recorded_version(database, site.lot_id) > before["version"]
                    assert await availability(http, site.lot_id) == before

                    # Any process starting recounts every lot: the change is published.
                    async with running(restarted), http_client(restarted) as http_restarted:
                        record = (await stream.next_event()).json()
                        assert counts(record) == (2, 1, 0, 0)
                        assert record["version"] > before["version"]
                        assert record == await availability(http, site.lot_id)
                        assert record == await availability(http_restarted, site.lot_id)
                    assert watcher.errors() == []
        finally:
            await proxy.close()


async def test_an_outbox_row_left_by_a_process_that_died_before_recounting_is_streamed(
    template: str, tmp_path: Path
) -> None:
    async with single_server(template, tmp_path) as stack:
        site = await make_site(stack.http, stack.database)
        async with open_sse(stack.server, {"lot_id": site.lot_id}) as stream:
            (before,) = (await stream.next_event()).json()["lots"]
            # What a process leaves when it dies right after committing a change (a spot
            # taken out of service) and before recounting: the change and its outbox row.
            async with stack.database.transaction() as session:
                spot = await session.get(Spot, site.spot_ids[0])
                assert spot is not None
                spot.is_out_of_service = True
                session.add(
                    AvailabilityChange(
                        lot_id=site.lot_id, created_at=utcnow() - timedelta(minutes=1)
                    )
                )
            record = (await stream.next_event()).json()
            assert counts(record) == (2, 0, 0, 1)
            assert record["capacity"] == 2
            assert record["version"] > before["version"]
            assert record == await availability(stack.http, site.lot_id)
        assert stack.server.errors() == []


async def test_a_reservation_start_is_streamed_at_its_start_without_any_request(
    template: str, tmp_path: Path
) -> None:
    async with single_server(template, tmp_path) as stack:
        site = await make_site(stack.http, stack.database)
        driver = await make_driver(stack.http)
        async with open_sse(stack.server, {"lot_id": site.lot_id}) as stream:
            await stream.next_event()
            starts_at = now() + timedelta(seconds=3)
            await book(
                stack.http, driver, spot_id=site.spot_ids[0], starts_at=starts_at, minutes=15
            )
            started, earlier = await stream.until(
                lambda event: event.json()["reserved"] == 1, within=starts_at_deadline(starts_at)
            )
            arrived = now()
            record = started.json()
            assert counts(record) == (2, 1, 0, 0)
            assert arrived >= starts_at
            assert datetime.fromisoformat(record["updated_at"]) >= starts_at
            # The booking's own recount, before the start, still showed the spot free.
            assert earlier
            assert all(counts(event.json()) == (3, 0, 0, 0) for event in earlier)
        assert stack.server.errors() == []


def starts_at_deadline(starts_at: datetime) -> float:
    """Seconds from now until a generous while after ``starts_at``."""
    return (starts_at - now()).total_seconds() + 10
