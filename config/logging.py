"""Logging: one JSON object per line (or readable text on a terminal), always redacted.

Context such as the ledger id, provider, account and attempt is bound with ``log_context`` and
added to every record emitted inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from config.redact import redact

__all__ = [
    "NOISY_LOGGERS",
    "configure_logging",
    "log_context",
    "only_log_context",
    "redact_every_handler",
    "redacting_handler",
]

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039


def log_context(**fields: Any) -> contextlib.AbstractContextManager[None]:
    """Add ``fields`` to every log record emitted inside the block."""
    return _bound({**_context.get(), **fields})


def only_log_context(**fields: Any) -> contextlib.AbstractContextManager[None]:
    """Bind exactly ``fields`` inside the block, dropping the surrounding context (a thread
    logging on behalf of others, e.g. the group commit's leader request)."""
    return _bound(fields)


@contextlib.contextmanager
def _bound(context: dict[str, Any]) -> Iterator[None]:
    token = _context.set(context)
    try:
        yield
    finally:
        _context.reset(token)


class RedactingFilter(logging.Filter):
    """Render the message once, redact it, and attach the bound context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        record.context = _context.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "context", {}),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in getattr(record, "context", {}).items())
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        if context:
            line += f" [{context}]"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


#: Libraries that log request URLs (presigned signatures included) or headers below WARNING:
#: httpx/httpcore every request URL at INFO/DEBUG, botocore its signed headers at DEBUG.
NOISY_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer")


def redacting_handler(stream: IO[str], fmt: str = "auto") -> logging.Handler:
    """A handler writing redacted records to ``stream``: JSON lines, or text on a terminal."""
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(RedactingFilter())
    return handler


def redact_every_handler() -> None:
    """Give every handler of every logger a :class:`RedactingFilter` (once).

    For handlers installed by others, e.g. Celery's on the ``multiprocessing`` logger.
    """
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Install the redacting handler on the root logger (idempotent)."""
    handler = redacting_handler(sys.stderr, fmt)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_callrec", False):
            root.removeHandler(existing)
    handler._callrec = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
