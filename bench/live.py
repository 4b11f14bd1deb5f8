"""Live subscribers (SSE, WebSocket, Redis pub/sub) in worker processes, for S5-S8.

Thousands of connections are held open by worker processes of their own, each
timestamping every lot record it receives with the wall clock (``time.time()``, which every
process on the machine shares, so the harness can subtract the time a change was made).

The harness drives them with a ``LivePool``: each call goes to every worker process and
waits for all the answers. Subscribers live in named groups (``connect``, ``disconnect``,
``reconnect``, ``collect``, ``drop``), so a scenario can keep a stalled client apart from
the others, or let a group go and bring it back with ``Last-Event-ID``.

Like bench/loadgen.py this imports only the standard library (plus uvloop), so the workers
start fast, and the clients are bare asyncio protocols: on a machine it shares with the
server a worker must parse tens of thousands of events a second for little CPU. A record is
read with two regular expressions (``lot_id`` and ``version``); only snapshots are parsed
as JSON.
"""

import asyncio
import base64
import contextlib
import json
import math
import multiprocessing
import os
import re
import socket
import time
import traceback
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from bench.loadgen import (
    HEADER_END,
    http_request,
    raise_open_file_limit,
    wait_for_reports,
)

SSE = "sse"
WEBSOCKET = "ws"
REDIS = "redis"
# Client sockets are bound to 127.0.0.2 ... 127.0.0.(1 + SOURCES) in turn: each source
# address has its own ~28,000 ephemeral ports towards one server port, so tens of
# thousands of connections (and their TIME_WAIT leftovers) never run out of them.
SOURCES = 32
# Connections being opened at once per worker (a subscription is a full request on the
# server: more at once only queues in its accept backlog).
IN_FLIGHT = 200

_LOT = re.compile(rb'"lot_id":(\d+)')
_VERSION = re.compile(rb'"version":(\d+)')
_UPDATED_AT = re.compile(rb'"updated_at":"([^"]+)"')

Key = tuple[int, int]  # (lot id, version)


@dataclass(frozen=True)
class StreamSpec:
    """What each subscriber of a group connects to."""

    kind: str  # SSE, WEBSOCKET or REDIS
    host: str
    port: int
    target: str  # the request path (SSE, WebSocket) or the channel (Redis)
    subscribe: str = ""  # WebSocket: the first message, sent once upgraded
    stall: bool = False  # stop reading once the stream has started (S8)
    receive_buffer: int = 0  # SO_RCVBUF of the client socket; 0: the system's default
    # TCP_MAXSEG, the segment size announced; 0: the default. On loopback (64 KiB MSS) the
    # server's send buffer grows to megabytes; a small MSS keeps it to tens of kilobytes,
    # as for a client behind a slow link.
    segment_size: int = 0


def source_address(number: int) -> str:
    return f"127.0.0.{2 + number % SOURCES}"


# --- inside a worker process: the clients ------------------------------------------------


