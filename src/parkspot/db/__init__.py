"""Database engine for both dialects, column types and the unit-of-work session."""
