"""What every transform step shares: the ``Step`` and ``Predicate`` types, the ``Context`` a
builder gets besides its config, and the two shapes most steps take (drop the events a test
matches, or change each event in place)."""

from __future__ import annotations

from collections.abc import Callable

Step = Callable[[list[dict]], list[dict]]
Predicate = Callable[[dict], bool]
# "No value": a field that is absent, or a value that could not be converted.
MISSING = object()


def as_text(value: object) -> str:
    """A field value as conditions, templates and state keys see it (``True`` -> "true")."""
    if type(value) is str:
        return value  # type: ignore[return-value]
    if type(value) is bool:
        return "true" if value else "false"
    return str(value)


class Context:
    """What a builder may need besides its config: the clock and its own counters."""

    def __init__(self, clock: Callable[[], float], failed) -> None:
        self.clock = clock
        self.failed = failed


def drop_where(drops: Predicate, when: Predicate | None) -> Step:
    """A step dropping the events ``drops`` is true for, among those ``when`` selects (the
    others stay, in order)."""
    if when is None:
        return lambda events: [e for e in events if not drops(e)]
    return lambda events: [e for e in events if not (when(e) and drops(e))]


def change_each(change: Callable[[dict], None], when: Predicate | None) -> Step:
    """A step applying ``change`` in place to every event ``when`` selects."""

    def step(events: list[dict]) -> list[dict]:
        for e in events:
            if when is None or when(e):
                change(e)
        return events

    return step