class _Group:
    """Subscribers connected alike, and when each (lot, version) reached them."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []
        self.arrivals: dict[Key, array[float]] = {}
        # The record's own updated_at (the server's clock), from its first arrival.
        self.updated_at: dict[Key, float] = {}

    def arrival(self, lot: int, version: int, now: float, payload: bytes) -> None:
        key = (lot, version)
        times = self.arrivals.get(key)
        if times is None:
            times = self.arrivals[key] = array("d")
            found = _UPDATED_AT.search(payload)
            if found is not None:
                self.updated_at[key] = datetime.fromisoformat(found[1].decode()).timestamp()
        times.append(now)


class Subscriber(asyncio.Protocol):
    """One connection: the latest version seen of each lot, and counts of what came."""

    def __init__(
        self,
        group: _Group,
        spec: StreamSpec,
        number: int,
        previous: "Subscriber | None" = None,
        expect: Mapping[int, int] | None = None,
    ) -> None:
        self.group = group
        self.spec = spec
        self.number = number
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        # Carried over a reconnection: what the client knew, and the id to resume after.
        self.versions: dict[int, int] = dict(previous.versions) if previous else {}
        self.last_id: str | None = previous.last_id if previous else None
        self.base: dict[int, int] = dict(self.versions)
        self.events = self.new = self.gaps = self.stale = self.snapshots = 0
        self.error: str | None = None
        self.leaving = False  # closed by us, not by the server
        self.closed_by_server = False
        self.started = 0.0
        # After a reconnection: every record received, and when the expected versions
        # (``expect``: lot -> version) had all arrived.
        self.expect = expect
        self.replayed: list[Key] | None = [] if expect is not None else None
        self.completed: float | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stalled_at: float | None = None
        self.ended_at: float | None = None  # when the server ended the connection

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.opened()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.leaving:
            self.closed_by_server = True
            self.ended_at = time.time()
            self.fail(f"connection closed by the server ({exc!r})" if exc else "")

    # what the kinds share
    def opened(self) -> None:
        raise NotImplementedError

    def mark_ready(self) -> None:
        if self.ready.done():
            return
        self.ready.set_result(None)
        if self.spec.stall and self.transport is not None:
            self.transport.pause_reading()
            self.stalled_at = time.time()

    def fail(self, problem: str) -> None:
        if problem and self.error is None:
            self.error = problem
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.error or "connection closed"))
        if not self.finished.done():
            self.finished.set_result(None)
        self.close()

    def close(self) -> None:
        self.leaving = not self.closed_by_server
        if self.transport is not None:
            self.transport.close()

    def snapshot(self, lots: Iterable[Mapping[str, Any]]) -> None:
        self.snapshots += 1
        for lot in lots:
            self.versions[int(lot["lot_id"])] = int(lot["version"])
        self.base = dict(self.versions)

    def record(self, payload: bytes, now: float) -> None:
        lot_match, version_match = _LOT.search(payload), _VERSION.search(payload)
        if lot_match is None or version_match is None:
            self.fail(f"a record without lot_id or version: {payload[:100]!r}")
            return
        lot, version = int(lot_match[1]), int(version_match[1])
        self.events += 1
        last = self.versions.get(lot, 0)
        if version > last:
            self.new += 1
            self.gaps += version - last - 1
            self.versions[lot] = version
        else:
            self.stale += 1
        self.group.arrival(lot, version, now, payload)
        if self.replayed is not None:
            self.replayed.append((lot, version))
            if self.completed is None and self.expect is not None:
                versions = self.versions
                if all(versions.get(k, 0) >= v for k, v in self.expect.items()):
                    self.completed = now
                    self.finished.set_result(None)

    def reset(self) -> None:
        self.base = dict(self.versions)
        self.events = self.new = self.gaps = self.stale = self.snapshots = 0


def _status(head: bytes) -> int:
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


class _Dechunker:
    """Undoes ``Transfer-Encoding: chunked`` incrementally."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.left = 0  # data bytes left in the current chunk
        self.skip = 0  # bytes of the CRLF after a chunk still to skip
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        buf = self.buffer
        buf += data
        out = bytearray()
        pos = 0
        while pos < len(buf) and not self.ended:
            if self.skip:
                step = min(self.skip, len(buf) - pos)
                pos += step
                self.skip -= step
            elif self.left:
                step = min(self.left, len(buf) - pos)
                out += buf[pos : pos + step]
                pos += step
                self.left -= step
                if not self.left:
                    self.skip = 2
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(bytes(buf[pos:end]).split(b";")[0], 16)
                pos = end + 2
                self.left = size
                self.ended = size == 0
        del buf[:pos]
        return bytes(out)


