"""End-to-end benchmark: syslog in over loopback, out to a real VictoriaLogs and to a fast
counting HTTP sink; logpipe and syslog-ng through the identical load in the same run.

What it measures, per shipper and destination (everything on 127.0.0.1):
- TCP, full speed, one connection: lines/s and MB/s from the first byte sent to the last
  line acknowledged by the destination, and "steady" lines/s between 10 % and 90 % of the
  lines acknowledged (without the start and the last partial batch's max_age, a fixed second
  or so that dilutes a run of a few seconds); CPU seconds of the shipper process per million
  lines (/proc/PID/stat utime+stime); its peak RSS (VmHWM); p50/p99 latency from send to
  arrival at the counting sink (a sample of lines carries ``bseq=N``; the sender records
  when each was handed to the kernel, the sink when it arrived).
- Into VictoriaLogs the count is its ``vl_rows_ingested_total``, which it serves from a
  cache refreshed at most once a second (``lib/appmetrics``): a run's end is known to 1 s,
  so lines/s into it is quantized (1,000,000 / whole seconds, near enough) and
  ``--lines 3000000`` keeps that under ~4 %. The first read after a refresh is fresh, so the
  steady rate, taken between two such reads, is not quantized. On shared cores the rates
  go as the inverse of shipper + store CPU per line, printed as the last ratio.
- UDP at fixed rates with ``loggen`` (no flow control anywhere): lines lost, kernel drops
  of the listening socket (/proc/net/udp; for logpipe also its
  ``logpipe_udp_kernel_drops_total``).

The corpus: loghub messages (``/work/shared/corpus/loghub`` or ``$LOGPIPE_CORPUS``) dressed
as RFC 3164 and RFC 5424 (some with structured data), with plain, JSON and logfmt bodies,
from a few hundred containers announced to logpipe's metadata listener (enrichment on).
syslog-ng has no metadata join: it does strictly less work per line.

syslog-ng traps handled here: 3.38 does not tell RFC 3164 from 5424 on one port, so the
source takes raw lines (``flags(no-parse)``) and the log path picks the parser per message;
its UDP path stalls under flow control, so only the TCP path uses ``flags(flow-control)``.

Run: ``.venv/bin/python benchmarks/bench_e2e.py`` (small default) or ``--lines 1000000``.
Environment: ``BENCH_HOLD_MS=N`` sets logpipe's ``enrich.hold_ms``; ``BENCH_SINK_EXTRA`` is
appended to logpipe's sink table (e.g. ``batch = { max_events = 20000, max_bytes = 8000000 }``);
``BENCH_SINK_SAMPLE=FILE`` appends a few rows of every 50th request the counting sink gets; ``BENCH_PYSPY=FILE``
records a py-spy profile (raw collapsed stacks) of the daemon during each logpipe TCP run;
``BENCH_VL_PPROF=PREFIX`` saves VictoriaLogs' Go CPU profile of the first ``BENCH_VL_PPROF_S``
(6) seconds of each run into VictoriaLogs as ``PREFIX-<shipper>.pb.gz`` (``go tool pprof -top``).
Needs LOGPIPE_VICTORIALOGS_BIN (else the VictoriaLogs rows are skipped) and syslog-ng +
loggen (apt: syslog-ng-core syslog-ng-mod-http; else its rows are skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

MARKER = re.compile(rb"bseq=(\d+)")
CHUNK = 64 * 1024
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --------------------------------------------------------------------------- corpus


def loghub_messages(corpus_dir: str) -> list[str]:
    messages = []
    for root, _dirs, files in sorted(os.walk(corpus_dir)):
        for name in sorted(files):
            if name.endswith(".log"):
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                    messages += [line.rstrip("\n") for line in f if line.strip()]
    if not messages:
        raise SystemExit(f"no *.log files under {corpus_dir}")
    return messages


def containers(n: int, rng: random.Random) -> list[dict]:
    services = ["api", "web", "worker", "auth", "billing", "search", "cache", "gateway", "cron", "mailer"]
    out = []
    for i in range(n):
        cid = "%064x" % rng.getrandbits(256)
        svc = services[i % len(services)]
        # "ip": "" = no ip: otherwise the announcement's source (127.0.0.1, like the syslog
        # sender's) would become the entry's ip and every line would join the last one.
        # The issue's announcement: service, service id, container id (a Swarm task's).
        out.append({"ip": "", "container_id": cid, "hostname": cid[:12], "service": svc,
                    "service_id": "%025x" % rng.getrandbits(100)})
    return out


def build_corpus(n_lines: int, messages: list[str], hosts: list[str], seed: int = 1, mark_every: int = 500) -> bytes:
    """``n_lines`` newline-terminated syslog lines; every ``mark_every``-th plain-body line
    carries ``bseq=N`` (N = its index) for latency sampling."""
    rng = random.Random(seed)
    now = time.time()
    tm = time.gmtime(now)
    bsd = f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
    apps = ["nginx", "sshd", "kernel", "app", "java", "postgres", "dockerd", "systemd"]
    out = []
    for i in range(n_lines):
        msg = messages[rng.randrange(len(messages))]
        host = hosts[rng.randrange(len(hosts))]
        app = apps[i % len(apps)]
        pri = 8 * rng.choice((1, 3, 4, 16, 23)) + rng.choice((3, 4, 6, 6, 6, 7))
        kind = rng.random()
        if kind < 0.6:
            body = msg + (f" bseq={i}" if i % mark_every == 0 else "")
        elif kind < 0.8:
            body = json.dumps({"level": "info", "msg": msg, "req_id": "%08x" % rng.getrandbits(32),
                               "dur_ms": rng.randrange(1000)})
        else:
            quoted = msg.replace("\\", "\\\\").replace('"', '\\"')
            body = f'level=warn msg="{quoted}" req_id={rng.getrandbits(32):08x} dur_ms={rng.randrange(1000)}'
        if rng.random() < 0.5:
            line = f"<{pri}>{bsd} {host} {app}[{rng.randrange(1, 32768)}]: {body}"
        else:
            frac = f".{rng.randrange(1000000):06d}Z"
            sd = f'[meta@32473 seq="{i}" zone="eu-{i % 3}"]' if rng.random() < 0.3 else "-"
            line = f"<{pri}>1 {iso}{frac} {host} {app} {rng.randrange(1, 32768)} - {sd} {body}"
        out.append(line)
    return ("\n".join(out) + "\n").encode()


# --------------------------------------------------------------------------- counting sink (subprocess)


def run_sink(port_file: str) -> None:
    """A fast HTTP sink: counts lines of every POST body (gzip or not), records arrival
    times of marked lines, answers 204. GET /stats returns the counts as JSON."""
    import asyncio

    import uvloop
    from aiohttp import web

    sample_path = os.environ.get("BENCH_SINK_SAMPLE")
    state = {"lines": 0, "bytes": 0, "requests": 0, "first": None, "last": None, "arrivals": {}}

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has already undone Content-Encoding: gzip
        now = time.time()
        if body:
            n = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
            state["lines"] += n
            state["bytes"] += len(body)
            state["requests"] += 1
            if sample_path and state["requests"] % 50 == 1:  # a few rows as the destination gets them
                with open(sample_path, "ab") as f:
                    f.write(b"\n".join(body.split(b"\n", 5)[:5]) + b"\n")
            if state["first"] is None:
                state["first"] = now
            state["last"] = now
            if b"bseq=" in body:
                arrivals = state["arrivals"]
                for m in MARKER.finditer(body):
                    arrivals.setdefault(int(m.group(1)), now)
        return web.Response(status=204)

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(_request: web.Request) -> web.Response:
        state.update(lines=0, bytes=0, requests=0, first=None, last=None, arrivals={})
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", reset)
        app.router.add_get("/health", lambda r: web.Response(text="OK"))
        app.router.add_post("/{tail:.*}", ingest)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.rename(port_file + ".tmp", port_file)
        await asyncio.Event().wait()

    uvloop.run(main())


class CountingSink:
    def __init__(self, workdir: str) -> None:
        port_file = os.path.join(workdir, "sink.port")
        self.proc = subprocess.Popen([sys.executable, __file__, "--_sink", port_file])
        wait(lambda: os.path.exists(port_file), 20, "counting sink")
        with open(port_file) as f:
            self.port = int(f.read())
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as r:
            return json.load(r)

    def lines(self) -> int:
        return self.stats()["lines"]

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/reset", method="POST"), timeout=10).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --------------------------------------------------------------------------- TCP sender (subprocess)


def run_sender(host: str, port: int, corpus_path: str, out_path: str) -> None:
    """Send the corpus over one TCP connection as fast as the receiver takes it; write
    {start, end, sent: {seq: time handed to the kernel}} to out_path."""
    with open(corpus_path, "rb") as f:
        data = f.read()
    chunks = []
    pos = 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + CHUNK)
        end = len(data) if end < 0 or pos + CHUNK >= len(data) else end + 1
        chunk = data[pos:end]
        chunks.append((chunk, [int(m.group(1)) for m in MARKER.finditer(chunk)]))
        pos = end
    # BENCH_CONNECTIONS=K spreads the chunks round robin over K connections (daemon.workers
    # > 1: the kernel hands each connection to one worker, so one connection uses one worker).
    socks = [socket.create_connection((host, port)) for _ in range(int(os.environ.get("BENCH_CONNECTIONS", "1")))]
    sent: dict[int, float] = {}
    start = time.time()
    for i, (chunk, seqs) in enumerate(chunks):
        socks[i % len(socks)].sendall(chunk)
        if seqs:
            now = time.time()
            for s in seqs:
                sent[s] = now
    end = time.time()
    for sock in socks:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(60)
        try:
            sock.recv(1)  # the daemon closes after reading everything
        except OSError:
            pass
        sock.close()
    with open(out_path, "w") as f:
        json.dump({"start": start, "end": end, "sent": sent}, f)


# --------------------------------------------------------------------------- process figures


def _children(pid: int) -> list[int]:
    """Live child processes (logpipe's workers with daemon.workers > 1)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """The process and its live children (the supervisor plus its workers)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (all threads)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    except OSError:
        pass
    return total / 1e9


def disk_write_bytes(pid: int) -> int:
    """Bytes the process and its children sent to storage: written minus the dirty pages of
    files truncated or deleted before they were written back (/proc/PID/io)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/io") as f:
                io = dict(line.split(": ") for line in f.read().splitlines())
        except OSError:
            continue
        total += int(io["write_bytes"]) - int(io["cancelled_write_bytes"])
    return total


def peak_rss_mb(pid: int) -> float:
    """Peak RSS of the process, or of its largest child (per worker) if that is larger."""
    peak = float("nan")
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        value = int(line.split()[1]) / 1024
                        peak = value if peak != peak else max(peak, value)
        except OSError:
            continue
    return peak


def udp_drops(port: int) -> int:
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port:
                        total += int(cols[12])
        except (OSError, StopIteration):
            pass
    return total


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        threading.Event().wait(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_count(count, target: int, idle_timeout: float = 15.0, poll: float = 0.05,
               samples: list | None = None) -> tuple[int, float]:
    """Poll ``count()`` until it reaches ``target`` or stops moving for ``idle_timeout``;
    returns (count, time it last moved). Each change is appended to ``samples`` as (time, count)."""
    last, last_change = count(), time.time()
    while last < target:
        threading.Event().wait(poll)
        now_count = count()
        if now_count != last:
            last, last_change = now_count, time.time()
            if samples is not None:
                samples.append((last_change, now_count))
        elif time.time() - last_change > idle_timeout:
            break
    return last, last_change


# --------------------------------------------------------------------------- VictoriaLogs


class VictoriaLogs:
    def __init__(self, binary: str, workdir: str) -> None:
        from tests.helpers import VictoriaLogsServer

        self.data = tempfile.mkdtemp(prefix="vl-", dir=workdir)
        self.server = VictoriaLogsServer(binary, self.data)
        self.server.start()
        self.url = self.server.url

    def rows(self) -> int:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith("vl_rows_ingested_total"))

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.data, ignore_errors=True)


# --------------------------------------------------------------------------- shippers


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


def dump_toml(doc: dict) -> str:
    """A logpipe config's shape: top-level tables, [sources.NAME] and [sinks.NAME] tables,
    everything deeper inline."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for key, value in doc.items():
        if not isinstance(value, dict):
            continue
        named = key in ("sources", "sinks")
        tables = [(f"{key}.{json.dumps(n)}", t) for n, t in value.items()] if named else [(key, value)]
        for header, table in tables:
            lines.append(f"[{header}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def shipped_config(path: str, data_dir: str, sink_url: str, buffer: str, streams: str = "config") -> str:
    """``path`` as a user ships it, made runnable here: listeners on ephemeral loopback ports,
    every HTTP sink pointed at this run's destination, data_dir a temp dir; with buffer
    "config" each sink keeps the file's buffer, otherwise it gets that one; with streams
    "config" each VictoriaLogs sink keeps the file's ``stream_fields``, "none" sets none,
    and "a+b" sets ["a", "b"]."""
    import tomllib

    with open(path, "rb") as f:
        doc = tomllib.load(f)
    doc.setdefault("daemon", {})["data_dir"] = data_dir
    doc["daemon"]["log_format"] = "json"
    doc["daemon"]["log_level"] = "info"
    doc.setdefault("api", {})["listen"] = "127.0.0.1:0"
    for source in doc.get("sources", {}).values():
        for key in ("udp", "tcp"):
            if key in source:
                source[key] = "127.0.0.1:0"
    for sink in doc.get("sinks", {}).values():
        sink.pop("endpoints", None)
        sink["url"] = sink_url
        if buffer != "config":
            sink["buffer"] = buffer_config(buffer)
        if streams != "config" and sink.get("type") == "victorialogs":
            sink["stream_fields"] = [] if streams == "none" else streams.split("+")
    return dump_toml(doc)


def buffer_config(buffer: str) -> dict:
    kind, _, mb = buffer.partition(":")  # "memory", "disk", "memory:32" = max_bytes in MiB
    max_bytes = int(mb) * 1024 * 1024 if mb else (256 if kind == "memory" else 2048) * 1024 * 1024
    return {"type": kind, "max_bytes": max_bytes, "when_full": "block"}


class Logpipe:
    name = "logpipe"

    def __init__(self, workdir: str, sink_url: str, compression: str, buffer: str, containers: list[dict],
                 workers: int = 1, concurrency: int = 1, config_path: str | None = None,
                 code_tree: str | None = None, streams: str = "config") -> None:
        from tests.helpers import DaemonProcess

        self.dir = tempfile.mkdtemp(prefix="logpipe-", dir=workdir)
        buffer_conf = _toml_value(buffer_config(buffer)) if buffer != "config" else ""
        workers_line = f"workers = {workers}\n" if workers > 1 else ""
        hold_line = f"hold_ms = {os.environ['BENCH_HOLD_MS']}\n" if os.environ.get("BENCH_HOLD_MS") else ""
        config = f"""
[daemon]
data_dir = "{self.dir}/data"
log_format = "json"
log_level = "info"
{workers_line}
[api]
listen = "127.0.0.1:0"
[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
[sources.metadata]
udp = "127.0.0.1:0"
[enrich]
match_on = ["source_ip=ip", "hostname=hostname", "hostname=container_id", "app_name=container_id"]
{hold_line}[sinks.out]
type = "victorialogs"
url = "{sink_url}"
compression = "{compression}"
concurrency = {concurrency}
buffer = {buffer_conf}
{os.environ.get("BENCH_SINK_EXTRA", "")}
"""
        if config_path:
            config = shipped_config(config_path, f"{self.dir}/data", sink_url, buffer, streams)
        # code_tree: another checkout's logpipe (a "before"), imported first by the daemon.
        saved = os.environ.get("PYTHONPATH")
        if code_tree:
            os.environ["PYTHONPATH"] = code_tree
        try:
            self.daemon = DaemonProcess(self.dir, config)
        finally:
            if code_tree:
                if saved is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = saved
        try:
            self._announce(containers)
        except BaseException:
            self.daemon.kill()
            raise
        self.pid = self.daemon.proc.pid
        self.tcp = self.daemon.tcp
        self.udp = self.daemon.udp

    def _announce(self, containers: list[dict]) -> None:
        # Announced in groups of 50, each confirmed: a burst of hundreds of datagrams
        # overflows the metadata socket's default receive buffer (seen: 176 of 300 kept).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for start in range(0, len(containers), 50):
                group = containers[start:start + 50]
                want = start + len(group)
                for _attempt in range(20):
                    for c in group:
                        s.sendto(json.dumps(c).encode(), self.daemon.metadata)
                    try:
                        wait(lambda want=want: self.daemon.stats()["metadata_entries"] >= want, 1, "announcements")
                        break
                    except SystemExit:
                        continue
        wait(lambda: self.daemon.stats()["metadata_entries"] >= len(containers), 10, "announcements")

    def kernel_drops_metric(self) -> float:
        metrics = self.daemon.stats()["metrics"].get("logpipe_udp_kernel_drops_total", {})
        return sum(metrics.values()) if isinstance(metrics, dict) else metrics

    def stop(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


SYSLOG_NG_CONF = """@version: 3.38
options {{ stats_freq(0); keep-hostname(yes); log-fifo-size(400000); threaded(yes); }};
source s_tcp {{ network(ip(127.0.0.1) port({tcp}) transport("tcp") flags(no-parse) log-iw-size(100000)
                        max-connections(1) log-msg-size(65536)); }};
source s_udp {{ network(ip(127.0.0.1) port({udp}) transport("udp") flags(no-parse) so-rcvbuf(33554432)
                        log-msg-size(65536)); }};
destination d_http {{ http(url("{url}/insert/jsonline?_msg_field=MESSAGE&_time_field=ISODATE")
    method("POST") headers("Content-Type: application/stream+json") workers(2)
    batch-lines(5000) batch-bytes(4MB) batch-timeout(1000)
    body("$(format-json --scope rfc5424 --scope nv-pairs --exclude DATE --key ISODATE)")); }};
log {{ source(s_tcp);
      if (message("^<[0-9]{{1,3}}>[1-9] ")) {{ parser {{ syslog-parser(flags(syslog-protocol)); }}; }}
      else {{ parser {{ syslog-parser(); }}; }};
      destination(d_http); flags(flow-control); }};
log {{ source(s_udp);
      if (message("^<[0-9]{{1,3}}>[1-9] ")) {{ parser {{ syslog-parser(flags(syslog-protocol)); }}; }}
      else {{ parser {{ syslog-parser(); }}; }};
      destination(d_http); }};
"""


class SyslogNg:
    name = "syslog-ng"

    def __init__(self, workdir: str, sink_url: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="syslog-ng-", dir=workdir)
        tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
        conf = os.path.join(self.dir, "syslog-ng.conf")
        with open(conf, "w") as f:
            f.write(SYSLOG_NG_CONF.format(tcp=tcp, udp=udp, url=sink_url))
        self.log = open(os.path.join(self.dir, "syslog-ng.log"), "wb")
        self.proc = subprocess.Popen(
            ["syslog-ng", "-F", "--no-caps", "-f", conf, "-R", os.path.join(self.dir, "persist"),
             "-p", os.path.join(self.dir, "pid"), "-c", os.path.join(self.dir, "ctl")],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.tcp = ("127.0.0.1", tcp)
        self.udp = ("127.0.0.1", udp)

        def listening() -> bool:
            if self.proc.poll() is not None:
                with open(os.path.join(self.dir, "syslog-ng.log"), "rb") as f:
                    raise SystemExit("syslog-ng exited: " + f.read().decode(errors="replace")[-2000:])
            try:
                socket.create_connection(self.tcp, timeout=0.5).close()
                return True
            except OSError:
                return False

        wait(listening, 20, "syslog-ng to listen")

    def kernel_drops_metric(self) -> float:
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- runs


def tcp_run(shipper, count, n_lines: int, corpus_path: str, corpus_bytes: int, workdir: str, sink=None,
            dest_pid: int | None = None) -> dict:
    out = os.path.join(workdir, "sender.json")
    base = count()
    stats0 = sink.stats() if sink is not None else {"bytes": 0, "requests": 0}
    cpu0 = cpu_seconds(shipper.pid)
    dest_cpu0 = cpu_seconds(dest_pid) if dest_pid else 0.0
    wait0 = runqueue_wait_s(shipper.pid)
    disk0 = disk_write_bytes(shipper.pid)
    profiler = None
    if os.environ.get("BENCH_PYSPY") and shipper.name == "logpipe":  # profile the daemon under this load
        profiler = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-p", str(shipper.pid),
                                     "-o", os.environ["BENCH_PYSPY"], "-f", "raw", "-r", "200"], stdout=subprocess.DEVNULL)
        threading.Event().wait(1.0)
    vl_profile = None
    if os.environ.get("BENCH_VL_PPROF") and isinstance(getattr(count, "__self__", None), VictoriaLogs):
        # VictoriaLogs' own CPU profile over the first seconds of this load (go tool pprof -top FILE)
        path = f"{os.environ['BENCH_VL_PPROF']}-{shipper.name}.pb.gz"
        url = count.__self__.url + "/debug/pprof/profile?seconds=" + os.environ.get("BENCH_VL_PPROF_S", "6")
        vl_profile = threading.Thread(target=lambda: open(path, "wb").write(urllib.request.urlopen(url, timeout=60).read()))
        vl_profile.start()
    sender = subprocess.Popen([sys.executable, __file__, "--_send", shipper.tcp[0], str(shipper.tcp[1]), corpus_path, out])
    progress: list[tuple[float, int]] = []
    arrived, last = wait_count(lambda: count() - base, n_lines, idle_timeout=20, samples=progress)
    cpu1 = cpu_seconds(shipper.pid)
    wait1 = runqueue_wait_s(shipper.pid)
    disk1 = disk_write_bytes(shipper.pid)
    dest_cpu1 = cpu_seconds(dest_pid) if dest_pid else 0.0
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)
    sender.wait(60)
    if vl_profile is not None:
        vl_profile.join(60)
    with open(out) as f:
        sent = json.load(f)
    if os.environ.get("BENCH_PROGRESS"):  # (seconds since the first byte, lines acknowledged)
        with open(os.environ["BENCH_PROGRESS"], "a") as f:
            f.write(json.dumps({"shipper": shipper.name, "sent_end": sent["end"] - sent["start"],
                                "progress": [(round(t - sent["start"], 3), n) for t, n in progress]}) + "\n")
    elapsed = last - sent["start"]
    row = {
        "lines": arrived,
        "lost": n_lines - arrived,
        "lines_s": arrived / elapsed,
        "steady_lines_s": steady_rate(progress, n_lines),
        "mb_s": corpus_bytes / elapsed / 1e6,
        "cpu_s_per_m": (cpu1 - cpu0) / max(arrived, 1) * 1e6,
        "rss_mb": peak_rss_mb(shipper.pid),
        "disk_mb": (disk1 - disk0) / 1e6,
        # share of the run the shipper could have run but waited for a CPU: other load
        "cpu_share": (cpu1 - cpu0) / elapsed,
        "runq_share": (wait1 - wait0) / elapsed,
        # the destination's own CPU per line (VictoriaLogs; the counting sink is not measured)
        "dest_cpu_s_per_m": (dest_cpu1 - dest_cpu0) / max(arrived, 1) * 1e6 if dest_pid else None,
    }
    if sink is not None:
        stats = sink.stats()
        # what the destination parses per line: request body bytes (after gzip is undone)
        row["body_bytes_per_line"] = (stats["bytes"] - stats0["bytes"]) / max(arrived, 1)
        row["lines_per_request"] = arrived / max(stats["requests"] - stats0["requests"], 1)
        arrivals = stats["arrivals"]
        lat = sorted(arrivals[k] - t for k, t in sent["sent"].items() if k in arrivals)
        if lat:
            row["p50_ms"] = 1000 * statistics.median(lat)
            row["p99_ms"] = 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return row


def steady_rate(progress: list[tuple[float, int]], n_lines: int) -> float | None:
    """Lines/s between 10 % and 90 % of the lines acknowledged: the rate without the start
    (connection, first batch) and the tail (the last partial batch waits its max_age), which
    a fixed second or two of a run that lasts seconds would otherwise dilute."""
    t10 = next((t for t, n in progress if n >= 0.1 * n_lines), None)
    t90 = next(((t, n) for t, n in progress if n >= 0.9 * n_lines), None)
    first = next((n for t, n in progress if n >= 0.1 * n_lines), None)
    if t10 is None or t90 is None or t90[0] <= t10:
        return None
    return (t90[1] - first) / (t90[0] - t10)


def udp_run(shipper, count, rate: int, seconds: int, corpus_path: str) -> dict:
    base = count()
    drops0 = udp_drops(shipper.udp[1])
    metric0 = shipper.kernel_drops_metric()
    cpu0 = cpu_seconds(shipper.pid)
    proc = subprocess.run(
        ["loggen", "--inet", "--dgram", "--rate", str(rate), "--interval", str(seconds), "--read-file", corpus_path,
         "--loop-reading", "--dont-parse", shipper.udp[0], str(shipper.udp[1])],
        capture_output=True, text=True, timeout=seconds + 60)
    m = re.findall(r"average rate = .*?count=(\d+)", proc.stderr + proc.stdout)
    if not m:
        raise SystemExit("loggen output not understood: " + proc.stderr[-500:])
    sent = int(m[-1])
    arrived, _ = wait_count(lambda: count() - base, sent, idle_timeout=5)
    cpu1 = cpu_seconds(shipper.pid)
    return {
        "cpu_us": (cpu1 - cpu0) / max(arrived, 1) * 1e6,
        "rate": rate, "seconds": seconds, "sent": sent, "arrived": arrived, "lost": sent - arrived,
        "loss_pct": 100.0 * (sent - arrived) / max(sent, 1),
        "kernel_drops": udp_drops(shipper.udp[1]) - drops0,
        "kernel_drops_metric": shipper.kernel_drops_metric() - metric0,
    }


def median_row(runs: list[dict]) -> dict:
    """Per-metric median of several runs; peak RSS and lost are the worst."""
    row = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            row[key] = None
        elif key in ("rss_mb", "lost"):
            row[key] = max(values)
        else:
            row[key] = statistics.median(values)
    row["runs_lines_s"] = [r["lines_s"] for r in runs]
    return row


def fmt(v, spec=",.0f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000, help="TCP lines per run (default 200,000)")
    ap.add_argument("--containers", type=int, default=300)
    ap.add_argument("--unannounced", type=int, default=-1,
                    help="hosts that never announce (their lines miss the join; default containers / 10)")
    ap.add_argument("--runs", type=int, default=1, help="TCP runs per row (fresh shipper and destination each); "
                    "the table shows medians (peak RSS: the largest)")
    ap.add_argument("--udp-rates", default="20000", help="comma-separated lines/s for UDP runs ('' to skip)")
    ap.add_argument("--udp-seconds", type=int, default=10)
    ap.add_argument("--only", default="", help="comma list of: logpipe, syslog-ng")
    ap.add_argument("--dest", default="sink,vl", help="comma list of: sink, vl")
    ap.add_argument("--compression", default="none", help="logpipe VictoriaLogs sink compression(s), comma list: none,gzip")
    ap.add_argument("--buffer", default="memory", help="logpipe buffer(s), comma list: memory, disk, memory:MiB (max_bytes; default 256 MiB memory, 2 GiB disk)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", default="2", help="logpipe sink concurrency value(s), comma list (batches in flight)")
    ap.add_argument("--config", help="run logpipe with this config file, or each of a comma list (e.g. config/victorialogs.toml), rewritten for "
                    "ephemeral loopback ports, this run's destination and a temp data_dir; --buffer 'config' keeps "
                    "its buffer, another --buffer value replaces it; --compression/--concurrency do not apply")
    ap.add_argument("--streams", default="config", help="with --config: VictoriaLogs stream_fields variant(s), comma "
                    "list: config (as the file has them), none, or fields joined by '+' (service+container_id)")
    ap.add_argument("--before", help="also run logpipe from this checkout (e.g. a worktree of 3350bb0), same variants")
    ap.add_argument("--corpus", default=os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    ap.add_argument("--_sink")
    ap.add_argument("--_send", nargs=4)
    args = ap.parse_args()
    if args._sink:
        return run_sink(args._sink)
    if args._send:
        host, port, corpus, out = args._send
        return run_sender(host, int(port), corpus, out)

    vl_bin = os.environ.get("LOGPIPE_VICTORIALOGS_BIN")
    have_ng = shutil.which("syslog-ng") and shutil.which("loggen")
    only = set(filter(None, args.only.split(","))) or {"logpipe", "syslog-ng"}
    if not have_ng:
        print("syslog-ng/loggen not installed: its rows are skipped (apt-get install syslog-ng-core syslog-ng-mod-http)")
        only.discard("syslog-ng")
    dests = set(args.dest.split(","))
    if not vl_bin:
        print("LOGPIPE_VICTORIALOGS_BIN unset: VictoriaLogs rows are skipped")
        dests.discard("vl")

    workdir = tempfile.mkdtemp(prefix="bench-e2e-")
    rng = random.Random(7)
    cs = containers(args.containers, rng)
    unannounced = args.containers // 10 if args.unannounced < 0 else args.unannounced
    hosts = [c["hostname"] for c in cs] + [f"host-{i}" for i in range(unannounced)]
    corpus = build_corpus(args.lines, loghub_messages(args.corpus), hosts)
    corpus_path = os.path.join(workdir, "corpus.log")
    with open(corpus_path, "wb") as f:
        f.write(corpus)
    print(f"corpus: {args.lines:,} lines, {len(corpus) / 1e6:.1f} MB, {args.containers} announced containers, "
          f"{unannounced} unannounced hosts; "
          f"cores: {os.cpu_count()}; python {sys.version.split()[0]}")

    sink = CountingSink(workdir)
    results: list[tuple[str, str, dict]] = []
    udp_results: list[tuple[str, dict]] = []
    try:
        variants = []
        trees = [(None, "")] + ([(os.path.abspath(args.before), "before, ")] if args.before else [])
        if "logpipe" in only and args.config:
            for tree, tag in trees:
                for config in args.config.split(","):
                    for streams in args.streams.split(","):
                        for buf in args.buffer.split(","):
                            # A "before" checkout runs its own version of the config file.
                            path = os.path.join(tree, config) if tree and not os.path.isabs(config) else config
                            label = f"logpipe ({tag}{os.path.basename(config)}" + \
                                (f", {buf} buffer" if buf != "config" else "") + \
                                ("" if streams == "config" else ", no streams" if streams == "none"
                                 else f", streams by {streams.replace('+', ', ')}") + ")"
                            variants.append((label, lambda url, buf=buf, tree=tree, path=path, streams=streams:
                                             Logpipe(workdir, url, "", buf, cs, config_path=path, code_tree=tree,
                                                     streams=streams)))
        elif "logpipe" in only:
            for tree, tag in trees:
                for comp in args.compression.split(","):
                    for buf in args.buffer.split(","):
                        for conc in map(int, args.concurrency.split(",")):
                            label = f"logpipe ({tag}{buf}" + (f", {comp}" if comp != "none" else "") + \
                                f", {conc} in flight" + (f", {args.workers} workers" if args.workers > 1 else "") + ")"
                            variants.append((label, lambda url, comp=comp, buf=buf, conc=conc, tree=tree:
                                             Logpipe(workdir, url, comp, buf, cs, args.workers, conc, code_tree=tree)))
        if "syslog-ng" in only:
            variants.append(("syslog-ng 3.38", lambda url: SyslogNg(workdir, url)))
        for dest in ("sink", "vl"):
            if dest not in dests:
                continue
            for label, make in variants:
                runs = []
                for run in range(args.runs):
                    vl = VictoriaLogs(vl_bin, workdir) if dest == "vl" else None
                    try:
                        if dest == "sink":
                            sink.reset()
                        shipper = make(sink.url if dest == "sink" else vl.url)
                        try:
                            count = sink.lines if dest == "sink" else vl.rows
                            row = tcp_run(shipper, count, args.lines, corpus_path, len(corpus), workdir,
                                          sink if dest == "sink" else None, vl.server.proc.pid if vl is not None else None)
                            runs.append(row)
                            print(f"  {label:32s} -> {dest:4s} {fmt(row['lines_s'])} lines/s, "
                                  f"{fmt(row['cpu_s_per_m'], '.2f')} CPU-s/M, {fmt(row['disk_mb'], '.0f')} MB to disk, "
                                  f"lost {row['lost']}", flush=True)
                            if dest == "sink" and args.udp_rates and run == args.runs - 1:
                                for rate in map(int, args.udp_rates.split(",")):
                                    sink.reset()
                                    u = udp_run(shipper, sink.lines, rate, args.udp_seconds, corpus_path)
                                    udp_results.append((label, u))
                                    print(f"  {label:32s} UDP {rate}/s: lost {u['lost']} of {u['sent']}", flush=True)
                        finally:
                            shipper.stop()
                    finally:
                        if vl is not None:
                            vl.stop()
                results.append((label, dest, median_row(runs)))
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"TCP, one connection, {args.lines:,} lines" + (f", median of {args.runs} runs" if args.runs > 1 else ""))
    print()
    print("| shipper | destination | lines/s | steady lines/s (10-90 %) | MB/s | body bytes per line | lines per request | CPU s per M lines | peak RSS MB | disk MB written | p50 ms | p99 ms | lost | CPU used / waited (cores) | VictoriaLogs CPU s per M lines | lines/s per run |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, dest, r in results:
        print(f"| {label} | {'counting sink' if dest == 'sink' else 'VictoriaLogs'} | {fmt(r['lines_s'])} | "
              f"{fmt(r.get('steady_lines_s'))} | {fmt(r['mb_s'], '.1f')} | {fmt(r.get('body_bytes_per_line'), '.0f')} | {fmt(r.get('lines_per_request'), '.0f')} | "
              f"{fmt(r['cpu_s_per_m'], '.2f')} | {fmt(r['rss_mb'], '.0f')} | {fmt(r.get('disk_mb'), '.0f')} | "
              f"{fmt(r.get('p50_ms'), '.0f')} | "
              f"{fmt(r.get('p99_ms'), '.0f')} | {r['lost']} | {r['cpu_share']:.2f} / {r['runq_share']:.2f} | "
              f"{fmt(r.get('dest_cpu_s_per_m'), '.2f')} | {', '.join(fmt(x) for x in r['runs_lines_s'])} |")
    ng = {dest: r for label, dest, r in results if label.startswith("syslog-ng")}
    if ng:
        print()
        print("| logpipe variant | destination | throughput / syslog-ng | steady throughput / syslog-ng | CPU per line / syslog-ng "
              "| syslog-ng's (shipper + store) CPU per line / logpipe's |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for label, dest, r in results:
            if label.startswith("logpipe") and dest in ng:
                steady = (f"{r['steady_lines_s'] / ng[dest]['steady_lines_s']:.2f}x"
                          if r.get("steady_lines_s") and ng[dest].get("steady_lines_s") else "-")
                # Where the store shares the cores, the rates go as the inverse of this sum.
                both = (f"{(ng[dest]['cpu_s_per_m'] + ng[dest]['dest_cpu_s_per_m']) / (r['cpu_s_per_m'] + r['dest_cpu_s_per_m']):.2f}x"
                        if r.get("dest_cpu_s_per_m") and ng[dest].get("dest_cpu_s_per_m") else "-")
                print(f"| {label} | {dest} | {r['lines_s'] / ng[dest]['lines_s']:.2f}x | {steady} | "
                      f"{r['cpu_s_per_m'] / ng[dest]['cpu_s_per_m']:.2f}x | {both} |")
    if any(dest == "vl" for _, dest, _ in results):
        print()
        print("VictoriaLogs serves /metrics from a cache refreshed at most once a second, so a run into it "
              "ends on a 1 s grid: its lines/s is good to 1 s of the run's length (~11 % at 1,000,000 lines, "
              "~4 % at 3,000,000). The steady column is not quantized: its two points are fresh reads.")
    if udp_results:
        print()
        print(f"UDP via loggen, {args.udp_seconds} s per rate, counting sink")
        print()
        print("| shipper | rate lines/s | sent | arrived | lost | loss % | kernel drops (/proc) | kernel drops (logpipe metric) | CPU µs per line |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, u in udp_results:
            print(f"| {label} | {u['rate']:,} | {u['sent']:,} | {u['arrived']:,} | {u['lost']:,} | {u['loss_pct']:.3f} | "
                  f"{u['kernel_drops']:,} | {fmt(u['kernel_drops_metric'])} | {u['cpu_us']:.1f} |")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
