"""The price of a stay, computed from the lot's rates: the one function behind quotes, the
``price_quote`` of a booking and the ``final_price`` at check-out.

Time is billed in whole ``increment``s (rounded up), never less than ``minimum``. The billed
time is cut into 24-hour periods counted from the start; each costs ``hourly_rate`` per hour,
at most ``daily_max`` when the lot has one. Periods are elapsed time, so a daylight-saving
change neither adds nor removes an hour. Time past the booked end (overstay) is billed at the
hourly rate, in increments, with no daily cap. Amounts are rounded half-up to the cent per
line; the total is the sum of the lines.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from parkspot.config import Settings
from parkspot.lots.schemas import Quote, QuoteLine
from parkspot.models import Lot

PERIOD = timedelta(hours=24)
CENT = Decimal("0.01")
_MINUTES_PER_HOUR = Decimal(60)


@dataclass(frozen=True)
class BillingPolicy:
    increment: timedelta
    minimum: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> "BillingPolicy":
        return cls(
            increment=timedelta(minutes=settings.billing_increment_minutes),
            minimum=timedelta(minutes=settings.billing_minimum_minutes),
        )

    def billable(self, elapsed: timedelta) -> timedelta:
        """``elapsed`` rounded up to whole increments."""
        return -(-elapsed // self.increment) * self.increment


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _minutes(duration: timedelta) -> int:
    return int(duration.total_seconds()) // 60


def _at_rate(lot: Lot, minutes: int) -> Decimal:
    return lot.hourly_rate * minutes / _MINUTES_PER_HOUR


def price(
    lot: Lot,
    policy: BillingPolicy,
    starts_at: datetime,
    ends_at: datetime,
    left_at: datetime | None = None,
) -> Quote:
    """The price of the window ``[starts_at, ends_at)``, plus overstay when ``left_at`` is
    after ``ends_at``. Raises ValueError unless ``starts_at < ends_at`` (timezone-aware)."""
    # In UTC: Python subtracts two times of one zone by their wall clocks.
    starts_at, ends_at = starts_at.astimezone(UTC), ends_at.astimezone(UTC)
    if ends_at <= starts_at:
        raise ValueError("ends_at must be after starts_at")
    remaining = max(policy.billable(ends_at - starts_at), policy.minimum)
    lines: list[QuoteLine] = []
    period_start = starts_at
    while remaining > timedelta(0):
        billed = min(remaining, PERIOD)
        amount = _at_rate(lot, _minutes(billed))
        capped = lot.daily_max is not None and amount > lot.daily_max
        if lot.daily_max is not None and capped:
            amount = lot.daily_max
        lines.append(
            QuoteLine(
                kind="period",
                starts_at=period_start,
                ends_at=min(period_start + PERIOD, max(ends_at, period_start + billed)),
                billed_minutes=_minutes(billed),
                amount=_cents(amount),
                capped=capped,
            )
        )
        remaining -= billed
        period_start += PERIOD
    if left_at is not None and left_at.astimezone(UTC) > ends_at:
        left_at = left_at.astimezone(UTC)
        minutes = _minutes(policy.billable(left_at - ends_at))
        lines.append(
            QuoteLine(
                kind="overstay",
                starts_at=ends_at,
                ends_at=left_at,
                billed_minutes=minutes,
                amount=_cents(_at_rate(lot, minutes)),
                capped=False,
            )
        )
    return Quote(
        amount=sum((line.amount for line in lines), Decimal("0.00")),
        currency=lot.currency,
        starts_at=starts_at,
        ends_at=ends_at,
        hourly_rate=lot.hourly_rate,
        daily_max=lot.daily_max,
        breakdown=lines,
    )
