"""Keeps secrets out of the server's log lines: credentials that travel in URLs (the
``?token=`` of WebSockets, which browsers cannot give headers; uvicorn logs paths with their
query), and statement parameters (password hashes) that aiosqlite's debug lines quote."""

import logging
import re

# Query parameters whose values are credentials.
_SECRET_PARAMETER = re.compile(r"([?&](?:token|access_token|key|passkey|password)=)[^&\s\"']*")
REDACTED = "[redacted]"
# uvicorn's loggers that print request paths with their query strings.
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")
# Loggers whose debug records quote SQL parameters. (SQLAlchemy's own are hidden by the
# engine's hide_parameters.)
PARAMETER_LOGGERS = ("aiosqlite",)


def redact(text: str) -> str:
    return _SECRET_PARAMETER.sub(rf"\1{REDACTED}", text)


class RedactUrlSecrets(logging.Filter):
    """Rewrites a record's message and string arguments with the secrets blanked out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class DropDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def install_log_redaction() -> None:
    """Adds the filters to their loggers, once per process."""
    for names, kind in ((SERVER_LOGGERS, RedactUrlSecrets), (PARAMETER_LOGGERS, DropDebug)):
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())
