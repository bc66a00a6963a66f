"""Operator-supplied regexes, compiled safely: a static check against catastrophic
backtracking, and a cap on how much text a condition regex sees.

Python's ``re`` has no timeout, so a config typo such as ``(a+)+$`` could freeze the daemon
on one hostile line. The defence is in two parts:

1. At config load (``logpipe validate``) :func:`check` walks the parsed pattern and rejects
   the shapes that backtrack exponentially: a repeat whose body can itself repeat
   (``(a+)+``, ``(a*)*``, ``(\\w+\\s?)*``), and a repeat over alternatives that can start
   with the same character (``(a|aa)*``, ``(x|.)+``). Alternatives with distinct literal
   first characters (``(?:get|post)+``) pass, as do possessive quantifiers and atomic
   groups (``(a++)+``, ``(?>a+)+``), which never backtrack into their body.
2. What remains is at worst polynomial (``.*a.*b``). Conditions (``matches`` in ``drop``,
   ``when`` and ``route``) see at most :data:`MAX_MATCH_CHARS` characters of a value, which
   bounds that cost per event. ``redact`` scans the whole value (a secret past any cap would
   leak), so its patterns rely on the static check alone; the presets are linear.

The check is deliberately conservative: it may reject a pattern that is in fact safe. The
error says why, and the pattern can be rewritten with a possessive quantifier.
"""

from __future__ import annotations

import re

try:  # Python 3.11+
    import re._constants as _c
    import re._parser as _p
except ImportError:  # pragma: no cover
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

__all__ = ["MAX_MATCH_CHARS", "check", "compile_checked"]

# A condition regex sees the first 8 KiB of a value: enough for any field worth matching,
# small enough that a quadratic pattern costs well under a millisecond per event.
MAX_MATCH_CHARS = 8192

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_POSSESSIVE = getattr(_c, "POSSESSIVE_REPEAT", None)
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)


def compile_checked(pattern: str) -> re.Pattern[str]:
    """Compiles ``pattern`` or raises ValueError saying why it is refused."""
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"bad regex {pattern!r}: {e}") from None
    problem = check(pattern)
    if problem:
        raise ValueError(f"unsafe regex {pattern!r}: {problem}")
    return compiled


def check(pattern: str) -> str | None:
    """None when ``pattern`` is safe, else the reason it could backtrack catastrophically."""
    try:
        parsed = _p.parse(pattern)
    except re.error as e:
        return str(e)
    return _walk(list(parsed), inside_repeat=False)


def _walk(items: list, inside_repeat: bool) -> str | None:
    for op, arg in items:
        if op in _REPEATS:
            low, high, body = arg
            unbounded = high == _c.MAXREPEAT or high > 16
            if inside_repeat and high > 1:
                return "nested quantifier (a repeated group contains another repeat); use a possessive quantifier like a++ or an atomic group"
            if unbounded:
                branchy = _ambiguous_alternation(list(body))
                if branchy:
                    return branchy
            found = _walk(list(body), inside_repeat or unbounded)
            if found:
                return found
        elif op == _POSSESSIVE or op == _ATOMIC:
            continue  # never backtracks into its body
        elif op == _c.SUBPATTERN:
            found = _walk(list(arg[-1]), inside_repeat)
            if found:
                return found
        elif op == _c.BRANCH:
            for branch in arg[1]:
                found = _walk(list(branch), inside_repeat)
                if found:
                    return found
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            found = _walk(list(arg[1]), inside_repeat)
            if found:
                return found
    return None


def _ambiguous_alternation(body: list) -> str | None:
    """A repeated body holding alternatives that may start with the same character (the
    parser factors ``a|aa`` into ``a(?:|a)``, so an empty alternative counts too)."""
    reason = "repeated alternatives that can match the same text (like (a|aa)*); make them start with distinct characters"
    for op, arg in body:
        if op == _c.SUBPATTERN:
            found = _ambiguous_alternation(list(arg[-1]))
            if found:
                return found
        elif op == _c.BRANCH:
            firsts = []
            for branch in arg[1]:
                items = list(branch)
                if not items or items[0][0] != _c.LITERAL:
                    return reason
                firsts.append(items[0][1])
            if len(set(firsts)) != len(firsts):
                return reason
    return None
