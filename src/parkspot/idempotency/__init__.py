"""Idempotency-Key support for unsafe requests (booking, cancel, check-in, check-out)."""
