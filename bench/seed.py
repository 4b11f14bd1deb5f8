"""Bench data written straight into a migrated database (COPY, not the API): one operator,
lots of public spots, drivers with one vehicle each and, optionally, a live login session
per driver so tokens can be minted without paying for argon2 at every login; devices with
keys known to the caller (their digests stored as POST /lots/{lot_id}/devices stores them).

Ids are contiguous and in order (lot i's spots follow lot i-1's, user i owns vehicle i), so a
load plan, and a pgbench script, can compute them arithmetically; ``seed`` checks that.
"""

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx

from bench.harness import SECRET_KEY, PgDatabase
from parkspot.auth.security import PasswordHasher, TokenCodec
from parkspot.config import Settings
from parkspot.devices.service import KEY_PREFIX, key_digest

PASSWORD = "bench-password-1"
# A driver's session id (jti) is JTI_BASE + user id: a 19-digit string pgbench can compute.
JTI_BASE = 10**18
HOURLY_RATE = Decimal("2.50")
SESSION_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class Layout:
    operator_id: int
    lots: int
    spots_per_lot: int
    first_lot_id: int
    first_spot_id: int
    users: int
    first_user_id: int
    first_vehicle_id: int

    @property
    def spots(self) -> int:
        return self.lots * self.spots_per_lot

    def lot_of_spot_index(self, index: int) -> int:
        return self.first_lot_id + index // self.spots_per_lot

    @staticmethod
    def lot_name(number: int) -> str:
        return f"Bench lot {number:02d}"

    @staticmethod
    def spot_label(number: int) -> str:
        return f"A{number:02d}"

    @staticmethod
    def username(number: int) -> str:
        return f"bench{number:06d}"

    @staticmethod
    def plate(number: int) -> str:
        return f"BN{number:06d}"


def jti_for(user_id: int) -> str:
    return str(JTI_BASE + user_id)


async def seed(
    database: PgDatabase,
    *,
    lots: int,
    spots_per_lot: int,
    users: int,
    sessions: bool,
    now: datetime | None = None,
) -> Layout:
    now = now or datetime.now(UTC)
    # A cheap argon2id hash (the stored parameters decide what verifying costs), so that
    # scenarios logging in through the API do not measure argon2.
    password_hash = await PasswordHasher(memory_kib=1024, time_cost=1).hash(PASSWORD)
    conn = await database.connect()
    try:
        async with conn.transaction():
            operator_id = await conn.fetchval(
                "INSERT INTO operators (name, created_at) VALUES ($1, $2) RETURNING id",
                "Bench parking",
                now,
            )
            await conn.copy_records_to_table(
                "lots",
                columns=[
                    "operator_id",
                    "name",
                    "address",
                    "latitude",
                    "longitude",
                    "timezone",
                    "hourly_rate",
                    "currency",
                    "visibility",
                    "is_active",
                    "created_at",
                    "updated_at",
                ],
                records=[
                    (
                        operator_id,
                        Layout.lot_name(i + 1),
                        f"{i + 1} Bench Street",
                        48.85 + i * 0.001,
                        2.35 + i * 0.001,
                        "UTC",
                        HOURLY_RATE,
                        "EUR",
                        "public",
                        True,
                        now,
                        now,
                    )
                    for i in range(lots)
                ],
            )
            lot_ids = [r[0] for r in await conn.fetch("SELECT id FROM lots ORDER BY id")]
            await conn.copy_records_to_table(
                "spots",
                columns=["lot_id", "label", "kind", "is_out_of_service", "created_at"],
                records=[
                    (lot_id, Layout.spot_label(j + 1), "standard", False, now)
                    for lot_id in lot_ids
                    for j in range(spots_per_lot)
                ],
            )
            await conn.copy_records_to_table(
                "users",
                columns=[
                    "username",
                    "email",
                    "password_hash",
                    "role",
                    "is_active",
                    "created_at",
                    "updated_at",
                ],
                records=[
                    (
                        Layout.username(i + 1),
                        f"{Layout.username(i + 1)}@bench.example",
                        password_hash,
                        "driver",
                        True,
                        now,
                        now,
                    )
                    for i in range(users)
                ],
            )
            user_ids = [r[0] for r in await conn.fetch("SELECT id FROM users ORDER BY id")]
            await conn.copy_records_to_table(
                "vehicles",
                columns=["owner_id", "plate", "kind", "created_at"],
                records=[
                    (user_id, Layout.plate(i + 1), "car", now) for i, user_id in enumerate(user_ids)
                ],
            )
            if sessions:
                await conn.copy_records_to_table(
                    "auth_sessions",
                    columns=["jti", "user_id", "created_at", "expires_at"],
                    records=[(jti_for(u), u, now, now + SESSION_TTL) for u in user_ids],
                )
            layout = Layout(
                operator_id=operator_id,
                lots=lots,
                spots_per_lot=spots_per_lot,
                first_lot_id=lot_ids[0],
                first_spot_id=await conn.fetchval("SELECT min(id) FROM spots"),
                users=users,
                first_user_id=user_ids[0],
                first_vehicle_id=await conn.fetchval("SELECT min(id) FROM vehicles"),
            )
            await _check_contiguous(conn, layout)
    finally:
        await conn.close()
    return layout


