"""Password hashing (argon2id, off the event loop) and JWT encoding/decoding."""

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from jose import JWTError, jwt
from passlib.hash import argon2

from parkspot.config import Settings
from parkspot.validation import MAX_ID

ALGORITHM = "HS256"


class PasswordHasher:
    """argon2id with the configured cost; every call runs in a worker thread, at most one
    per CPU at a time (each holds ``memory_kib``: a flood of sign-ins queues rather than
    taking the machine's memory)."""

    def __init__(self, memory_kib: int, time_cost: int) -> None:
        self._hasher = argon2.using(type="ID", memory_cost=memory_kib, rounds=time_cost)
        # Verified against when the user is unknown, so both paths cost one hash.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._threads = anyio.CapacityLimiter(os.cpu_count() or 1)

    async def hash(self, password: str) -> str:
        result: str = await anyio.to_thread.run_sync(
            self._hasher.hash, password, limiter=self._threads
        )
        return result

    async def verify(self, password: str, password_hash: str | None) -> bool:
        target = password_hash or self._dummy_hash

        def check() -> bool:
            try:
                return bool(self._hasher.verify(password, target))
            except ValueError:
                return False

        ok = await anyio.to_thread.run_sync(check, limiter=self._threads)
        return ok and password_hash is not None


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    jti: str


class TokenCodec:
    def __init__(self, settings: Settings) -> None:
        self._key = settings.effective_secret_key()
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.ttl = timedelta(seconds=settings.access_token_ttl_seconds)

    def encode(self, user_id: int, jti: str, issued_at: datetime) -> str:
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "jti": jti,
            "iat": int(issued_at.timestamp()),
            "exp": int((issued_at + self.ttl).timestamp()),
            "iss": self._issuer,
            "aud": self._audience,
        }
        token: str = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return token

    def decode(self, token: str) -> TokenClaims | None:
        """The token's claims, or None when the signature, expiry, issuer or audience is wrong."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require_exp": True,
                    "require_iss": True,
                    "require_aud": True,
                    "require_sub": True,
                    "require_jti": True,
                },
            )
            user_id = int(claims["sub"])
            jti = claims["jti"]
        except (JWTError, KeyError, ValueError, TypeError):
            return None
        # Checked here so a malformed claim is a 401, not a database error.
        if not (1 <= user_id <= MAX_ID and isinstance(jti, str) and 0 < len(jti) <= 64):
            return None
        return TokenClaims(user_id=user_id, jti=jti)
