"""The hot read path: anonymous ``GET /api/v1/availability[/{lot_id}]`` with no query
string, answered from the mirror before the framework, the middleware and the session.

Anything else (a token, a filter, an ``Origin`` header for CORS, a lot it cannot answer)
goes on to the routes, which give the same bodies and entity tags; so this is only a
shortcut, never a second behaviour. These reads are not access-logged and carry no
``X-Request-ID``.
"""

from starlette.types import ASGIApp, Receive, Scope, Send

from parkspot.availability.mirror import ANONYMOUS, EVERY_LOT, Entry, list_body, list_etag
from parkspot.availability.router import matches
from parkspot.state import AppState

PATH = "/api/v1/availability"
_SKIP = frozenset({b"authorization", b"origin", b"cookie"})


class AvailabilityFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["query_string"]
            or not scope["path"].startswith(PATH)
        ):
            await self.app(scope, receive, send)
            return
        rest = scope["path"][len(PATH) :]
        if_none_match = None
        for name, value in scope["headers"]:
            if name in _SKIP:
                await self.app(scope, receive, send)
                return
            if name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        state: AppState = scope["app"].state.parkspot
        if rest == "":
            entries = state.mirror.select(ANONYMOUS, EVERY_LOT)
            body, etag = list_body(entries), list_etag(entries)
        elif rest[0] == "/" and rest[1:].isdigit() and len(rest) < 12:
            entry: Entry | None = state.mirror.get(int(rest[1:]), ANONYMOUS)
            if entry is None:
                await self.app(scope, receive, send)
                return
            body, etag = entry.body, entry.etag
        else:
            await self.app(scope, receive, send)
            return
        headers = [(b"etag", etag.encode()), (b"cache-control", b"no-cache")]
        if matches(if_none_match, etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
