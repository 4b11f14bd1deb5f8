"""Bare ASGI apps on parkspot's uvicorn settings: the ceilings of S1, S5 and S6.

Run as ``python -m bench.ceiling_apps {hello,fanout} --port PORT`` (the harness's
``asgi_app_server`` does), served by uvicorn the way ``parkspot serve`` serves parkspot.

- ``hello``: every request gets a small JSON body. What uvicorn, its event loop and its HTTP
  parser cost per request with nothing behind them (S1).
- ``fanout``: ``GET /sse`` opens an event stream (``retry:`` first, like parkspot's), ``/ws``
  a WebSocket (its first message, the subscription, is answered with an empty snapshot).
  ``POST /publish`` with a lot record as its body queues that record, framed as parkspot
  frames it, on every open stream and socket and answers 204; each stream's task then
  writes it. The least a Python server on uvicorn can do to fan a change out (S5, S6).

Both answer anything else (``/readyz``) with 200. Only uvicorn and the standard library run
per request: no framework, no middleware.
"""

import argparse
import asyncio
from collections.abc import Sequence
from typing import Generic, TypeVar

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parkspot.cli import GRACEFUL_SHUTDOWN_SECONDS

HOST = "127.0.0.1"
HELLO = b'{"hello":"world"}'
_HELLO_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(HELLO)).encode()),
]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_RETRY = b"retry: 3000\n\n"
_EMPTY_SNAPSHOT = '{"type":"snapshot","lots":[]}'

T = TypeVar("T")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO})


class _Outlet(Generic[T]):
    """One open stream or socket: what is queued for it and a flag to wake its task."""

    __slots__ = ("closed", "pending", "wake")

    def __init__(self) -> None:
        self.pending: list[T] = []
        self.wake = asyncio.Event()
        self.closed = False

    def push(self, item: T) -> None:
        self.pending.append(item)
        self.wake.set()

    def take(self) -> list[T]:
        items, self.pending = self.pending, []
        self.wake.clear()
        return items

    def close(self) -> None:
        self.closed = True
        self.wake.set()


async def _until(receive: Receive, kind: str) -> None:
    while (await receive())["type"] != kind:
        pass


class FanOut:
    def __init__(self) -> None:
        self.streams: set[_Outlet[bytes]] = set()
        self.sockets: set[_Outlet[str]] = set()
        self.sequence = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self._socket(receive, send)
        elif scope["path"] == "/sse":
            await self._stream(receive, send)
        elif scope["path"] == "/publish":
            await self._publish(receive, send)
        else:
            await _respond(send, 200, b"ok")

    async def _publish(self, receive: Receive, send: Send) -> None:
        parts = []
        while True:
            message: Message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        record = b"".join(parts)
        self.sequence += 1
        event_id = str(self.sequence)
        chunk = b"id: %s\nevent: availability\ndata: %s\n\n" % (event_id.encode(), record)
        text = f'{{"type":"availability","id":"{event_id}","lot":{record.decode()}}}'
        for stream in self.streams:
            stream.push(chunk)
        for socket in self.sockets:
            socket.push(text)
        await _respond(send, 204, b"")

    async def _stream(self, receive: Receive, send: Send) -> None:
        outlet: _Outlet[bytes] = _Outlet()
        self.streams.add(outlet)
        watcher = asyncio.ensure_future(_until(receive, "http.disconnect"))
        watcher.add_done_callback(lambda _: outlet.close())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": _RETRY, "more_body": True})
            while not outlet.closed:
                await outlet.wake.wait()
                chunks = outlet.take()
                if chunks and not outlet.closed:
                    body = b"".join(chunks)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            self.streams.discard(outlet)
            watcher.cancel()

    async def _socket(self, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        if (await receive())["type"] != "websocket.receive":  # the subscription
            return
        outlet: _Outlet[str] = _Outlet()
        self.sockets.add(outlet)
        watcher = asyncio.ensure_future(_until(receive, "websocket.disconnect"))
        watcher.add_done_callback(lambda _: outlet.close())
        try:
            await send({"type": "websocket.send", "text": _EMPTY_SNAPSHOT})
            while not outlet.closed:
                await outlet.wake.wait()
                for text in outlet.take():
                    if outlet.closed:
                        break
                    await send({"type": "websocket.send", "text": text})
        finally:
            self.sockets.discard(outlet)
            watcher.cancel()


fanout = FanOut()
APPS: dict[str, ASGIApp] = {"hello": hello, "fanout": fanout}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_apps")
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # The arguments parkspot.cli passes (one worker: uvicorn serves in this process), and
    # its defaults for the rest (event loop, HTTP and WebSocket implementations).
    uvicorn.run(
        APPS[args.app],
        host=HOST,
        port=args.port,
        workers=1,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
