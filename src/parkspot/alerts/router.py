"""Routes under /api/v1/alerts."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from parkspot.alerts import service
from parkspot.alerts.schemas import AlertFilters, AlertPage, AlertRead
from parkspot.deps import CurrentUser, PageDep, SessionDep
from parkspot.validation import MAX_ID

router = APIRouter(prefix="/alerts", tags=["alerts"])

ALERTS_DESCRIPTION = """Alerts of the lots the caller manages (admins: every lot), newest
first; `state=open` (the default) lists those whose condition still holds. Kinds:
`unexpected_occupancy` (a sensor sees a car on a spot no reservation or stay holds),
`wrong_vehicle` (a held spot's sensor reads another plate), `no_show` (a reservation expired
unused, until its window ends), `device_silent` (an active device has not reported for
`PARKSPOT_DEVICE_SILENCE_SECONDS`), `impossible_count` (counters moved the count past 0 or
the capacity). An alert clears by itself when its condition ends. Each one raised or cleared
is also a notification (`alert_raised` / `alert_cleared`, the alert in `data.alert`) to the
managers of the lot's operator, pushed live on `/api/v1/notifications/ws`."""


@router.get("", description=ALERTS_DESCRIPTION)
async def list_alerts(
    filters: Annotated[AlertFilters, Query()],
    user: CurrentUser,
    page: PageDep,
    session: SessionDep,
) -> AlertPage:
    return await service.list_alerts(session, user, filters, page.limit, page.offset)


@router.get("/{alert_id}")
async def get_alert(
    alert_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: CurrentUser, session: SessionDep
) -> AlertRead:
    return await service.get_alert(session, user, alert_id)
