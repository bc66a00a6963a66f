"""NATS JetStream between logpipe tiers: the checks shared by ``[sinks.NAME] type = "nats"``
(sinks.py: publishes events to a stream), ``[sources.NAME] type = "nats"`` (sources.py: reads
them back through a durable pull consumer) and ``[sources.NAME.nats]`` on a metadata source
(announcements shared over a subject).

All three connect the same way, so each carries the same connection keys: ``servers``,
``tls``, one kind of credentials (``token*``, ``user`` + ``password*``, ``nkey_seed_file`` or
``creds_file``) and ``connect_timeout_s``. msgspec Structs cannot combine two field-carrying
bases, so ``with_connection(base)`` makes a base of each kind (sink, source, table) that
adds ``CONNECTION_FIELDS``; ``connection_problem`` checks them alike.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from msgspec import Meta, defstruct, field

from .base import Base, check_secret_sources

__all__ = ["NatsTls", "MetadataNats", "Seconds", "connection_problem", "default_stream_subjects", "sink_fields_check",
           "source_fields_check", "with_connection"]

_SERVER = re.compile(r"^(nats|tls)://[^/\s]+$")
# A subject is dot-separated tokens; a template token may be ``{field}`` or text around it.
SUBJECT_TEMPLATE = re.compile(r"^(?:[A-Za-z0-9_\-]|\{[A-Za-z0-9_.@-]+\})+(?:\.(?:[A-Za-z0-9_\-]|\{[A-Za-z0-9_.@-]+\})+)*$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*$")
# Consumer filters and stream subjects may use the wildcards * (one token) and > (the rest).
_FILTER = re.compile(r"^(?:[A-Za-z0-9_\-]+|\*)(?:\.(?:[A-Za-z0-9_\-]+|\*))*(?:\.>)?$|^>$")
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
Seconds = Annotated[float, Meta(gt=0)]


class NatsTls(Base):
    ca: str | None = None  # verify the servers with this bundle (system store when unset)
    cert: str | None = None  # client certificate, when the servers ask for one
    key: str | None = None
    server_name: str | None = None  # to verify instead of each server URL's host


CONNECTION_FIELDS = [
    ("servers", list[str], field(default_factory=lambda: ["nats://127.0.0.1:4222"])),
    ("tls", NatsTls | None, None),
    *((key, str | None, None) for key in (
        "token", "token_file", "token_env", "user", "password", "password_file", "password_env",
        "nkey_seed_file",  # an NKey seed file (the nkeys package)
        "creds_file",  # a JWT .creds file (decentralized auth)
    )),
    ("connect_timeout_s", Seconds, 5.0),  # per server, at the first connection
]


def with_connection(base: type, name: str) -> Any:
    """``base`` plus the connection keys, as a base class for one kind of NATS config."""
    return defstruct(name, CONNECTION_FIELDS, bases=(base,), kw_only=True, module=__name__)


def connection_problem(config: Any) -> str | None:
    """The first problem with a config's connection keys, as ``key: why``."""
    if not config.servers:
        return "servers: at least one server is required"
    for server in config.servers:
        if not _SERVER.match(server):
            return f'servers: expected "nats://HOST:PORT" or "tls://HOST:PORT", got {server!r}'
    for name, values in (("token", [config.token, config.token_file, config.token_env]),
                         ("password", [config.password, config.password_file, config.password_env])):
        try:
            check_secret_sources(name, values)
        except ValueError as e:
            return str(e)
    has_password = any(v is not None for v in (config.password, config.password_file, config.password_env))
    if (config.user is not None) != has_password:
        return "user: user and password go together"
    kinds = [k for k, given in (("token", any(v is not None for v in (config.token, config.token_file, config.token_env))),
                                ("user", config.user is not None), ("nkey_seed_file", config.nkey_seed_file is not None),
                                ("creds_file", config.creds_file is not None)) if given]
    if len(kinds) > 1:
        return f"{kinds[1]}: give one kind of credentials, not {' and '.join(kinds)}"
    if config.tls is not None and (config.tls.cert is None) != (config.tls.key is None):
        return "tls.cert: cert and key go together"
    return None


def _check_stream_name(value: str, key: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"{key}: expected letters, digits, _ and -, got {value!r}")


def sink_fields_check(config: Any) -> None:
    """``__post_init__`` of the nats sink (its class lives in sinks.py with the other sinks)."""
    problem = connection_problem(config)
    if problem:
        raise ValueError(problem)
    if not SUBJECT_TEMPLATE.match(config.subject):
        raise ValueError(f"subject: expected dot-separated tokens of letters, digits, _, - and {{field}} parts, got {config.subject!r}")
    if "{" in config.subject and config.default_subject is None:
        raise ValueError("default_subject: required when subject is a template")
    if config.default_subject is not None and not _SUBJECT.match(config.default_subject):
        raise ValueError(f"default_subject: expected dot-separated tokens of letters, digits, _ and -, got {config.default_subject!r}")
    _check_stream_name(config.stream, "stream")
    for subject in config.stream_subjects:
        if not _FILTER.match(subject):
            raise ValueError(f"stream_subjects: expected a subject (wildcards * and > allowed), got {subject!r}")


def default_stream_subjects(subject: str, default_subject: str | None) -> list[str]:
    """What a created stream captures when ``stream_subjects`` is empty: the template with
    every templated token as ``*``, and the default subject."""
    pattern = ".".join("*" if "{" in token else token for token in subject.split("."))
    found = [pattern]
    if default_subject and not subject_matches(pattern, default_subject):
        found.append(default_subject)  # JetStream refuses overlapping subjects in one stream
    return found


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(wanted)


def source_fields_check(config: Any) -> None:
    problem = connection_problem(config)
    if problem:
        raise ValueError(problem)
    _check_stream_name(config.stream, "stream")
    _check_stream_name(config.consumer, "consumer")
    if config.filter_subject is not None and not _FILTER.match(config.filter_subject):
        raise ValueError(f"filter_subject: expected a subject (wildcards * and > allowed), got {config.filter_subject!r}")
    if config.max_in_flight < config.fetch_messages:
        raise ValueError("max_in_flight: must be at least fetch_messages")


class MetadataNats(with_connection(Base, "_MetadataNatsBase")):  # type: ignore[misc]
    """``[sources.NAME.nats]``: accepted UDP announcements are published here (the datagram
    as received, so every daemon verifies its HMAC itself) and the subject is subscribed."""

    subject: str = "logpipe.announcements"

    def __post_init__(self) -> None:
        problem = connection_problem(self)
        if problem:
            raise ValueError(problem)
        if not _SUBJECT.match(self.subject):
            raise ValueError(f"subject: expected dot-separated tokens of letters, digits, _ and -, got {self.subject!r}")

