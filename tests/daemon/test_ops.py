"""Operating a running daemon: /metrics values after a known input, /health following a
sink outage, /api/tap, `logpipe top --once`, `logpipe tap`, `logpipe validate` warnings,
and reloads (SIGHUP / POST /api/reload) during a steady TCP stream.

Real sockets on loopback throughout. The in-process tests run the Daemon in the test's
loop; the process-level ones use tests.helpers.DaemonProcess (a few seconds each).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from logpipe.api import TapHub
from logpipe.config import loads
from logpipe.logs import RepeatLimiter
from logpipe.metrics import Metrics

from ..helpers import DaemonProcess, await_until, file_messages, run_async, running, wait_until
from ..helpers import FakeVictoriaLogs as FakeInsert

SPEC_METRICS = {
    # name: label names, from the spec's "Precise rules" -> Metrics list
    "logpipe_received_events_total": ("source", "protocol"),
    "logpipe_received_bytes_total": ("source", "protocol"),
    "logpipe_parse_errors_total": ("source",),
    "logpipe_truncated_events_total": ("source",),
    "logpipe_dropped_events_total": ("stage", "reason"),
    "logpipe_metadata_entries": (),
    "logpipe_metadata_announcements_total": ("result",),
    "logpipe_enrich_total": ("result",),
    "logpipe_sent_events_total": ("sink",),
    "logpipe_sent_bytes_total": ("sink",),
    "logpipe_send_errors_total": ("sink", "retryable"),
    "logpipe_buffer_events": ("sink",),
    "logpipe_buffer_bytes": ("sink",),
    "logpipe_dead_letter_events_total": ("sink",),
    "logpipe_batch_latency_seconds": ("sink",),
    "logpipe_udp_kernel_drops_total": ("source",),
    "logpipe_batch_events": ("sink",),
}


def scrape(api: str) -> dict[str, dict[frozenset, float]]:
    """/metrics as {name: {frozenset(label pairs): value}} (histograms under _count etc.)."""
    with urllib.request.urlopen(f"http://{api}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[frozenset, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = frozenset(
            tuple(part.split("=", 1)) for part in labels.rstrip("}").replace('"', "").split(",") if "=" in part
        )
        out.setdefault(name, {})[pairs] = float(value)
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get(name, {}).get(frozenset(labels.items()), 0.0)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def base_config(data_dir: str, extra: str = "", sink: str = 'type = "file"\npath = "delivered"') -> str:
    return f"""
[daemon]
data_dir = "{data_dir}"
log_format = "json"
shutdown_timeout_s = 2

[api]
listen = "127.0.0.1:0"
unhealthy_after_s = 0.3

[sources.syslog]
tcp = "127.0.0.1:0"
udp = "127.0.0.1:0"
max_line_bytes = 128
max_connections = 1

