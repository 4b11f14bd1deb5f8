"""Database-side correctness checks shared by scenarios."""

from bench.harness import PgDatabase

_ACTIVE = "('confirmed', 'checked_in')"


def _pairs(column: str) -> str:
    return (
        "SELECT count(*) FROM reservations a JOIN reservations b "
        f"ON a.{column} = b.{column} AND a.id < b.id "
        f"WHERE a.status IN {_ACTIVE} AND b.status IN {_ACTIVE} "
        "AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at"
    )


async def overlapping_pairs(database: PgDatabase) -> dict[str, int]:
    """Pairs of active reservations overlapping in time on one spot (a double booking) and
    on one vehicle; both must be 0."""
    conn = await database.connect()
    try:
        return {
            "spot": int(await conn.fetchval(_pairs("spot_id"))),
            "vehicle": int(await conn.fetchval(_pairs("vehicle_id"))),
        }
    finally:
        await conn.close()


async def row_counts(database: PgDatabase, *tables: str) -> dict[str, int]:
    conn = await database.connect()
    try:
        return {t: int(await conn.fetchval(f'SELECT count(*) FROM "{t}"')) for t in tables}
    finally:
        await conn.close()
