"""``[sinks.NAME]``: one Struct per sink type, a tagged union on ``type``."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from msgspec import Meta, field

from .base import (
    Address,
    Base,
    Batch,
    Buffer,
    NonNegativeInt,
    PositiveInt,
    check_address,
    check_secret_sources,
)
from .nats import Seconds, sink_fields_check, with_connection


class _SinkBase(Base, tag_field="type"):
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


_HOST_URL = re.compile(r"^https?://[^/\s]+")


def check_url(url: str, pattern: re.Pattern = _HOST_URL, expected: str = "http(s)://HOST[:PORT]") -> str | None:
    """Why ``url`` is no endpoint URL, or None."""
    if not isinstance(url, str) or not pattern.match(url):
        return f'expected "{expected}", got {url!r}'
    try:
        port = urlsplit(url).port  # raises for a port that is not a number or out of range
    except ValueError as e:
        return f"{e} in {url!r}"
    if port == 0:
        return f"port 0 in {url!r}"
    return None


class _HttpSinkBase(_SinkBase):
    """A sink that POSTs over HTTP: to ``url``, or spread over ``endpoints`` with failover
    (sinks/endpoints.py)."""

    url: str | None = None
    endpoints: list[str] = field(default_factory=list)

    default_url: ClassVar[str] = "http://127.0.0.1"
    url_pattern: ClassVar[re.Pattern] = _HOST_URL
    url_expected: ClassVar[str] = "http(s)://HOST[:PORT]"

    def endpoint_urls(self) -> list[str]:
        return list(self.endpoints) or [self.url or self.default_url]

    def check_endpoints(self) -> None:
        """Raises ValueError naming the key (``endpoints.1: ...``)."""
        if self.url is not None:
            if self.endpoints:
                raise ValueError("endpoints: give either url (one endpoint) or endpoints, not both")
            problem = check_url(self.url, self.url_pattern, self.url_expected)
            if problem:
                raise ValueError(f"url: {problem}")
        check_url_list("endpoints", self.endpoints, self.url_pattern, self.url_expected)


def check_url_list(key: str, urls: list[str], pattern: re.Pattern = _HOST_URL, expected: str = "http(s)://HOST[:PORT]",
                   seen: dict[str, str] | None = None) -> None:
    seen = {} if seen is None else seen
    for i, url in enumerate(urls):
        problem = check_url(url, pattern, expected)
        if problem:
            raise ValueError(f"{key}.{i}: {problem}")
        same = url.rstrip("/")
        if same in seen:
            raise ValueError(f"{key}.{i}: {url!r} is already {seen[same]}")
        seen[same] = f"{key}.{i}"


class VictoriaLogsSink(_HttpSinkBase, tag="victorialogs"):
    default_url: ClassVar[str] = "http://127.0.0.1:9428"
    stream_fields: list[str] = field(default_factory=list)
    account_id: NonNegativeInt | None = None
    project_id: NonNegativeInt | None = None
    # "auto": none for an endpoint on this host or a directly attached network (the sink
    # asks the routing table once it has resolved the name), gzip through a gateway or a
    # tunnel. Near, gzip costs logpipe ~3 CPU-µs a line and the store the inflate, and saves
    # nothing.
    compression: Literal["auto", "none", "gzip"] = "auto"
    # VictoriaLogs ingests in parallel and sorts by _time: two batches in flight let it
    # work while logpipe parses the next one.
    concurrency: PositiveInt = 2
    extra_fields: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_endpoints()

    def uses_gzip(self) -> bool | None:
        """True/False when fixed; None when each endpoint's place decides ("auto" with an
        endpoint that is not a loopback address)."""
        if self.compression != "auto":
            return self.compression == "gzip"
        return False if all(is_loopback_url(url) for url in self.endpoint_urls()) else None


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: another container or machine, as far as we can tell


_CH_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CH_TEMPLATE = re.compile(r"(?:[A-Za-z0-9_]|\{[A-Za-z0-9_.@-]+\})+")


# Settings logpipe's delivery guarantees depend on, sent whenever the server knows them: an
# insert is confirmed only once stored, and the dedup token works under async inserts too.
CLICKHOUSE_PINNED_SETTINGS = {"wait_for_async_insert": "1", "async_insert_deduplicate": "1", "insert_deduplicate": "1"}
_CH_OWN_SETTINGS = ("insert_deduplication_token", "query", "database")


class ClickHouseSink(_HttpSinkBase, tag="clickhouse"):
    # Few large inserts: every insert makes a part, and many small parts end in
    # "too many parts" (Code 252) and a read-only table.
    batch: Batch = field(default_factory=lambda: Batch(max_events=50_000, max_bytes=16_000_000, max_age_ms=5000))
    default_url: ClassVar[str] = "http://127.0.0.1:8123"
    # Shards of a cluster, each a list of replica URLs (failover among them); rows go to
    # shard halfMD5(shard_by) % len(shards), as a Distributed table with that key would put them.
    shards: list[list[str]] = field(default_factory=list)
    shard_by: str | None = None
    # Query settings sent with every insert (async_insert, max_insert_block_size, ...).
    settings: dict[str, bool | int | float | str] = field(default_factory=dict)
    # After an outage one insert per table may carry up to this many batches' worth of a
    # backlog (max_events and max_bytes times this), so it drains at the steady insert rate
    # instead of one batch per min_insert_interval_ms. 1 = off.
    catch_up_batches: Annotated[int, Meta(ge=1, le=64)] = 4
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
    column_defaults: dict[str, int | float | str] = field(default_factory=dict)
    # Types for `clickhouse-schema` and `create_table`, overriding the guessed ones.
    column_types: dict[str, str] = field(default_factory=dict)
    # Per-level retention for the generated TTL; "default" covers every other level.
    retention_days: dict[str, PositiveInt] = field(
        default_factory=lambda: {"debug": 3, "info": 30, "warn": 90, "error": 180, "default": 30}
    )

    def shard_urls(self) -> list[list[str]]:
        """Replica lists, one per shard; without ``shards``, one shard of the endpoints."""
        return [list(replicas) for replicas in self.shards] or [self.endpoint_urls()]

    def __post_init__(self) -> None:
        self.check_endpoints()
        self._check_cluster()
        if "{" in self.table and self.default_table is None:
            raise ValueError("default_table: required when table is a template")
        check_secret_sources("password", [self.password, self.password_file, self.password_env])
        if not _CH_IDENTIFIER.fullmatch(self.database):
            raise ValueError(f"database: expected letters, digits and _, got {self.database!r}")
        if not _CH_TEMPLATE.fullmatch(self.table):
            raise ValueError(f'table: expected letters, digits, _ and {{field}} parts, got {self.table!r}')
        if self.default_table is not None and not _CH_IDENTIFIER.fullmatch(self.default_table):
            raise ValueError(f"default_table: expected letters, digits and _, got {self.default_table!r}")
        for column in self.columns:
            if not _CH_IDENTIFIER.fullmatch(column):
                raise ValueError(f"columns: column names are letters, digits and _, got {column!r}")
        for key, value in self.settings.items():
            if not _CH_IDENTIFIER.fullmatch(key) or key in _CH_OWN_SETTINGS:
                raise ValueError(f"settings.{key}: not a setting logpipe can pass through")
            pinned = CLICKHOUSE_PINNED_SETTINGS.get(key)
            if pinned is not None and clickhouse_setting(value) != pinned:
                raise ValueError(f"settings.{key}: logpipe needs {pinned}: it confirms a batch only once the server "
                                 "stored it, and its dedup token needs deduplication on")

    def _check_cluster(self) -> None:
        if self.shards:
            if self.url is not None or self.endpoints:
                raise ValueError("shards: give either shards or url/endpoints, not both")
            seen: dict[str, str] = {}
            for i, replicas in enumerate(self.shards):
                if not replicas:
                    raise ValueError(f"shards.{i}: a shard needs at least one replica URL")
                check_url_list(f"shards.{i}", replicas, seen=seen)
            if len(self.shards) > 1 and not self.shard_by:
                raise ValueError("shard_by: required with more than one shard (the event field that picks the shard)")
        elif self.shard_by is not None:
            raise ValueError("shard_by: only with shards")
        if self.create_table and (len(self.shards) > 1 or len(self.shard_urls()[0]) > 1):
            raise ValueError("create_table: not with several endpoints or shards; create cluster tables "
                             "with `logpipe clickhouse-schema --cluster NAME`")


def clickhouse_setting(value: bool | int | float | str) -> str:
    """A setting's value as ClickHouse reads it from a URL parameter."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


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
        check_address(self.address)
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


