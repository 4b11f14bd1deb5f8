"""Text search helpers shared by the ``q`` filters."""


def contains_pattern(q: str) -> str:
    """A lower-case LIKE pattern (escape character ``\\``) matching ``q`` literally anywhere."""
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