class SseSubscriber(Subscriber):
    """``GET`` an event stream (with ``Last-Event-ID`` when resuming)."""

    def opened(self) -> None:
        assert self.transport is not None
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        host = f"{self.spec.host}:{self.spec.port}"
        self.transport.write(http_request("GET", self.spec.target, host, headers=headers))
        self.head = False
        self.chunks: _Dechunker | None = None
        self.text = bytearray()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.head:
            self.buffer += data
            end = self.buffer.find(HEADER_END)
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            data = bytes(self.buffer[end + len(HEADER_END) :])
            self.buffer.clear()
            self.head = True
            problem = self._check(head)
            if problem:
                self.fail(problem)
                return
        self.text += self.chunks.feed(data) if self.chunks is not None else data
        text = self.text
        while (end := text.find(b"\n\n")) >= 0:
            block = bytes(text[:end])
            del text[: end + 2]
            self._block(block, now)

    def _check(self, head: bytes) -> str:
        lines = head.split(b"\r\n")
        status = _status(lines[0])
        if status != 200:
            return f"the event stream answered {status}"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunks = _Dechunker()
            elif name == b"content-length":
                # A stream has no length; uvicorn then refuses every event after it.
                return f"the event stream was announced with Content-Length: {value.decode()}"
        return ""

    def _block(self, block: bytes, now: float) -> None:
        name = data = None
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].lstrip(b" ")
            elif line.startswith(b"id:"):
                self.last_id = line[3:].strip().decode()
            elif line.startswith(b"event:"):
                name = line[6:].strip()
        if name == b"availability" and data is not None:
            self.record(data, now)
        elif name == b"snapshot" and data is not None:
            self.snapshot(json.loads(data)["lots"])
        # The first block (retry: ...) means the stream is open.
        self.mark_ready()


_TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 1, 2, 0, 8, 9, 10


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked frame. The mask key is zero: the server unmasks whatever it is, and
    XOR with zeros costs nothing here."""
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 65536:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + length + b"\0\0\0\0" + payload


class WsSubscriber(Subscriber):
    """A WebSocket (no extensions offered: no per-message deflate) that sends
    ``spec.subscribe`` once upgraded; ready with its first message (the snapshot)."""

    def opened(self) -> None:
        assert self.transport is not None
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
        }
        host = f"{self.spec.host}:{self.spec.port}"
        self.transport.write(http_request("GET", self.spec.target, host, headers=headers))
        self.upgraded = False
        self.partial = bytearray()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(HEADER_END)
            if end < 0:
                return
            status = _status(bytes(self.buffer[:end]))
            if status != 101:
                self.fail(f"the WebSocket handshake answered {status}")
                return
            del self.buffer[: end + len(HEADER_END)]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(_client_frame(_TEXT, self.spec.subscribe.encode()))
        self._frames(now)

    def _frames(self, now: float) -> None:
        buf = self.buffer
        pos = 0
        while len(buf) - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            size, head = second & 0x7F, 2
            if size == 126:
                if len(buf) - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if len(buf) - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            mask = b""
            if second & 0x80:  # servers do not mask; tolerated anyway
                mask = bytes(buf[pos + head : pos + head + 4])
                head += 4
            if len(buf) - pos < head + size:
                break
            payload = bytes(buf[pos + head : pos + head + size])
            pos += head + size
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self._frame(first & 0x0F, bool(first & 0x80), payload, now)
        del buf[:pos]

    def _frame(self, opcode: int, fin: bool, payload: bytes, now: float) -> None:
        assert self.transport is not None
        if opcode in (_TEXT, _BINARY, _CONTINUATION):
            self.partial += payload
            if fin:
                message = bytes(self.partial)
                self.partial.clear()
                self._message(message, now)
        elif opcode == _PING:
            self.transport.write(_client_frame(_PONG, payload))
        elif opcode == _CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
            self.closed_by_server = True
            self.fail(f"the server closed the WebSocket ({code})")

    def _message(self, message: bytes, now: float) -> None:
        if message.startswith(b'{"type":"availability"'):
            self.record(message, now)
        elif message.startswith(b'{"type":"snapshot"'):
            self.snapshot(json.loads(message)["lots"])
            self.mark_ready()
        elif b'"type":"error"' in message:
            self.fail(f"the server sent an error: {message[:200].decode(errors='replace')}")


def _resp_command(*parts: str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _resp_array(buf: bytearray, pos: int) -> tuple[list[bytes | int], int] | None:
    """One RESP2 array of bulk strings and integers at ``pos``; None when incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    if buf[pos] != ord("*"):
        raise ValueError(f"unexpected Redis reply {bytes(buf[pos : end + 2])!r}")
    count = int(buf[pos + 1 : end])
    pos = end + 2
    items: list[bytes | int] = []
    for _ in range(count):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        if buf[pos] == ord(":"):
            items.append(int(buf[pos + 1 : end]))
            pos = end + 2
            continue
        size = int(buf[pos + 1 : end])
        start = end + 2
        if len(buf) < start + size + 2:
            return None
        items.append(bytes(buf[start : start + size]))
        pos = start + size + 2
    return items, pos


