"""What the lifespan builds once per app and every request reaches through ``app.state``."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from parkspot.auth.ratelimit import AttemptLimiter
from parkspot.auth.security import PasswordHasher, TokenCodec
from parkspot.availability.engine import AvailabilityEngine
from parkspot.availability.mirror import Mirror
from parkspot.config import Settings
from parkspot.db.session import Database
from parkspot.db.types import utcnow
from parkspot.lots.pricing import BillingPolicy
from parkspot.metrics.registry import Metrics
from parkspot.realtime.notifications import NotificationHub


@dataclass
class AppState:
    settings: Settings
    database: Database
    passwords: PasswordHasher
    tokens: TokenCodec
    billing: BillingPolicy
    mirror: Mirror
    notifications: NotificationHub
    availability: AvailabilityEngine = field(init=False)
    attempts: AttemptLimiter = field(init=False)
    # Every rule that depends on "now" asks this clock, so tests can move time.
    clock: Callable[[], datetime] = field(default=utcnow)
    # (user id, Idempotency-Key) of requests being handled in this process.
    idempotency_inflight: set[tuple[int, str]] = field(default_factory=set)
    # This app's Prometheus registry and the metrics counted as things happen.
    metrics: Metrics = field(default_factory=Metrics)
