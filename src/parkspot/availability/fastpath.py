"""The hot paths, in front of the framework, the middleware and the session: anonymous
``GET /api/v1/availability[/{lot_id}]`` with no query string, answered from the mirror,
and anonymous ``GET /api/v1/availability/stream`` (thousands of them stay open, so each
is spared the framework's per-request frames).

Anything else (a token, an ``Origin`` header for CORS, a lot it cannot answer, a filter or
``Last-Event-ID`` that does not validate) goes on to the routes, which give the same
bodies, entity tags and streams; so this is only a shortcut, never a second behaviour.
These requests are not access-logged and carry no ``X-Request-ID``. They are counted in
the metrics here, under the routes' templates: the metrics middleware is behind this one,
since wrapping every answer's ``send`` would cost several times what counting it does.
"""

import re
import time
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from parkspot.availability.mirror import ANONYMOUS, EVERY_LOT, Entry, list_body, list_etag
from parkspot.availability.router import (
    EVENT_ID,
    IF_NONE_MATCH_MAX,
    filter_of,
    matches,
    open_stream,
)
from parkspot.availability.schemas import AvailabilityQuery
from parkspot.realtime.sse import EventStream
from parkspot.state import AppState
from parkspot.validation import SINGLE_LINE

PATH = "/api/v1/availability"
ITEM_ROUTE, STREAM_ROUTE = PATH + "/{lot_id}", PATH + "/stream"
_SKIP = frozenset({b"authorization", b"origin", b"cookie"})
_EVENT_ID = re.compile(EVENT_ID)
_SINGLE_LINE = re.compile(SINGLE_LINE)


class AvailabilityFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(PATH)
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rest = scope["path"][len(PATH) :]
        headers: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _SKIP:
                await self.app(scope, receive, send)
                return
            headers[name] = value.decode("latin-1")
        state: AppState = scope["app"].state.parkspot
        if rest == "/stream":
            stream = _stream(state, scope["query_string"], headers.get(b"last-event-id"))
            if stream is None:
                await self.app(scope, receive, send)
                return
            # Counted as it opens (an event stream always answers 200).
            key = ("GET", STREAM_ROUTE, 200)
            state.metrics.requests.observe(key, time.perf_counter() - started)
            await stream(scope, receive, send)
            return
        if scope["query_string"]:
            await self.app(scope, receive, send)
            return
        if_none_match = headers.get(b"if-none-match")
        if if_none_match is not None and (
            len(if_none_match) > IF_NONE_MATCH_MAX or not _SINGLE_LINE.match(if_none_match)
        ):
            # The routes refuse it (422).
            await self.app(scope, receive, send)
            return
        if rest == "":
            entries = state.mirror.select(ANONYMOUS, EVERY_LOT)
            body, etag = list_body(entries), list_etag(entries)
            route = PATH
        elif rest[0] == "/" and rest[1:].isdigit() and len(rest) < 12:
            entry: Entry | None = state.mirror.get(int(rest[1:]), ANONYMOUS)
            if entry is None:
                await self.app(scope, receive, send)
                return
            body, etag = entry.body, entry.etag
            route = ITEM_ROUTE
        else:
            await self.app(scope, receive, send)
            return
        response_headers = [(b"etag", etag.encode()), (b"cache-control", b"no-cache")]
        if matches(if_none_match, etag):
            await send({"type": "http.response.start", "status": 304, "headers": response_headers})
            await send({"type": "http.response.body", "body": b""})
            state.metrics.requests.observe(("GET", route, 304), time.perf_counter() - started)
            return
        response_headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
        state.metrics.requests.observe(("GET", route, 200), time.perf_counter() - started)


def _stream(state: AppState, query_string: bytes, last_event_id: str | None) -> EventStream | None:
    """The anonymous stream, or None when the query or ``Last-Event-ID`` needs the route
    (to be refused with its 422)."""
    if last_event_id is not None and (
        len(last_event_id) > 64 or not _EVENT_ID.match(last_event_id)
    ):
        return None
    lot_ids, bbox = [], []
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "lot_id":
            lot_ids.append(value)
        elif name == "bbox":
            bbox.append(value)
        else:
            return None
    if len(bbox) > 1:
        return None
    try:
        query = AvailabilityQuery.model_validate(
            {"lot_id": lot_ids, "bbox": bbox[0] if bbox else None}
        )
    except ValidationError:
        return None
    return open_stream(state, ANONYMOUS, filter_of(query), last_event_id)
