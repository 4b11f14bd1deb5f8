"""Field constraints and the base model shared by request schemas.

PostgreSQL rejects NUL in text and SQLite does not, so free text is kept to one line of
printable characters in the schema: the same input gets the same 422 on both databases.
"""

from pydantic import BaseModel, ConfigDict

# No C0 control characters (NUL, newlines, escapes) and no DEL.
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"

# Ids are 32-bit database integers; a larger one can name nothing.
MAX_ID = 2**31 - 1


class StrictModel(BaseModel):
    """A request body: unknown fields are refused (422), never silently dropped."""

    model_config = ConfigDict(extra="forbid")
