"""``[sources.NAME]``: named, typed listeners, any number of each type.

``type`` picks the kind (``syslog``, ``metadata``, ``http``); when it is omitted, a source named like a
type is of that type, so the original ``[sources.syslog]`` and ``[sources.metadata]`` tables
read as before. Every per-listener option lives on its source.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import field

from .base import (
    Address,
    Base,
    LineBytes,
    NonNegativeInt,
    PositiveInt,
    Tls,
    check_address,
    check_cidrs,
    check_secret_sources,
    parse_address,
)
from .nats import MetadataNats, Seconds, source_fields_check, with_connection

_ANY = ["0.0.0.0/0", "::/0"]


class _SourceBase(Base, tag_field="type"):
    def listeners(self) -> list[tuple[str, str, str]]:
        """(key, transport, address) of every socket this source binds."""
        return []


class SyslogSource(_SourceBase, tag="syslog"):
    udp: Address | None = None
    tcp: Address | None = None
    max_line_bytes: LineBytes = 65536
    allow: list[str] = field(default_factory=lambda: list(_ANY))
    timezone: str = "UTC"
    parse_body: Literal["auto", "none"] = "auto"
    tls: Tls | None = None
    max_connections: PositiveInt = 10000
    # A TCP connection that sends nothing for this long is closed (0: never).
    idle_timeout_s: NonNegativeInt = 300
    udp_receive_buffer_bytes: PositiveInt = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        check_address(self.udp)
        check_address(self.tcp)
        check_cidrs(self.allow)

    def listeners(self) -> list[tuple[str, str, str]]:
        found = [("udp", "udp", self.udp)] if self.udp else []
        return found + ([("tcp", "tcp", self.tcp)] if self.tcp else [])


class MetadataSource(_SourceBase, tag="metadata"):
    udp: Address | None = "0.0.0.0:5140"
    ttl_s: PositiveInt = 600
    max_entries: PositiveInt = 100_000
    secret: str | None = None
    secret_file: str | None = None  # the secret's bytes, trailing whitespace ignored
    secret_env: str | None = None  # name of an environment variable holding it
    replay_window_s: PositiveInt = 60
    allow: list[str] = field(default_factory=lambda: list(_ANY))
    # Token bucket per announcing address: sustained rate and burst.
    rate_per_s: PositiveInt = 100
    rate_burst: PositiveInt = 200
    max_labels: PositiveInt = 64
    max_label_value_bytes: PositiveInt = 1024
    # The table is written to data_dir/metadata.snapshot this often and at shutdown (0: never).
    snapshot_interval_s: NonNegativeInt = 30
    # Share announcements between daemons over a NATS subject (config/nats.py).
    nats: MetadataNats | None = None

    def __post_init__(self) -> None:
        check_address(self.udp)
        check_cidrs(self.allow)
        check_secret_sources("secret", [self.secret, self.secret_file, self.secret_env])

    def listeners(self) -> list[tuple[str, str, str]]:
        return [("udp", "udp", self.udp)] if self.udp else []


class NatsSource(with_connection(_SourceBase, "_NatsSourceBase"), tag="nats"):  # type: ignore[misc]
    """Events from a JetStream stream through a durable pull consumer (sources/nats.py)."""

    stream: str = "LOGS"
    # The durable consumer: every shipper naming the same one shares (splits) the stream.
    consumer: str = "logpipe"
    filter_subject: str | None = None  # only these subjects of the stream (wildcards allowed)
    # Messages asked for per pull, and held unacknowledged at most (waiting for sinks with a
    # memory buffer to confirm; disk-buffered events are acknowledged once written). Held
    # messages x events per message must cover a memory-buffered sink's batch.max_events, or
    # each of its batches waits for max_age_ms.
    fetch_messages: PositiveInt = 256
    max_in_flight: PositiveInt = 10_000
    # The server redelivers a message not acknowledged within this time (to any shipper);
    # logpipe keeps held messages alive with progress notices, so only a dead shipper's expire.
    ack_wait_s: Seconds = 30.0
    # Used when logpipe creates the consumer; an existing consumer keeps its own settings.
    max_ack_pending: PositiveInt = 20_000

    def __post_init__(self) -> None:
        source_fields_check(self)


class HttpSource(_SourceBase, tag="http"):
    """The receiving end of the typed hop between daemons (``sinks.*.type = "logpipe"``):
    POSTs of NDJSON events in their stored form (sources/http.py)."""

    listen: Address = "127.0.0.1:8687"
    path: str = "/logpipe/v1/events"
    # Senders must send "Authorization: Bearer TOKEN" (at most one of the three).
    token: str | None = None
    token_file: str | None = None  # trailing whitespace ignored
    token_env: str | None = None
    tls: Tls | None = None
    allow: list[str] = field(default_factory=lambda: list(_ANY))
    # Refused with 413 beyond this, on the wire and again after gzip is undone (a small
    # compressed body must not expand into gigabytes). The agents' batch.max_bytes must fit.
    max_body_bytes: PositiveInt = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        check_address(self.listen)
        check_cidrs(self.allow)
        check_secret_sources("token", [self.token, self.token_file, self.token_env])
        if not self.path.startswith("/") or any(c in self.path for c in "?# "):
            raise ValueError(f'path: expected "/SEGMENTS" without query or spaces, got {self.path!r}')

    def listeners(self) -> list[tuple[str, str, str]]:
        return [("listen", "tcp", self.listen)]


SourceConfig = SyslogSource | MetadataSource | NatsSource | HttpSource
SOURCE_TYPES: tuple[str, ...] = tuple(
    t.__struct_config__.tag for t in (SyslogSource, MetadataSource, NatsSource, HttpSource)  # type: ignore[misc]
)


def with_source_types(raw: Any) -> Any:
    """The raw ``[sources]`` table with ``type`` filled in from the name where it is omitted
    and the name is a type (``[sources.syslog]``). Anything else is left for the checks."""
    if not isinstance(raw, dict):
        return raw
    out = {}
    for name, table in raw.items():
        if isinstance(table, dict) and "type" not in table and name in SOURCE_TYPES:
            table = {"type": name, **table}
        out[name] = table
    return out


def missing_type_problems(raw: Any) -> list[tuple[tuple[str, ...], str]]:
    """A source that names no type and is not named like one (after ``with_source_types``)."""
    if not isinstance(raw, dict):
        return []
    return [
        (("sources", name, "type"), f"required key is missing (known types: {', '.join(SOURCE_TYPES)})")
        for name, table in raw.items()
        if isinstance(table, dict) and "type" not in table
    ]


_WILDCARDS = frozenset(("0.0.0.0", "::", ""))


def _same_socket(a: str, b: str) -> bool:
    host_a, port_a = parse_address(a)
    host_b, port_b = parse_address(b)
    if port_a != port_b or port_a == 0:  # port 0: the kernel picks a free one each time
        return False
    return host_a == host_b or host_a in _WILDCARDS or host_b in _WILDCARDS


def address_problems(sources: dict[str, Any], api_listen: str | None) -> list[tuple[tuple[str, ...], str]]:
    """Two listeners of this config that would bind the same port and transport: each
    problem names both keys (a metadata source on a syslog port is one of these)."""
    bound: list[tuple[tuple[str, ...], str, str]] = [(("api", "listen"), "tcp", api_listen)] if api_listen else []
    for name, source in sources.items():
        for key, transport, address in source.listeners():
            bound.append((("sources", name, key), transport, address))
    found = []
    for i, (path, transport, address) in enumerate(bound):
        for other_path, other_transport, other_address in bound[:i]:
            if transport == other_transport and _same_socket(address, other_address):
                found.append((path, f"{address} ({transport}) is already bound by {'.'.join(other_path)} = {other_address}"))
    return found
