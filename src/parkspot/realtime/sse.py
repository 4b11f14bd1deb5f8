"""Server-sent events of a mirror subscription, written straight to the ASGI connection.

The response is an ASGI callable of its own (no generator, no extra buffering): it sends
the first chunk (retry hint, snapshot or replay), then whatever the subscription collects,
a comment line as keep-alive, and ends the stream after its maximum lifetime (the client
reconnects with ``Last-Event-ID``). A send that does not complete within the stall limit
means the client stopped reading: the connection is dropped.
"""

import asyncio
import logging
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from parkspot.availability.mirror import Entry, Subscription
from parkspot.metrics.registry import Metrics

logger = logging.getLogger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"


def event(event_id: str, name: str, data: bytes) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), name.encode(), data)


def availability_events(items: list[tuple[str, Entry]]) -> bytes:
    return b"".join(event(event_id, "availability", entry.body) for event_id, entry in items)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        subscription: Subscription,
        first: bytes,
        *,
        on_close: Callable[[Subscription], None],
        keepalive_seconds: float,
        lifetime_seconds: float,
        stall_seconds: float,
        metrics: Metrics | None = None,
    ) -> None:
        # Not Response.__init__: given no body it adds "content-length: 0", and a real
        # server then refuses every byte of the stream (in-process test clients do not).
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.subscription = subscription
        self.first = first
        self.on_close = on_close
        self.keepalive_seconds = keepalive_seconds
        self.lifetime_seconds = lifetime_seconds
        self.stall_seconds = stall_seconds
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self.subscription
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        watcher.add_done_callback(lambda _: subscription.close())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lifetime_seconds

        # asyncio.timeout, not wait_for: no task per wait, which matters with thousands of
        # streams each woken for every change.
        async def write(chunk: bytes, more: bool = True) -> None:
            async with asyncio.timeout(self.stall_seconds):
                await send({"type": "http.response.body", "body": chunk, "more_body": more})

        metrics = self.metrics
        if metrics is not None:
            metrics.sse_connections.inc()
        try:
            async with asyncio.timeout(self.stall_seconds):
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
            await write(self.first)
            while not subscription.closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(min(self.keepalive_seconds, remaining)):
                        await subscription.wake.wait()
                except TimeoutError:
                    if loop.time() < deadline:
                        await write(KEEP_ALIVE)
                    continue
                items = subscription.take()
                if items:
                    await write(availability_events(items))
            if not watcher.done():
                await write(b"", more=False)
        except TimeoutError:
            logger.info("event stream dropped: the client stopped reading")
            if metrics is not None:
                metrics.sse_clients_dropped.inc()
        finally:
            watcher.cancel()
            self.on_close(subscription)
            if metrics is not None:
                metrics.sse_connections.dec()
