"""Field constraints and the base model shared by request schemas.

PostgreSQL rejects NUL in text and SQLite does not, so free text is kept to one line of
printable characters in the schema: the same input gets the same 422 on both databases.
"""

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool
from pydantic_core import PydanticCustomError

# No C0 control characters (NUL, newlines, escapes) and no DEL.
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"

# Ids are 32-bit database integers; a larger one can name nothing.
MAX_ID = 2**31 - 1


def _json_number(value: object) -> object:
    if isinstance(value, bool | str):
        raise PydanticCustomError("number_type", "Input should be a JSON number")
    return value


# Numbers and flags of request bodies, read as JSON Schema reads them: 7 and 7.0 are
# integers, true and "7" are not (pydantic's lax mode would take both), and a flag is true
# or false, never 1 or "yes". JSON_NUMBER goes last in an ``Annotated`` number, after its
# Field constraints, or they drop out of the documented schema:
# ``Annotated[int, Field(ge=1), JSON_NUMBER]``.
JSON_NUMBER = BeforeValidator(_json_number)
JsonBool = StrictBool


class StrictModel(BaseModel):
    """A request body: unknown fields are refused (422), never silently dropped."""

    model_config = ConfigDict(extra="forbid")
