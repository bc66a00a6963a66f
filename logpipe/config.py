"""The config file: TOML decoded into one tree of frozen msgspec Structs.

``load(path)`` and ``loads(text)`` have no side effects: they bind nothing, create no
directories and open no connections. They raise :class:`ConfigError`, which carries one
message per problem, each naming the key path (``sinks.vl.batch.max_events: expected int
>= 1, got "ten" (line 31)``), so an operator can fix the whole file in one go.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Meta, Struct, field

from .safe_regex import compile_checked

__all__ = [
    "ConfigError",
    "Config",
    "Daemon",
    "Api",
    "Sources",
    "SyslogSource",
    "MetadataSource",
    "Tls",
    "Enrich",
    "Batch",
    "Buffer",
    "VictoriaLogsSink",
    "ClickHouseSink",
    "FileSink",
    "SyslogSink",
    "ElasticsearchSink",
    "SinkConfig",
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
    "load",
    "loads",
    "parse_address",
    "read_secret",
]

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
# VictoriaLogs skips lines over 256 KiB, so a message can never usefully be longer.
LineBytes = Annotated[int, Meta(ge=64, le=256 * 1024)]
_ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):[0-9]{1,5}$"
Address = Annotated[str, Meta(pattern=_ADDRESS_PATTERN)]
# msgspec names a failed pattern by its regex; operators get these names instead.
_PATTERN_NAMES = {_ADDRESS_PATTERN: '"HOST:PORT"'}


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


def _check_address(value: str | None) -> None:
    if value is not None:
        parse_address(value)


def _check_cidrs(values: list[str]) -> None:
    for cidr in values:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"not a CIDR: {cidr!r}") from None


class _Base(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Daemon(_Base):
    data_dir: str = "./data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    # How long SIGTERM may take to hand everything buffered to the sinks before the
    # remainder is persisted (disk buffer) or reported as lost (memory buffer).
    shutdown_timeout_s: PositiveInt = 30
    # Worker processes sharing the syslog ports (SO_REUSEPORT); 1 = a single process, as before.
    workers: PositiveInt = 1


class Api(_Base):
    listen: Address | None = "127.0.0.1:8686"
    # Client CIDRs the API answers; others get 403.
    allow: list[str] = field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    # /health answers 503 once a sink has been failing (every send in a row) this long.
    unhealthy_after_s: Annotated[float, Meta(gt=0)] = 60.0
    # /api/tap: events queued per tapping client before newer ones are dropped (counted).
    tap_queue_events: PositiveInt = 1000

    def __post_init__(self) -> None:
        _check_address(self.listen)
        _check_cidrs(self.allow)


def _check_secret_sources(name: str, values: list) -> None:
    if sum(v is not None for v in values) > 1:
        raise ValueError(f"{name}: give at most one of {name}, {name}_file, {name}_env")


def read_secret(value: str | None, file: str | None, env: str | None, what: str) -> bytes | None:
    """The secret from the TOML, a file (trailing whitespace ignored) or an environment
    variable. Errors name the source, never the secret. Raises ConfigError."""
    import os

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


class Tls(_Base):
    cert: str
    key: str
    client_ca: str | None = None  # then clients must present a certificate it signed
    handshake_timeout_s: PositiveInt = 10


class SyslogSource(_Base):
    udp: Address | None = None
    tcp: Address | None = None
    max_line_bytes: LineBytes = 65536
    allow: list[str] = field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    timezone: str = "UTC"
    parse_body: Literal["auto", "none"] = "auto"
    tls: Tls | None = None
    max_connections: PositiveInt = 10000
    # A TCP connection that sends nothing for this long is closed (0: never).
    idle_timeout_s: NonNegativeInt = 300
    udp_receive_buffer_bytes: PositiveInt = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        _check_address(self.udp)
        _check_address(self.tcp)
        _check_cidrs(self.allow)


class MetadataSource(_Base):
    udp: Address | None = "0.0.0.0:5140"
    ttl_s: PositiveInt = 600
    max_entries: PositiveInt = 100_000
    secret: str | None = None
    secret_file: str | None = None  # the secret's bytes, trailing whitespace ignored
    secret_env: str | None = None  # name of an environment variable holding it
    replay_window_s: PositiveInt = 60
    allow: list[str] = field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    # Token bucket per announcing address: sustained rate and burst.
    rate_per_s: PositiveInt = 100
    rate_burst: PositiveInt = 200
    max_labels: PositiveInt = 64
    max_label_value_bytes: PositiveInt = 1024
    # The table is written to data_dir/metadata.snapshot this often and at shutdown (0: never).
    snapshot_interval_s: NonNegativeInt = 30

    def __post_init__(self) -> None:
        _check_address(self.udp)
        _check_cidrs(self.allow)
        _check_secret_sources("secret", [self.secret, self.secret_file, self.secret_env])


class Sources(_Base):
    syslog: SyslogSource | None = None
    metadata: MetadataSource | None = None


_MATCH_LINE_FIELDS = ("source_ip", "hostname", "app_name", "proc_id", "msg_id")
_MATCH_KEYS = ("ip", "hostname", "container_id")


class Enrich(_Base):
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
    hold_max_bytes: PositiveInt = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for pair in self.match_on:
            line_field, sep, key = pair.partition("=")
            if not sep or not line_field or key not in _MATCH_KEYS:
                raise ValueError(
                    f'match_on: expected "LINE_FIELD=KEY" with KEY one of {", ".join(_MATCH_KEYS)}, got {pair!r}'
                )

    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(p.split("=", 1)) for p in self.match_on]  # type: ignore[misc]


class Batch(_Base):
    max_events: PositiveInt = 10_000
    max_bytes: PositiveInt = 4_000_000
    max_age_ms: PositiveInt = 1000


class Buffer(_Base):
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


class _SinkBase(_Base, tag_field="type"):
    batch: Batch = field(default_factory=Batch)
    buffer: Buffer = field(default_factory=Buffer)
    # Retries of a failing batch back off exponentially with jitter up to this cap;
    # a retryable failure is retried forever (nothing accepted is dropped).
    retry_initial_ms: PositiveInt = 200
    retry_max_ms: PositiveInt = 30_000
    # Batches in flight to the sink at once. More than 1 lets a sink that ingests in
    # parallel (VictoriaLogs, ClickHouse) use its cores while logpipe keeps parsing;
    # batches may then arrive out of order (stores sort by _time; a file sink should keep 1).
    concurrency: PositiveInt = 1
    request_timeout_s: PositiveInt = 30


class VictoriaLogsSink(_SinkBase, tag="victorialogs"):
    url: str = "http://127.0.0.1:9428"
    stream_fields: list[str] = field(default_factory=list)
    account_id: NonNegativeInt | None = None
    project_id: NonNegativeInt | None = None
    compression: Literal["none", "gzip"] = "gzip"
    extra_fields: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f'url: expected "http(s)://HOST[:PORT]", got {self.url!r}')


_CH_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CH_TEMPLATE = re.compile(r"(?:[A-Za-z0-9_]|\{[A-Za-z0-9_.@-]+\})+")


class ClickHouseSink(_SinkBase, tag="clickhouse"):
    # Few large inserts: every insert makes a part, and many small parts end in
    # "too many parts" (Code 252) and a read-only table.
    batch: Batch = field(default_factory=lambda: Batch(max_events=50_000, max_bytes=16_000_000, max_age_ms=5000))
    url: str = "http://127.0.0.1:8123"
    database: str = "logs"
    table: str = "app"
    default_table: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    password: str | None = None
    password_file: str | None = None  # trailing whitespace ignored
    password_env: str | None = None
    compression: Literal["none", "gzip"] = "gzip"
    # At most one insert per table per interval, whatever the batch settings.
    min_insert_interval_ms: NonNegativeInt = 1000
    # Create a missing database/table with the recommended schema instead of waiting for it.
    create_table: bool = False
    # Value for a column when the event's value cannot be converted to the column's type
    # (otherwise the key is omitted and the server's default applies).
    column_defaults: dict[str, Union[int, float, str]] = field(default_factory=dict)
    # Types for `clickhouse-schema` and `create_table`, overriding the guessed ones.
    column_types: dict[str, str] = field(default_factory=dict)
    # Per-level retention for the generated TTL; "default" covers every other level.
    retention_days: dict[str, PositiveInt] = field(
        default_factory=lambda: {"debug": 3, "info": 30, "warn": 90, "error": 180, "default": 30}
    )

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f'url: expected "http(s)://HOST[:PORT]", got {self.url!r}')
        if "{" in self.table and self.default_table is None:
            raise ValueError("default_table: required when table is a template")
        _check_secret_sources("password", [self.password, self.password_file, self.password_env])
        if not _CH_IDENTIFIER.fullmatch(self.database):
            raise ValueError(f"database: expected letters, digits and _, got {self.database!r}")
        if not _CH_TEMPLATE.fullmatch(self.table):
            raise ValueError(f'table: expected letters, digits, _ and {{field}} parts, got {self.table!r}')
        if self.default_table is not None and not _CH_IDENTIFIER.fullmatch(self.default_table):
            raise ValueError(f"default_table: expected letters, digits and _, got {self.default_table!r}")
        for column in self.columns:
            if not _CH_IDENTIFIER.fullmatch(column):
                raise ValueError(f"columns: column names are letters, digits and _, got {column!r}")


class FileSink(_SinkBase, tag="file"):
    # Relative paths are under daemon.data_dir.
    path: str = "events"
    rotate_bytes: PositiveInt = 64 * 1024 * 1024
    keep_files: PositiveInt = 5


_SD_NAME = re.compile(r'[!-~]{1,32}')  # RFC 5424 SD-NAME: printable US-ASCII, at most 32
_FACILITIES = ("kern user mail daemon auth syslog lpr news uucp cron authpriv ftp ntp security console "
               "solaris-cron local0 local1 local2 local3 local4 local5 local6 local7").split()
_SEVERITIES = "emerg alert crit err warning notice info debug".split()


class SyslogSink(_SinkBase, tag="syslog", kw_only=True):
    """RFC 5424 out: TCP with octet counting (RFC 6587), TLS (RFC 5425) or UDP (RFC 5426)."""

    address: Address
    protocol: Literal["tcp", "tls", "udp"] = "tcp"
    # Every event field that is not a header field goes into one SD-ELEMENT with this SD-ID.
    sd_id: str = "logpipe@32473"
    # PRI of events without facility / severity (and without level, for the severity).
    facility: str = "user"
    severity: str = "info"
    # TLS: CA bundle to verify the server (system store when unset), client certificate.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    # UDP: a message longer than this is cut (its MSG part) and counted.
    udp_max_bytes: Annotated[int, Meta(ge=480, le=65507)] = 8192

    def __post_init__(self) -> None:
        _check_address(self.address)
        if not _SD_NAME.fullmatch(self.sd_id) or any(c in self.sd_id for c in '= ]"'):
            raise ValueError(f"sd_id: expected 1-32 printable ASCII characters without = ] \" or space, got {self.sd_id!r}")
        if self.facility not in _FACILITIES:
            raise ValueError(f"facility: expected one of {', '.join(_FACILITIES)}, got {self.facility!r}")
        if self.severity not in _SEVERITIES:
            raise ValueError(f"severity: expected one of {', '.join(_SEVERITIES)}, got {self.severity!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert: tls_cert and tls_key go together")
        if self.protocol != "tls" and (self.tls_ca or self.tls_cert or self.tls_server_name):
            raise ValueError('protocol: tls_* keys need protocol = "tls"')


class ElasticsearchSink(_SinkBase, tag="elasticsearch"):
    """The _bulk API of Elasticsearch, OpenSearch or VictoriaLogs (/insert/elasticsearch)."""

    url: str = "http://127.0.0.1:9200"
    # {field} from the event (missing: index_missing_value), then strftime of its _time (UTC).
    index: str = "logs-{service}-%Y.%m.%d"
    index_missing_value: str = "unknown"
    # "create" works for data streams (logs-*-* in Elasticsearch 8) and plain indices alike.
    action: Literal["create", "index"] = "create"
    # _time is copied under this name too (Elasticsearch data streams need @timestamp); "" = off.
    timestamp_field: str = "@timestamp"
    # Extra query parameters (VictoriaLogs: _msg_field, _time_field, _stream_fields).
    query: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    password: str | None = None
    api_key: str | None = None  # base64 "id:key" as Elasticsearch issues it
    compression: Literal["none", "gzip"] = "gzip"

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s@]+(/|$)", self.url):
            raise ValueError(f'url: expected "http(s)://HOST[:PORT][/PATH]" without credentials, got {self.url!r}')
        if self.api_key is not None and self.user is not None:
            raise ValueError("api_key: use either api_key or user/password")
        if (self.user is None) != (self.password is None):
            raise ValueError("user: user and password go together")
        if not re.fullmatch(r"(?:[^{}]|\{[A-Za-z0-9_.@-]+\})+", self.index):
            raise ValueError(f"index: expected text with {{field}} parts, got {self.index!r}")


SinkConfig = Union[VictoriaLogsSink, ClickHouseSink, FileSink, SyslogSink, ElasticsearchSink]


# --- transforms ------------------------------------------------------------------------
# One Struct per `[[transforms]]` type, tagged on `type`; logpipe/transforms.py builds each
# into a step once. Regexes are compiled here too so `logpipe validate` reports a bad or
# unsafe one (logpipe/safe_regex.py) with its key path.

Scalar = Union[bool, int, float, str]
REDACT_PRESETS = ("email", "card_number", "bearer_token", "url_password")


def _check_regex(key: str, pattern: str | None) -> None:
    if pattern is not None:
        try:
            compile_checked(pattern)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None


class Condition(_Base):
    """``{ field = "F", equals = V }``, or ``contains`` / ``matches`` (regex) / ``exists``."""

    field: str
    equals: Scalar | None = None
    contains: str | None = None
    matches: str | None = None
    exists: bool | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("equals", "contains", "matches", "exists") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("field: needs exactly one of equals, contains, matches, exists")
        _check_regex("matches", self.matches)


class _TransformBase(_Base, tag_field="type", kw_only=True):
    # Only events matching `when` go through the transform; the rest pass untouched.
    when: Condition | None = None
    # Label in metrics and in `logpipe test` (default "INDEX:TYPE").
    name: str | None = None


class DropTransform(_TransformBase, tag="drop", kw_only=True):
    field: str
    equals: Scalar | None = None
    contains: str | None = None
    matches: str | None = None
    absent: bool | None = None
    # Keep the events the condition matches and drop the rest.
    invert: bool = False

    def __post_init__(self) -> None:
        given = [k for k in ("equals", "contains", "matches", "absent") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("field: needs exactly one of equals, contains, matches, absent")
        if self.absent is False:
            raise ValueError("absent: only absent = true makes sense (use invert)")
        _check_regex("matches", self.matches)


class RedactTransform(_TransformBase, tag="redact", kw_only=True):
    fields: list[str] = field(default_factory=lambda: ["_msg"])
    patterns: list[str] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)
    replacement: str = "[REDACTED]"

    def __post_init__(self) -> None:
        if not self.patterns and not self.presets:
            raise ValueError("patterns: needs patterns or presets")
        for preset in self.presets:
            if preset not in REDACT_PRESETS:
                raise ValueError(f"presets: unknown preset {preset!r} (known: {', '.join(REDACT_PRESETS)})")
        for pattern in self.patterns:
            _check_regex("patterns", pattern)


class RenameTransform(_TransformBase, tag="rename", kw_only=True):
    fields: dict[str, str]  # old name -> new name


class RemoveTransform(_TransformBase, tag="remove", kw_only=True):
    fields: list[str]


class SetTransform(_TransformBase, tag="set", kw_only=True):
    # Strings may hold {field} templates; a missing field renders as "".
    fields: dict[str, Scalar]
    overwrite: bool = True


class CoerceTransform(_TransformBase, tag="coerce", kw_only=True):
    fields: dict[str, Literal["int", "float", "bool", "timestamp"]]
    # Value set when a field cannot be converted; without one the field is removed.
    defaults: dict[str, Scalar] = field(default_factory=dict)


class ParseTransform(_TransformBase, tag="parse", kw_only=True):
    field: str = "_msg"
    format: Literal["json", "logfmt", "regex"] = "json"
    pattern: str | None = None  # regex with named groups, for format = "regex"
    prefix: str = ""
    # Remove the source field after a successful parse.
    drop_field: bool = False

    def __post_init__(self) -> None:
        if (self.format == "regex") != (self.pattern is not None):
            raise ValueError('pattern: required with format = "regex", and only then')
        _check_regex("pattern", self.pattern)
        if self.pattern is not None and not compile_checked(self.pattern).groupindex:
            raise ValueError("pattern: needs at least one named group (?P<name>...)")


class SampleTransform(_TransformBase, tag="sample", kw_only=True):
    rate: PositiveInt  # keep 1 in rate events per key
    key: str | None = None  # field whose value keys the count (absent: one count)


class ThrottleTransform(_TransformBase, tag="throttle", kw_only=True):
    per_second: PositiveInt
    key: str | None = None


class Route(_Base):
    when: Condition
    sinks: list[str]


class RouteTransform(_TransformBase, tag="route", kw_only=True):
    # First matching route wins; unmatched events go to `default` (absent: every sink).
    routes: list[Route]
    default: list[str] | None = None

    def __post_init__(self) -> None:
        if self.when is not None:
            raise ValueError("when: route takes no when (each route has its own)")


TransformConfig = Union[
    DropTransform,
    RedactTransform,
    RenameTransform,
    RemoveTransform,
    SetTransform,
    CoerceTransform,
    ParseTransform,
    SampleTransform,
    ThrottleTransform,
    RouteTransform,
]


def _transform_problems(transforms: list, sinks: dict) -> list[tuple[tuple[str, ...], str]]:
    """Cross-checks needing the whole config: (key path, why) per problem."""
    found: list[tuple[tuple[str, ...], str]] = []
    for i, t in enumerate(transforms):
        if isinstance(t, RouteTransform):
            at = ("transforms", str(i))
            if i != len(transforms) - 1:
                found.append((at + ("type",), "route must be the last transform"))
            for j, route in enumerate(t.routes):
                for name in route.sinks:
                    if name not in sinks:
                        found.append((at + ("routes", str(j), "sinks"), f"unknown sink {name!r}"))
            for name in t.default or ():
                if name not in sinks:
                    found.append((at + ("default",), f"unknown sink {name!r}"))
    return found


class Config(_Base):
    daemon: Daemon = field(default_factory=Daemon)
    api: Api = field(default_factory=Api)
    sources: Sources = field(default_factory=Sources)
    enrich: Enrich = field(default_factory=Enrich)
    transforms: list[TransformConfig] = field(default_factory=list)
    sinks: dict[str, SinkConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sinks:
            raise ValueError("sinks: at least one sink is required")
        for name in self.sinks:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"sinks.{name}: sink names are letters, digits, _ and -")
        for path, why in _transform_problems(self.transforms, self.sinks):
            raise ValueError(f"{'.'.join(path)}: {why}")


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
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError:
        problems = _collect(raw, Config, ())
        problems += [p for p in _cross_problems(raw) if p not in problems]
        if not problems:  # pragma: no cover - the collector should always find it
            problems = [("", "invalid configuration")]
        raise ConfigError([_render(path, msg, text) for path, msg in problems]) from None


# --- error collection -------------------------------------------------------------------
# msgspec stops at the first error. To report every problem at once, descend the tree
# and convert each part on its own, reporting at the deepest path that fails.

_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")


def _collect(value: Any, typ: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    try:
        msgspec.convert(value, typ)
        return []
    except msgspec.ValidationError as e:
        error = str(e)
    members = _union_members(typ)
    structs = [t for t in members if isinstance(t, type) and issubclass(t, Struct)]
    if len(structs) > 1 and isinstance(value, dict):
        tag_field = structs[0].__struct_config__.tag_field
        tags = [t.__struct_config__.tag for t in structs]
        if value.get(tag_field) not in tags:
            return [(path + (tag_field,), f"expected one of {', '.join(tags)}, got {_show(value.get(tag_field))}")]
    struct_type = _struct_for(value, typ)
    if struct_type is not None and isinstance(value, dict):
        found = _collect_struct(value, struct_type, path)
        if found:
            return found
    elif get_origin(typ) is dict and isinstance(value, dict):
        _, value_type = get_args(typ)
        found = []
        for key, item in value.items():
            found += _collect(item, value_type, path + (str(key),))
        if found:
            return found
    elif get_origin(typ) is list and isinstance(value, list):
        (item_type,) = get_args(typ)
        found = []
        for i, item in enumerate(value):
            found += _collect(item, item_type, path + (str(i),))
        if found:
            return found
    message = _describe(error, value, typ)
    # A cross-field check names the key it is about as "key: why".
    key, sep, rest = message.partition(": ")
    if sep and struct_type is not None and key in struct_type.__struct_fields__:
        return [(path + (key,), rest)]
    if sep and struct_type is not None and key.partition(".")[0] in struct_type.__struct_fields__:
        return [(path + tuple(key.split(".")), rest)]
    return [(path, message)]


def _cross_problems(raw: dict) -> list[tuple[tuple[str, ...], str]]:
    """The whole-config checks, when their parts decode on their own (so a bad route is
    reported together with every other problem)."""
    sinks = raw.get("sinks")
    items = raw.get("transforms")
    if not isinstance(sinks, dict) or not isinstance(items, list):
        return []
    transforms = []
    for item in items:  # a transform that fails on its own is reported already: skip it
        try:
            transforms.append(msgspec.convert(item, TransformConfig))
        except msgspec.ValidationError:
            transforms.append(None)
    return _transform_problems(transforms, sinks)


def _union_members(typ: Any) -> tuple:
    if get_origin(typ) in (Union, types.UnionType):
        return get_args(typ)
    return (typ,)


def _struct_for(value: Any, typ: Any) -> type | None:
    """The Struct type ``value`` should decode as: ``typ`` itself, the member of an
    optional, or the tagged-union member its ``type`` key names."""
    structs = [t for t in _union_members(typ) if isinstance(t, type) and issubclass(t, Struct)]
    if len(structs) == 1:
        return structs[0]
    if isinstance(value, dict):
        for t in structs:
            if t.__struct_config__.tag == value.get(t.__struct_config__.tag_field):
                return t
    return None


def _collect_struct(value: dict, typ: type, path: tuple[str, ...]) -> list:
    found = []
    info = msgspec.inspect.type_info(typ)
    known = {f.encode_name: f for f in info.fields}
    tag_field = typ.__struct_config__.tag_field
    for key in value:
        if key not in known and key != tag_field:
            found.append((path + (key,), "unknown key"))
    hints = _field_types(typ)
    for f in info.fields:
        if f.encode_name in value:
            found += _collect(value[f.encode_name], hints[f.name], path + (f.encode_name,))
        elif f.required:
            found.append((path + (f.encode_name,), "required key is missing"))
    return found


def _field_types(typ: type) -> dict[str, Any]:
    return typing.get_type_hints(typ, include_extras=True)


def _describe(error: str, value: Any, typ: Any) -> str:
    """Turn msgspec's message into ``expected int >= 1, got "ten"``."""
    error = _MSGSPEC_PATH.sub("", error)
    error = error.replace("`", "")
    if error.startswith("Expected "):
        expected = error[len("Expected ") :].split(", got ")[0]
        for pattern, name in _PATTERN_NAMES.items():
            if pattern in expected or pattern.replace("\\", "\\\\") in expected:
                expected = name
        bounds = _bounds(typ)
        if bounds and not any(op in expected for op in ("<", ">")):
            expected = f"{expected} {bounds}"
        return f"expected {expected}, got {_show(value)}"
    if error.startswith("Object missing required field "):
        return "required key is missing"
    if error.startswith("Object contains unknown field "):
        return "unknown key"
    if error.startswith("Invalid value "):
        return f"invalid value {_show(value)}"
    return error[:1].lower() + error[1:]


