"""The price of a stay, computed from the lot's rates (quotes, bookings and check-outs).

Each started hour costs ``hourly_rate``. The stay is cut into 24-hour periods counted from
its start; each period costs at most ``daily_max`` when the lot has one. Periods are elapsed
time, so a daylight-saving change neither adds nor removes an hour, and a stay crossing
midnight is not billed a partial hour twice. Amounts are rounded half-up to the cent per
period, and the total is the sum of the periods.
"""

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from parkspot.lots.schemas import Quote, QuotePeriod
from parkspot.models import Lot

PERIOD = timedelta(hours=24)
HOUR = timedelta(hours=1)
CENT = Decimal("0.01")


def price(lot: Lot, starts_at: datetime, ends_at: datetime) -> Quote:
    """Raises ValueError unless ``starts_at < ends_at`` (both timezone-aware)."""
    # In UTC: Python subtracts two times of one zone by their wall clocks.
    starts_at, ends_at = starts_at.astimezone(UTC), ends_at.astimezone(UTC)
    if ends_at <= starts_at:
        raise ValueError("ends_at must be after starts_at")
    periods: list[QuotePeriod] = []
    period_start = starts_at
    while period_start < ends_at:
        period_end = min(period_start + PERIOD, ends_at)
        hours = -((period_start - period_end) // HOUR)  # started hours, in integers
        amount = lot.hourly_rate * hours
        capped = lot.daily_max is not None and amount > lot.daily_max
        if capped:
            assert lot.daily_max is not None
            amount = lot.daily_max
        periods.append(
            QuotePeriod(
                starts_at=period_start,
                ends_at=period_end,
                billed_hours=hours,
                amount=amount.quantize(CENT, rounding=ROUND_HALF_UP),
                capped=capped,
            )
        )
        period_start = period_end
    return Quote(
        amount=sum((p.amount for p in periods), Decimal("0.00")),
        currency=lot.currency,
        starts_at=starts_at,
        ends_at=ends_at,
        hourly_rate=lot.hourly_rate,
        daily_max=lot.daily_max,
        breakdown=periods,
    )
