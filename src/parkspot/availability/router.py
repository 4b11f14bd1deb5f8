"""Routes under /api/v1/availability: reads from the mirror, the SSE stream and the
WebSocket."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, WebSocket
from fastapi.responses import Response

from parkspot.availability import service
from parkspot.availability.mirror import LotFilter, Viewer, list_body, list_etag
from parkspot.availability.schemas import AvailabilityList, AvailabilityQuery, LotAvailabilityRead
from parkspot.deps import ANONYMOUS_ALLOWED, OptionalUser, SessionDep, StateDep
from parkspot.lots import geo
from parkspot.lots.exceptions import LotNotFound
from parkspot.realtime import websocket
from parkspot.realtime.sse import EventStream, event
from parkspot.state import AppState
from parkspot.validation import MAX_ID, SINGLE_LINE

router = APIRouter(prefix="/availability", tags=["availability"])

_ETAG = {
    "ETag": {
        "description": "The version of this answer, for `If-None-Match`",
        "required": True,
        "schema": {"type": "string"},
    }
}
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    200: {"headers": _ETAG},
    304: {"description": "Not modified (`If-None-Match` matched the ETag)", "headers": _ETAG},
}


def filter_of(query: AvailabilityQuery) -> LotFilter:
    return LotFilter(
        lot_ids=frozenset(query.lot_id) if query.lot_id else None,
        bbox=geo.parse_bbox(query.bbox) if query.bbox else None,
    )


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags or "*" in tags


def json_response(body: bytes, etag: str, if_none_match: str | None) -> Response:
    """200 with the body, or 304 when the client holds this version already."""
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


# Event ids look like Redis stream ids (``1732000000000-0``) or ``local-N``.
EVENT_ID = r"^[A-Za-z0-9-]*$"

IF_NONE_MATCH_MAX = 1024
IfNoneMatch = Annotated[str | None, Header(max_length=IF_NONE_MATCH_MAX, pattern=SINGLE_LINE)]


@router.get(
    "", response_model=AvailabilityList, responses=_NOT_MODIFIED, openapi_extra=ANONYMOUS_ALLOWED
)
async def list_availability(
    query: Annotated[AvailabilityQuery, Query()],
    user: OptionalUser,
    session: SessionDep,
    state: StateDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Every lot the caller may see (or those of ``lot_id`` / inside ``bbox``), by lot id,
    from this process's mirror."""
    viewer = await service.viewer_for(session, user)
    entries = state.mirror.select(viewer, filter_of(query))
    return json_response(list_body(entries), list_etag(entries), if_none_match)


@router.get("/stream", response_class=EventStream, status_code=200, openapi_extra=ANONYMOUS_ALLOWED)
async def stream_availability(
    query: Annotated[AvailabilityQuery, Query()],
    user: OptionalUser,
    session: SessionDep,
    state: StateDep,
    last_event_id: Annotated[str | None, Header(max_length=64, pattern=EVENT_ID)] = None,
) -> EventStream:
    """Server-sent events: ``snapshot`` (data `{"lots": [...]}`), then one ``availability``
    event per change. With ``Last-Event-ID`` inside the replay window the missed changes
    come first (latest per lot) instead of a snapshot. A ``: keep-alive`` comment is sent
    every `stream_keepalive_seconds`; the stream ends after `stream_max_lifetime_seconds`."""
    viewer = await service.viewer_for(session, user)
    return open_stream(state, viewer, filter_of(query), last_event_id)


def open_stream(
    state: AppState, viewer: Viewer, lot_filter: LotFilter, last_event_id: str | None
) -> EventStream:
    """The stream of the lots the viewer may see and the filter takes: the missed changes
    after ``last_event_id`` when it is in the replay window, else a snapshot first."""
    settings, mirror = state.settings, state.mirror
    subscription = mirror.subscribe(viewer, [lot_filter])
    first = b"retry: %d\n\n" % settings.stream_retry_ms
    if not last_event_id or not mirror.replay_after(last_event_id, subscription):
        snapshot = list_body(mirror.select(viewer, lot_filter))
        first += event(mirror.last_event_id, "snapshot", snapshot)
    return EventStream(
        subscription,
        first,
        on_close=mirror.unsubscribe,
        keepalive_seconds=settings.stream_keepalive_seconds,
        lifetime_seconds=settings.stream_max_lifetime_seconds,
        stall_seconds=settings.stream_stall_timeout_seconds,
        metrics=state.metrics,
    )


@router.websocket("/ws")
async def availability_socket(socket: WebSocket, token: str | None = None) -> None:
    """JSON messages. Client: `{"op": "subscribe", "lot_ids": [..]}` or `{"op":
    "subscribe", "bbox": [min_lon, min_lat, max_lon, max_lat]}`, `{"op": "unsubscribe",
    ...}` (nothing else: everything), `{"op": "ping"}`. Server: `{"type": "snapshot",
    "lots": [...]}` after each subscribe, `{"type": "availability", "id": ..., "lot":
    {...}}`, `{"type": "pong"}`, `{"type": "error", "code": ..., "message": ...}`."""
    await websocket.serve_availability(socket, token)


@router.get(
    "/{lot_id}",
    response_model=LotAvailabilityRead,
    responses=_NOT_MODIFIED,
    openapi_extra=ANONYMOUS_ALLOWED,
)
async def read_availability(
    lot_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    user: OptionalUser,
    session: SessionDep,
    state: StateDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    entry = state.mirror.get(lot_id, await service.viewer_for(session, user))
    if entry is None:
        raise LotNotFound()
    return json_response(entry.body, entry.etag, if_none_match)
