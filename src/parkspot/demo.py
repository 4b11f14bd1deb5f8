"""Demo data for ``parkspot seed-demo``: one operator, five lots around Lyon, two accounts."""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from parkspot.auth import repository as auth_repository
from parkspot.auth.security import PasswordHasher
from parkspot.availability.outbox import lot_changed
from parkspot.db.session import Database
from parkspot.models import (
    Lot,
    MembershipRole,
    Operator,
    OperatorMember,
    Role,
    Spot,
    SpotKind,
    User,
    Vehicle,
    VehicleKind,
    Visibility,
)
from parkspot.operators.repository import passkey_digest

OPERATOR_NAME = "Demo Parking Co"
CITY = "Lyon"
TIMEZONE = "Europe/Paris"
CURRENCY = "EUR"


@dataclass(frozen=True)
class SpotBlock:
    """``count`` spots labelled ``prefix1..prefixN`` on one level."""

    prefix: str
    count: int
    level: str | None
    kind: SpotKind = SpotKind.standard


@dataclass(frozen=True)
class LotPlan:
    name: str
    address: str
    latitude: float
    longitude: float
    hourly_rate: Decimal
    daily_max: Decimal | None
    blocks: tuple[SpotBlock, ...]
    visibility: Visibility = Visibility.public


LOTS: tuple[LotPlan, ...] = (
    LotPlan(
        name="Bellecour Underground",
        address="Place Bellecour, 69002 Lyon",
        latitude=45.7578,
        longitude=4.8322,
        hourly_rate=Decimal("3.40"),
        daily_max=Decimal("29.00"),
        blocks=(
            SpotBlock("A", 48, "-1"),
            SpotBlock("E", 8, "-1", SpotKind.ev),
            SpotBlock("H", 6, "-1", SpotKind.accessible),
            SpotBlock("M", 8, "-1", SpotKind.motorcycle),
            SpotBlock("B", 40, "-2"),
            SpotBlock("C", 10, "-2", SpotKind.compact),
        ),
    ),
    LotPlan(
        name="Part-Dieu Station",
        address="Place Charles Béraudier, 69003 Lyon",
        latitude=45.7606,
        longitude=4.8594,
        hourly_rate=Decimal("3.90"),
        daily_max=Decimal("32.00"),
        blocks=(
            SpotBlock("A", 40, "-1"),
            SpotBlock("E", 12, "-1", SpotKind.ev),
            SpotBlock("H", 6, "-1", SpotKind.accessible),
            SpotBlock("M", 12, "-1", SpotKind.motorcycle),
            SpotBlock("B", 40, "-2"),
            SpotBlock("D", 30, "-3"),
            SpotBlock("C", 10, "-3", SpotKind.compact),
        ),
    ),
    LotPlan(
        name="Vieux Lyon Saint-Jean",
        address="Quai Romain Rolland, 69005 Lyon",
        latitude=45.7624,
        longitude=4.8286,
        hourly_rate=Decimal("2.80"),
        daily_max=Decimal("22.00"),
        blocks=(
            SpotBlock("A", 32, None),
            SpotBlock("E", 2, None, SpotKind.ev),
            SpotBlock("H", 2, None, SpotKind.accessible),
            SpotBlock("M", 6, None, SpotKind.motorcycle),
        ),
    ),
    LotPlan(
        name="Confluence Riverside",
        address="Cours Charlemagne, 69002 Lyon",
        latitude=45.7421,
        longitude=4.8183,
        hourly_rate=Decimal("2.20"),
        daily_max=Decimal("16.00"),
        blocks=(
            SpotBlock("A", 40, "0"),
            SpotBlock("E", 10, "0", SpotKind.ev),
            SpotBlock("H", 4, "0", SpotKind.accessible),
            SpotBlock("B", 30, "1"),
            SpotBlock("C", 6, "1", SpotKind.compact),
        ),
    ),
    LotPlan(
        name="Croix-Rousse Residents",
        address="Boulevard de la Croix-Rousse, 69004 Lyon",
        latitude=45.7744,
        longitude=4.8301,
        hourly_rate=Decimal("1.50"),
        daily_max=Decimal("9.00"),
        visibility=Visibility.members,
        blocks=(
            SpotBlock("A", 24, "-1"),
            SpotBlock("E", 4, "-1", SpotKind.ev),
            SpotBlock("H", 2, "-1", SpotKind.accessible),
        ),
    ),
)


@dataclass(frozen=True)
class DemoAccount:
    role: Role
    username: str
    email: str
    full_name: str


DRIVER = DemoAccount(Role.driver, "demo-driver", "demo-driver@example.com", "Camille Martin")
MANAGER = DemoAccount(Role.manager, "demo-manager", "demo-manager@example.com", "Julien Moreau")
ACCOUNTS = (DRIVER, MANAGER)
DRIVER_PLATE = "GE482LY"