class ElasticsearchSink(_HttpSinkBase, tag="elasticsearch"):
    """The _bulk API of Elasticsearch, OpenSearch or VictoriaLogs (/insert/elasticsearch)."""

    default_url: ClassVar[str] = "http://127.0.0.1:9200"
    url_pattern: ClassVar[re.Pattern] = re.compile(r"^https?://[^/\s@]+(/|$)")
    url_expected: ClassVar[str] = "http(s)://HOST[:PORT][/PATH] without credentials"
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
        self.check_endpoints()
        if self.api_key is not None and self.user is not None:
            raise ValueError("api_key: use either api_key or user/password")
        if (self.user is None) != (self.password is None):
            raise ValueError("user: user and password go together")
        if not re.fullmatch(r"(?:[^{}]|\{[A-Za-z0-9_.@-]+\})+", self.index):
            raise ValueError(f"index: expected text with {{field}} parts, got {self.index!r}")


class NatsSink(with_connection(_SinkBase, "_NatsSinkBase"), tag="nats"):  # type: ignore[misc]
    """Events into a JetStream stream (sinks/nats.py); config/nats.py has the shared checks."""

    # Larger batches than an HTTP sink's need not wait: a batch is many small publishes.
    batch: Batch = field(default_factory=lambda: Batch(max_events=5000, max_bytes=4_000_000, max_age_ms=200))
    # A subject, or a template over event fields (``logs.{service}``); each value becomes one
    # token (``.``, ``*``, ``>`` and spaces turn into ``_``).
    subject: str = "logs"
    default_subject: str | None = None  # required with a template: events lacking the field
    # Events of one subject travel together in a message (NDJSON) up to these bounds; the
    # message id (dedup) is derived from the batch. 1 = one message per event.
    events_per_message: Annotated[int, Meta(ge=1, le=10_000)] = 100
    max_message_bytes: Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)] = 900_000
    stream: str = "LOGS"
    # true: create the stream at start if it is missing (with the stream_* settings below);
    # false: it must exist (publishes to a subject no stream captures are retried, logged).
    create_stream: bool = False
    stream_subjects: list[str] = field(default_factory=list)  # default: the subject(s) with * for fields
    stream_replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    stream_duplicate_window_s: Seconds = 120.0
    stream_retention: Literal["workqueue", "limits", "interest"] = "workqueue"
    stream_max_bytes: NonNegativeInt = 0  # 0: no limit; else publishes are refused (retried) when full
    stream_max_age_s: NonNegativeInt = 0  # 0: no limit

    def __post_init__(self) -> None:
        sink_fields_check(self)


