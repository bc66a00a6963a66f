"""Summing what the workers report into one view for the supervisor's API: Prometheus text
(``/metrics``) series by series, and ``/api/stats`` metric trees key by key."""

from __future__ import annotations

from typing import Any

__all__ = ["sum_prometheus", "sum_trees"]


def sum_trees(a: Any, b: Any) -> Any:
    """Numbers add, dicts merge key by key (histogram {count, sum} included)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = sum_trees(out[key], value) if key in out else value
        return out
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    return a


def sum_prometheus(texts: list[str]) -> str:
    """Sum identical series (name + labels) across Prometheus text expositions; HELP/TYPE
    lines are kept once, in first-seen order."""
    order: list[str] = []
    comments: dict[str, list[str]] = {}
    values: dict[str, dict[str, float]] = {}
    for text in texts:
        current = ""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                current = parts[2] if len(parts) > 2 else ""
                if current not in comments:
                    comments[current] = []
                    values[current] = {}
                    order.append(current)
                if line not in comments[current]:
                    comments[current].append(line)
                continue
            series, _, number = line.rpartition(" ")
            try:
                value = float(number)
            except ValueError:
                continue
            group = values.setdefault(current, {})
            if current not in comments:
                comments[current] = []
                order.append(current)
            group[series] = group.get(series, 0.0) + value
    out = []
    for name in order:
        out += comments[name]
        for series, value in values.get(name, {}).items():
            if value == float("inf"):
                text = "+Inf"
            elif float(value).is_integer():
                text = str(int(value))
            else:
                text = repr(value)
            out.append(f"{series} {text}")
    return "\n".join(out) + "\n"
