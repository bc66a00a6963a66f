"""Pieces every part of the config tree shares: value types, the error type, address and
CIDR checks, secrets, and the Struct base (frozen, unknown keys refused)."""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Literal

from msgspec import Meta, Struct

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
# VictoriaLogs skips lines over 256 KiB, so a message can never usefully be longer.
LineBytes = Annotated[int, Meta(ge=64, le=256 * 1024)]
_ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):[0-9]{1,5}$"
Address = Annotated[str, Meta(pattern=_ADDRESS_PATTERN)]
# msgspec names a failed pattern by its regex; operators get these names instead.
PATTERN_NAMES = {_ADDRESS_PATTERN: '"HOST:PORT"'}


class ConfigError(Exception):
    """The config is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_address(value: str) -> tuple[str, int]:
    """``"0.0.0.0:514"`` or ``"[::]:514"`` -> (host, port). Raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f'expected "HOST:PORT", got {value!r}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


def check_address(value: str | None) -> None:
    if value is not None:
        parse_address(value)


def check_cidrs(values: list[str]) -> None:
    for cidr in values:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"not a CIDR: {cidr!r}") from None


class Base(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass



def check_secret_sources(name: str, values: list) -> None:
    if sum(v is not None for v in values) > 1:
        raise ValueError(f"{name}: give at most one of {name}, {name}_file, {name}_env")


def read_secret(value: str | None, file: str | None, env: str | None, what: str) -> bytes | None:
    """The secret from the TOML, a file (trailing whitespace ignored) or an environment
    variable. Errors name the source, never the secret. Raises ConfigError."""


    if file is not None:
        try:
            with open(file, "rb") as f:
                return f.read().rstrip()
        except OSError as e:
            raise ConfigError([f"{what}_file: cannot read {file}: {e.strerror}"]) from None
    if env is not None:
        found = os.environ.get(env)
        if found is None:
            raise ConfigError([f"{what}_env: environment variable {env} is not set"])
        return found.encode()
    return value.encode() if value is not None else None


class Tls(Base):
    cert: str
    key: str
    client_ca: str | None = None  # then clients must present a certificate it signed
    handshake_timeout_s: PositiveInt = 10



class Batch(Base):
    max_events: PositiveInt = 10_000
    max_bytes: PositiveInt = 4_000_000
    max_age_ms: PositiveInt = 1000


class Buffer(Base):
    type: Literal["memory", "disk"] = "memory"
    max_bytes: PositiveInt = 256 * 1024 * 1024
    when_full: Literal["block", "drop_newest"] = "block"
    # Disk buffer only (see logpipe/buffer/disk.py). Every push is written to the kernel
    # at once, so SIGKILL of logpipe loses nothing in any mode; fsync bounds what an OS
    # crash or power loss can take: "always" = only pushes whose fsync was still running
    # (group commit), "interval" = about fsync_interval_ms of pushes, "never" = whatever
    # the kernel had not yet written back (typically up to 30 s).
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_ms: PositiveInt = 1000


