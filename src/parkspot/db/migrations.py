"""Run Alembic programmatically (CLI, tests, start-up checks)."""

from pathlib import Path

from alembic import command
from alembic.config import Config


def _ini_path() -> Path:
    for candidate in (
        Path.cwd() / "alembic.ini",
        Path(__file__).resolve().parents[3] / "alembic.ini",
    ):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("alembic.ini not found in the working directory or the source tree")


def alembic_config(database_url: str) -> Config:
    config = Config(str(_ini_path()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking: call from a thread when an event loop is running."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
