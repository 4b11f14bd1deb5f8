"""``GET /metrics``: this process's metrics in the Prometheus text format."""

import asyncio
import logging
import math

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from parkspot.availability import repository
from parkspot.db.types import utcnow
from parkspot.deps import StateDep
from parkspot.state import AppState

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

# A scrape never waits longer than this for the outbox query.
OUTBOX_QUERY_SECONDS = 1.0


async def measure_outbox(state: AppState) -> None:
    """Sets the outbox gauges from one query. Measured here rather than tracked by the
    engine: the outbox is shared by every process, so rows a dead process left behind
    count too, and a scrape every few seconds costs one small query (the table holds only
    the changes not yet recounted)."""
    metrics = state.metrics
    try:
        async with asyncio.timeout(OUTBOX_QUERY_SECONDS):
            async with state.database.session(write=False) as session:
                rows, oldest = await repository.outbox_backlog(session)
    except Exception as exc:
        logger.warning("outbox not measured: %s", exc.__class__.__name__)
        metrics.outbox_rows.set(math.nan)
        metrics.outbox_lag.set(math.nan)
        return
    metrics.outbox_rows.set(rows)
    lag = 0.0 if oldest is None else (utcnow() - oldest).total_seconds()
    metrics.outbox_lag.set(max(lag, 0.0))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def read_metrics(state: StateDep) -> Response:
    """This process's metrics (each worker process has its own: scrape every one)."""
    await measure_outbox(state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