[sources.metadata]
udp = "127.0.0.1:0"
{extra}
[sinks.out]
{sink}
batch = {{ max_events = 500, max_age_ms = 50 }}
retry_initial_ms = 20
retry_max_ms = 100
"""


def syslog_lines(tag: str, start: int, count: int) -> bytes:
    return b"".join(b"<14>1 - host app - - - %s seq=%d\n" % (tag.encode(), i) for i in range(start, start + count))


# --- metrics ------------------------------------------------------------------------------


def test_every_spec_metric_exists_from_startup_and_counts_a_known_input(tmp_path):
    transform = '[[transforms]]\ntype = "drop"\nfield = "_msg"\ncontains = "DROPME"\n'
    config = loads(base_config(str(tmp_path), transform))

    async def scenario():
        async with running(config) as daemon:
            api = "%s:%d" % daemon.api_address
            metrics = await asyncio.to_thread(scrape, api)
            for name, labelnames in SPEC_METRICS.items():
                series = metrics.get(name) or metrics.get(name + "_count")
                assert series is not None, f"{name} missing at startup"
                for labels in series:
                    assert {k for k, _ in labels} == set(labelnames), (name, labels)
            results = {dict(labels)["result"] for labels in metrics["logpipe_enrich_total"]}
            assert results == {"hit", "miss", "held"}

            tcp = daemon.syslog.addresses["tcp"]
            udp = daemon.syslog.addresses["udp"]
            # N=100 TCP lines, K=10 of them dropped by the transform, one cut at 128 bytes;
            # 20 UDP datagrams; a second TCP connection refused by max_connections = 1.
            payload = syslog_lines("keep", 0, 89) + syslog_lines("DROPME", 0, 10)
            payload += b"<14>1 - host app - - - long " + b"y" * 300 + b"\n"
            reader, writer = await asyncio.open_connection(*tcp)
            writer.write(payload)
            await writer.drain()
            await await_until(lambda: daemon.syslog.tcp_counters.events.value == 100, what="100 TCP lines read")
            second = socket.create_connection(tcp)
            await await_until(
                lambda: daemon.metrics.get("logpipe_dropped_events_total").value("receiving", "too_many_connections") == 1,
                what="the second connection refused",
            )
            second.close()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for i in range(20):
                    sock.sendto(b"<14>1 - host app - - - udp seq=%d" % i, udp)
            await await_until(
                lambda: daemon.metrics.get("logpipe_sent_events_total").value("out") == 110, what="110 events sent"
            )
            writer.close()
            metrics = await asyncio.to_thread(scrape, api)
        return metrics

    m = run_async(scenario, timeout=30)
    assert value(m, "logpipe_received_events_total", source="syslog", protocol="tcp") == 100
    assert value(m, "logpipe_received_events_total", source="syslog", protocol="udp") == 20
    assert sum(m["logpipe_transform_dropped_total"].values()) == 10
    assert value(m, "logpipe_dropped_events_total", stage="receiving", reason="too_many_connections") == 1
    assert value(m, "logpipe_dropped_events_total", stage="receiving", reason="not_allowed") == 0
    assert value(m, "logpipe_truncated_events_total", source="syslog") == 1
    assert value(m, "logpipe_sent_events_total", sink="out") == 110
    assert value(m, "logpipe_enrich_total", result="miss") == 120  # joined before the transforms
    assert value(m, "logpipe_batch_events_sum", sink="out") == 110
    assert value(m, "logpipe_buffer_events", sink="out") == 0
    assert value(m, "logpipe_send_errors_total", sink="out", retryable="true") == 0
    messages = file_messages(str(tmp_path))
    assert len(messages) == 110 and not any("DROPME" in msg for msg in messages)


# --- health -------------------------------------------------------------------------------


def test_health_turns_503_while_the_sink_is_down_and_back_to_200(tmp_path):
    server = FakeInsert()
    try:
        config = loads(base_config(str(tmp_path), sink=f'type = "victorialogs"\nurl = "{server.url}"'))

        async def scenario():
            async with running(config) as daemon:
                url = "http://%s:%d/health" % daemon.api_address
                status, body = await asyncio.to_thread(get, url)
                assert (status, body) == (200, {"status": "ok"})
                server.down = True
                _, writer = await asyncio.open_connection(*daemon.syslog.addresses["tcp"])
                writer.write(syslog_lines("outage", 0, 50))
                await writer.drain()

                async def health():
                    return await asyncio.to_thread(get, url)

                await await_until(lambda: daemon.health_problems(config.api.unhealthy_after_s), what="the sink failing")
                status, unhealthy = await health()
                assert status == 503, unhealthy
                assert unhealthy["status"] == "unhealthy"
                assert any("sink out failing" in p and "503" in p for p in unhealthy["problems"]), unhealthy
                server.down = False
                await await_until(lambda: len(server.messages) == 50, what="the 50 lines after recovery")
                status, body = await health()
                assert (status, body) == (200, {"status": "ok"})
                writer.close()

        run_async(scenario, timeout=30)
    finally:
        server.close()


# --- tap ------------------------------------------------------------------------------------


class _FakePipeline:
    tap = None


def test_tap_hub_is_absent_when_idle_and_bounded_per_client():
    pipeline = _FakePipeline()
    metrics = Metrics()

    async def scenario():
        hub = TapHub(pipeline, metrics)  # type: ignore[arg-type]
        assert pipeline.tap is None
        slow = hub.subscribe(None, rate=1000, cap=3)
        other = hub.subscribe("elsewhere", rate=1000, cap=3)
        assert pipeline.tap is not None
        pipeline.tap([{"_msg": str(i)} for i in range(10)], ["out"])
        assert len(slow.queue) == 3 and slow.dropped == 7
        assert not other.queue  # filtered by sink
        assert json.loads(slow.queue[0]) == {"sinks": ["out"], "event": {"_msg": "0"}}
        hub.unsubscribe(slow)
        hub.unsubscribe(other)
        assert pipeline.tap is None
        # sampling: a rate of 5/s takes 5 events spread over a chunk of 100
        sampled = hub.subscribe(None, rate=5, cap=100)
        pipeline.tap([{"n": i} for i in range(100)], ["out"])
        assert [json.loads(r)["event"]["n"] for r in sampled.queue] == [0, 20, 40, 60, 80]

    run_async(scenario, timeout=10)
    assert metrics.get("logpipe_tap_dropped_events_total").value() == 7


# --- process level: top, tap, validate, reload ---------------------------------------------


@pytest.fixture
def daemon(tmp_path):
    proc = DaemonProcess(str(tmp_path), base_config(str(tmp_path)))
    yield proc
    proc.stop()


def logpipe(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logpipe", *args], capture_output=True, timeout=timeout, text=True)


def send_tcp(address, data: bytes) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)


def test_top_once_shows_source_and_sink_rows(daemon):
    send_tcp(daemon.tcp, syslog_lines("top", 0, 30))
    wait_until(lambda: daemon.metric("logpipe_sent_events_total", "sink=out") == 30, what="30 sent")
    result = logpipe("top", "--api", f"http://{daemon.api}", "--once", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    tcp_row = next(line for line in lines if line.startswith("syslog/tcp"))
    assert tcp_row.split()[3] == "30"  # TOTAL
    sink_row = next(line for line in lines if line.startswith("out "))
    assert sink_row.split()[1:4] == ["file", "0", "30"] and sink_row.split()[-1] == "ok"
    assert any(line.startswith("syslog/udp") for line in lines)
    assert any(line.startswith("metadata/udp") for line in lines)


def test_tap_prints_events_of_the_running_daemon(daemon):
    tap = subprocess.Popen(
        [sys.executable, "-m", "logpipe", "tap", "--api", daemon.api, "--limit", "5", "--sink", "out"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: daemon.metric("logpipe_tap_clients", "_") == 1, what="the tap client connected")
        send_tcp(daemon.tcp, syslog_lines("tapped", 0, 20))
        out, err = tap.communicate(timeout=20)
    finally:
        if tap.poll() is None:
            tap.kill()
            tap.wait()
    assert tap.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 5
    assert all(r["sinks"] == ["out"] and r["event"]["_msg"].startswith("tapped seq=") for r in records)
    wait_until(lambda: daemon.metric("logpipe_tap_clients", "_") == 0, what="the tap client gone")
    unknown = logpipe("tap", "--api", daemon.api, "--sink", "nope", "--limit", "1")
    assert unknown.returncode == 2 and "no sink named 'nope'" in unknown.stderr


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"], ids=["daemon-dies", "daemon-stops"])
def test_tap_exits_1_when_the_daemon_goes_away(tmp_path, how):
    daemon = DaemonProcess(str(tmp_path), base_config(str(tmp_path)))
    tap = subprocess.Popen([sys.executable, "-m", "logpipe", "tap", "--api", daemon.api],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: daemon.metric("logpipe_tap_clients", "_") == 1, what="the tap client connected")
        send_tcp(daemon.tcp, syslog_lines("tapped", 0, 3))
        if how == "SIGKILL":
            daemon.kill()
        else:
            daemon.stop()
        out, err = tap.communicate(timeout=20)
    finally:
        if tap.poll() is None:
            tap.kill()
            tap.wait()
        daemon.stop()
    assert tap.returncode == 1, (out, err)
    assert err.startswith("tap: "), err


def test_validate_warns_about_unreachable_sinks_without_failing(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        path = tmp_path / "c.toml"
        path.write_text(base_config(str(tmp_path), sink=f'type = "victorialogs"\nurl = "http://127.0.0.1:{sock.getsockname()[1]}"'))
        checked = logpipe("validate", "-c", str(path))
        assert checked.returncode == 0 and checked.stdout.startswith("ok:")
        assert "warning: sinks.out (victorialogs) not ready:" in checked.stderr
        skipped = logpipe("validate", "--no-environment", "-c", str(path))
        assert skipped.returncode == 0 and skipped.stderr == ""
    finally:
        sock.close()


class SteadySender(threading.Thread):
    """Sends numbered lines over TCP: one long-lived connection plus a fresh connection
    every ``reconnect_every`` lines, until stopped, ``max_lines`` or 30 s; records refusals."""

    def __init__(self, address, max_lines: int = 200_000, reconnect_every: int = 500) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.max_lines = max_lines
        self.reconnect_every = reconnect_every
        self.sent = 0
        self.refused: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 30
        long_lived = socket.create_connection(self.address, timeout=10)
        try:
            while not self.stop_event.is_set() and self.sent < self.max_lines and time.monotonic() < deadline:
                batch = syslog_lines("steady", self.sent, 50)
                if (self.sent // 50) % (self.reconnect_every // 50) == 0:
                    try:
                        send_tcp(self.address, batch)
                    except OSError as e:
                        self.refused.append(repr(e))
                        continue
                else:
                    long_lived.sendall(batch)
                self.sent += 50
                self.stop_event.wait(0.005)  # pacing the load (at most ~10k lines/s), not a sync
        finally:
            long_lived.close()


def test_sighup_reload_during_a_steady_tcp_stream_loses_nothing(tmp_path):
    text = base_config(str(tmp_path)).replace("max_connections = 1", "max_connections = 100")
    proc = DaemonProcess(str(tmp_path), text)
    try:
        sender = SteadySender(proc.tcp, max_lines=40_000)
        sender.start()
        wait_until(lambda: sender.sent >= 2000, what="the stream to flow")
        # New batch settings, a transform, and a changed UDP address: the sink is rebuilt,
        # the TCP listener and its connections stay.
        new_text = text.replace("max_events = 500", "max_events = 200").replace(
            "[sources.metadata]", '[[transforms]]\ntype = "drop"\nfield = "_msg"\nequals = "never sent"\n\n[sources.metadata]'
        ).replace('udp = "127.0.0.1:0"\nmax_line_bytes', f'udp = "127.0.0.1:{free_udp_port()}"\nmax_line_bytes')
        with open(proc.path, "w") as f:
            f.write(new_text)
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: proc.logged("reloaded"), what="the reload")
        at_reload = sender.sent
        assert sender.is_alive(), "the stream ended before the reload; raise max_lines"
        wait_until(lambda: sender.sent >= at_reload + 3000 or not sender.is_alive(), what="more lines after the reload")
        sender.stop_event.set()
        sender.join(30)
        assert not sender.refused, sender.refused[:3]
        reloaded = proc.logged("reloaded")[0]
        assert reloaded["sinks_changed"] == ["out"] and reloaded["transforms"] == 1
        assert not [e for e in proc.logged("stopped_listening") if e.get("protocol") == "tcp"]
        assert [e for e in proc.logged("stopped_listening") if e.get("protocol") == "udp"]
        total = sender.sent
        wait_until(lambda: proc.metric("logpipe_sent_events_total", "sink=out") >= total, what=f"{total} sent")
        assert proc.metric("logpipe_dropped_events_total", "stage=receiving,reason=too_many_connections") == 0
    finally:
        proc.stop()
    messages = file_messages(str(tmp_path))
    seqs = {int(m.rsplit("=", 1)[1]) for m in messages}
    assert len(messages) == total and seqs == set(range(total))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_invalid_reload_is_refused_and_the_old_config_keeps_running(daemon):
    with open(daemon.path) as f:
        original = f.read()
    with open(daemon.path, "w") as f:
        f.write(original.replace("max_events = 500", 'max_events = "ten"'))
    request = urllib.request.Request(f"http://{daemon.api}/api/reload", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    body = json.load(refused.value)
    assert body["status"] == "refused"
    assert any(p.startswith("sinks.out.batch.max_events: expected int") for p in body["problems"]), body
    daemon.proc.send_signal(signal.SIGHUP)  # the same file through SIGHUP: refused and logged
    wait_until(lambda: len(daemon.logged("reload_refused")) == 2, what="the SIGHUP refusal logged")
    assert "max_events" in daemon.logged("reload_refused")[1]["problems"][0]
    send_tcp(daemon.tcp, syslog_lines("after", 0, 40))
    wait_until(lambda: daemon.metric("logpipe_sent_events_total", "sink=out") == 40, what="40 sent by the old config")
    assert daemon.metric("logpipe_reloads_total", "result=refused") == 2
    assert daemon.metric("logpipe_reloads_total", "result=ok") == 0
    # and a valid file again is applied
    with open(daemon.path, "w") as f:
        f.write(original.replace("max_events = 500", "max_events = 100"))
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.load(resp) == {"status": "reloaded"}


def test_reload_binds_a_changed_tcp_address_before_closing_the_old_one(tmp_path):
    text = base_config(str(tmp_path)).replace("max_connections = 1", "max_connections = 10")
    config = loads(text)

    async def scenario():
        async with running(config) as daemon:
            old_tcp = daemon.syslog.addresses["tcp"]
            _, kept = await asyncio.open_connection(*old_tcp)  # opened before, used after
            kept.write(syslog_lines("kept", 0, 10))
            await kept.drain()
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                new_port = probe.getsockname()[1]
            moved = text.replace('tcp = "127.0.0.1:0"', f'tcp = "127.0.0.1:{new_port}"')
            assert await daemon.reload(loads(moved)) == []
            assert daemon.syslog.addresses["tcp"][1] == new_port
            kept.write(syslog_lines("kept", 10, 10))
            await kept.drain()
            _, fresh = await asyncio.open_connection("127.0.0.1", new_port)
            fresh.write(syslog_lines("fresh", 0, 5))
            await fresh.drain()
            with pytest.raises(OSError):
                await asyncio.open_connection(*old_tcp)
            # an address that cannot be bound refuses the reload; the running one stays
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = moved.replace(f"127.0.0.1:{new_port}", "127.0.0.1:%d" % taken.getsockname()[1])
                problems = await daemon.reload(loads(busy))
            assert len(problems) == 1 and problems[0].startswith("sources.syslog.tcp: cannot bind 127.0.0.1:"), problems
            assert problems[0].endswith("Address already in use")
            assert daemon.syslog.addresses["tcp"][1] == new_port
            await await_until(lambda: daemon.metrics.get("logpipe_sent_events_total").value("out") == 25, what="25 sent")
            kept.close()
            fresh.close()

    run_async(scenario, timeout=30)
    messages = file_messages(str(tmp_path))
    assert sorted(messages) == sorted([f"kept seq={i}" for i in range(20)] + [f"fresh seq={i}" for i in range(5)])


def test_reload_adds_and_removes_sinks_without_losing_buffered_events(tmp_path):
    server = FakeInsert()
    server.down = True
    try:
        with_vl = base_config(str(tmp_path)) + f'\n[sinks.vl]\ntype = "victorialogs"\nurl = "{server.url}"\nretry_max_ms = 100\n'
        config = loads(with_vl)

        async def scenario():
            async with running(config) as daemon:
                _, writer = await asyncio.open_connection(*daemon.syslog.addresses["tcp"])
                writer.write(syslog_lines("buffered", 0, 30))
                await writer.drain()
                await await_until(lambda: daemon.metrics.get("logpipe_send_errors_total").value("vl", "true") >= 1,
                                  what="vl failing")
                # vl's URL changes to the same (now healthy) server: the buffered 30 go there
                server.down = False
                fixed = with_vl.replace("retry_max_ms = 100\n", "retry_max_ms = 200\n", 1)
                assert await daemon.reload(loads(fixed.replace(f'url = "{server.url}"', f'url = "{server.url}/"'))) == []
                await await_until(lambda: len(server.messages) == 30, what="the buffered 30 delivered")
                # then vl is removed and a second file sink added
                removed = base_config(str(tmp_path)) + '\n[sinks.copy]\ntype = "file"\npath = "copy"\n'
                assert await daemon.reload(loads(removed)) == []
                assert [lane.name for lane in daemon.pipeline.lanes] == ["out", "copy"]
                writer.write(syslog_lines("after", 0, 10))
                await writer.drain()
                await await_until(lambda: daemon.metrics.get("logpipe_sent_events_total").value("copy") == 10,
                                  what="copy got the next lines")
                assert len(server.messages) == 30
                assert "vl" not in daemon.stats()["sinks"]
                writer.close()

        run_async(scenario, timeout=30)
    finally:
        server.close()


def test_repeated_warnings_are_suppressed_and_counted():
    clock = [0.0]
    limiter = RepeatLimiter(10.0, clock=lambda: clock[0])
    import structlog

    def log(level: str, event: str, component: str = "sink.a"):
        try:
            return limiter(None, level, {"event": event, "component": component})
        except structlog.DropEvent:
            return None

    assert log("warning", "send_failed") == {"event": "send_failed", "component": "sink.a"}
    assert [log("warning", "send_failed") for _ in range(5)] == [None] * 5
    assert log("warning", "send_failed", "sink.b") is not None  # another component
    assert log("info", "send_failed") is not None  # info is never limited
    clock[0] = 11.0
    assert log("warning", "send_failed") == {"event": "send_failed", "component": "sink.a", "suppressed_similar": 5}
    assert log("error", "send_failed") is None


def test_post_reload_can_move_the_api_itself(tmp_path):
    path = tmp_path / "logpipe.toml"
    text = base_config(str(tmp_path))
    path.write_text(text)

    async def scenario():
        async with running(loads(text), config_path=str(path)) as daemon:
            old = "%s:%d" % daemon.api_address
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                new_port = probe.getsockname()[1]
            path.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{new_port}"'))
            request = urllib.request.Request(f"http://{old}/api/reload", method="POST")
            answer = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(request, timeout=10)))
            assert answer == {"status": "reloaded"}  # answered on the old, already closed, address
            assert daemon.api_address == ("127.0.0.1", new_port)
            status, body = await asyncio.to_thread(get, f"http://127.0.0.1:{new_port}/health")
            assert (status, body) == (200, {"status": "ok"})
            with pytest.raises(OSError):
                await asyncio.open_connection(*old.split(":"))

    run_async(scenario, timeout=30)
