"""The source contract: a named listener that reads bytes and hands chunks of events to the
pipeline (or, for metadata, announcements to the table).

- ``start()`` binds and listens; a socket that cannot be bound raises BindError naming the
  key (``sources.NAME.tcp``) and the address.
- Reload, in two steps so that a refused reload changes nothing:
  ``bind_changed(config)`` binds the sockets whose address is new (or all of them for a
  source not started yet) while the old ones still listen, and raises BindError (an OSError)
  naming the key and address when one cannot be bound; ``reconfigure(config, bound)`` then starts
  the new sockets, applies the other settings and closes the replaced sockets. Open TCP
  connections are not touched. ``release(bound)`` closes sockets of a refused reload.
- ``stop()`` stops accepting and returns once everything already read is in the pipeline.
- ``addresses`` maps ``udp``/``tcp`` to the bound (host, port), for logs, stats and tests.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["BindError", "Source", "bind_or_explain", "release", "show_address"]


class Source(Protocol):
    name: str
    config: Any
    addresses: dict[str, tuple[str, int]]

    async def start(self) -> None: ...

    def bind_changed(self, config: Any) -> dict[str, socket.socket]: ...

    async def reconfigure(self, config: Any, bound: dict[str, socket.socket]) -> None: ...

    async def stop(self) -> None: ...


class BindError(OSError):
    """A listener could not be bound; the message names the key and the address."""


def bind_or_explain(make: Callable[..., socket.socket], key: str, address: str, *args: Any) -> socket.socket:
    """``make(address, *args)``, with an OSError turned into a BindError naming the key."""
    try:
        return make(address, *args)
    except BindError:
        raise
    except OSError as e:
        raise BindError(f"{key}: cannot bind {address}: {e.strerror or e}") from None


def release(bound: dict[str, socket.socket]) -> None:
    for sock in bound.values():
        sock.close()


def show_address(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
