"""Operator-supplied regexes, compiled so that no pattern can freeze the daemon.

Python's ``re`` backtracks and has no timeout: a config typo such as ``(a+)+$`` takes
exponential time on one hostile line, and even ``a*a*b`` is cubic under ``search`` (a 4 KiB
line of ``a`` takes 12 s). So:

1. Operator regexes (``matches`` in ``drop`` / ``when`` / ``route``, ``redact.patterns``,
   ``parse.pattern``) run on RE2 (the ``google-re2`` package) when it is installed: RE2
   never backtracks and is linear in the input, whatever the pattern. A pattern using what
   RE2 lacks (lookaround, backreferences, possessive quantifiers) is rejected by
   ``logpipe validate`` with the reason. Syntax is checked with Python's parser first, so
   messages read the same either way.
2. Without RE2 (fallback), :func:`check` statically rejects the shapes that backtrack
   exponentially: a repeat whose body can itself repeat (``(a+)+``, ``(\\w+\\s?)*``), and a
   repeat over alternatives that may start with the same character (``(a|aa)*``). It is
   conservative and catches the exponential class only; polynomial patterns remain slow on
   long hostile values, bounded somewhat by :data:`MAX_MATCH_CHARS`.
3. Fallback only: conditions and ``parse`` see at most :data:`MAX_MATCH_CHARS` characters
   of a value; ``redact`` scans the whole value (a secret past a cap would leak). With RE2
   there is no cap (a cut value would change what ``$`` means). The built-in redact
   presets use Python ``re`` with bounded repeats and are linear.
"""

from __future__ import annotations

import importlib.util
import re

try:  # Python 3.11+
    import re._constants as _c
    import re._parser as _p
except ImportError:  # pragma: no cover
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

__all__ = ["MAX_MATCH_CHARS", "ENGINE", "Regex", "check", "compile_checked", "prefilter"]

# RE2 is imported by the first operator regex, not here: a config without one (the default)
# does not pay its ~2.6 MB. google-re2 is a dependency; the fallback is for odd platforms.
ENGINE = "re2" if importlib.util.find_spec("re2") is not None else "re"


def _re2():
    import re2

    return re2

# A condition regex sees the first 8 KiB of a value: enough for any field worth matching,
# small enough that a quadratic pattern costs well under a millisecond per event.
MAX_MATCH_CHARS = 8192  # fallback engine only: RE2 is linear and sees the whole value

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_POSSESSIVE = getattr(_c, "POSSESSIVE_REPEAT", None)
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)


class Regex:
    """A compiled operator regex with the three operations transforms need, on ``str``.

    On RE2 the text is matched as UTF-8 bytes: the binding's ``str`` mode maps every
    offset back to characters and costs ~4x more (11.6 vs 2.7 us for the access-log
    pattern). RE2 matches on character boundaries, so decoding groups is safe."""

    __slots__ = ("pattern", "groupindex", "_compiled", "_bytes", "_names")

    def __init__(self, pattern: str, compiled, is_bytes: bool) -> None:
        self.pattern = pattern
        self._compiled = compiled
        self._bytes = is_bytes
        self.groupindex: dict[str, int] = dict(re.compile(pattern).groupindex)
        names = {i: n for n, i in self.groupindex.items()}
        self._names = tuple(names.get(i) for i in range(1, re.compile(pattern).groups + 1))

    def test(self, text: str) -> bool:
        if self._bytes:
            return self._compiled.search(text.encode("utf-8", "replace")) is not None
        return self._compiled.search(text[:MAX_MATCH_CHARS]) is not None

    def named_groups(self, text: str) -> dict[str, str] | None:
        """The named groups that matched at the first match, or None without a match."""
        if self._bytes:
            m = self._compiled.search(text.encode("utf-8", "replace"))
            if m is None:
                return None
            return {
                name: value.decode("utf-8", "replace")
                for name, value in zip(self._names, m.groups(), strict=False)
                if name is not None and value is not None
            }
        m = self._compiled.search(text[:MAX_MATCH_CHARS])
        if m is None:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}

    def redact(self, text: str, replacement: str, group: int = 0) -> str:
        """``text`` with every match (or just its ``group``) replaced; ``text`` itself
        when nothing matched."""
        if self._bytes:
            data = text.encode("utf-8", "surrogatepass")
            new = replacement.encode("utf-8")
            if group:
                def repl(m, new=new, group=group) -> bytes:
                    start, end, base, whole = m.start(group), m.end(group), m.start(), m.group(0)
                    return whole[: start - base] + new + whole[end - base :] if start >= 0 else whole
            else:
                def repl(m, new=new) -> bytes:
                    return new
            out = self._compiled.sub(repl, data)
            return text if out == data else out.decode("utf-8", "surrogatepass")
        if group:
            def repl_s(m, new=replacement, group=group) -> str:
                start, end, base, whole = m.start(group), m.end(group), m.start(), m.group(0)
                return whole[: start - base] + new + whole[end - base :] if start >= 0 else whole
        else:
            def repl_s(m, new=replacement) -> str:
                return new
        out = self._compiled.sub(repl_s, text)
        return text if out == text else out


def prefilter(alternatives: list[str]):
    """A fast yes/no test for "any of these may match" (one RE2 search over UTF-8), or None
    without RE2. Used to skip the Python-``re`` redact presets on text that cannot contain
    what they look for; each alternative must match wherever its preset would."""
    if ENGINE != "re2" or not alternatives:
        return None
    re2 = _re2()
    options = re2.Options()
    options.log_errors = False
    search = re2.compile("|".join(f"(?:{a})" for a in alternatives).encode(), options=options).search
    return lambda text: search(text.encode("utf-8", "replace")) is not None


def compile_checked(pattern: str) -> Regex:
    """Compiles ``pattern`` (RE2 when available, else ``re``) or raises ValueError saying
    why it is refused."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"bad regex {pattern!r}: {e}") from None
    if ENGINE == "re2":
        re2 = _re2()
        options = re2.Options()
        options.log_errors = False  # the reason goes into our error, not onto stderr
        try:
            return Regex(pattern, re2.compile(pattern.encode("utf-8"), options=options), True)
        except re2.error as e:
            reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
            raise ValueError(
                f"unsupported regex {pattern!r}: {reason} (the linear-time engine RE2 has no lookaround, "
                "backreferences or possessive quantifiers)"
            ) from None
    problem = check(pattern)
    if problem:
        raise ValueError(f"unsafe regex {pattern!r}: {problem}")
    return Regex(pattern, re.compile(pattern), False)


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
                return ("nested quantifier (a repeated group contains another repeat); use a possessive quantifier "
                        "like a++ or an atomic group")
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
    reason = ("repeated alternatives that can match the same text (like (a|aa)*); make them start with distinct "
              "characters")
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
