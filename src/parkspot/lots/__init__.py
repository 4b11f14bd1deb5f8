"""Lots and spots: CRUD, visibility and geographic search."""
