"""Reservations and walk-in stays: booking without double booking, changes, check-in/out."""
