"""The price of a stay from the lot's rates, and the geography of the lot search."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from parkspot.lots import geo
from parkspot.lots.pricing import price
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


@pytest.mark.parametrize(
    ("duration", "hours", "amount"),
    [
        (timedelta(minutes=1), 1, "2.50"),
        (timedelta(hours=1), 1, "2.50"),
        (timedelta(hours=1, seconds=1), 2, "5.00"),
        (timedelta(hours=1, microseconds=1), 2, "5.00"),
        (timedelta(hours=7, minutes=59), 8, "20.00"),
        (timedelta(hours=9), 9, "20.00"),
        (timedelta(hours=24), 24, "20.00"),
    ],
)
def test_each_started_hour_is_charged_up_to_the_daily_max(
    duration: timedelta, hours: int, amount: str
) -> None:
    quote = price(lot("2.50", "20"), START, START + duration)
    assert [p.billed_hours for p in quote.breakdown] == [hours]
    assert quote.amount == Decimal(amount)


def test_the_daily_max_applies_per_24_hours_from_the_start() -> None:
    quote = price(lot("2.50", "20"), START, START + timedelta(days=2, hours=2, minutes=5))
    assert [(p.billed_hours, p.amount, p.capped) for p in quote.breakdown] == [
        (24, Decimal("20.00"), True),
        (24, Decimal("20.00"), True),
        (3, Decimal("7.50"), False),
    ]
    assert quote.amount == Decimal("47.50")
    assert quote.breakdown[-1].ends_at == START + timedelta(days=2, hours=2, minutes=5)
    assert all(
        a.ends_at == b.starts_at for a, b in zip(quote.breakdown, quote.breakdown[1:], strict=False)
    )


def test_without_a_daily_max_every_hour_is_charged() -> None:
    quote = price(lot("1.5"), START, START + timedelta(hours=30))
    assert quote.amount == Decimal("45.00")
    assert not any(p.capped for p in quote.breakdown)


def test_a_stay_across_midnight_is_not_billed_a_partial_hour_twice() -> None:
    paris = ZoneInfo("Europe/Paris")
    starts = datetime(2030, 3, 1, 23, 30, tzinfo=paris)
    quote = price(lot("2"), starts, starts + timedelta(hours=1))
    assert quote.amount == Decimal("2.00")


def test_a_daylight_saving_night_is_billed_by_elapsed_time() -> None:
    paris = ZoneInfo("Europe/Paris")
    # Clocks go forward at 02:00 on 31 March 2030: 01:00 to 04:00 local is two hours.
    quote = price(
        lot("2"), datetime(2030, 3, 31, 1, tzinfo=paris), datetime(2030, 3, 31, 4, tzinfo=paris)
    )
    assert quote.amount == Decimal("4.00")


def test_amounts_are_rounded_half_up_to_the_cent() -> None:
    assert price(lot("0.0125"), START, START + timedelta(hours=1)).amount == Decimal("0.01")
    assert price(lot("0.005"), START, START + timedelta(hours=1)).amount == Decimal("0.01")
    assert price(lot("0.0049"), START, START + timedelta(hours=1)).amount == Decimal("0.00")


def test_an_empty_or_reversed_window_has_no_price() -> None:
    with pytest.raises(ValueError, match="after"):
        price(lot("2"), START, START)


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
