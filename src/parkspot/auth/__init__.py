"""Accounts: registration, login, tokens, logout and the current user."""
