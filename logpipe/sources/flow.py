"""Flow control for the sources that can be held back: every registered TCP transport is
paused while any blocking sink lane is full, and resumed when none is.

UDP cannot be held back: a UDP chunk that meets a full buffer is dropped and counted by the
lane (pipeline.py)."""

from __future__ import annotations

import structlog

__all__ = ["FlowControl"]


class FlowControl:
    """Pauses and resumes every registered TCP transport while any blocking lane is full."""

    def __init__(self) -> None:
        self._transports: set = set()
        self._full: set[str] = set()
        self._logged_pause = False
        self.log = structlog.get_logger().bind(component="flow")

    @property
    def paused(self) -> bool:
        return bool(self._full)

    def register(self, transport) -> None:
        self._transports.add(transport)
        if self._full:
            transport.pause_reading()

    def unregister(self, transport) -> None:
        self._transports.discard(transport)

    def release_all(self) -> None:
        """Resume every transport regardless of pressure (graceful stop: read what was sent)."""
        self._full.clear()
        for transport in list(self._transports):
            if not transport.is_closing():
                transport.resume_reading()

    def set_full(self, lane: str, full: bool, routine: bool = False) -> None:
        """``routine``: the pause is a memory buffer's lead (reading ahead of a healthy sink),
        which happens all the time at full speed and is not worth a log line."""
        was_paused = bool(self._full)
        if full:
            self._full.add(lane)
        else:
            self._full.discard(lane)
        if bool(self._full) != was_paused:
            if self._full and not routine:
                self._logged_pause = True
                self.log.info("sources_paused", sinks=sorted(self._full))
            elif not self._full and self._logged_pause:
                self._logged_pause = False
                self.log.info("sources_resumed", sinks=[])
            for transport in list(self._transports):
                if transport.is_closing():
                    continue
                if self._full:
                    transport.pause_reading()
                else:
                    transport.resume_reading()
