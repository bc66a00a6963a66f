"""One way to open a NATS connection from any config carrying the connection keys
(config/nats.py): the nats sink, the nats source and announcements over NATS.

``nats`` (nats-py) is imported here, lazily, so a daemon whose config names no NATS part
never loads it. After the first connection the client reconnects by itself, forever, to
any of ``servers``; a first connection that fails raises :class:`NatsUnreachable` naming
every server tried and the reason, never a credential.
"""

from __future__ import annotations

import ssl
from typing import Any

import structlog

from .config import read_secret

__all__ = ["NatsUnreachable", "close", "connect", "servers_text"]


class NatsUnreachable(OSError):
    """No server of ``servers`` answered (or each refused the credentials)."""


def servers_text(config: Any) -> str:
    return ", ".join(config.servers)


def _tls_context(tls: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca) if tls.ca else ssl.create_default_context()
    if tls.cert:
        context.load_cert_chain(tls.cert, tls.key)
    return context


def connect_options(config: Any, what: str) -> dict[str, Any]:
    """nats.connect() keyword arguments; ``what`` (``sinks.NAME``) names secrets in errors."""
    options: dict[str, Any] = {
        "servers": list(config.servers),
        "connect_timeout": config.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "name": f"logpipe {what}",
    }
    token = read_secret(config.token, config.token_file, config.token_env, f"{what}.token")
    if token is not None:
        options["token"] = token.decode()
    password = read_secret(config.password, config.password_file, config.password_env, f"{what}.password")
    if config.user is not None and password is not None:
        options["user"], options["password"] = config.user, password.decode()
    if config.nkey_seed_file:
        options["nkeys_seed"] = config.nkey_seed_file
    if config.creds_file:
        options["user_credentials"] = config.creds_file
    if config.tls is not None or any(s.startswith("tls://") for s in config.servers):
        tls = config.tls
        options["tls"] = _tls_context(tls) if tls is not None else ssl.create_default_context()
        if tls is not None and tls.server_name:
            options["tls_hostname"] = tls.server_name
    return options


async def connect(config: Any, what: str, **extra: Any) -> Any:
    """A connected ``nats.aio.client.Client``; raises NatsUnreachable. ``extra`` goes to
    nats.connect (``no_echo`` for announcements)."""
    import nats

    log = structlog.get_logger().bind(component=what.replace("sinks.", "sink.").replace("sources.", "source."))
    state: dict[str, Any] = {"connected": False, "last_error": None}

    async def on_error(error: Exception) -> None:
        if state["connected"]:
            log.warning("nats_error", error=f"{type(error).__name__}: {error}")
        else:  # the first connect: named in the raised error
            state["last_error"] = error

    async def on_disconnected() -> None:
        if state["connected"] and not getattr(client, "logpipe_closing", False):
            log.warning("nats_disconnected", servers=list(config.servers))

    async def on_reconnected() -> None:
        log.info("nats_reconnected", server=str(client.connected_url.netloc) if client.connected_url else None)

    options = connect_options(config, what)
    # Two tries per server at first (nats-py would retry forever with -1 and never report),
    # then reconnect forever.
    options["max_reconnect_attempts"] = 1
    try:
        client = await nats.connect(**options, error_cb=on_error, disconnected_cb=on_disconnected,
                                    reconnected_cb=on_reconnected, **extra)
    except Exception as e:  # nats-py raises its own errors, OSError, TimeoutError, ...
        cause = state["last_error"] or e
        reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise NatsUnreachable(f"{what}: cannot connect to NATS ({servers_text(config)}): {reason}") from None
    client.options["max_reconnect_attempts"] = -1
    state["connected"] = True
    return client


async def close(client: Any) -> None:
    """Flush what is pending (acks, publishes) and close, without the disconnect warning.
    Not ``drain()``: it waits up to 30 s for a pull subscription's expiring request."""
    client.logpipe_closing = True
    if client.is_closed:
        return
    if client.is_connected:
        try:
            await client.flush(timeout=2)
        except Exception:  # closing anyway; an ack lost here means a redelivery, not a loss
            pass
    await client.close()
