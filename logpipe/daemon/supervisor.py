"""``daemon.workers = N > 1``: a supervisor process and N worker processes.

Only used when ``daemon.workers > 1``; with 1, ``logpipe run`` is the plain Daemon.

Supervisor (``run_supervisor``):
- re-executes ``python -m logpipe run -c FILE --worker I --workers N ...`` N times; a worker
  that exits while the supervisor is not stopping is restarted with backoff (0.5 s doubling
  to 10 s, reset after 30 s of uptime);
- resolves port 0 for the syslog ports first: it binds a probe socket with SO_REUSEPORT
  to port 0, passes the real port to every worker, keeps the TCP probe (bound, never
  listening: it takes no connections) for its whole life so the port stays reserved across
  worker restarts, and closes the UDP probe once the first worker has bound (an unread UDP
  socket in the group would take a share of the datagrams);
- owns ``sources.metadata.udp``: the usual MetadataListener (allow list, rate limit, HMAC,
  replay window) validates each announcement once; an accepted one (``ok``/``removed``) is
  forwarded, pickled, to every worker over its own ``socketpair`` (SOCK_DGRAM; trusted:
  only parent and child hold the ends). A worker applies it to its own MetadataTable (which
  also releases lines the enrichment hold waits for). A full worker socket counts
  ``logpipe_metadata_forward_dropped_total``; a restarted worker gets the supervisor's whole
  table replayed first, so no worker misses an entry;
- serves ``api.listen``: ``/health`` (503 if any worker is down or unhealthy), ``/metrics``
  and ``/api/stats`` summed over the workers' own APIs (each worker listens on 127.0.0.1:0
  and reports its address over the socketpair) plus the supervisor's metadata counters;
- SIGTERM/SIGINT: forwarded to every worker, each runs the normal Daemon drain; the
  supervisor waits for all and exits 0. SIGHUP is forwarded (each worker reloads).

Workers: logpipe/daemon/worker.py. Summing the workers' metrics: logpipe/daemon/aggregate.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import pickle
import signal
import socket
import sys
import time
from typing import Any

import msgspec
import structlog

from ..config import Config, MetadataSource, SyslogSource, parse_address
from ..enrich import MetadataTable
from ..metrics import Metrics
from .aggregate import sum_prometheus, sum_trees
from .assemble import Graph

__all__ = ["run_supervisor"]

_RESTART_INITIAL_S = 0.5
_RESTART_MAX_S = 10.0
_STABLE_AFTER_S = 30.0


def _die_with_parent() -> None:
    """preexec_fn: a worker gets SIGTERM when the supervisor dies (even by SIGKILL)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _ForwardingTable(MetadataTable):
    """The supervisor's table: every accepted announcement is also sent to each worker."""

    def __init__(self, maxsize: int, *args: Any, forward: Any) -> None:
        super().__init__(maxsize, *args)
        self._forward = forward
        self._maxsize = maxsize
        # The last accepted announcement per container, replayed to a restarted worker.
        self.latest: dict[tuple, Any] = {}

    def apply(self, ann: Any, default_ttl_s: float | None = None) -> str:
        result = super().apply(ann, default_ttl_s)
        if result in ("ok", "removed"):
            key = (ann.ip, ann.hostname, ann.container_id)
            self.latest.pop(key, None)
            if result == "ok":
                self.latest[key] = ann
                if len(self.latest) > self._maxsize:
                    del self.latest[next(iter(self.latest))]
            self._forward(ann)
        return result


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: socket.socket | None = None
        self.api: str | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.ever_ready = False  # reported its API address once: it has bound and started


