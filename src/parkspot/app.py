"""create_app(settings): routers, middleware, error handlers and the lifespan."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from parkspot.alerts.router import router as alerts_router
from parkspot.auth.ratelimit import AttemptLimiter
from parkspot.auth.router import router as auth_router
from parkspot.auth.security import PasswordHasher, TokenCodec
from parkspot.availability.engine import AvailabilityEngine
from parkspot.availability.fastpath import AvailabilityFastPath
from parkspot.availability.mirror import Mirror
from parkspot.availability.router import router as availability_router
from parkspot.config import Environment, Settings, get_settings
from parkspot.db.engine import create_engine
from parkspot.db.session import Database
from parkspot.devices.router import router as devices_router
from parkspot.errors import RETRY_AFTER, ErrorResponse, install_error_handlers
from parkspot.headers import SecurityHeadersMiddleware
from parkspot.health import router as health_router
from parkspot.lots.pricing import BillingPolicy
from parkspot.lots.router import router as lots_router
from parkspot.metrics.collector import StateCollector
from parkspot.metrics.http import MetricsMiddleware
from parkspot.metrics.router import router as metrics_router
from parkspot.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from parkspot.notifications.router import router as notifications_router
from parkspot.operators.router import router as operators_router
from parkspot.realtime.bus import Bus, InProcessBus, RedisBus
from parkspot.realtime.notifications import NotificationHub
from parkspot.redaction import install_log_redaction
from parkspot.reservations.router import router as reservations_router
from parkspot.reservations.sweeper import expire_no_shows, run_forever
from parkspot.state import AppState
from parkspot.users.router import router as users_router
from parkspot.vehicles.router import router as vehicles_router

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Bad request",
        401: "Not authenticated",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        422: "Validation error",
        503: "A dependency is down",
    }.items()
}
ERROR_RESPONSES[503]["headers"] = RETRY_AFTER


def build_state(settings: Settings) -> AppState:
    bus: Bus = InProcessBus(settings.availability_events_kept)
    if settings.redis_url:
        bus = RedisBus(
            settings.redis_url,
            settings.redis_key_prefix,
            settings.availability_events_kept,
            settings.redis_timeout_seconds,
        )
    database = Database(create_engine(settings))
    state = AppState(
        settings=settings,
        database=database,
        passwords=PasswordHasher(
            settings.password_hash_memory_kib, settings.password_hash_time_cost
        ),
        tokens=TokenCodec(settings),
        billing=BillingPolicy.from_settings(settings),
        mirror=Mirror(settings.availability_events_kept),
        notifications=NotificationHub(bus, settings.notification_queue_size),
    )
    state.availability = AvailabilityEngine(
        settings,
        database,
        bus,
        state.mirror,
        state.notifications,
        clock=lambda: state.clock(),
        before_boundaries=lambda: expire_no_shows(state),
    )
    state.attempts = AttemptLimiter(settings, clock=lambda: state.clock())
    database.on_lots_changed = state.availability.mark_dirty
    database.on_notifications = state.notifications.committed
    database.on_reservation_events = state.metrics.reservation_events
    state.metrics.registry.register(StateCollector(state))
    return state


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = build_state(app.state.settings)
    app.state.parkspot = state
    # Not ready (no requests taken) before every lot is counted and mirrored.
    await state.availability.start()
    sweeper = asyncio.create_task(run_forever(state), name="parkspot-sweeper")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await state.availability.stop()
        await state.database.dispose()
        await state.attempts.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    install_log_redaction()
    app = FastAPI(
        title="parkspot",
        version="1.0.0",
        summary="Real-time parking availability and reservations",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        debug=settings.debug,
    )
    app.state.settings = settings
    api = APIRouter(prefix="/api/v1")
    for router in (
        auth_router,
        users_router,
        operators_router,
        lots_router,
        vehicles_router,
        reservations_router,
        notifications_router,
        availability_router,
        devices_router,
        alerts_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health_router)
    if settings.metrics_enabled:
        app.include_router(metrics_router)
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["ETag", "X-Request-ID", "Retry-After"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    if settings.metrics_enabled:
        # Behind the fast path, which counts the requests it answers itself.
        app.add_middleware(MetricsMiddleware)
    app.add_middleware(AvailabilityFastPath)
    # Outside the fast path, so its answers carry the headers too.
    docs_paths = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        SecurityHeadersMiddleware,
        docs_paths=[path for path in docs_paths if path],
        hsts=settings.env is Environment.production,
    )
    if settings.trusted_proxies:
        # Outermost: every layer (and the sign-in limits) sees the forwarded client address.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app
