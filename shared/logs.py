"""Structured logs: one JSON object per line, carrying the request id and job id in context."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

from shared.settings import LogSettings

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "ragq_log_context", default=None
)


class _ContextFilter(logging.Filter):
    """Copies the bound request_id / job_id onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Within this block, every log line carries `fields` (e.g. request_id, job_id)."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> None:
    """Bind `fields` for the rest of the current context (a request or a task)."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v}})


def clear() -> None:
    """Forget every bound field."""
    _context.set({})


def configure_logging(settings: LogSettings, service: str) -> None:
    """Route the root logger to stderr, as JSON lines unless settings say plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.json_format:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
