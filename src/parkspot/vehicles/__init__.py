"""Drivers' own vehicles."""
