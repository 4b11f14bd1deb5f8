"""The WebSocket endpoints: availability subscriptions and a user's live notifications.

Close codes: 1008 the token is invalid (or missing where one is needed), 1009 a message
over 64 KiB, 1013 the client stopped reading (a send did not complete within the stall
limit).
"""

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parkspot.availability import service
from parkspot.availability.mirror import LotFilter, Subscription, lots_json
from parkspot.deps import user_of_token
from parkspot.errors import Unauthorized
from parkspot.lots.geo import parse_bbox
from parkspot.models import User
from parkspot.state import AppState
from parkspot.validation import MAX_ID

POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
MAX_MESSAGE = 65_536


class Operation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["subscribe", "unsubscribe", "ping"]
    lot_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(None, max_length=500)
    bbox: list[float] | None = Field(None, min_length=4, max_length=4)

    def to_filter(self) -> LotFilter:
        """Raises ValueError for a bad box."""
        box = None
        if self.bbox is not None:
            box = parse_bbox(",".join(repr(v) for v in self.bbox))
        return LotFilter(frozenset(self.lot_ids) if self.lot_ids is not None else None, box)


def _state(socket: WebSocket) -> AppState:
    state: AppState = socket.app.state.parkspot
    return state


async def _authenticate(state: AppState, token: str | None) -> User | None:
    """The token's user (None without a token); raises Unauthorized."""
    if token is None:
        return None
    async with state.database.session(write=False) as session:
        return await user_of_token(session, state, token)


async def _send(socket: WebSocket, state: AppState, text: str) -> None:
    async with asyncio.timeout(state.settings.stream_stall_timeout_seconds):
        await socket.send_text(text)


async def _serve(
    socket: WebSocket,
    state: AppState,
    wake: asyncio.Event,
    drain: Callable[[], list[str]],
    on_message: Callable[[str], Awaitable[None]],
) -> None:
    """Reads messages and writes what ``drain`` gives each time ``wake`` is set, until the
    client leaves or stops reading."""

    async def read() -> None:
        while True:
            text = await socket.receive_text()
            if len(text) > MAX_MESSAGE:
                await socket.close(MESSAGE_TOO_BIG)
                return
            await on_message(text)

    reader = asyncio.ensure_future(read())
    reader.add_done_callback(lambda _: wake.set())
    try:
        while not reader.done():
            await wake.wait()
            for text in drain():
                await _send(socket, state, text)
    except TimeoutError:
        state.metrics.websocket_clients_dropped.inc()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.close(TRY_AGAIN_LATER), 1)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


async def _refuse(socket: WebSocket, reason: str) -> None:
    """Closes with 1008. Accepted first: closed during the handshake, a real server answers
    HTTP 403 instead, and clients (browsers) never see the code."""
    await socket.accept()
    await socket.close(POLICY_VIOLATION, reason)


async def serve_availability(socket: WebSocket, token: str | None) -> None:
    state = _state(socket)
    try:
        user = await _authenticate(state, token)
    except Unauthorized:
        await _refuse(socket, "invalid token")
        return
    async with state.database.session(write=False) as session:
        viewer = await service.viewer_for(session, user)
    await socket.accept()
    mirror = state.mirror
    subscription = mirror.subscribe(viewer, [])
    replies: list[str] = []

    def error(code: str, message: str) -> None:
        replies.append(json.dumps({"type": "error", "code": code, "message": message}))

    async def on_message(text: str) -> None:
        try:
            operation = Operation.model_validate_json(text)
            lot_filter = operation.to_filter()
        except (ValidationError, ValueError) as exc:
            error("invalid_message", _reason(exc))
        else:
            if operation.op == "ping":
                replies.append('{"type":"pong"}')
            elif operation.op == "subscribe":
                subscription.filters.append(lot_filter)
                lots = lots_json(mirror.select(viewer, lot_filter)).decode()
                replies.append(f'{{"type":"snapshot","lots":{lots}}}')
            else:
                _unsubscribe(subscription, operation, lot_filter)
        subscription.wake.set()

    def drain() -> list[str]:
        out = replies[:]
        replies.clear()
        for event_id, entry in subscription.take():
            lot = entry.body.decode()
            out.append(f'{{"type":"availability","id":"{event_id}","lot":{lot}}}')
        return out

    state.metrics.availability_sockets.inc()
    try:
        await _serve(socket, state, subscription.wake, drain, on_message)
    finally:
        mirror.unsubscribe(subscription)
        state.metrics.availability_sockets.dec()


def _unsubscribe(subscription: Subscription, operation: Operation, removed: LotFilter) -> None:
    """Without lot ids or box: everything; with lot ids: those ids from the id
    subscriptions; with a box: the subscriptions of that box."""
    if operation.lot_ids is None and operation.bbox is None:
        subscription.filters.clear()
        return
    kept = []
    for current in subscription.filters:
        if removed.bbox is not None and current.bbox == removed.bbox:
            continue
        if removed.lot_ids and current.bbox is None and current.lot_ids is not None:
            left = current.lot_ids - removed.lot_ids
            if not left:
                continue
            current = LotFilter(left, None)
        kept.append(current)
    subscription.filters[:] = kept


async def serve_notifications(socket: WebSocket, token: str | None) -> None:
    state = _state(socket)
    try:
        user = await _authenticate(state, token)
    except Unauthorized:
        user = None
    if user is None:
        await _refuse(socket, "a valid token is required")
        return
    assert user.id is not None
    await socket.accept()
    hub = state.notifications
    queue = hub.subscribe(user.id)
    replies: list[str] = []

    async def on_message(text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if isinstance(message, dict) and message == {"op": "ping"}:
            replies.append('{"type":"pong"}')
        else:
            replies.append(
                json.dumps({"type": "error", "code": "invalid_message", "message": "only ping"})
            )
        queue.wake.set()

    def drain() -> list[str]:
        out = replies[:]
        replies.clear()
        out += [f'{{"type":"notification","notification":{b.decode()}}}' for b in queue.take()]
        return out

    state.metrics.notification_sockets.inc()
    try:
        await _serve(socket, state, queue.wake, drain, on_message)
    finally:
        hub.unsubscribe(user.id, queue)
        state.metrics.notification_sockets.dec()


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)
