"""User administration: search, roles and deactivation (admins only)."""
