"""Liveness and readiness probes."""

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from parkspot.deps import StateDep
from parkspot.errors import ServiceUnavailable
from parkspot.realtime.bus import BusUnavailable

router = APIRouter(tags=["operations"])

CheckResult = Literal["ok", "down", "not_configured"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    database: CheckResult
    redis: CheckResult
    availability: Literal["ok", "loading"]


@router.get("/healthz")
async def healthz() -> Health:
    return Health()


@router.get("/readyz")
async def readyz(state: StateDep) -> Readiness:
    """503 with ``Retry-After`` while the database or the configured Redis cannot be
    reached, or before the availability of every lot is loaded."""
    database: CheckResult = "ok"
    try:
        async with state.database.session(write=False) as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        database = "down"
    redis: CheckResult = "not_configured"
    if state.settings.redis_url:
        try:
            await state.availability.bus.ping()
            redis = "ok"
        except BusUnavailable:
            redis = "down"
    availability: Literal["ok", "loading"] = "ok" if state.availability.ready else "loading"
    if "down" in (database, redis) or availability != "ok":
        raise ServiceUnavailable(
            "A dependency is unavailable",
            code="not_ready",
            details={"database": database, "redis": redis, "availability": availability},
        )
    return Readiness(database=database, redis=redis, availability=availability)
