"""Errors of the lots domain, each with its stable code.

ParkspotError
├── NotFound
│   ├── LotNotFound     lot_not_found (also: a members-only lot the caller may not see)
│   └── SpotNotFound    spot_not_found
├── Forbidden
│   └── NotLotManager   not_lot_manager (the caller sees the lot but does not manage it)
└── Conflict
    ├── SpotLabelTaken       spot_label_taken
    ├── LotHasReservations   lot_has_reservations
    └── SpotHasReservations  spot_has_reservations
"""

from collections.abc import Sequence

from parkspot.errors import Conflict, Forbidden, NotFound


class LotNotFound(NotFound):
    code = "lot_not_found"

    def __init__(self) -> None:
        super().__init__("Lot not found")


class SpotNotFound(NotFound):
    code = "spot_not_found"

    def __init__(self) -> None:
        super().__init__("Spot not found")


class NotLotManager(Forbidden):
    code = "not_lot_manager"

    def __init__(self) -> None:
        super().__init__("Only the lot operator's managers may do that")


class SpotLabelTaken(Conflict):
    code = "spot_label_taken"

    def __init__(self, labels: Sequence[str]) -> None:
        shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
        super().__init__(
            f"This lot already has a spot labelled {shown}", details={"labels": list(labels)}
        )


class LotHasReservations(Conflict):
    code = "lot_has_reservations"

    def __init__(self) -> None:
        super().__init__(
            "The lot has upcoming or ongoing reservations; cancel them or wait until they end"
        )


class SpotHasReservations(Conflict):
    code = "spot_has_reservations"

    def __init__(self) -> None:
        super().__init__(
            "The spot has upcoming or ongoing reservations; cancel them or wait until they end"
        )
