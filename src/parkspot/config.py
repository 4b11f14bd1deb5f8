"""Settings read from the environment (prefix ``PARKSPOT_``) and the cached accessor."""

import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting's error must not quote the others (the secret).
    model_config = SettingsConfigDict(
        env_prefix="PARKSPOT_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    env: Environment = Environment.development
    debug: bool = False
    data_dir: Path = Path("var")
    # Empty means a SQLite file inside data_dir. Not in repr(): URLs may hold a password.
    database_url: str = Field(default="", repr=False)
    database_pool_size: int = Field(default=5, ge=1, le=100)
    database_max_overflow: int = Field(default=5, ge=0, le=100)
    # PostgreSQL: no request waits longer than these on a server that is gone or hung.
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    database_statement_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    redis_url: str | None = Field(default=None, repr=False)
    # Prefix of every Redis key, so that several deployments (or test runs) share a server.
    redis_key_prefix: str = Field(default="parkspot", pattern=r"^[A-Za-z0-9:_.-]{1,64}$")
    secret_key: str = Field(default="", repr=False)
    jwt_issuer: str = "parkspot"
    jwt_audience: str = "parkspot-api"
    access_token_ttl_seconds: int = Field(default=3600, ge=60, le=30 * 24 * 3600)
    password_hash_memory_kib: int = Field(default=65536, ge=8)
    password_hash_time_cost: int = Field(default=3, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Abuse limits: attempts per fixed window, counted before any password is hashed; 0 turns
    # a limit off. Shared through Redis when it is configured.
    rate_limit_login_per_account: int = Field(default=10, ge=0)
    rate_limit_login_per_account_seconds: int = Field(default=300, ge=1, le=86_400)
    rate_limit_login_per_address: int = Field(default=30, ge=0)
    rate_limit_login_per_address_seconds: int = Field(default=60, ge=1, le=86_400)
    rate_limit_register_per_address: int = Field(default=20, ge=0)
    rate_limit_register_per_address_seconds: int = Field(default=3600, ge=1, le=86_400)
    # Reverse proxies (addresses, networks or "*") whose X-Forwarded-For / -Proto are
    # believed; empty: the client address is the connection's peer.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Booking rules.
    booking_min_minutes: int = Field(default=15, ge=1)
    booking_max_hours: int = Field(default=7 * 24, ge=1)
    booking_max_days_ahead: int = Field(default=90, ge=1)
    booking_start_tolerance_minutes: int = Field(default=5, ge=0)
    booking_max_active_per_user: int = Field(default=10, ge=1)
    checkin_early_minutes: int = Field(default=15, ge=0)
    no_show_grace_minutes: int = Field(default=30, ge=1)
    ticket_max_hours: int = Field(default=24, ge=1)
    # Pricing: time is billed in whole increments, never less than the minimum.
    billing_increment_minutes: int = Field(default=15, ge=1, le=1440)
    billing_minimum_minutes: int = Field(default=30, ge=0)
    idempotency_ttl_hours: int = Field(default=24, ge=24)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    # Live availability.
    redis_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    availability_almost_full_ratio: float = Field(default=0.1, ge=0, le=1)
    availability_tick_seconds: float = Field(default=0.25, gt=0)
    availability_stale_after_seconds: float = Field(default=5.0, gt=0)
    # A lot whose occupancy comes from sensors or a counter is stale once its devices
    # have been silent this long.
    device_silence_seconds: float = Field(default=600.0, gt=0)
    availability_events_kept: int = Field(default=1000, ge=10, le=1_000_000)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    stream_max_lifetime_seconds: float = Field(default=3600.0, gt=0)
    stream_stall_timeout_seconds: float = Field(default=10.0, gt=0)
    stream_retry_ms: int = Field(default=3000, ge=0)
    notification_queue_size: int = Field(default=100, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    # json: one JSON object per log line; unset: json in production, text otherwise.
    log_format: Literal["json", "text"] | None = None
    metrics_enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for name in ("cors_origins", "trusted_proxies"):
                if isinstance(data.get(name), str):
                    raw: str = data[name]
                    data[name] = [o.strip() for o in raw.split(",") if o.strip()]
        return data

    @model_validator(mode="after")
    def _check_production(self) -> Self:
        if self.env is Environment.production:
            if len(self.secret_key) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"PARKSPOT_SECRET_KEY must be set to at least {MIN_SECRET_LENGTH} "
                    "characters in production"
                )
            if self.debug:
                raise ValueError("PARKSPOT_DEBUG cannot be on in production")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'parkspot.db'}"

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env is Environment.production else "text"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def effective_secret_key(self) -> str:
        """The configured secret, or (development only) one generated once and kept on disk."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
