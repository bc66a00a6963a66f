"""A worker of ``daemon.workers = N > 1``: the config it runs and its side of the channel to
the supervisor (logpipe/daemon/supervisor.py).

A worker (``apply_worker_overrides`` + ``serve_worker_channel``) is a Daemon whose config has
``data_dir = DATA_DIR/workers/wI`` (buffers, dead letters and snapshot per worker: a
restarted worker replays its own disk buffer completely), file sinks writing
``PATH.wI.ndjson``, ``api.listen = 127.0.0.1:0``, no metadata port, and syslog sockets bound
with SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from typing import Any

import msgspec
import structlog

from ..config import Config, MetadataSource, SyslogSource, parse_address

__all__ = ["apply_worker_overrides", "serve_worker_channel", "worker_data_dir"]


def worker_data_dir(data_dir: str, index: int) -> str:
    return os.path.join(data_dir, "workers", f"w{index}")


def apply_worker_overrides(config: Config, index: int, ports: dict[str, int]) -> Config:
    """The config worker ``index`` runs: see the module docstring. ``ports`` maps
    ``SOURCE.udp``/``SOURCE.tcp`` to the port the supervisor resolved for a port 0."""
    replace = msgspec.structs.replace
    data_dir = config.daemon.data_dir
    daemon = replace(config.daemon, data_dir=worker_data_dir(data_dir, index))
    api = replace(config.api, listen="127.0.0.1:0")
    sources: dict[str, Any] = {}
    for name, source in config.sources.items():
        if isinstance(source, SyslogSource):
            for key in ("udp", "tcp"):
                address = getattr(source, key)
                if address and f"{name}.{key}" in ports:
                    source = replace(source, **{key: _with_port(address, ports[f"{name}.{key}"])})
        elif isinstance(source, MetadataSource):
            source = replace(source, udp=None, nats=None)  # the supervisor owns announcements
        sources[name] = source
    sinks = {}
    for name, sink in config.sinks.items():
        if type(sink).__struct_config__.tag == "file":
            base = sink.path if os.path.isabs(sink.path) else os.path.join(data_dir, sink.path)
            sink = replace(sink, path=f"{base}.w{index}")
        sinks[name] = sink
    return replace(config, daemon=daemon, api=api, sources=sources, sinks=sinks)


def _with_port(address: str, port: int) -> str:
    host, _ = parse_address(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_worker_channel(daemon: Any, fd: int) -> None:
    """Worker side of the socketpair: report the API address once started, then apply every
    announcement the supervisor forwards. Runs until cancelled."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await daemon.ready.wait()
    address = daemon.api_address
    if address is not None:
        sock.send(f"api {address[0]}:{address[1]}".encode())
    log = structlog.get_logger().bind(component="worker")
    try:
        while True:
            data = await loop.sock_recv(sock, 1 << 20)
            if not data:
                continue
            try:
                announcement = pickle.loads(data)
            except Exception as e:  # only the supervisor writes here; still never crash on it
                log.warning("worker_announcement_unreadable", error=str(e)[:200])
                continue
            daemon.table.apply(announcement)
    finally:
        sock.close()
