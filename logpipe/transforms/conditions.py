"""Conditions: a config ``Condition`` (a ``when``, a route, a drop test) built once into a
predicate over one event.

``equals`` compares as text, so ``equals = 200`` matches both 200 and "200". Operator
regexes run on RE2 (linear time; logpipe/safe_regex.py); on the fallback engine they are
statically checked and conditions see at most ``MAX_MATCH_CHARS`` of a value.
"""

from __future__ import annotations

from ..config import Condition
from ..safe_regex import Regex, compile_checked
from .base import MISSING, Predicate, as_text

__all__ = ["condition", "Predicate"]


def condition(c: Condition) -> Predicate:
    """``when`` / route condition -> predicate."""
    name = c.field
    if c.exists is not None:
        want = c.exists
        return lambda e: (name in e) is want
    if c.equals is not None:
        return _equals(name, c.equals)
    if c.contains is not None:
        return _contains(name, c.contains)
    return _matches(name, compile_checked(c.matches or ""))


def _equals(name: str, value: object) -> Predicate:
    text = as_text(value)

    def test(e: dict) -> bool:
        v = e.get(name, MISSING)
        return v is not MISSING and (v == value and type(v) is type(value) or as_text(v) == text)

    return test


def _contains(name: str, needle: str) -> Predicate:
    def test(e: dict) -> bool:
        v = e.get(name)
        return v is not None and needle in (v if type(v) is str else as_text(v))

    return test


def _matches(name: str, regex: Regex) -> Predicate:
    test_text = regex.test

    def test(e: dict) -> bool:
        v = e.get(name)
        return v is not None and test_text(v if type(v) is str else as_text(v))

    return test
