"""Operators: the companies that own lots, their managers and member passkeys."""
