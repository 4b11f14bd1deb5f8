"""A private PostgreSQL cluster on a free port that a test may stop and start again, so
database outages are tested without touching the shared server the other tests use.

PostgreSQL refuses to run as root: as root every ``initdb`` / ``pg_ctl`` call runs as the
``postgres`` user (``runuser``) in a folder it owns, outside pytest's folders (private to
root). No binaries or no way to run them is an error, never a skip: CI must not skip."""

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from tests.live_server import LOOPBACK, free_port, tail

# Longest a start or a stop may take (initdb alone takes a few seconds on a busy machine).
PG_CTL_SECONDS = 60
DATABASE = "parkspot"


def _bin_dir() -> Path:
    """The newest PostgreSQL's binaries: Debian keeps them off PATH."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("initdb not found (neither /usr/lib/postgresql/*/bin nor PATH)")
    return Path(initdb).parent


class PgCluster:
    """``initdb`` in a new folder; ``start`` / ``stop`` with ``pg_ctl`` (async, so a test's
    load keeps running meanwhile); ``destroy`` stops it and deletes the folder."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="parkspot-pg-"))
        if self.as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.base, account.pw_uid, account.pw_gid)
        self.data = self.base / "data"
        self.log_path = self.base / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@{LOOPBACK}:{self.port}/{DATABASE}"

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin / program), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self.as_postgres else command

    def _pg_ctl(self, *args: str) -> list[str]:
        return self._command("pg_ctl", "-D", str(self.data), "-t", str(PG_CTL_SECONDS), *args)

    def _start_command(self) -> list[str]:
        # Loopback TCP only, the socket in the cluster's folder; fsync off because
        # durability against power loss is not what is tested (a stopped or crashed
        # server keeps what it committed: the WAL is in the page cache).
        options = f"-p {self.port} -k {self.base} -c listen_addresses={LOOPBACK} -c fsync=off"
        return self._pg_ctl("-w", "-l", str(self.log_path), "-o", options, "start")

    def _check(self, what: str, result: subprocess.CompletedProcess[bytes]) -> None:
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace")
            raise RuntimeError(f"{what} failed ({result.returncode}):\n{output}\n{self.log()}")

    def _run(self, what: str, command: Sequence[str]) -> None:
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=PG_CTL_SECONDS
        )
        self._check(what, result)

    async def _arun(self, what: str, command: Sequence[str]) -> None:
        # pg_ctl's output to a file: the server it starts inherits it and lives on.
        with tempfile.TemporaryFile() as output:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=output, stderr=subprocess.STDOUT
            )
            code = await asyncio.wait_for(process.wait(), PG_CTL_SECONDS + 5)
            output.seek(0)
            self._check(what, subprocess.CompletedProcess(command, code, output.read()))

    def log(self) -> str:
        return f"--- postgresql log ---\n{tail(self.log_path)}"

    def create(self) -> None:
        """initdb, start, and an empty database named ``parkspot``. Blocking."""
        initdb = self._command(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"
        )
        self._run("initdb", [*initdb, "--no-sync", "--locale=C.UTF-8"])
        self._run("pg_ctl start", self._start_command())
        asyncio.run(self.execute(f'CREATE DATABASE "{DATABASE}"', database="postgres"))

    async def execute(self, sql: str, database: str = DATABASE) -> None:
        conn = await asyncpg.connect(
            host=LOOPBACK, port=self.port, user="postgres", database=database, timeout=10
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def start(self) -> None:
        await self._arun("pg_ctl start", self._start_command())

    async def stop(self, mode: str = "immediate") -> None:
        """``immediate``: every server process quits at once, as in a crash (the next
        start recovers from the WAL); ``fast``: clients disconnected, then a clean stop."""
        await self._arun("pg_ctl stop", self._pg_ctl("-m", mode, "stop"))

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                self._pg_ctl("-m", "immediate", "stop"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=PG_CTL_SECONDS,
                check=False,
            )
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def private_cluster() -> Iterator[PgCluster]:
    """A running private cluster with an empty ``parkspot`` database; removed afterwards.
    Blocking: use it from a synchronous (module-scoped) fixture."""
    cluster = PgCluster()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()
