"""Sign-in and sign-up attempt limits: fixed-window counters, in Redis when it is configured
(every process counts together), else in this process.

A window is a fixed stretch of the app's clock (``floor(now / length)``), so processes agree
on it without talking, and tests move it with ``state.clock``. Every attempt counts, refused
ones too; the check runs before any SQL or password hash, so a refusal costs one counter
increment. A Redis that fails makes this process count on its own for a while (logged once)
rather than refuse or delay sign-ins.
"""

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from parkspot.config import Settings
from parkspot.errors import TooManyRequests
from parkspot.realtime.bus import redis_client

logger = logging.getLogger(__name__)

# Counters the in-process twin keeps at most; past that the stale ones go, then the oldest.
MAX_LOCAL_COUNTERS = 100_000
# After Redis fails, how long this process counts on its own before asking Redis again.
REDIS_RETRY_SECONDS = 5.0

# KEYS: the counters; ARGV: each counter's lifetime in seconds. Returns the new counts.
_INCREMENT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  counts[i] = count
end
return counts
"""


@dataclass(frozen=True)
class Rule:
    """At most ``limit`` attempts per key in each window of ``window_seconds``; 0 is off."""

    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class Rules:
    login_per_account: Rule
    login_per_address: Rule
    register_per_address: Rule

    @classmethod
    def from_settings(cls, settings: Settings) -> "Rules":
        return cls(
            Rule(
                "login-account",
                settings.rate_limit_login_per_account,
                settings.rate_limit_login_per_account_seconds,
            ),
            Rule(
                "login-address",
                settings.rate_limit_login_per_address,
                settings.rate_limit_login_per_address_seconds,
            ),
            Rule(
                "register-address",
                settings.rate_limit_register_per_address,
                settings.rate_limit_register_per_address_seconds,
            ),
        )


@dataclass(frozen=True)
class WindowCounter:
    key: str
    window_ends_at: float
    lifetime_seconds: int


class LocalCounters:
    """The in-process counters, bounded to ``max_counters``."""

    def __init__(self, max_counters: int = MAX_LOCAL_COUNTERS) -> None:
        self._max = max_counters
        # key -> (end of its window, count); insertion order is age.
        self._counts: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def increment(self, counters: Sequence[WindowCounter], now: float) -> list[int]:
        counts = []
        for counter in counters:
            _, count = self._counts.get(counter.key, (0.0, 0))
            self._counts[counter.key] = (counter.window_ends_at, count + 1)
            counts.append(count + 1)
        if len(self._counts) > self._max:
            self._prune(now)
        return counts

    def _prune(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        # Still full of live windows (a flood of distinct keys): forget the oldest, a tenth
        # more than needed, so that a flood pays for this pass once per max/10 new keys.
        excess = len(self._counts) - (self._max - self._max // 10)
        if excess > 0:
            for key in list(self._counts)[:excess]:
                del self._counts[key]


class AttemptLimiter:
    """Counts sign-in and sign-up attempts; raises TooManyRequests past a limit."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime],
        *,
        max_local_counters: int = MAX_LOCAL_COUNTERS,
    ) -> None:
        self.rules = Rules.from_settings(settings)
        self._clock = clock
        self._prefix = f"{settings.redis_key_prefix}:ratelimit"
        self._local = LocalCounters(max_local_counters)
        self._redis: Redis | None = None
        self._increment: AsyncScript | None = None
        if settings.redis_url:
            self._redis = redis_client(settings.redis_url, settings.redis_timeout_seconds)
            self._increment = self._redis.register_script(_INCREMENT)
        self._redis_failed_at: float | None = None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def login(self, address: str, login: str) -> None:
        """Counts a sign-in attempt by ``address`` as ``login`` (username or e-mail)."""
        await self.attempt(
            (self.rules.login_per_account, login.strip().lower()),
            (self.rules.login_per_address, address),
        )

    async def register(self, address: str) -> None:
        await self.attempt((self.rules.register_per_address, address))

    async def attempt(self, *checks: tuple[Rule, str]) -> None:
        """Counts one attempt against each (rule, key); raises TooManyRequests, with the
        seconds until the last window that refused it ends, when any count passes its limit."""
        active = [(rule, key) for rule, key in checks if rule.limit > 0]
        if not active:
            return
        now = self._clock().timestamp()
        counters = []
        for rule, key in active:
            window = math.floor(now / rule.window_seconds)
            # Hashed: bounded key length, and no usernames in Redis.
            digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
            counters.append(
                WindowCounter(
                    f"{self._prefix}:{rule.name}:{window}:{digest}",
                    (window + 1) * rule.window_seconds,
                    rule.window_seconds,
                )
            )
        counts = await self._count(counters, now)
        refused = [
            counter
            for (rule, _), counter, count in zip(active, counters, counts, strict=True)
            if count > rule.limit
        ]
        if refused:
            retry_after = max(math.ceil(c.window_ends_at - now) for c in refused)
            raise TooManyRequests(
                "Too many attempts; try again later",
                retry_after=max(1, retry_after),
                details={"retry_after": max(1, retry_after)},
            )

    async def _count(self, counters: Sequence[WindowCounter], now: float) -> list[int]:
        if self._increment is None or not self._redis_due():
            return self._local.increment(counters, now)
        try:
            counts = await self._increment(
                keys=[c.key for c in counters], args=[c.lifetime_seconds for c in counters]
            )
        except (RedisError, OSError) as exc:
            if self._redis_failed_at is None:
                logger.warning(
                    "rate limits: Redis unavailable (%s); counting in this process only",
                    exc.__class__.__name__,
                )
            self._redis_failed_at = time.monotonic()
            return self._local.increment(counters, now)
        if self._redis_failed_at is not None:
            logger.info("rate limits: Redis answers again; counting there")
            self._redis_failed_at = None
        return [int(c) for c in counts]

    def _redis_due(self) -> bool:
        failed_at = self._redis_failed_at
        return failed_at is None or time.monotonic() - failed_at >= REDIS_RETRY_SECONDS
