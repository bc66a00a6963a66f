"""The daemon's own logs: structlog, as console lines for people or JSON for machines.

Configured once per process by the CLI. Event names are fixed snake_case
(``listening``, ``send_failed``); errors carry a ``stage``. Nothing logs per line.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure"]


def configure(level: str = "info", fmt: str = "console", stream=None) -> None:
    stream = stream or sys.stderr
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
