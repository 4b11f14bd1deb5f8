"""Pure-ASGI middleware counting HTTP requests and their latency by method, route template
and status.

The route is the template the router matched (``/api/v1/lots/{lot_id}``), never the raw
path, so the number of series stays bounded; a request no route matched is ``unmatched``
and an unusual method is ``other``. Latency is the time to the response's headers, so an
event stream counts the time it took to open, not its lifetime. WebSockets are counted by
the connection gauges instead. The availability fast path, in front of this middleware,
counts the requests it answers itself (a wrapper around each would cost more).
"""

import time
from collections.abc import Sequence

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parkspot.metrics.registry import RequestStats

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_templates(routes: Sequence[BaseRoute]) -> dict[int, str]:
    """The full template of every route by the route object's id. The router puts the
    route as its router declared it in ``scope["route"]``, whose ``path_format`` lacks the
    prefixes it was included under (``/lots/{lot_id}`` for ``/api/v1/lots/{lot_id}``);
    ``iter_route_contexts`` is FastAPI's flattened view with them. Ids, because Starlette
    routes compare by value and so cannot be dict keys; the routes live as long as the app."""
    return {
        id(context.original_route): context.path_format
        for context in iter_route_contexts(routes)
        if context.path_format
    }


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Built on the first request, once every route is in place.
        self._templates: dict[int, str] | None = None

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        if self._templates is None:
            self._templates = route_templates(scope["app"].routes)
        template = self._templates.get(id(route)) or getattr(route, "path_format", None)
        return template or UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        requests: RequestStats = scope["app"].state.parkspot.metrics.requests
        method = scope["method"]
        if method not in METHODS:
            method = "other"
        responded = False

        async def timed_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                key = (method, self._route(scope), message["status"])
                requests.observe(key, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            # Unhandled: the server error middleware outside this one answers 500.
            if not responded:
                requests.observe((method, self._route(scope), 500), time.perf_counter() - started)
            raise
