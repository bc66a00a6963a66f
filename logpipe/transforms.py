"""Transforms: built once from ``[[transforms]]`` into a plan of small callables, applied in
order to each chunk of events. A transform takes a list of events and returns the list to
keep; it may change events in place.
"""

from __future__ import annotations

from typing import Callable

from .config import DropTransform, TransformConfig
from .metrics import Metrics

__all__ = ["Transforms"]

Step = Callable[[list[dict]], list[dict]]


def _drop(config: DropTransform) -> Step:
    name = config.field
    if config.equals is not None:
        value = config.equals
        return lambda events: [e for e in events if e.get(name) != value]
    needle = config.contains or ""
    return lambda events: [e for e in events if needle not in str(e.get(name, ""))]


_BUILDERS = {DropTransform: _drop}


class Transforms:
    def __init__(self, configs: list[TransformConfig], metrics: Metrics) -> None:
        dropped = metrics.counter("logpipe_transform_dropped_total", "Events dropped by a transform", ("transform",))
        self._steps: list[tuple[Step, object]] = []
        for i, config in enumerate(configs):
            label = f"{i}:{type(config).__struct_config__.tag}"
            self._steps.append((_BUILDERS[type(config)](config), dropped.labels(label)))

    def __bool__(self) -> bool:
        return bool(self._steps)

    def apply(self, events: list[dict]) -> list[dict]:
        for step, dropped in self._steps:
            before = len(events)
            events = step(events)
            if len(events) != before:
                dropped.inc(before - len(events))  # type: ignore[attr-defined]
            if not events:
                break
        return events
