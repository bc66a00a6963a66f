"""The config file: TOML decoded into one tree of frozen msgspec Structs.

``load(path)`` and ``loads(text)`` have no side effects: they bind nothing, create no
directories and open no connections. They raise :class:`ConfigError`, which carries one
message per problem, each naming the key path (``sinks.vl.batch.max_events: expected int
>= 1, got "ten" (line 31)``), so an operator can fix the whole file in one go.

The tree: ``base`` (shared value types), ``sources``, ``sinks``, ``transforms``, and here
the root tables and the whole-config checks; ``errors`` turns msgspec's first error into
every problem at its path.
"""

from __future__ import annotations

import re
import tomllib
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, field

from .base import (
    Address,
    Base,
    Batch,
    Buffer,
    ConfigError,
    NonNegativeInt,
    PositiveInt,
    Tls,
    check_address,
    check_cidrs,
    parse_address,
    read_secret,
)
from .errors import collect, render
from .nats import MetadataNats, NatsTls
from .sinks import (
    ClickHouseSink,
    ElasticsearchSink,
    FileSink,
    LogpipeSink,
    NatsSink,
    SinkConfig,
    SyslogSink,
    VictoriaLogsSink,
)
from .sources import (
    SOURCE_TYPES,
    HttpSource,
    MetadataSource,
    NatsSource,
    SourceConfig,
    SyslogSource,
    address_problems,
    missing_type_problems,
    with_source_types,
)
from .transforms import (
    REDACT_PRESETS,
    CoerceTransform,
    Condition,
    DropTransform,
    ParseTransform,
    RedactTransform,
    RemoveTransform,
    RenameTransform,
    Route,
    RouteTransform,
    SampleTransform,
    SetTransform,
    ThrottleTransform,
    TransformConfig,
    transform_problems,
)

__all__ = [
    "ConfigError",
    "Config",
    "Daemon",
    "Api",
    "SyslogSource",
    "MetadataSource",
    "HttpSource",
    "SourceConfig",
    "SOURCE_TYPES",
    "Tls",
    "Enrich",
    "Batch",
    "Buffer",
    "VictoriaLogsSink",
    "ClickHouseSink",
    "FileSink",
    "SyslogSink",
    "ElasticsearchSink",
    "LogpipeSink",
    "SinkConfig",
    "NatsSink",
    "NatsSource",
    "NatsTls",
    "MetadataNats",
    "Condition",
    "DropTransform",
    "RedactTransform",
    "RenameTransform",
    "RemoveTransform",
    "SetTransform",
    "CoerceTransform",
    "ParseTransform",
    "SampleTransform",
    "ThrottleTransform",
    "Route",
    "RouteTransform",
    "TransformConfig",
    "REDACT_PRESETS",
    "load",
    "loads",
    "parse_address",
    "read_secret",
]

class Daemon(Base):
    data_dir: str = "./data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    # How long SIGTERM may take to hand everything buffered to the sinks before the
    # remainder is persisted (disk buffer) or reported as lost (memory buffer).
    shutdown_timeout_s: PositiveInt = 30
    # Worker processes sharing the syslog ports (SO_REUSEPORT); 1 = a single process, as before.
    workers: PositiveInt = 1


class Api(Base):
    # Vector's key: false serves nothing (no /health, /metrics, tap or reload).
    enabled: bool = True
    listen: Address | None = "127.0.0.1:8686"
    # Client CIDRs the API answers; others get 403.
    allow: list[str] = field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    # /health answers 503 once a sink has been failing (every send in a row) this long.
    unhealthy_after_s: Annotated[float, Meta(gt=0)] = 60.0
    # /api/tap: events queued per tapping client before newer ones are dropped (counted).
    tap_queue_events: PositiveInt = 1000

    def __post_init__(self) -> None:
        check_address(self.listen)
        check_cidrs(self.allow)

    @property
    def address(self) -> str | None:
        """Where the API listens, or None when it is off."""
        return self.listen if self.enabled else None




_MATCH_LINE_FIELDS = ("source_ip", "hostname", "app_name", "proc_id", "msg_id")
_MATCH_KEYS = ("ip", "hostname", "container_id")


class Enrich(Base):
    match_on: list[str] = field(
        default_factory=lambda: [
            "source_ip=ip",
            "hostname=hostname",
            "hostname=container_id",
            "app_name=container_id",
        ]
    )
    hold_ms: NonNegativeInt = 2000
    hold_max_events: PositiveInt = 100_000
    hold_max_bytes: PositiveInt = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        for pair in self.match_on:
            line_field, sep, key = pair.partition("=")
            if not sep or not line_field or key not in _MATCH_KEYS:
                raise ValueError(
                    f'match_on: expected "LINE_FIELD=KEY" with KEY one of {", ".join(_MATCH_KEYS)}, got {pair!r}'
                )

    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(p.split("=", 1)) for p in self.match_on]  # type: ignore[misc]




_NAME = re.compile(r"[A-Za-z0-9_-]+")
S = TypeVar("S")


class Config(Base):
    daemon: Daemon = field(default_factory=Daemon)
    api: Api = field(default_factory=Api)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    enrich: Enrich = field(default_factory=Enrich)
    transforms: list[TransformConfig] = field(default_factory=list)
    sinks: dict[str, SinkConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sinks:
            raise ValueError("sinks: at least one sink is required")
        for kind, names in (("sink", self.sinks), ("source", self.sources)):
            for name in names:
                if not _NAME.fullmatch(name):
                    raise ValueError(f"{kind}s.{name}: {kind} names are letters, digits, _ and -")
        for path, why in transform_problems(self.transforms, self.sinks) + address_problems(self.sources, self.api.address):
            raise ValueError(f"{'.'.join(path)}: {why}")

    def sources_of(self, kind: type[S]) -> dict[str, S]:
        """The sources of one type, by name, in file order."""
        return {name: s for name, s in self.sources.items() if isinstance(s, kind)}


def load(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    return loads(text)


def loads(text: str) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"TOML syntax: {e}"]) from None
    if "sources" in raw:
        raw["sources"] = with_source_types(raw["sources"])
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError:
        problems = missing_type_problems(raw.get("sources"))
        problems += [p for p in collect(raw, Config, ()) if p[0][:3] not in {q[0] for q in problems}]
        problems += [p for p in _cross_problems(raw) if p not in problems]
        if not problems:  # pragma: no cover - the collector should always find it
            problems = [((), "invalid configuration")]
        raise ConfigError([render(path, msg, text) for path, msg in problems]) from None


def _cross_problems(raw: dict) -> list[tuple[tuple[str, ...], str]]:
    """The whole-config checks, run on the parts that decode on their own (so a bad route
    or a doubly bound port is reported together with every other problem)."""
    found: list[tuple[tuple[str, ...], str]] = []
    sinks = raw.get("sinks")
    items = raw.get("transforms")
    if isinstance(sinks, dict) and isinstance(items, list):
        found += transform_problems([_convert_or_none(item, TransformConfig) for item in items], sinks)
    sources = raw.get("sources")
    if isinstance(sources, dict):
        decoded = {name: _convert_or_none(table, SourceConfig) for name, table in sources.items()}
        api = _convert_or_none(raw.get("api", {}), Api)
        found += address_problems({n: s for n, s in decoded.items() if s is not None}, api.address if api else None)
    return found


def _convert_or_none(value: Any, typ: Any) -> Any:
    """A part that fails on its own is reported already: the cross-checks skip it."""
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError:
        return None
