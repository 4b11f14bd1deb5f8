"""The ParkspotError tree and the one error shape every non-2xx response uses.

ParkspotError
├── BadRequest (400)
├── Unauthorized (401)
├── Forbidden (403)
├── NotFound (404)
├── Conflict (409)
├── PayloadTooLarge (413)
├── Unprocessable (422)
├── TooManyRequests (429)
└── ServiceUnavailable (503)

Infrastructure errors reaching the app are rendered in the same shape: an unreachable
database (``parkspot.db.engine.is_unavailable``: refused, timed out, the connection lost
mid-statement or mid-commit, the server shutting down or starting up) or Redis → 503 with
Retry-After, a unique constraint that beat a service's check → 409 ``conflict``.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from parkspot.config import Environment
from parkspot.db.engine import is_unavailable
from parkspot.headers import security_headers

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorResponse(BaseModel):
    """The body of every non-2xx response."""

    error: ErrorBody


# The header of every 429 and 503, as OpenAPI response headers.
RETRY_AFTER: dict[str, object] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}


class ParkspotError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = dict(details or {})
        self.headers = dict(headers or {})


class BadRequest(ParkspotError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ParkspotError):
    status_code = 401
    code = "not_authenticated"

    def __init__(self, message: str = "Missing or invalid credentials", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(ParkspotError):
    status_code = 403
    code = "forbidden"


class NotFound(ParkspotError):
    status_code = 404
    code = "not_found"


class Conflict(ParkspotError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ParkspotError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(ParkspotError):
    status_code = 422
    code = "unprocessable"


class TooManyRequests(ParkspotError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(message, **kw)


class ServiceUnavailable(ParkspotError):
    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(message, **kw)


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": dict(details or {})}}
    return JSONResponse(jsonable_encoder(body), status_code=status_code, headers=headers)


HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "service_unavailable",
}


def _validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


async def _parkspot_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ParkspotError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


def _malformed_json() -> JSONResponse:
    return error_response(400, "malformed_json", "The request body is not valid JSON")


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_details(exc.errors())
    if any(e["type"] == "json_invalid" for e in errors):
        return _malformed_json()
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return error_response(422, "validation_error", f"{where}: {first['msg']}", {"errors": errors})


_ROUTABLE_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at the request's path, for a 405's ``Allow``: FastAPI
    makes one route per method and Starlette's 405 names only the first one it tried."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _ROUTABLE_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI reports a JSON body that is not UTF-8 or nests too deep as a bare 400 caused by
    # the decoding error; it is as malformed as any other bad JSON.
    if exc.status_code == 400 and isinstance(exc.__cause__, (UnicodeDecodeError, RecursionError)):
        return _malformed_json()
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), {}, headers)


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # OSError: asyncpg raises ConnectionRefusedError, socket.gaierror, TimeoutError unwrapped.
    logger.warning("database unavailable: %s", exc.__class__.__name__)
    return error_response(
        503, "database_unavailable", "The database is unavailable", {}, {"Retry-After": "5"}
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):
        return await _database_unavailable(request, exc)
    # Any other driver error is a bug: re-raised, it gets the 500 of every unhandled error.
    raise exc


async def _cache_unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("redis unavailable: %s", exc.__class__.__name__)
    return error_response(
        503, "cache_unavailable", "The cache is unavailable", {}, {"Retry-After": "5"}
    )


async def _integrity_error(_: Request, exc: Exception) -> JSONResponse:
    # Services check uniqueness first; this is the constraint winning a race they lost.
    logger.warning("integrity error: %s", exc.__class__.__name__)
    return error_response(409, "conflict", "The change conflicts with existing data")


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    # Starlette sends this from outside every middleware: the security headers come here.
    settings = getattr(request.app.state, "settings", None)
    hsts = settings is not None and settings.env is Environment.production
    headers = security_headers(request.url.path, hsts=hsts)
    return error_response(500, "internal_error", "Internal server error", headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ParkspotError, _parkspot_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(OSError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(RedisConnectionError, _cache_unavailable)
    app.add_exception_handler(RedisTimeoutError, _cache_unavailable)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(Exception, _unhandled)
