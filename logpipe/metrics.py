"""Counters, gauges and histograms, rendered as Prometheus text exposition (0.0.4).

One ``Metrics`` registry is built per daemon and passed to whatever counts: there is no
module-level state. Hot paths hold a labelled child (``metrics.counter(...).labels(...)``)
and add per chunk, never per line. Gauges that mirror a live size (buffer fill, table
entries) are read at scrape time from a callback instead of being updated on every change.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

__all__ = ["Metrics", "Counter", "Gauge", "Histogram", "Child"]


class Child:
    """One labelled series. ``inc`` is the whole hot-path API."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = labelnames

    def _labels_text(self, values: tuple[str, ...], extra: str = "") -> str:
        parts = [f'{k}="{_escape(v)}"' for k, v in zip(self.labelnames, values, strict=True)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def samples(self) -> Iterable[tuple[str, float]]:  # pragma: no cover - abstract
        raise NotImplementedError


class Counter(_Family):
    """Labelled series, each either incremented (``labels(...).inc``) or read at scrape
    time from a callback (``set_function``) when another object owns the count."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...]) -> None:
        super().__init__(name, help_text, labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        self._callbacks: dict[tuple[str, ...], Callable[[], float]] = {}

    def labels(self, *values: str) -> Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = Child()
        return child

    def set_function(self, fn: Callable[[], float], *values: str) -> None:
        self._callbacks[values] = fn

    def remove(self, *values: str) -> None:
        self._callbacks.pop(values, None)
        self._children.pop(values, None)

    def value(self, *values: str) -> float:
        total = 0.0
        fn = self._callbacks.get(values)
        if fn is not None:
            total += float(fn())
        child = self._children.get(values)
        if child is not None:
            total += child.value
        return total

    def total(self) -> float:
        return sum(v for _, v in self.items())

    def items(self) -> Iterable[tuple[tuple[str, ...], float]]:
        keys = set(self._children) | set(self._callbacks)
        return [(k, self.value(*k)) for k in sorted(keys)]

    def samples(self) -> Iterable[tuple[str, float]]:
        for values, value in self.items():
            yield self.name + self._labels_text(values), value


class Gauge(Counter):
    """A settable series, or one read from a callback at scrape time."""

    kind = "gauge"


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0 when empty)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.bounds + (math.inf,), self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return math.inf


class Histogram(_Family):
    kind = "histogram"
    DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._children: dict[tuple[str, ...], _HistogramChild] = {}

    def labels(self, *values: str) -> _HistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _HistogramChild(self.buckets)
        return child

    def items(self) -> Iterable[tuple[tuple[str, ...], _HistogramChild]]:
        return self._children.items()

    def samples(self) -> Iterable[tuple[str, float]]:
        for values, child in sorted(self._children.items(), key=lambda kv: kv[0]):
            cumulative = 0
            for bound, n in zip(child.bounds + (math.inf,), child.counts, strict=True):
                cumulative += n
                le = "+Inf" if bound == math.inf else _number(bound)
                yield self.name + "_bucket" + self._labels_text(values, f'le="{le}"'), cumulative
            yield self.name + "_sum" + self._labels_text(values), child.sum
            yield self.name + "_count" + self._labels_text(values), child.count


class Metrics:
    """The registry. Asking twice for the same name returns the same family."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def _get(self, cls: type, name: str, help_text: str, labelnames: Iterable[str], **kw) -> _Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = cls(name, help_text, tuple(labelnames), **kw)
        elif type(family) is not cls:
            raise ValueError(f"metric {name} already registered as {family.kind}")
        return family

    def counter(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Counter:
        return self._get(Counter, name, help_text, labelnames)  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Gauge:
        return self._get(Gauge, name, help_text, labelnames)  # type: ignore[return-value]

    def histogram(
        self, name: str, help_text: str, labelnames: Iterable[str] = (), buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS
    ) -> Histogram:
        return self._get(Histogram, name, help_text, labelnames, buckets=buckets)  # type: ignore[return-value]

    def get(self, name: str) -> _Family | None:
        return self._families.get(name)

    def families(self) -> Iterable[_Family]:
        return self._families.values()

    def render(self) -> str:
        out: list[str] = []
        for name in sorted(self._families):
            family = self._families[name]
            out.append(f"# HELP {name} {family.help}")
            out.append(f"# TYPE {name} {family.kind}")
            for series, value in family.samples():
                out.append(f"{series} {_number(value)}")
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
