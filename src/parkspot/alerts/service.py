"""Which conditions hold in a lot now, raising and clearing its alerts to match, and the
managers' view of them.

Alerts are reconciled in the availability engine's recount, which already runs after
every change to a lot (device reports, bookings, check-ins, no-shows) and at its time
boundaries, with the lot's record row locked: so one transaction at a time decides a lot's
alerts, and an alert clears as soon as its condition ends, with no request needed.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.alerts import repository
from parkspot.alerts.exceptions import AlertNotFound, ManagersOnly
from parkspot.alerts.schemas import AlertFilters, AlertPage, AlertRead
from parkspot.config import Settings
from parkspot.models import (
    Alert,
    AlertKind,
    Device,
    DeviceKind,
    Reservation,
    ReservationStatus,
    Role,
    User,
)
from parkspot.notifications.service import notify
from parkspot.operators import repository as operator_repository


@dataclass(frozen=True)
class Condition:
    lot_id: int
    kind: AlertKind
    subject: str
    message: str
    spot_id: int | None = None
    device_id: int | None = None
    reservation_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str, str]:
        return self.lot_id, self.kind, self.subject


@dataclass
class Findings:
    """The conditions holding in some lots now, and per lot the next moment time alone
    may change them."""

    now: datetime
    conditions: list[Condition] = field(default_factory=list)
    boundaries: dict[int, datetime] = field(default_factory=dict)

    def later(self, lot_id: int, at: datetime) -> None:
        if at > self.now and (lot_id not in self.boundaries or at < self.boundaries[lot_id]):
            self.boundaries[lot_id] = at


def _silent_devices(findings: Findings, devices: Iterable[Device], silence: timedelta) -> None:
    for device in devices:
        assert device.id is not None
        heard_at = device.last_seen_at or device.created_at
        if findings.now < heard_at + silence:
            findings.later(device.lot_id, heard_at + silence)
            continue
        since = (
            f"since {heard_at:%Y-%m-%d %H:%M} UTC"
            if device.last_seen_at is not None
            else "since it was created"
        )
        findings.conditions.append(
            Condition(
                device.lot_id,
                AlertKind.device_silent,
                f"device:{device.id}",
                f"Device {device.name!r} ({device.kind}) has not reported {since}",
                device_id=device.id,
                details={
                    "device_name": device.name,
                    "device_kind": device.kind,
                    "last_seen_at": None
                    if device.last_seen_at is None
                    else device.last_seen_at.isoformat(),
                },
            )
        )


def _impossible_count(lot_id: int, excess: int) -> Condition:
    what = (
        f"{excess} more cars than its spots in service"
        if excess > 0
        else f"{-excess} more exits than cars inside"
    )
    return Condition(
        lot_id,
        AlertKind.impossible_count,
        f"lot:{lot_id}",
        f"The lot's counters reported {what}; the count was clamped. Correct it with "
        f"PUT /api/v1/lots/{lot_id}/occupancy",
        details={"excess": excess},
    )


def _no_show(reservation: Reservation) -> Condition:
    assert reservation.id is not None
    return Condition(
        reservation.lot_id,
        AlertKind.no_show,
        f"reservation:{reservation.id}",
        f"Reservation {reservation.id} ({reservation.plate}) of spot {reservation.spot_label} "
        f"was not checked in; it runs until {reservation.ends_at:%Y-%m-%d %H:%M} UTC",
        spot_id=reservation.spot_id,
        reservation_id=reservation.id,
        details={"plate": reservation.plate, "spot_label": reservation.spot_label},
    )


def _holder(
    findings: Findings, reservations: Sequence[Reservation], lot_id: int, early: timedelta
) -> Reservation | None:
    """The stay on a spot, else the reservation whose check-in window has opened and that
    has not ended; notes when the next one opens."""
    current = None
    for reservation in reservations:
        if reservation.status == ReservationStatus.checked_in:
            return reservation
        opens_at = reservation.starts_at - early
        if opens_at > findings.now:
            findings.later(lot_id, opens_at)
        else:
            findings.later(lot_id, reservation.ends_at)
            if current is None or reservation.starts_at < current.starts_at:
                current = reservation
    return current


async def _occupied_spots(
    session: AsyncSession, findings: Findings, lot_ids: Sequence[int], early: timedelta
) -> None:
    """Sensors reporting a car on a spot nobody holds, or a plate other than the holder's."""
    occupied = await repository.occupied_spots(session, lot_ids)
    if not occupied:
        return
    holding: dict[int, list[Reservation]] = defaultdict(list)
    for reservation in await repository.holding(session, [s[0] for s in occupied], findings.now):
        assert reservation.spot_id is not None
        holding[reservation.spot_id].append(reservation)
    for spot_id, lot_id, label, plate in occupied:
        holder = _holder(findings, holding[spot_id], lot_id, early)
        if holder is None:
            findings.conditions.append(
                Condition(
                    lot_id,
                    AlertKind.unexpected_occupancy,
                    f"spot:{spot_id}",
                    f"Spot {label} is occupied with no reservation or stay holding it",
                    spot_id=spot_id,
                    details={"spot_label": label, "plate": plate},
                )
            )
        elif plate is not None and plate != holder.plate:
            findings.conditions.append(
                Condition(
                    lot_id,
                    AlertKind.wrong_vehicle,
                    f"spot:{spot_id}",
                    f"Spot {label} is held for {holder.plate} but its sensor reads {plate}",
                    spot_id=spot_id,
                    reservation_id=holder.id,
                    details={"spot_label": label, "plate": plate, "expected_plate": holder.plate},
                )
            )


