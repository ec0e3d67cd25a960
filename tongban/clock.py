"""Time and randomness come through here so tests can freeze and fix them."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC (the database stores naive UTC on SQLite and PostgreSQL alike)."""
    return datetime.now(UTC).replace(tzinfo=None)


def epoch() -> int:
    return int(time.time())


def token(nbytes: int = 32) -> str:
    """A URL-safe random string with ``nbytes`` bytes of entropy."""
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    """SHA-256 hex digest: how tokens, codes and high-entropy secrets are stored."""
    return hashlib.sha256(value.encode()).hexdigest()


def to_epoch(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    return int(dt.replace(tzinfo=UTC).timestamp())
