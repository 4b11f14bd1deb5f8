"""The price of a stay from the lot's rates, and the geography of the lot search."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from parkspot.lots import geo
from parkspot.lots.pricing import BillingPolicy, price
from parkspot.lots.schemas import money_text
from parkspot.models import Lot

START = datetime(2030, 3, 1, 8, tzinfo=UTC)


def lot(rate: str, daily_max: str | None = None) -> Lot:
    return Lot(
        operator_id=1,
        name="L",
        address="A",
        latitude=0,
        longitude=0,
        hourly_rate=Decimal(rate),
        daily_max=Decimal(daily_max) if daily_max is not None else None,
        currency="EUR",
    )


QUARTER = BillingPolicy(increment=timedelta(minutes=15), minimum=timedelta(minutes=30))
HOURLY = BillingPolicy(increment=timedelta(hours=1), minimum=timedelta(0))


@pytest.mark.parametrize(
    ("duration", "minutes", "amount"),
    [
        # The minimum charge: 30 minutes.
        (timedelta(minutes=1), 30, "1.25"),
        (timedelta(minutes=30), 30, "1.25"),
        # Rounded up to the 15-minute increment.
        (timedelta(minutes=30, seconds=1), 45, "1.88"),
        (timedelta(minutes=45), 45, "1.88"),
        (timedelta(hours=1, microseconds=1), 75, "3.13"),
        (timedelta(hours=7, minutes=46), 480, "20.00"),
        # The daily maximum caps the period.
        (timedelta(hours=8, minutes=1), 495, "20.00"),
        (timedelta(hours=24), 1440, "20.00"),
    ],
)
def test_time_is_billed_in_increments_above_the_minimum_up_to_the_daily_max(
    duration: timedelta, minutes: int, amount: str
) -> None:
    quote = price(lot("2.50", "20"), QUARTER, START, START + duration)
    assert [line.billed_minutes for line in quote.breakdown] == [minutes]
    assert quote.amount == Decimal(amount)


def test_the_daily_max_applies_per_24_hours_from_the_start() -> None:
    ends = START + timedelta(days=2, hours=2, minutes=5)
    quote = price(lot("2.50", "20"), HOURLY, START, ends)
    assert [(line.billed_minutes, line.amount, line.capped) for line in quote.breakdown] == [
        (1440, Decimal("20.00"), True),
        (1440, Decimal("20.00"), True),
        (180, Decimal("7.50"), False),
    ]
    assert quote.amount == Decimal("47.50")
    assert quote.breakdown[-1].ends_at == START + timedelta(days=2, hours=3)
    assert all(
        a.ends_at == b.starts_at for a, b in zip(quote.breakdown, quote.breakdown[1:], strict=False)
    )


def test_a_window_ending_on_a_period_boundary_has_no_empty_last_period() -> None:
    quote = price(lot("1", "10"), QUARTER, START, START + timedelta(hours=48))
    assert [line.billed_minutes for line in quote.breakdown] == [1440, 1440]
    assert quote.amount == Decimal("20.00")


def test_without_a_daily_max_every_hour_is_charged() -> None:
    quote = price(lot("1.5"), HOURLY, START, START + timedelta(hours=30))
    assert quote.amount == Decimal("45.00")
    assert not any(line.capped for line in quote.breakdown)


@pytest.mark.parametrize(
    ("left_after_end", "overstay_minutes", "total"),
    [
        (timedelta(0), None, "20.00"),
        (timedelta(seconds=1), 15, "22.50"),
        (timedelta(minutes=15), 15, "22.50"),
        (timedelta(minutes=16), 30, "25.00"),
        # Overstay is billed at the rate with no daily cap.
        (timedelta(hours=20), 1200, "220.00"),
    ],
)
def test_overstay_is_billed_at_the_hourly_rate_in_increments(
    left_after_end: timedelta, overstay_minutes: int | None, total: str
) -> None:
    ends = START + timedelta(hours=2)
    quote = price(lot("10", "50"), QUARTER, START, ends, left_at=ends + left_after_end)
    overstay = [line for line in quote.breakdown if line.kind == "overstay"]
    assert [line.billed_minutes for line in overstay] == (
        [] if overstay_minutes is None else [overstay_minutes]
    )
    assert quote.amount == Decimal(total)


def test_leaving_early_does_not_lower_the_price_of_the_window() -> None:
    ends = START + timedelta(hours=2)
    early = price(lot("10"), QUARTER, START, ends, left_at=START + timedelta(minutes=5))
    assert early.amount == price(lot("10"), QUARTER, START, ends).amount == Decimal("20.00")


def test_a_stay_across_midnight_is_not_billed_a_partial_hour_twice() -> None:
    paris = ZoneInfo("Europe/Paris")
    starts = datetime(2030, 3, 1, 23, 30, tzinfo=paris)
    quote = price(lot("2"), HOURLY, starts, starts + timedelta(hours=1))
    assert quote.amount == Decimal("2.00")


def test_a_daylight_saving_night_is_billed_by_elapsed_time() -> None:
    paris = ZoneInfo("Europe/Paris")
    # Clocks go forward at 02:00 on 31 March 2030: 01:00 to 04:00 local is two hours.
    quote = price(
        lot("2"),
        HOURLY,
        datetime(2030, 3, 31, 1, tzinfo=paris),
        datetime(2030, 3, 31, 4, tzinfo=paris),
    )
    assert quote.amount == Decimal("4.00")


def test_amounts_are_rounded_half_up_to_the_cent() -> None:
    hour = START + timedelta(hours=1)
    assert price(lot("0.0125"), HOURLY, START, hour).amount == Decimal("0.01")
    assert price(lot("0.005"), HOURLY, START, hour).amount == Decimal("0.01")
    assert price(lot("0.0049"), HOURLY, START, hour).amount == Decimal("0.00")


def test_an_empty_or_reversed_window_has_no_price() -> None:
    with pytest.raises(ValueError, match="after"):
        price(lot("2"), HOURLY, START, START)


@pytest.mark.parametrize(
    ("value", "text"),
    [("2.5", "2.50"), ("10", "10.00"), ("1E+1", "10.00"), ("0.0125", "0.0125"), ("0", "0.00")],
)
def test_money_is_written_in_plain_notation(value: str, text: str) -> None:
    assert money_text(Decimal(value)) == text


def test_distance_between_paris_and_london() -> None:
    paris, london = geo.Point(48.8566, 2.3522), geo.Point(51.5074, -0.1278)
    assert 340 < geo.distance_km(paris, london) < 348
    assert geo.distance_km(paris, paris) == 0


def test_the_box_around_a_point_holds_the_whole_circle() -> None:
    center = geo.Point(48.8566, 2.3522)
    box = geo.box_around(center, 10)
    for bearing_lat, bearing_lon in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        # A point just inside the circle in each direction is inside the box.
        edge = geo.Point(center.lat + bearing_lat * 0.0898, center.lon + bearing_lon * 0.1363)
        assert geo.distance_km(center, edge) < 10
        assert box.min_lat <= edge.lat <= box.max_lat
        assert box.min_lon <= edge.lon <= box.max_lon


def test_the_box_wraps_at_the_antimeridian_and_spans_all_longitudes_at_a_pole() -> None:
    box = geo.box_around(geo.Point(0, 179.99), 5)
    assert box.wraps
    assert box.min_lon > 179
    assert box.max_lon < -179
    polar = geo.box_around(geo.Point(89.99, 10), 5)
    assert (polar.min_lon, polar.max_lon, polar.max_lat) == (-180, 180, 90)