def _bounds(typ: Any) -> str:
    for member in _union_members(typ):
        if get_origin(member) is Annotated:
            for meta in member.__metadata__:
                if isinstance(meta, Meta):
                    parts = []
                    if meta.ge is not None:
                        parts.append(f">= {meta.ge}")
                    if meta.le is not None:
                        parts.append(f"<= {meta.le}")
                    return " and ".join(parts)
    return ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "an array"
    return str(value)


_SECRET_KEYS = frozenset(("secret", "password"))


def _render(path: tuple[str, ...], message: str, text: str) -> str:
    name = ".".join(path) if path else "config"
    if path and path[-1] in _SECRET_KEYS:  # never echo a secret back, even a mistyped one
        message = re.sub(r", got .*$", ", got <redacted>", message)
    line = _find_line(path, text)
    return f"{name}: {message}" + (f" (line {line})" if line else "")


def _find_line(path: tuple[str, ...], text: str) -> int | None:
    """Best effort: the line of the deepest table header on ``path``, then the first line
    after it that assigns the next key."""
    if not path:
        return None
    lines = text.splitlines()
    start = 0
    depth = 0
    if len(path) > 1 and path[1].isdigit():  # [[transforms]] number N
        header = re.compile(r"^\s*\[\[\s*" + re.escape(path[0]) + r"\s*\]\]")
        starts = [i for i, line in enumerate(lines) if header.match(line)]
        if int(path[1]) < len(starts):
            start, depth = starts[int(path[1])], 2
            if depth == len(path):
                return start + 1
            key = re.compile(r"(^|[\s{,])" + re.escape(path[depth]) + r"\s*=")
            for i in range(start, len(lines)):
                if i > start and lines[i].lstrip().startswith("["):
                    break
                if key.search(lines[i]):
                    return i + 1
            return start + 1
    for d in range(len(path), 0, -1):
        header = re.compile(r"^\s*\[\[?\s*" + r"\s*\.\s*".join(re.escape(p) for p in path[:d]) + r"\s*\]\]?\s*(#.*)?$")
        for i, line in enumerate(lines):
            if header.match(line):
                start, depth = i, d
                break
        if depth:
            break
    if depth == len(path):
        return start + 1
    key = re.compile(r"(^|[\s{,])" + re.escape(path[depth]) + r"\s*=")
    for i in range(start, len(lines)):
        if i > start and lines[i].lstrip().startswith("[") and depth:
            break
        if key.search(lines[i]):
            return i + 1
    return start + 1 if depth else None
