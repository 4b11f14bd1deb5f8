"""What the lifespan builds once per app and every request reaches through ``app.state``."""

from dataclasses import dataclass

from redis.asyncio import Redis

from parkspot.auth.security import PasswordHasher, TokenCodec
from parkspot.config import Settings
from parkspot.db.session import Database


@dataclass
class AppState:
    settings: Settings
    database: Database
    passwords: PasswordHasher
    tokens: TokenCodec
    redis: Redis | None
