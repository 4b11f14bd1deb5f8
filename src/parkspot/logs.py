"""Log formats: one JSON object per line (production) or uvicorn's text lines, and the id of
the request being handled, which every record logged inside it carries.

``log_config(settings)`` is the ``logging.config.dictConfig`` dictionary ``parkspot serve``
hands to uvicorn (every worker process applies it): parkspot's, uvicorn's (access lines
included) and any other library's records all go through the same formatter.
"""

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from parkspot.config import Settings

# Set by RequestIdMiddleware for the duration of a request (tasks started inside it inherit
# it); None outside requests and on the availability fast path.
REQUEST_ID: ContextVar[str | None] = ContextVar("parkspot_request_id", default=None)

# uvicorn's access records carry these arguments: (client, method, path, HTTP version, status).
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus ``request_id`` inside a request,
    ``exception`` (the formatted traceback) when there is one, and the fields of uvicorn's
    access lines."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == len(_ACCESS_FIELDS)
        ):
            line.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_config(settings: Settings) -> dict[str, Any]:
    """Handlers and formatters for the whole process at ``settings.log_level``. In text
    format uvicorn's lines look as they always do, and parkspot's own per-request line is
    left out (uvicorn's access line says the same); in JSON it stays, with the request id
    and duration, next to uvicorn's access line (which carries the request id too)."""
    level = settings.log_level.upper()
    if settings.effective_log_format == "json":
        formatters: dict[str, Any] = {
            "default": {"()": "parkspot.logs.JsonFormatter"},
            "access": {"()": "parkspot.logs.JsonFormatter"},
        }
        request_level = level
    else:
        formatters = {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": None,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            },
            "named": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(name)s: %(message)s",
                "use_colors": None,
            },
        }
        request_level = "WARNING"
    named = "named" if "named" in formatters else "default"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
            },
            "named": {
                "class": "logging.StreamHandler",
                "formatter": named,
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            "parkspot.request": {"level": request_level},
        },
        "root": {"handlers": ["named"], "level": level},
    }
