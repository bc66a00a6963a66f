"""What every syslog reader shares: PRI -> names, and the types events are passed in. Sans-IO.

Contract: ``PRI_NAMES[pri]`` is ``(facility, severity, level)`` for PRI 0-191 (the stored
spellings, spec "A stored event"); ``PRI_VALUES`` maps the 1-3 digit text between ``<`` and
``>`` to its value (leading zeros allowed, values over 191 kept so the caller can store the
line raw). Everything here is built once at import and never changes.
"""

from __future__ import annotations

__all__ = [
    "FACILITIES",
    "SEVERITIES",
    "LEVELS",
    "PRI_NAMES",
    "PRI_VALUES",
    "PRI_FIELDS",
    "Event",
    "Received",
]

# A stored event: field name -> str, a list of str (repeated structured-data params) or a
# body value (see body.py).
Event = dict[str, object]
# What a batch's receive time gives every line: (recv_time, its _time text, its UTC year,
# the latest acceptable BSD stamp = recv_time + one day). Built once per batch.
Received = tuple[float, str, int, float]

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
# PRI value -> (facility, severity, level); built once, indexed per line.
PRI_NAMES = tuple(
    (FACILITIES[pri >> 3], SEVERITIES[pri & 7], LEVELS[pri & 7]) for pri in range(192))

# "<PRI>" digits -> value, for every 1-3 digit string. A lookup beats re.match by ~0.15 us.
PRI_VALUES = {f"{value:0{width}d}": value for width in (1, 2, 3) for value in range(10**width)}
# "<PRI>" digits -> (facility, severity, level), for PRI <= 191 only (parse_lines' readers
# take a missing key as "not theirs").
PRI_FIELDS = {digits: PRI_NAMES[value] for digits, value in PRI_VALUES.items() if value <= 191}
