"""Keeping a pgbench ceiling honest: the SQL one API request sends, traced in-process, and
compared statement by statement with a pgbench script.

Both sides are normalised the same way: whitespace collapsed, upper case, and every bound
value (``$3::VARCHAR`` from SQLAlchemy/asyncpg, ``:uid::INTEGER``, ``NULL::TYPE``,
``to_timestamp(:st)`` and ``now()`` in the script) replaced by ``?``. BEGIN and COMMIT are
left out (asyncpg issues them outside the cursor the trace listens to).
"""

import difflib
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from bench.harness import SECRET_KEY, PgDatabase
from parkspot.app import create_app
from parkspot.config import Settings

_TYPE = r"(?:TIMESTAMP WITH TIME ZONE|NUMERIC\(\d+, ?\d+\)|[A-Z]+)"
_VALUE_PATTERNS = [
    re.compile(rf"(?:\$\d+|:\w+|NULL)::{_TYPE}"),
    re.compile(r"TO_TIMESTAMP\(:\w+\)"),
    re.compile(r"NOW\(\)"),
]
_SKIPPED = {"BEGIN", "COMMIT", "ROLLBACK"}


def normalise(sql: str) -> str:
    text = " ".join(sql.split()).upper().rstrip(";").strip()
    for pattern in _VALUE_PATTERNS:
        text = pattern.sub("?", text)
    return text


def script_statements(script: str) -> list[str]:
    """The SQL statements of a pgbench script (meta-commands and comments dropped), each
    normalised; a trailing ``\\gset`` ends a statement like a semicolon."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--") or stripped.startswith("\\"):
            continue
        gset = re.search(r"\\gset\b.*$", stripped)
        if gset:
            current.append(stripped[: gset.start()])
            statements.append(" ".join(current))
            current = []
            continue
        current.append(stripped)
        if stripped.endswith(";"):
            statements.append(" ".join(current))
            current = []
    return [n for n in (normalise(s) for s in statements) if n not in _SKIPPED]


def compare(api: list[str], script: list[str]) -> list[str]:
    """Human-readable differences (numbered as the API sends them); empty when the two
    lists are identical."""
    differences = []
    matcher = difflib.SequenceMatcher(a=api, b=script, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op in ("replace", "delete"):
            differences += [
                f"API statement {i + 1} not in pgbench: {api[i]}" for i in range(a1, a2)
            ]
        if op in ("replace", "insert"):
            differences += [f"pgbench statement not sent by the API: {s}" for s in script[b1:b2]]
    return differences


async def trace(
    database: PgDatabase,
    work_dir: Path,
    action: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
) -> tuple[httpx.Response, list[str]]:
    """Runs ``action`` against an in-process app on ``database`` and returns its response
    and the normalised statements it sent. The app is built like the served one (same key,
    no Redis); it changes the database, so give it a scratch copy. The availability
    recount that follows a commit is a transaction of its own, not the request's: it is
    kept out of the trace."""
    settings = Settings(
        _env_file=None,
        database_url=database.sqlalchemy_url,
        redis_url=None,
        secret_key=SECRET_KEY,
        data_dir=work_dir / "trace",
        sweep_interval_seconds=3600,
        availability_tick_seconds=3600,
    )
    app = create_app(settings)
    statements: list[str] = []

    def capture(*args: Any) -> None:
        statements.append(normalise(str(args[2])))

    lifespan: AbstractAsyncContextManager[Any] = _lifespan(app)
    async with lifespan:
        app.state.parkspot.database.on_lots_changed = _ignore
        engine = app.state.parkspot.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", capture)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            response = await action(client)
    return response, [s for s in statements if s not in _SKIPPED]


def _ignore(_: object) -> None:
    pass


def _lifespan(app: FastAPI) -> AbstractAsyncContextManager[Any]:
    context: AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)
    return context
