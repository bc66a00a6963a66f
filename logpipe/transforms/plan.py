"""The plan: every ``[[transforms]]`` entry built once into a step (by its type, in
``_BUILDERS``), the steps run in order over each chunk with per-chunk counters, then the
route. See the package docstring for the counters and the route's contract."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..config import (
    CoerceTransform,
    DropTransform,
    ParseTransform,
    RedactTransform,
    RemoveTransform,
    RenameTransform,
    RouteTransform,
    SampleTransform,
    SetTransform,
    ThrottleTransform,
    TransformConfig,
)
from ..metrics import Metrics
from .base import Context, Step
from .coerce import coerce_step
from .conditions import condition
from .redact import redact_step
from .steps import drop_step, parse_step, remove_step, rename_step, sample_step, set_step, throttle_step

__all__ = ["Transforms", "label_of"]


def _router(c: RouteTransform) -> Callable[[dict], tuple[str, ...] | None]:
    routes = tuple((condition(r.when), tuple(r.sinks)) for r in c.routes)
    default = None if c.default is None else tuple(c.default)

    def target(e: dict) -> tuple[str, ...] | None:
        for matched, sinks in routes:
            if matched(e):
                return sinks
        return default

    return target


class _Both:
    """Adds to two counters at once (per chunk)."""

    __slots__ = ("a", "b")

    def __init__(self, a, b) -> None:
        self.a, self.b = a, b

    def inc(self, amount: float = 1) -> None:
        self.a.inc(amount)
        self.b.inc(amount)


_BUILDERS: dict[type, Callable[..., Step]] = {
    DropTransform: drop_step,
    RedactTransform: redact_step,
    RenameTransform: rename_step,
    RemoveTransform: remove_step,
    SetTransform: set_step,
    CoerceTransform: coerce_step,
    ParseTransform: parse_step,
    SampleTransform: sample_step,
    ThrottleTransform: throttle_step,
}


def label_of(index: int, config: TransformConfig) -> str:
    return config.name or f"{index}:{type(config).__struct_config__.tag}"


class Transforms:
    """The plan. ``apply`` for configs without a route; ``apply_routed`` with one."""

    def __init__(
        self, configs: Iterable[TransformConfig], metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        family = metrics.counter(
            "logpipe_transform_events_total", "Events through each transform, by result", ("transform", "result")
        )
        # The first counter logpipe had (docs-operations.md, /metrics users): kept, same label.
        legacy = metrics.counter("logpipe_transform_dropped_total", "Events dropped by a transform", ("transform",))
        self._steps: list[tuple[Step, str, object, object, object]] = []
        self._router: Callable[[dict], tuple[str, ...] | None] | None = None
        self._route_counts: tuple = ()
        for i, config in enumerate(configs):
            label = label_of(i, config)
            dropped = _Both(family.labels(label, "dropped"), legacy.labels(label))
            counts = (family.labels(label, "in"), family.labels(label, "out"), dropped)
            if isinstance(config, RouteTransform):
                self._router = _router(config)
                self._route_counts = counts
                self.route_label = label
                continue
            ctx = Context(clock, family.labels(label, "failed"))
            when = condition(config.when) if config.when is not None else None
            self._steps.append((_BUILDERS[type(config)](config, when, ctx), label, *counts))

    def __bool__(self) -> bool:
        return bool(self._steps) or self._router is not None

    @property
    def routed(self) -> bool:
        return self._router is not None

    def apply(self, events: list[dict]) -> list[dict]:
        """Every step but the route, in order; returns the events kept."""
        for step, _label, count_in, count_out, count_dropped in self._steps:
            before = len(events)
            events = step(events)
            count_in.inc(before)  # type: ignore[attr-defined]
            count_out.inc(len(events))  # type: ignore[attr-defined]
            if len(events) != before:
                count_dropped.inc(before - len(events))  # type: ignore[attr-defined]
            if not events:
                break
        return events

    def apply_routed(self, events: list[dict]) -> tuple[list[dict], list[tuple[str, ...] | None]]:
        """``apply``, then the route: the kept events and, parallel to them, each one's
        sinks (``None``: every sink). Events routed nowhere are dropped."""
        return self._route(self.apply(events))

    def _route(self, events: list[dict]) -> tuple[list[dict], list[tuple[str, ...] | None]]:
        router = self._router
        if router is None or not events:
            return events, [None] * len(events)
        targets = [router(e) for e in events]
        count_in, count_out, count_dropped = self._route_counts
        count_in.inc(len(events))
        if () in targets:
            pairs = [(e, t) for e, t in zip(events, targets, strict=True) if t != ()]
            count_dropped.inc(len(events) - len(pairs))
            events, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        count_out.inc(len(events))
        return events, targets

    def trace(self, event: dict) -> tuple[dict, str | None, tuple[str, ...] | None]:
        """One event through the plan, for ``logpipe test``: (the event as it ended,
        the label of the transform that dropped it or None, its sinks: None for every
        sink, () when dropped)."""
        events = [event]
        for step, label, count_in, count_out, count_dropped in self._steps:
            count_in.inc(1)  # type: ignore[attr-defined]
            events = step(events)
            if not events:
                count_dropped.inc(1)  # type: ignore[attr-defined]
                return event, label, ()
            count_out.inc(1)  # type: ignore[attr-defined]
        kept, targets = self._route(events)
        if not kept:
            return event, self.route_label, ()
        return event, None, targets[0]