class Supervisor:
    def __init__(self, config: Config, config_path: str) -> None:
        self.config = config
        self.config_path = config_path
        self.n = config.daemon.workers
        self.metrics = Metrics()
        self.log = structlog.get_logger().bind(component="supervisor")
        self.workers = [_Worker(i) for i in range(self.n)]
        self.stopping = False
        self.failed = False  # a worker could not start: run() ends, the process exits 1
        self._stop = asyncio.Event()
        self.started = time.time()
        self.listeners: dict[str, str] = {}
        self._probes: dict[str, socket.socket] = {}
        self.ports: dict[str, int] = {}  # SOURCE.udp / SOURCE.tcp -> port, for port 0
        self._forward_dropped = self.metrics.counter(
            "logpipe_metadata_forward_dropped_total", "Announcements a worker's channel had no room for", ()
        ).labels()
        metadata = config.sources_of(MetadataSource)
        self.table = _ForwardingTable(
            max((m.max_entries for m in metadata.values()), default=100_000),
            next(iter(metadata.values())).ttl_s if metadata else 600,
            self.metrics,
            forward=self._forward,
        )
        from ..sources.metadata import RESULTS
        from .assemble import build_source

        # The supervisor's own graph is only its metadata sources, feeding the forwarding table.
        graph = Graph(config, self.metrics, self.table, None, None, {}, {})  # type: ignore[arg-type]
        self.announcers = [build_source(name, m, graph) for name, m in metadata.items() if m.udp or m.nats]
        family = self.metrics.counter("logpipe_metadata_announcements_total", "Announcements received, by result", ("result",))
        for result in RESULTS:
            family.labels(result)
        self.api_address: tuple[str, int] | None = None
        self._runner = None

    # --- metadata fan-out -------------------------------------------------------------

    def _forward(self, ann: Any) -> None:
        data = pickle.dumps(ann)
        for worker in self.workers:
            self._send(worker, data)

    def _send(self, worker: _Worker, data: bytes) -> None:
        if worker.channel is None:
            return
        try:
            worker.channel.send(data)
        except (BlockingIOError, OSError):
            self._forward_dropped.inc()

    def _replay_table(self, worker: _Worker) -> None:
        """A (re)started worker learns every entry the supervisor's table holds."""
        for ann in list(self.table.latest.values()):
            self._send(worker, pickle.dumps(ann))

    # --- ports ------------------------------------------------------------------------

    def _resolve_ports(self) -> None:
        for name, syslog in self.config.sources_of(SyslogSource).items():
            for protocol, address in (("udp", syslog.udp), ("tcp", syslog.tcp)):
                if address:
                    self._resolve_port(f"{name}.{protocol}", protocol, address)

    def _resolve_port(self, key: str, protocol: str, address: str) -> None:
        host, port = parse_address(address)
        if port == 0:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
            probe = socket.socket(family, kind)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind((host, 0))
            port = probe.getsockname()[1]
            self._probes[key] = probe
            self.ports[key] = port
        self.listeners[key] = f"{host}:{port}"

    # --- workers ----------------------------------------------------------------------

    async def _spawn(self, worker: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        parent.setblocking(False)
        for s in (parent, child):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        argv = [sys.executable, "-m", "logpipe", "run", "-c", self.config_path,
                "--worker", str(worker.index), "--workers", str(self.n), "--worker-fd", str(child.fileno())]
        for key, port in self.ports.items():
            argv += ["--worker-port", f"{key}={port}"]
        worker.api = None
        worker.channel = parent
        worker.started_at = time.monotonic()
        worker.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(child.fileno(),), preexec_fn=_die_with_parent)
        child.close()
        self._replay_table(worker)
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_worker_message, worker, parent)
        self.log.info("worker_started", worker=worker.index, pid=worker.proc.pid)

    def _on_worker_message(self, worker: _Worker, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, OSError):
            return
        if data.startswith(b"api "):
            worker.api = data[4:].decode()
            worker.ever_ready = True
            if all(w.api for w in self.workers):
                for key in [k for k in self._probes if k.endswith(".udp")]:
                    self._probes.pop(key).close()

    def _close_channel(self, worker: _Worker) -> None:
        if worker.channel is not None:
            try:
                asyncio.get_running_loop().remove_reader(worker.channel.fileno())
            except Exception:
                pass
            worker.channel.close()
            worker.channel = None
        worker.api = None

    async def _keep_running(self, worker: _Worker) -> None:
        backoff = _RESTART_INITIAL_S
        while True:
            await self._spawn(worker)
            assert worker.proc is not None
            code = await worker.proc.wait()
            self._close_channel(worker)
            if self.stopping:
                self.log.info("worker_stopped", worker=worker.index, code=code)
                return
            if not worker.ever_ready:
                # It never started (a port it cannot bind, a data_dir it cannot write): as
                # without workers, the daemon stops with exit 1 instead of retrying forever.
                self.log.error("worker_start_failed", worker=worker.index, code=code,
                               hint="the worker's own log above says why")
                self.failed = True
                self.request_stop()
                return
            if time.monotonic() - worker.started_at > _STABLE_AFTER_S:
                backoff = _RESTART_INITIAL_S
            self.log.error("worker_died", worker=worker.index, code=code, restart_in_s=backoff)
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
                return  # stopping meanwhile
            except TimeoutError:
                pass
            backoff = min(backoff * 2, _RESTART_MAX_S)
            worker.restarts += 1

    def _signal_workers(self, sig: int) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                try:
                    worker.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def request_stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop.set()
            self.log.info("stopping", workers=self.n)
        self._signal_workers(signal.SIGTERM)

    def _warn_orphans(self) -> None:
        root = os.path.join(self.config.daemon.data_dir, "workers")
        try:
            names = os.listdir(root)
        except OSError:
            return
        for name in names:
            if name.startswith("w") and name[1:].isdigit() and int(name[1:]) >= self.n:
                # Not drained by anyone: start with daemon.workers > that number to replay it.
                self.log.error("worker_data_not_drained", path=os.path.join(root, name), workers=self.n,
                               hint=f"run once with daemon.workers >= {int(name[1:]) + 1} to replay its buffers")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._signal_workers, signal.SIGHUP)
        cpus = os.cpu_count() or 1
        if self.n > cpus:
            self.log.warning("workers_exceed_cpus", workers=self.n, cpus=cpus)
        from .preflight import StartError, environment_problems, lock_data_dir

        problems = environment_problems(self.config)
        if problems:
            raise StartError("; ".join(problems))
        os.makedirs(self.config.daemon.data_dir, exist_ok=True)
        self._lock_fd = lock_data_dir(self.config.daemon.data_dir)  # held until the process exits
        self._warn_orphans()
        self._resolve_ports()
        if self.config.api.address:
            await self._start_api(self.config.api.address)
        for announcer in self.announcers:
            await announcer.start()
            for key, (host, port) in announcer.addresses.items():
                self.listeners[f"{announcer.name}.{key}"] = f"{host}:{port}"
        tasks = [asyncio.create_task(self._keep_running(w)) for w in self.workers]
        self.log.info("started", workers=self.n, pid=os.getpid())
        await asyncio.gather(*tasks)
        for announcer in self.announcers:
            await announcer.stop()
        for probe in self._probes.values():
            probe.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.log.info("stopped")

    # --- API ------------------------------------------------------------------------

    async def _start_api(self, listen: str) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/stats", self._stats)
        app.router.add_get("/api/tap", self._tap)
        app.router.add_post("/api/reload", self._reload)
        host, port = parse_address(listen)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sock = server.sockets[0] if server and server.sockets else None  # type: ignore[union-attr]
        self.api_address = sock.getsockname()[:2] if sock else (host, port)
        self.log.info("listening", component="api", protocol="http", address=f"{self.api_address[0]}:{self.api_address[1]}")

    async def _scrape(self, path: str) -> list[tuple[_Worker, int | None, bytes]]:
        import aiohttp

        async def one(session: aiohttp.ClientSession, worker: _Worker):
            if not worker.api:
                return worker, None, b""
            try:
                async with session.get(f"http://{worker.api}{path}") as resp:
                    return worker, resp.status, await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                return worker, None, b""

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            return list(await asyncio.gather(*(one(session, w) for w in self.workers)))

    async def _health(self, _request):
        from aiohttp import web

        problems = []
        for worker, status, body in await self._scrape("/health"):
            if status is None:
                problems.append(f"worker {worker.index} is down")
            elif status != 200:
                try:
                    inner = msgspec.json.decode(body).get("problems", [])
                except Exception:
                    inner = []
                problems += [f"worker {worker.index}: {p}" for p in inner] or [f"worker {worker.index} unhealthy"]
        if problems:
            return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
        return web.json_response({"status": "ok"})

    async def _metrics(self, _request):
        from aiohttp import web

        texts = [self.metrics.render()] + [body.decode() for _, status, body in await self._scrape("/metrics") if status == 200]
        return web.Response(text=sum_prometheus(texts), content_type="text/plain", charset="utf-8")

    async def _stats(self, _request):
        from aiohttp import web

        per_worker = []
        for worker, status, body in await self._scrape("/api/stats"):
            stats = msgspec.json.decode(body) if status == 200 else None
            per_worker.append((worker, stats))
        out: dict[str, Any] = {"uptime_s": round(time.time() - self.started, 3)}
        own: dict[str, Any] = {}
        for family in self.metrics.families():
            own[family.name] = {
                (",".join(f"{k}={v}" for k, v in zip(family.labelnames, labels, strict=True)) or "_"): value
                for labels, value in family.items()
            }
        merged: dict[str, Any] = own
        sinks: dict[str, Any] = {}
        for _, stats in per_worker:
            if stats is None:
                continue
            merged = sum_trees(merged, stats.get("metrics", {}))
            for name, sink in stats.get("sinks", {}).items():
                acc = sinks.setdefault(name, {"type": sink.get("type"), "buffer_events": 0, "buffer_bytes": 0,
                                              "buffer_max_bytes": 0, "failing": False, "last_error": None})
                for key in ("buffer_events", "buffer_bytes", "buffer_max_bytes"):
                    acc[key] += sink.get(key) or 0
                acc["failing"] = acc["failing"] or bool(sink.get("failing"))
                acc["last_error"] = acc["last_error"] or sink.get("last_error")
        out["metrics"] = merged
        # Listeners appear once every worker is up: a client may then rely on them.
        all_up = all(stats is not None for _, stats in per_worker)
        out["listeners"] = dict(self.listeners) if all_up else {}
        out["sinks"] = sinks
        out["metadata_entries"] = len(self.table)
        out["workers"] = [
            {"worker": w.index, "pid": w.proc.pid if w.proc else None, "api": w.api, "up": stats is not None,
             "restarts": w.restarts, "metrics": stats.get("metrics") if stats else None}
            for w, stats in per_worker
        ]
        return web.json_response(out)


    async def _reload(self, _request):
        """Every worker reloads the file; refused if any worker refuses (they read the same
        file, so they agree unless it changed in between). The supervisor's own settings
        (workers, metadata listener, API address) need a restart, as with SIGHUP."""
        import aiohttp
        from aiohttp import web

        async def one(session: aiohttp.ClientSession, worker: _Worker) -> list[str]:
            if not worker.api:
                return [f"worker {worker.index} is down"]
            try:
                async with session.post(f"http://{worker.api}/api/reload") as resp:
                    if resp.status == 200:
                        return []
                    body = msgspec.json.decode(await resp.read())
                    return [f"worker {worker.index}: {p}" for p in body.get("problems", [])] or [
                        f"worker {worker.index}: HTTP {resp.status}"]
            except (aiohttp.ClientError, TimeoutError, OSError, msgspec.DecodeError) as e:
                return [f"worker {worker.index}: {type(e).__name__}: {e}"]

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            results = await asyncio.gather(*(one(session, w) for w in self.workers))
        problems = [p for result in results for p in result]
        if problems:
            return web.json_response({"status": "refused", "problems": problems}, status=400)
        return web.json_response({"status": "reloaded", "workers": len(self.workers)})

    async def _tap(self, request):
        """The workers' taps merged into one stream: each worker samples ``rate / N`` so the
        client gets about ``rate`` in all; ``limit`` counts the merged lines."""
        import aiohttp
        from aiohttp import web

        query = dict(request.query)
        try:
            limit = int(query.get("limit", "0"))
            rate = float(query.get("rate", "10"))
            if limit < 0 or rate <= 0:
                raise ValueError
        except ValueError:
            return web.json_response({"error": "limit must be an integer >= 0 and rate a number > 0"}, status=400)
        live = [w for w in self.workers if w.api]
        if not live:
            return web.json_response({"error": "no worker is up"}, status=503)
        query["rate"] = str(rate / len(live))
        query.pop("limit", None)
        lines: asyncio.Queue = asyncio.Queue(maxsize=1024)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))

        async def follow(worker: _Worker) -> None:
            try:
                async with session.get(f"http://{worker.api}/api/tap", params=query) as resp:
                    if resp.status != 200:
                        await lines.put(await resp.read())  # e.g. unknown sink: the client sees why
                        return
                    async for line in resp.content:
                        await lines.put(line)
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass  # a worker restarting ends its part of the stream

        readers = [asyncio.create_task(follow(w)) for w in live]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        sent = 0
        pending = set(readers)
        try:
            while not limit or sent < limit:
                if lines.empty():
                    pending = {r for r in pending if not r.done()}
                    if not pending:
                        break  # every worker's stream ended and all was passed on
                    getter = asyncio.ensure_future(lines.get())
                    done, _ = await asyncio.wait({getter, *pending}, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        continue
                    line = getter.result()
                else:
                    line = lines.get_nowait()
                await response.write(line if line.endswith(b"\n") else line + b"\n")
                sent += 1
        except ConnectionResetError:
            pass  # the client went away
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await session.close()
        return response


def run_supervisor(config: Config, config_path: str) -> int:
    import uvloop

    supervisor = Supervisor(config, os.path.abspath(config_path))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(supervisor.run())
    return 1 if supervisor.failed else 0