class RedisSubscriber(Subscriber):
    """``SUBSCRIBE spec.target``; ready once Redis confirms."""

    def opened(self) -> None:
        assert self.transport is not None
        self.transport.write(_resp_command("SUBSCRIBE", self.spec.target))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buffer
        buf += data
        pos = 0
        try:
            while pos < len(buf) and (parsed := _resp_array(buf, pos)) is not None:
                items, pos = parsed
                if items[0] == b"message":
                    self.record(cast(bytes, items[2]), now)
                elif items[0] == b"subscribe":
                    self.mark_ready()
        except ValueError as exc:
            self.fail(str(exc))
            return
        del buf[:pos]


_KINDS: dict[str, type[Subscriber]] = {
    SSE: SseSubscriber,
    WEBSOCKET: WsSubscriber,
    REDIS: RedisSubscriber,
}


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.groups: dict[str, _Group] = {}
        self.cpu_mark = _cpu_seconds()

    async def _open(self, sub: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sub.spec.receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sub.spec.receive_buffer)
            if sub.spec.segment_size:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, sub.spec.segment_size)
            sock.bind((source_address(sub.number), 0))
            sock.setblocking(False)
            await loop.sock_connect(sock, (sub.spec.host, sub.spec.port))
        except BaseException:
            sock.close()
            raise
        await loop.create_connection(lambda: sub, sock=sock)

    async def _open_all(
        self, subs: list[Subscriber], in_flight: int, seconds: float
    ) -> dict[str, Any]:
        limit = asyncio.Semaphore(in_flight)
        began = time.time()
        waits: list[float] = []
        errors: Counter[str] = Counter()

        async def one(sub: Subscriber) -> None:
            async with limit:
                sub.started = time.time()
                try:
                    async with asyncio.timeout(seconds):
                        await self._open(sub)
                        await sub.ready
                    waits.append(time.time() - sub.started)
                except (OSError, TimeoutError, ConnectionError) as exc:
                    errors[(sub.error or repr(exc))[:200]] += 1
                    sub.close()

        await asyncio.gather(*(one(s) for s in subs))
        return {
            "connected": len(waits),
            "failed": sum(errors.values()),
            "errors": dict(errors.most_common(5)),
            "seconds": time.time() - began,
            "waits": waits,
        }

    async def connect(
        self, group: str, spec: StreamSpec, numbers: list[int], in_flight: int, seconds: float
    ) -> dict[str, Any]:
        into = self.groups.setdefault(group, _Group())
        subs = [_KINDS[spec.kind](into, spec, n) for n in numbers]
        into.subscribers += subs
        return await self._open_all(subs, in_flight, seconds)

    async def disconnect(self, group: str) -> dict[str, Any]:
        subs = self.groups[group].subscribers if group in self.groups else []
        for sub in subs:
            sub.close()
        await asyncio.sleep(0.1)
        return {"closed": len(subs)}

    async def reconnect(
        self,
        group: str,
        expect: dict[int, int],
        finals: dict[int, int],
        in_flight: int,
        seconds: float,
    ) -> dict[str, Any]:
        """Opens every subscriber of the group again, resuming after its last event id;
        waits until each has the ``expect``-ed versions (or ``seconds`` passed), then tells how
        exactly each resumed."""
        into = self.groups[group]
        old = into.subscribers
        into.subscribers = [
            _KINDS[s.spec.kind](into, s.spec, s.number, previous=s, expect=expect) for s in old
        ]
        report = await self._open_all(into.subscribers, in_flight, seconds)
        if expect:
            await asyncio.wait([s.finished for s in into.subscribers], timeout=seconds)
        wanted = Counter(expect.items())
        exact = with_snapshot = missing = extra = finals_match = 0
        completions = []
        for sub in into.subscribers:
            got = Counter(sub.replayed or [])
            missing += sum((wanted - got).values())
            extra += sum((got - wanted).values())
            with_snapshot += sub.snapshots > 0
            exact += got == wanted and sub.snapshots == 0 and sub.error is None
            finals_match += all(sub.versions.get(k) == v for k, v in finals.items())
            if sub.completed is not None:
                completions.append(sub.completed - sub.started)
        return report | {
            "exact": exact,
            "with_snapshot": with_snapshot,
            "missing": missing,
            "extra": extra,
            "finals_match": finals_match,
            "completions": completions,
        }

    async def count(self, group: str, finals: dict[int, int]) -> tuple[int, int]:
        """(records received, (subscriber, lot) pairs still short of ``finals``)."""
        subs = self.groups[group].subscribers if group in self.groups else []
        behind = sum(s.versions.get(k, 0) < v for s in subs for k, v in finals.items())
        return sum(s.events for s in subs), behind

    async def collect(self, group: str, reset: bool) -> dict[str, Any]:
        into = self.groups.get(group, _Group())
        final: dict[int, Counter[int]] = {}
        base: dict[int, Counter[int]] = {}
        errors: Counter[str] = Counter()
        for sub in into.subscribers:
            for lot, version in sub.versions.items():
                final.setdefault(lot, Counter())[version] += 1
            for lot, version in sub.base.items():
                base.setdefault(lot, Counter())[version] += 1
            if sub.error:
                errors[sub.error[:200]] += 1
        subs = into.subscribers
        now = _cpu_seconds()
        result = {
            "subscribers": len(subs),
            "closed_by_server": sum(s.closed_by_server for s in subs),
            "events": sum(s.events for s in subs),
            "new": sum(s.new for s in subs),
            "gaps": sum(s.gaps for s in subs),
            "stale": sum(s.stale for s in subs),
            "snapshots": sum(s.snapshots for s in subs),
            "errors": dict(errors),
            "final": final,
            "base": base,
            "arrivals": into.arrivals,
            "updated_at": into.updated_at,
            "cpu_seconds": now - self.cpu_mark,
        }
        if reset:
            into.arrivals, into.updated_at = {}, {}
            for sub in subs:
                sub.reset()
            self.cpu_mark = now
        return result

    async def release(self, group: str, seconds: float) -> list[dict[str, Any]]:
        """Stalled subscribers read again; tells, for each, whether the server had ended
        its stream (it then ends once the backlog is read: the server closes gracefully,
        so the end waits behind the data the client did not read) and the last record's
        ``updated_at`` (about when the server stopped writing to it)."""
        into = self.groups.get(group, _Group())
        subs = [s for s in into.subscribers if s.stalled_at is not None]
        released = time.time()
        for sub in subs:
            if sub.transport is not None and not sub.transport.is_closing():
                sub.transport.resume_reading()
        if subs:
            await asyncio.wait([s.finished for s in subs], timeout=seconds)
        last_written = max(into.updated_at.values(), default=None)
        return [
            {
                "stalled_at": s.stalled_at,
                "released_at": released,
                "ended_by_server": s.ended_at is not None,
                "records_received": s.events,
                "last_written_at": last_written,
            }
            for s in subs
        ]

    async def drop(self, group: str) -> dict[str, Any]:
        closed = await self.disconnect(group)
        self.groups.pop(group, None)
        return closed

    def close_all(self) -> None:
        for name in list(self.groups):
            for sub in self.groups.pop(name).subscribers:
                sub.close()