@dataclass(frozen=True)
class Credential:
    role: Role
    username: str
    password: str


@dataclass(frozen=True)
class SeedResult:
    """What the database holds; the secrets are set only on the run that created them."""

    created: bool
    operator_id: int
    lots: int
    spots: int
    passkey: str | None = None
    credentials: tuple[Credential, ...] = ()


class DemoConflict(Exception):
    """A demo account's username or e-mail already belongs to someone else."""


async def seed(database: Database, passwords: PasswordHasher) -> SeedResult:
    """Creates the demo data unless the demo operator already exists (then changes nothing).

    Raises DemoConflict when a demo username or e-mail is taken by another account.
    """
    async with database.session(write=False) as session:
        existing = await _existing(session)
    if existing is not None:
        return existing
    credentials = tuple(
        Credential(account.role, account.username, secrets.token_urlsafe(12))
        for account in ACCOUNTS
    )
    hashes = [await passwords.hash(c.password) for c in credentials]
    passkey = secrets.token_urlsafe(12)
    async with database.transaction() as session:
        # Checked again under the write lock: another seed-demo may have won the race.
        existing = await _existing(session)
        if existing is not None:
            return existing
        operator_id = await _create_operator(session, passkey)
        await _create_accounts(session, operator_id, hashes)
        spots = await _create_lots(session, operator_id, LOTS)
    return SeedResult(
        created=True,
        operator_id=operator_id,
        lots=len(LOTS),
        spots=spots,
        passkey=passkey,
        credentials=credentials,
    )


async def _existing(session: AsyncSession) -> SeedResult | None:
    stmt = select(Operator.id).where(col(Operator.name) == OPERATOR_NAME)
    operator_id = (await session.execute(stmt)).scalar_one_or_none()
    if operator_id is None:
        return None
    lots = select(func.count()).select_from(Lot).where(col(Lot.operator_id) == operator_id)
    spots = (
        select(func.count())
        .select_from(Spot)
        .join(Lot, col(Lot.id) == col(Spot.lot_id))
        .where(col(Lot.operator_id) == operator_id)
    )
    return SeedResult(
        created=False,
        operator_id=operator_id,
        lots=(await session.execute(lots)).scalar_one(),
        spots=(await session.execute(spots)).scalar_one(),
    )


async def _create_operator(session: AsyncSession, passkey: str) -> int:
    operator = Operator(name=OPERATOR_NAME, passkey_digest=passkey_digest(passkey))
    session.add(operator)
    await session.flush()
    assert operator.id is not None
    return operator.id


async def _create_accounts(session: AsyncSession, operator_id: int, hashes: Sequence[str]) -> None:
    """The driver is a member (sees the members-only lot); the manager manages the operator."""
    for account, password_hash in zip(ACCOUNTS, hashes, strict=True):
        taken = await auth_repository.username_or_email_taken(
            session, account.username, account.email
        )
        if taken is not None:
            raise DemoConflict(
                f"The demo account's {taken} ({account.username}, {account.email}) "
                "already belongs to another user"
            )
        user = User(
            username=account.username,
            email=account.email,
            password_hash=password_hash,
            full_name=account.full_name,
            role=account.role,
        )
        session.add(user)
        await session.flush()
        assert user.id is not None
        membership = (
            MembershipRole.manager if account.role == Role.manager else MembershipRole.member
        )
        session.add(OperatorMember(operator_id=operator_id, user_id=user.id, role=membership))
        if account is DRIVER:
            session.add(
                Vehicle(
                    owner_id=user.id,
                    plate=DRIVER_PLATE,
                    kind=VehicleKind.car,
                    make="Renault Clio",
                    color="blue",
                )
            )
    await session.flush()


async def _create_lots(session: AsyncSession, operator_id: int, plans: Sequence[LotPlan]) -> int:
    """Adds the lots and their spots; returns how many spots were made."""
    spots = 0
    for plan in plans:
        lot = Lot(
            operator_id=operator_id,
            name=plan.name,
            address=plan.address,
            latitude=plan.latitude,
            longitude=plan.longitude,
            timezone=TIMEZONE,
            hourly_rate=plan.hourly_rate,
            daily_max=plan.daily_max,
            currency=CURRENCY,
            visibility=plan.visibility,
        )
        session.add(lot)
        await session.flush()
        assert lot.id is not None
        lot_changed(session, lot.id)
        for block in plan.blocks:
            session.add_all(
                Spot(lot_id=lot.id, label=f"{block.prefix}{n}", level=block.level, kind=block.kind)
                for n in range(1, block.count + 1)
            )
            spots += block.count
    await session.flush()
    return spots
