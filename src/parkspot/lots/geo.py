"""Geography for lot search: great-circle distance and the boxes that pre-filter it in SQL.

Longitude ranges may cross the antimeridian; a box whose ``min_lon`` is greater than its
``max_lon`` wraps round through 180°.
"""

import math
from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class Point:
    lat: float
    lon: float


@dataclass(frozen=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    @property
    def wraps(self) -> bool:
        return self.min_lon > self.max_lon

    def contains(self, lat: float, lon: float) -> bool:
        if not self.min_lat <= lat <= self.max_lat:
            return False
        if self.wraps:
            return lon >= self.min_lon or lon <= self.max_lon
        return self.min_lon <= lon <= self.max_lon


def _floats(raw: str, count: int, what: str) -> list[float]:
    parts = raw.split(",")
    if len(parts) != count:
        raise ValueError(f"{what} must be {count} comma-separated numbers")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what} must be {count} comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers")
    return values


def _check(lat: float, lon: float) -> None:
    if not -90 <= lat <= 90:
        raise ValueError("latitude must be between -90 and 90")
    if not -180 <= lon <= 180:
        raise ValueError("longitude must be between -180 and 180")


def parse_point(raw: str) -> Point:
    """``"lat,lon"``; raises ValueError."""
    lat, lon = _floats(raw, 2, "near")
    _check(lat, lon)
    return Point(lat, lon)


def parse_bbox(raw: str) -> BBox:
    """``"min_lon,min_lat,max_lon,max_lat"``; raises ValueError."""
    min_lon, min_lat, max_lon, max_lat = _floats(raw, 4, "bbox")
    _check(min_lat, min_lon)
    _check(max_lat, max_lon)
    if min_lat > max_lat:
        raise ValueError("bbox min_lat must not be greater than max_lat")
    return BBox(min_lon, min_lat, max_lon, max_lat)


def distance_km(a: Point, b: Point) -> float:
    """Haversine distance."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def box_around(center: Point, radius_km: float) -> BBox:
    """A box holding every point within ``radius_km`` of ``center`` (whole longitude
    circle when the circle reaches a pole)."""
    angle = radius_km / EARTH_RADIUS_KM
    dlat = math.degrees(angle)
    min_lat, max_lat = center.lat - dlat, center.lat + dlat
    if min_lat <= -90 or max_lat >= 90 or angle >= math.pi / 2:
        return BBox(-180.0, max(min_lat, -90.0), 180.0, min(max_lat, 90.0))
    ratio = math.sin(angle) / math.cos(math.radians(center.lat))
    if ratio >= 1:
        return BBox(-180.0, min_lat, 180.0, max_lat)
    dlon = math.degrees(math.asin(ratio))
    min_lon, max_lon = center.lon - dlon, center.lon + dlon
    if min_lon < -180:
        min_lon += 360
    if max_lon > 180:
        max_lon -= 360
    return BBox(min_lon, min_lat, max_lon, max_lat)
