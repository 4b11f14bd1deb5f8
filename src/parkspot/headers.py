"""Security headers on every HTTP response, as pure-ASGI middleware in front of everything
(the availability fast path included) and for the 500 handler, which answers outside it."""

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The API answers JSON and event streams only: nothing may load, run or frame them.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The interactive docs load Swagger UI / ReDoc from a CDN and run an inline script: they
# keep only the framing ban.
DOCS_POLICY = "frame-ancestors 'none'"
HSTS = "max-age=31536000"


def security_headers(
    path: str, *, docs_paths: Iterable[str] = (), hsts: bool = False
) -> dict[str, str]:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": DOCS_POLICY if path in docs_paths else API_POLICY,
    }
    if hsts:
        headers["Strict-Transport-Security"] = HSTS
    return headers


class SecurityHeadersMiddleware:
    """Adds the headers above to each response that does not set them itself;
    ``Strict-Transport-Security`` only with ``hsts`` (production)."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = (), hsts: bool = False) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope["path"], docs_paths=self.docs_paths, hsts=self.hsts)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