async def _check_contiguous(conn: asyncpg.Connection, layout: Layout) -> None:
    misplaced = await conn.fetchval(
        "SELECT count(*) FROM spots WHERE lot_id <> $1 + (id - $2) / $3",
        layout.first_lot_id,
        layout.first_spot_id,
        layout.spots_per_lot,
    )
    misowned = await conn.fetchval(
        "SELECT count(*) FROM vehicles WHERE owner_id - $1 <> id - $2",
        layout.first_user_id,
        layout.first_vehicle_id,
    )
    users = await conn.fetchval("SELECT max(id) - min(id) + 1 FROM users")
    spots = await conn.fetchval("SELECT max(id) - min(id) + 1 FROM spots")
    if misplaced or misowned or users != layout.users or spots != layout.spots:
        raise RuntimeError("seeded ids are not contiguous; the load plan cannot compute them")


async def seed_devices(
    database: PgDatabase, layout: Layout, kind: str, now: datetime | None = None
) -> list[str]:
    """One active device of ``kind`` (e.g. ``spot_sensor``) per lot; returns their keys,
    lot by lot (lot ``first_lot_id + i``'s is the i-th)."""
    now = now or datetime.now(UTC)
    keys = [KEY_PREFIX + secrets.token_urlsafe(32) for _ in range(layout.lots)]
    conn = await database.connect()
    try:
        await conn.copy_records_to_table(
            "devices",
            columns=["lot_id", "name", "kind", "key_digest", "created_at"],
            records=[
                (layout.first_lot_id + i, f"Bench {kind} {i + 1:02d}", kind, key_digest(key), now)
                for i, key in enumerate(keys)
            ],
        )
    finally:
        await conn.close()
    return keys


def mint_tokens(layout: Layout, issued_at: datetime | None = None) -> list[str]:
    """Access tokens for every driver, exactly as POST /auth/login makes them (a session row
    ``seed(sessions=True)`` wrote, a JWT signed with the server's key), user by user."""
    codec = TokenCodec(Settings.model_construct(secret_key=SECRET_KEY))
    issued_at = issued_at or datetime.now(UTC)
    return [
        codec.encode(layout.first_user_id + i, jti_for(layout.first_user_id + i), issued_at)
        for i in range(layout.users)
    ]


async def login_all(base_url: str, usernames: list[str], *, concurrency: int = 8) -> list[str]:
    """Access tokens from POST /api/v1/auth/login, in the order of ``usernames``."""
    limit = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, username: str) -> str:
        async with limit:
            response = await client.post(
                "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
            )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return list(await asyncio.gather(*(one(client, u) for u in usernames)))
