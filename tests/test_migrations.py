"""The schema comes only from Alembic: migrations round-trip and match the models.

Sync tests: Alembic's env.py runs its own event loop."""

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from parkspot.db.migrations import downgrade, upgrade
from parkspot.models import metadata
from tests.conftest import empty_database


def _schema_diff(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def _inspect(url: str) -> tuple[set[str], list[Any]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
            diff = await connection.run_sync(_schema_diff)
    finally:
        await engine.dispose()
    return tables, diff


def test_upgrade_downgrade_upgrade_leaves_schema_matching_models(tmp_path: Path) -> None:
    expected_tables = {t.name for t in metadata.sorted_tables}
    with empty_database(tmp_path) as url:
        upgrade(url)
        tables, diff = asyncio.run(_inspect(url))
        assert tables == expected_tables
        assert diff == []

        downgrade(url, "base")
        tables, _ = asyncio.run(_inspect(url))
        assert tables == set()

        upgrade(url)
        tables, diff = asyncio.run(_inspect(url))
        assert tables == expected_tables
        assert diff == []
