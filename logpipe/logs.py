"""The daemon's own logs: structlog, as console lines for people or JSON for machines.

Configured once per process by the CLI. Event names are fixed snake_case
(``listening``, ``send_failed``); errors carry a ``stage``. Nothing logs per line.

Repeats are rate-limited: a warning or error with the same event name and component as
one logged less than ``repeat_window_s`` ago is suppressed and counted; the next one logged
after the window carries ``suppressed_similar=N`` (how many were left out in between), so
a flapping destination cannot flood the log and the count is never lost. Events that answer
an operator's action (``reload_refused``) are never suppressed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

__all__ = ["configure", "RepeatLimiter"]


class RepeatLimiter:
    """structlog processor suppressing repeated warnings/errors (see the module docstring)."""

    LEVELS = frozenset({"warning", "warn", "error", "exception", "critical"})
    MAX_KEYS = 4096  # distinct (event, component) pairs remembered; bounded memory
    NEVER_SUPPRESSED = frozenset({"reload_refused"})  # each answers an operator's request

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._last: dict[tuple, list] = {}  # key -> [time logged, suppressed since]

    def __call__(self, _logger, method_name: str, event_dict: dict) -> dict:
        if method_name not in self.LEVELS or self.window_s <= 0 or event_dict.get("event") in self.NEVER_SUPPRESSED:
            return event_dict
        key = (event_dict.get("event"), event_dict.get("component"))
        now = self.clock()
        state = self._last.get(key)
        if state is not None and now - state[0] < self.window_s:
            state[1] += 1
            raise structlog.DropEvent
        if state is not None and state[1]:
            event_dict["suppressed_similar"] = state[1]
        if state is None and len(self._last) >= self.MAX_KEYS:
            self._last.pop(next(iter(self._last)))
        self._last[key] = [now, 0]
        return event_dict


def configure(level: str = "info", fmt: str = "console", stream=None, repeat_window_s: float = 10.0) -> None:
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
            RepeatLimiter(repeat_window_s),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write per line (message and newline together): with daemon.workers > 1 the
        # supervisor and its workers share stderr, and PrintLogger's two writes per line let
        # lines of different processes interleave mid-line, breaking JSON logs.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