async def find(
    session: AsyncSession, settings: Settings, lot_ids: Sequence[int], now: datetime
) -> tuple[Findings, dict[int, int]]:
    """The conditions of the lots now, and each lot's operator."""
    findings = Findings(now)
    lots = await repository.lots(session, lot_ids)
    operators = {lot_id: operator_id for lot_id, operator_id, _, _ in lots}
    # A deleted lot has nothing to watch: its alerts all clear.
    live = [lot_id for lot_id, _, _, deleted in lots if not deleted]
    if not live:
        return findings, operators
    for lot_id, _, excess, _ in lots:
        if excess and lot_id in live:
            findings.conditions.append(_impossible_count(lot_id, excess))
    devices = await repository.active_devices(session, live)
    _silent_devices(findings, devices, timedelta(seconds=settings.device_silence_seconds))
    for reservation in await repository.running_no_shows(session, live, now):
        findings.conditions.append(_no_show(reservation))
        findings.later(reservation.lot_id, reservation.ends_at)
    # Sensors count only while the lot has an active one (as in its availability).
    sensed = sorted({d.lot_id for d in devices if d.kind == DeviceKind.spot_sensor})
    if sensed:
        early = timedelta(minutes=settings.checkin_early_minutes)
        await _occupied_spots(session, findings, sensed, early)
    return findings, operators


async def reconcile(
    session: AsyncSession, settings: Settings, lot_ids: Sequence[int], now: datetime
) -> dict[int, datetime]:
    """Raises the lots' alerts whose condition holds now and clears those whose condition
    has ended, staging a notification to the managers of the lot's operator for each.
    Returns per lot the next moment time alone may raise or clear one. The caller holds the
    lots' availability rows locked."""
    findings, operators = await find(session, settings, lot_ids, now)
    holding = {condition.key: condition for condition in findings.conditions}
    opened = {
        (a.lot_id, a.kind, a.subject): a for a in await repository.open_alerts(session, lot_ids)
    }
    ended = [alert for key, alert in opened.items() if key not in holding]
    raised = []
    for key, condition in holding.items():
        if key not in opened:
            alert = Alert(
                lot_id=condition.lot_id,
                kind=condition.kind,
                subject=condition.subject,
                message=condition.message[:300],
                spot_id=condition.spot_id,
                device_id=condition.device_id,
                reservation_id=condition.reservation_id,
                details=condition.details,
                raised_at=now,
            )
            session.add(alert)
            raised.append(alert)
    for alert in ended:
        alert.cleared_at = now
    if raised or ended:
        await session.flush()
        await _notify_managers(session, operators, raised, ended)
    return findings.boundaries


async def _notify_managers(
    session: AsyncSession, operators: dict[int, int], raised: list[Alert], ended: list[Alert]
) -> None:
    managers = await operator_repository.manager_ids_by_operator(
        session, sorted({operators[a.lot_id] for a in (*raised, *ended)})
    )
    for kind, alerts, prefix in (
        ("alert_raised", raised, ""),
        ("alert_cleared", ended, "Cleared: "),
    ):
        for alert in alerts:
            body = AlertRead.model_validate(alert).model_dump(mode="json")
            for user_id in managers.get(operators[alert.lot_id], ()):
                notify(session, user_id, kind, prefix + alert.message, alert=body)


# --- the managers' view ----------------------------------------------------------------


def _require_manager(user: User) -> None:
    if user.role not in (Role.manager, Role.admin):
        raise ManagersOnly()


async def list_alerts(
    session: AsyncSession, user: User, filters: AlertFilters, limit: int, offset: int
) -> AlertPage:
    _require_manager(user)
    alerts, total = await repository.search(
        session, user, user.role == Role.admin, filters, limit, offset
    )
    return AlertPage(
        items=[AlertRead.model_validate(a) for a in alerts], total=total, limit=limit, offset=offset
    )


async def get_alert(session: AsyncSession, user: User, alert_id: int) -> AlertRead:
    _require_manager(user)
    alert = await repository.get_managed(session, user, alert_id, user.role == Role.admin)
    if alert is None:
        raise AlertNotFound()
    return AlertRead.model_validate(alert)
