"""Test helpers: waiting on conditions (never sleeping as synchronization), free loopback
addresses read back from sockets, and a daemon fixture that runs in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

__all__ = [
    "wait_until", "await_until", "run_async", "running", "serve_http", "daemon_config", "VictoriaLogsServer", "victorialogs_bin",
    "DaemonProcess", "parse_host_port", "FakeVictoriaLogs", "stop_process", "read_ndjson", "file_messages",
]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(0.01)


async def await_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Async ``wait_until``: yields to the loop between polls so the daemon can work. A
    predicate may be async (a query of a server); it is awaited on each poll."""
    deadline = time.monotonic() + timeout
    never = asyncio.Event()
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        try:
            await asyncio.wait_for(never.wait(), 0.01)
        except TimeoutError:
            pass


def run_async(coro_fn: Callable[[], Awaitable[object]], timeout: float = 60.0) -> object:
    """Run one scenario on a fresh uvloop loop, bounded in time."""
    import uvloop

    async def bounded():
        return await asyncio.wait_for(coro_fn(), timeout)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(bounded())


async def serve_http(*routes: tuple[str, str, Callable], port: int = 0) -> tuple[Any, str]:
    """A fake HTTP destination on loopback: aiohttp serving ``(method, path, handler)``
    routes. Returns its runner (``await runner.cleanup()`` stops it) and base URL; ``port``
    brings a stopped fake back on the address a sink already knows."""
    from aiohttp import web

    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{bound}"


def daemon_config(data_dir: str, body: str, **daemon: object) -> str:
    """A whole config: ``[daemon]`` with ``data_dir`` and the given options, the API on a
    loopback port the kernel picks, then ``body`` (sources, enrich, sinks) as written."""
    options = "".join(f"{key} = {_toml_value(value)}\n" for key, value in daemon.items())
    return f'''[daemon]
data_dir = "{data_dir}"
{options}
[api]
listen = "127.0.0.1:0"

{body}'''


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # strings quoted and escaped as TOML basic strings accept; numbers as they are


@contextlib.asynccontextmanager
async def running(config: Any, **options: Any) -> AsyncIterator[Any]:
    """An in-process daemon for one scenario (``Daemon(config, **options)``), started, and
    shut down however the scenario ends."""
    from logpipe.daemon.app import Daemon

    daemon = Daemon(config, **options)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.shutdown()


def victorialogs_bin() -> str | None:
    path = os.environ.get("LOGPIPE_VICTORIALOGS_BIN")
    return path if path and os.access(path, os.X_OK) else None


def stop_process(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM a test server, then SIGKILL it if it has not exited within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A port the kernel just handed out; only for servers that cannot bind port 0 and
    report it back (VictoriaLogs). Tests retry the start on a collision."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VictoriaLogsServer:
    """A real VictoriaLogs process on loopback with a temp data dir, stopped by PID."""

    def __init__(self, binary: str, data_dir: str) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> None:
        for _attempt in range(5):
            self.port = port or free_port()
            self.proc = subprocess.Popen(
                [self.binary, f"-storageDataPath={self.data_dir}", f"-httpListenAddr=127.0.0.1:{self.port}",
                 "-loggerLevel=WARN", "-retentionPeriod=100y", "-futureRetention=100y"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

            def healthy() -> bool:
                if self.proc.poll() is not None:
                    return True  # exited: stop waiting, retry on another port
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                        return r.status == 200
                except OSError:
                    return False

            wait_until(healthy, timeout=20, what="VictoriaLogs /health")
            if self.proc.poll() is None:
                return
            if port:
                break
        raise AssertionError("VictoriaLogs did not start")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def query(self, logsql: str, limit: int = 100_000) -> list[dict]:

        with urllib.request.urlopen(self.url + "/internal/force_flush", timeout=10):
            pass
        data = urllib.parse.urlencode({"query": logsql, "limit": str(limit)}).encode()
        with urllib.request.urlopen(self.url + "/select/logsql/query", data=data, timeout=30) as r:
            return [orjson.loads(line) for line in r.read().splitlines() if line.strip()]


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class DaemonProcess:
    """``python -m logpipe run -c CONFIG`` as a subprocess with JSON logs on stderr; learns
    its bound addresses from the ``listening`` log events and /api/stats (so configs can use
    port 0)."""

    def __init__(self, workdir: str, config: str) -> None:
        self.path = os.path.join(workdir, "logpipe.toml")
        with open(self.path, "w") as f:
            f.write(config)
        self.events: list[dict] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logpipe", "run", "-c", self.path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=workdir,
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        self.api = wait_until(self._api_address, 20, "the daemon's API to listen")
        stats = wait_until(lambda: self.stats().get("listeners"), 20, "listeners")
        self.listeners = {name: parse_host_port(address) for name, address in stats.items()}
        self.tcp = self.listeners.get("syslog.tcp")
        self.udp = self.listeners.get("syslog.udp")
        self.metadata = self.listeners.get("metadata.udp")

    def _read_logs(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "unparsed", "text": line.decode(errors="replace")})

    def _api_address(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"logpipe exited with {self.proc.returncode}: {self.events[-5:]}")
        for event in list(self.events):
            if event.get("event") == "listening" and event.get("component") == "api":
                return event["address"]
        return None

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://{self.api}/api/stats", timeout=5) as resp:
            return json.load(resp)

    def metric(self, name: str, labels: str) -> float:
        return self.stats()["metrics"].get(name, {}).get(labels, 0)

    def buffer_events(self, sink: str) -> int:
        return self.stats()["sinks"][sink]["buffer_events"]

    def logged(self, name: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == name]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close()
        return self.proc.returncode


def parse_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class FakeVictoriaLogs:
    """A VictoriaLogs-shaped HTTP server whose availability the test controls: POST
    /insert/jsonline answers 503 while ``down``, else stores the events and answers 204."""

    def __init__(self, down: bool = True) -> None:
        self.down = down
        self.messages: list[str] = []
        self.events: list[dict] = []
        self.requests: list[tuple[dict, dict]] = []
        self.posts = 0
        lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    owner.posts += 1
                    if owner.down:
                        self.send_response(503)
                        self.end_headers()
                        return
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    events = [json.loads(line) for line in body.splitlines() if line]
                    owner.events += events
                    owner.messages += [e.get("_msg") for e in events]
                    owner.requests.append((dict(self.headers), dict(urllib.parse.parse_qsl(self.path.partition("?")[2]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_ndjson(path: str) -> list[dict]:
    """The events on every complete line of an NDJSON file a file sink writes; none while it
    does not exist yet. A line still being written (no newline yet) is left for the next poll."""
    try:
        with open(path, "rb") as f:
            return [orjson.loads(line) for line in f if line.endswith(b"\n") and line.strip()]
    except FileNotFoundError:
        return []


def file_messages(data_dir: str) -> list[str]:
    """The `_msg` of every event the file sinks named `delivered*` wrote under data_dir."""
    out = []
    for name in sorted(os.listdir(data_dir)):
        if name.startswith("delivered") and name.endswith(".ndjson"):
            out += [event["_msg"] for event in read_ndjson(os.path.join(data_dir, name))]
    return out