Reply = tuple[str, Any]


async def _serve(
    index: int, commands: "multiprocessing.Queue[Any]", replies: "multiprocessing.Queue[Reply]"
) -> None:
    raise_open_file_limit()
    worker = _Worker(index)
    handlers: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {
        "connect": worker.connect,
        "disconnect": worker.disconnect,
        "reconnect": worker.reconnect,
        "count": worker.count,
        "collect": worker.collect,
        "release": worker.release,
        "drop": worker.drop,
    }
    loop = asyncio.get_running_loop()
    while True:
        command, arguments = await loop.run_in_executor(None, commands.get)
        if command == "exit":
            worker.close_all()
            await asyncio.sleep(0.1)
            replies.put(("done", (index, None)))
            return
        try:
            replies.put(("done", (index, await handlers[command](**arguments))))
        except Exception:
            replies.put(("error", traceback.format_exc()))


def _worker_main(
    index: int, commands: "multiprocessing.Queue[Any]", replies: "multiprocessing.Queue[Reply]"
) -> None:
    try:
        import uvloop

        uvloop.run(_serve(index, commands, replies))
    except ImportError:
        asyncio.run(_serve(index, commands, replies))


# --- in the harness ----------------------------------------------------------------------


@dataclass
class Delivery:
    """A group's collected subscribers, merged over the worker processes."""

    subscribers: int = 0
    closed_by_server: int = 0
    events: int = 0
    new: int = 0  # records newer than what the subscriber had: versions delivered
    gaps: int = 0  # versions skipped between two records of a lot
    stale: int = 0  # records not newer than what the subscriber had
    snapshots: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    final: dict[int, Counter[int]] = field(default_factory=dict)  # lot -> version -> subs
    base: dict[int, Counter[int]] = field(default_factory=dict)  # the same when collecting began
    arrivals: dict[Key, list[float]] = field(default_factory=dict)
    updated_at: dict[Key, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def merge(self, part: Mapping[str, Any]) -> None:
        for name in ("subscribers", "closed_by_server", "events", "new", "gaps", "stale"):
            setattr(self, name, getattr(self, name) + part[name])
        self.snapshots += part["snapshots"]
        self.errors.update(part["errors"])
        for mine, theirs in ((self.final, part["final"]), (self.base, part["base"])):
            for lot, versions in theirs.items():
                mine.setdefault(lot, Counter()).update(versions)
        for key, times in part["arrivals"].items():
            self.arrivals.setdefault(key, []).extend(times)
        for key, stamp in part["updated_at"].items():
            self.updated_at[key] = min(stamp, self.updated_at.get(key, math.inf))
        self.cpu_seconds += part["cpu_seconds"]

    def expected(self, finals: Mapping[int, int]) -> int:
        """Versions every subscriber should have received to reach ``finals`` (lot ->
        version) from where it was when collecting began (a lot it did not know: 0)."""
        total = 0
        for lot, final in finals.items():
            known = self.base.get(lot, Counter())
            unknown = self.subscribers - sum(known.values())
            total += unknown * final
            total += sum(count * max(0, final - v) for v, count in known.items())
        return total

    def at_final(self, finals: Mapping[int, int]) -> int:
        """(subscriber, lot) pairs whose latest version is the final one."""
        return sum(self.final.get(lot, Counter())[v] for lot, v in finals.items())

    def summary(self, finals: Mapping[int, int]) -> dict[str, Any]:
        expected = self.expected(finals)
        return {
            "subscribers": self.subscribers,
            "versions_expected": expected,
            "versions_delivered": self.new,
            "delivered_percent": round(100 * self.new / expected, 3) if expected else 100.0,
            "skipped_versions": self.gaps,
            "stale_records": self.stale,
            "at_final_version": self.at_final(finals),
            "at_final_version_expected": self.subscribers * len(finals),
            "closed_by_server": self.closed_by_server,
            "errors": dict(self.errors.most_common(5)),
        }


class LivePool:
    """Worker processes holding live subscribers (``processes`` of them; subscriber ``n``
    lives in worker ``n % processes``)."""

    def __init__(self, processes: int, timeout: float = 300.0) -> None:
        self.processes = processes
        self.timeout = timeout
        ctx = multiprocessing.get_context("spawn")
        self._replies: multiprocessing.Queue[Reply] = ctx.Queue()
        self._commands: list[multiprocessing.Queue[Any]] = [ctx.Queue() for _ in range(processes)]
        self._workers = [
            ctx.Process(target=_worker_main, args=(i, q, self._replies), daemon=True)
            for i, q in enumerate(self._commands)
        ]

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    async def __aenter__(self) -> "LivePool":
        for worker in self._workers:
            worker.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            await self._call("exit", [{}] * self.processes, 30.0)
        for worker in self._workers:
            await asyncio.to_thread(worker.join, 5)
            if worker.is_alive():
                worker.kill()

    async def _call(
        self, command: str, arguments: list[dict[str, Any]], seconds: float | None = None
    ) -> list[Any]:
        for queue, args in zip(self._commands, arguments, strict=True):
            queue.put((command, args))
        parts = await asyncio.to_thread(
            wait_for_reports,
            self._replies,
            "done",
            self.processes,
            seconds or self.timeout,
            lambda: all(w.is_alive() for w in self._workers),
        )
        return [value for _, value in sorted(parts, key=lambda p: p[0])]

    async def _each(self, command: str, **arguments: Any) -> list[Any]:
        return await self._call(command, [arguments] * self.processes)

    async def connect(
        self,
        group: str,
        spec: StreamSpec,
        count: int,
        *,
        first: int = 0,
        in_flight: int = IN_FLIGHT,
        seconds: float = 60.0,
    ) -> dict[str, Any]:
        """Opens ``count`` subscribers (numbers ``first`` ...) and waits until each is
        subscribed; merged report: connected, failed, errors, seconds, waits."""
        numbers = [
            list(range(first + p, first + count, self.processes)) for p in range(self.processes)
        ]
        arguments = [
            {"group": group, "spec": spec, "numbers": n, "in_flight": in_flight, "seconds": seconds}
            for n in numbers
        ]
        return _merge_reports(await self._call("connect", arguments))

    async def reconnect(
        self,
        group: str,
        expect: dict[int, int],
        finals: dict[int, int],
        *,
        in_flight: int,
        seconds: float = 60.0,
    ) -> dict[str, Any]:
        parts = await self._each(
            "reconnect",
            group=group,
            expect=expect,
            finals=finals,
            in_flight=in_flight,
            seconds=seconds,
        )
        return _merge_reports(parts)

    async def disconnect(self, group: str) -> None:
        await self._each("disconnect", group=group)

    async def drop(self, group: str) -> None:
        await self._each("drop", group=group)

    async def release(self, group: str, *, seconds: float = 10.0) -> list[dict[str, Any]]:
        """The group's stalled subscribers read again: see ``_Worker.release``."""
        return [
            found
            for part in await self._each("release", group=group, seconds=seconds)
            for found in part
        ]

    async def count(self, group: str, finals: dict[int, int]) -> tuple[int, int]:
        """(records received, (subscriber, lot) pairs still short of ``finals``) over the
        group."""
        parts = await self._each("count", group=group, finals=finals)
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    async def collect(self, group: str, *, reset: bool = False) -> Delivery:
        delivery = Delivery()
        for part in await self._each("collect", group=group, reset=reset):
            delivery.merge(part)
        return delivery


def _merge_reports(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "seconds":
                merged[key] = max(merged.get(key, 0.0), value)
            elif key == "errors":
                merged.setdefault(key, Counter()).update(value)
            elif isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = merged.get(key, 0) + value
    if "errors" in merged:
        merged["errors"] = dict(merged["errors"].most_common(5))
    return merged