class LogpipeSink(_HttpSinkBase, tag="logpipe"):
    """The sending end of the typed hop: batches POSTed as NDJSON to another logpipe's
    ``type = "http"`` source (sinks/logpipe.py); ``endpoints`` spreads them over several
    aggregators with failover, as for every HTTP sink."""

    default_url: ClassVar[str] = "http://127.0.0.1:8687"
    url_pattern: ClassVar[re.Pattern] = re.compile(r"^https?://[^/\s@]+/?$")
    url_expected: ClassVar[str] = "http(s)://HOST[:PORT]; no path (the path key) or credentials"
    path: str = "/logpipe/v1/events"  # the aggregator source's path
    token: str | None = None  # sent as "Authorization: Bearer TOKEN", never logged
    token_file: str | None = None  # trailing whitespace ignored
    token_env: str | None = None
    compression: Literal["none", "gzip"] = "gzip"
    # https: CA bundle to verify the aggregators (system store when unset), client certificate.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        self.check_endpoints()
        if not self.path.startswith("/") or any(c in self.path for c in "?# "):
            raise ValueError(f'path: expected "/SEGMENTS" without query or spaces, got {self.path!r}')
        check_secret_sources("token", [self.token, self.token_file, self.token_env])
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert: tls_cert and tls_key go together")
        if self.tls_ca or self.tls_cert:
            for i, url in enumerate(self.endpoint_urls()):
                if url.startswith("https://"):
                    continue
                if not self.endpoints:
                    raise ValueError("url: tls_* keys need an https:// url")
                raise ValueError(f"endpoints.{i}: tls_* keys need https:// endpoints, got {url!r}")


SinkConfig = VictoriaLogsSink | ClickHouseSink | FileSink | SyslogSink | ElasticsearchSink | NatsSink | LogpipeSink

