"""The metadata table's reaper: one loop timer, armed for the table's earliest expiry.

Expired entries are never joined (``enrich.py``), so reaping only frees memory; it needs no
polling. The table tells the reaper of each new earliest deadline (``on_deadline``); the
timer reaps and re-arms for the next one. With no entry waiting to expire there is no timer
at all, so an idle daemon is not woken for it.
"""

from __future__ import annotations

import asyncio

from ..enrich import MetadataTable

__all__ = ["Reaper"]

_SLACK_S = 0.01


class Reaper:
    def __init__(self, table: MetadataTable) -> None:
        self.table = table
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None  # the deadline the timer is armed for (table timer)

    @property
    def due(self) -> float | None:
        """The deadline the timer is armed for (table timer), None when nothing waits."""
        return self._due

    def start(self) -> None:
        """Needs the running loop. Reaps what already expired (a restored snapshot)."""
        self.table.on_deadline = self.arm
        self._reap()

    def stop(self) -> None:
        self.table.on_deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._due = None

    def arm(self, deadline: float) -> None:
        if self._timer is not None and self._due is not None and self._due <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        # The table's clock may not be the loop's: wait the difference, not an absolute time.
        # The loop's timers are rounded to milliseconds against a cached clock and can fire a
        # hair before the deadline on the table's clock; the slack saves the second wakeup
        # that would then reap the same deadline.
        delay = max(0.0, deadline - self.table.timer()) + _SLACK_S
        self._due = deadline
        self._timer = asyncio.get_running_loop().call_later(delay, self._reap)

    def _reap(self) -> None:
        self._timer = None
        self._due = None
        deadline = self.table.expire()
        if deadline is not None:
            self.arm(deadline)
