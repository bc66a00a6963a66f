"""The ``redact`` step: secrets in string fields replaced, by preset (email, card number
with a Luhn check, bearer token, URL password) or by operator pattern.

Every preset is linear in the value's length (bounded repeats, lookbehinds), and each is
tried only when a cheap gate says it could match.
"""

from __future__ import annotations

import re

from ..config import RedactTransform
from ..safe_regex import compile_checked, prefilter
from .base import Context, Predicate, Step, change_each

__all__ = ["redact_step"]


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _presets(replacement: str) -> dict[str, tuple[str | None, re.Pattern[str], object]]:
    """name -> (substring that must be present, regex, replacement). Bounded repeats and
    lookbehinds keep every preset linear in the value's length."""

    def card(m: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        return replacement if _luhn_ok(digits) else m.group(0)

    keep_prefix = lambda m: m.group(1) + replacement  # noqa: E731
    return {
        "email": (
            "@",
            re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"),
            replacement,
        ),
        "card_number": (None, re.compile(r"(?<![0-9-])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])"), card),
        "bearer_token": (None, re.compile(r"(?i)(\bbearer\s{1,8})[A-Za-z0-9._~+/-]{8,4096}=*"), keep_prefix),
        "url_password": ("://", re.compile(r"(://[^:/@\s]{1,256}:)[^@/\s]{1,256}(?=@)"), keep_prefix),
    }


# Per preset, a looser RE2 pattern that matches wherever the preset could (ASCII classes,
# no lookarounds): a linear RE2 search (~1 us) instead of a Python-re scan (~4 us) on the
# common value that holds no secret. One gate each: joined into one alternation RE2 got
# slower than the four apart (measured 9.8 vs ~4 us).
_GATES = {
    "email": r"@[A-Za-z0-9-]{1,63}\.",
    "card_number": r"[0-9](?:[ -]?[0-9]){12,18}",
    "bearer_token": r"(?i)bearer",
}


def redact_step(c: RedactTransform, when: Predicate | None, ctx: Context) -> Step:
    presets = _presets(c.replacement)
    subs: list[tuple[object, re.Pattern[str], object]] = []
    for name in c.presets:
        needle, regex, repl = presets[name]
        gate = prefilter([_GATES[name]]) if name in _GATES else None
        subs.append((gate or needle, regex, repl))
    operator = []
    for pattern in c.patterns:
        regex = compile_checked(pattern)
        # A group named `secret` is all that is replaced; the context stays readable.
        operator.append((regex.redact, regex.groupindex.get("secret", 0)))
    replacement = c.replacement
    fields = tuple(c.fields)

    def change(e: dict) -> None:
        for name in fields:
            v = e.get(name)
            if type(v) is not str:
                continue
            new = v
            for needle, regex, repl in subs:
                # needle: None (always), a substring that must be present, or an RE2 gate
                if needle is None or (needle(new) if callable(needle) else needle in new):
                    new = regex.sub(repl, new)  # type: ignore[arg-type]
            for redact, group in operator:
                new = redact(new, replacement, group)
            if new is not v:
                e[name] = new

    return change_each(change, when)
