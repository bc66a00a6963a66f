"""daemon.workers = 2: a supervisor and two worker processes sharing the syslog ports.

Real processes on loopback, a file sink (one file per worker: PATH.wI.ndjson)."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import urllib.error
import urllib.request

import orjson

from logpipe.daemon.aggregate import sum_prometheus

from ..helpers import DaemonProcess, wait_until


def config(tmp: str, *, batch: str = "{ max_events = 500, max_age_ms = 50 }", buffer: str = "{}") -> str:
    return f"""
[daemon]
data_dir = "{tmp}/data"
log_format = "json"
shutdown_timeout_s = 10
workers = 2

[api]
listen = "127.0.0.1:0"

[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
max_connections = 100

[sources.metadata]
udp = "127.0.0.1:0"

[enrich]
hold_ms = 0

[sinks.out]
type = "file"
path = "{tmp}/out/events"
batch = {batch}
buffer = {buffer}
"""


def stored(tmp: str) -> list[dict]:
    events = []
    for path in sorted(glob.glob(os.path.join(tmp, "out", "events*.ndjson"))):
        with open(path, "rb") as f:
            events += [json.loads(line) for line in f if line.strip()]
    return events


def send_over_connections(address, connections: int, per_connection: int, tag: str = "x") -> list[str]:
    sent = []
    for c in range(connections):
        with socket.create_connection(address, timeout=10) as sock:
            lines = [f"{tag}-{c}-{i}" for i in range(per_connection)]
            sock.sendall(b"".join(b"<14>Nov 21 10:00:00 web app: %s\n" % line.encode() for line in lines))
            sent += lines
    return sent


def per_worker_tcp_lines(daemon: DaemonProcess) -> list[float]:
    out = []
    for worker in daemon.stats()["workers"]:
        series = (worker["metrics"] or {}).get("logpipe_received_events_total", {})
        out.append(sum(v for k, v in series.items() if "protocol=tcp" in k))
    return out


def worker_pids(daemon: DaemonProcess) -> list:
    return [w["pid"] for w in daemon.stats()["workers"] if w["up"]]


def test_connections_spread_over_both_workers_each_line_once_and_one_announcement_tags_all(tmp_path):
    tmp = str(tmp_path)
    daemon = DaemonProcess(tmp, config(tmp))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(orjson.dumps({"ip": "", "hostname": "web", "service": "shop"}), daemon.metadata)
        wait_until(
            lambda: all((w["metrics"] or {}).get("logpipe_metadata_entries", {}).get("_") == 1
                        for w in daemon.stats()["workers"]),
            10, "the announcement in both workers' tables")
        sent = send_over_connections(daemon.tcp, 24, 50)
        wait_until(lambda: len(stored(tmp)) >= len(sent), 20, f"{len(sent)} lines stored")
        received = per_worker_tcp_lines(daemon)
        assert len(received) == 2 and all(n > 0 for n in received), received
        assert sum(received) == len(sent)
        health = daemon.stats()
        assert health["metrics"]["logpipe_metadata_announcements_total"]["result=ok"] == 1
        assert health["sinks"]["out"]["buffer_events"] == 0
        with urllib.request.urlopen(f"http://{daemon.api}/health", timeout=5) as resp:
            assert json.load(resp) == {"status": "ok"}
        with urllib.request.urlopen(f"http://{daemon.api}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert f'logpipe_sent_events_total{{sink="out"}} {len(sent)}' in metrics
    finally:
        assert daemon.stop() == 0
    events = stored(tmp)
    assert sorted(e["_msg"] for e in events) == sorted(sent)  # each exactly once
    assert {e.get("service") for e in events} == {"shop"}
    # Both workers' files hold lines: both applied the one announcement.
    files = glob.glob(os.path.join(tmp, "out", "events.w*.ndjson"))
    assert len(files) == 2


def test_sigterm_drains_both_workers(tmp_path):
    tmp = str(tmp_path)
    os.makedirs(os.path.join(tmp, "data", "workers", "w5"))  # left by an earlier workers = 6
    daemon = DaemonProcess(tmp, config(tmp, batch="{ max_events = 100000, max_age_ms = 3600000 }"))
    sent = send_over_connections(daemon.tcp, 16, 100)
    wait_until(lambda: sum(per_worker_tcp_lines(daemon)) == len(sent), 10, "every line received")
    assert stored(tmp) == []  # all waiting in batches
    assert daemon.stop() == 0
    assert sorted(e["_msg"] for e in stored(tmp)) == sorted(sent)
    assert daemon.logged("stopped") and len([e for e in daemon.logged("stopped") if "worker" in e]) == 2
    assert [e["path"] for e in daemon.logged("worker_data_not_drained")] == [os.path.join(tmp, "data", "workers", "w5")]


def test_a_killed_worker_is_restarted_and_replays_its_disk_buffer(tmp_path):
    tmp = str(tmp_path)
    daemon = DaemonProcess(
        tmp, config(tmp, batch="{ max_events = 100000, max_age_ms = 3600000 }", buffer='{ type = "disk", fsync = "never" }')
    )
    sent = send_over_connections(daemon.tcp, 16, 100)
    wait_until(lambda: sum(per_worker_tcp_lines(daemon)) == len(sent), 10, "every line received")
    before = worker_pids(daemon)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: daemon.logged("worker_died"), 10, "the supervisor to notice")
    wait_until(lambda: len(worker_pids(daemon)) == 2 and before[0] not in worker_pids(daemon), 20, "the restart")
    assert daemon.stats()["workers"][0]["restarts"] + daemon.stats()["workers"][1]["restarts"] == 1
    assert daemon.stop() == 0
    assert sorted(e["_msg"] for e in stored(tmp)) == sorted(sent)


def test_sum_prometheus_adds_identical_series_and_keeps_help_once():
    a = '# HELP m x\n# TYPE m counter\nm{a="1"} 2\nm{a="2"} 1\n'
    b = '# HELP m x\n# TYPE m counter\nm{a="1"} 3\n# HELP g y\n# TYPE g gauge\ng 1.5\n'
    assert sum_prometheus([a, b]) == (
        '# HELP m x\n# TYPE m counter\nm{a="1"} 5\nm{a="2"} 1\n# HELP g y\n# TYPE g gauge\ng 1.5\n'
    )


def test_a_worker_that_cannot_bind_stops_the_supervisor_with_exit_1(tmp_path):
    import subprocess
    import sys

    with socket.socket() as taken:  # a fixed port someone else holds, without SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = tmp_path / "logpipe.toml"
        path.write_text(f"""
[daemon]
data_dir = "{tmp_path / 'data'}"
log_format = "json"
workers = 2
[api]
listen = "127.0.0.1:0"
[sources.syslog]
tcp = "127.0.0.1:{port}"
[sinks.out]
type = "file"
""")
        result = subprocess.run([sys.executable, "-m", "logpipe", "run", "-c", str(path)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "worker_start_failed" for e in events), result.stderr[-2000:]
    assert not any(e.get("event") == "worker_died" for e in events)  # no restart loop


def test_the_supervisor_serves_a_merged_tap_and_reloads_every_worker(tmp_path):
    import threading

    tmp = str(tmp_path)
    daemon = DaemonProcess(tmp, config(tmp))
    try:
        tapped: list[dict] = []

        def tap() -> None:
            with urllib.request.urlopen(f"http://{daemon.api}/api/tap?limit=40&rate=100000", timeout=30) as resp:
                tapped.extend(json.loads(line) for line in resp if line.strip())

        reader = threading.Thread(target=tap)
        reader.start()
        wait_until(lambda: all(
            (w["metrics"] or {}).get("logpipe_tap_clients", {}).get("_", 0) >= 1 for w in daemon.stats()["workers"]),
            10, "a tap client in both workers")
        sent = send_over_connections(daemon.tcp, 16, 20, tag="tap")
        reader.join(30)
        assert not reader.is_alive()
        assert len(tapped) == 40 and {t["event"]["_msg"] for t in tapped} <= set(sent)
        assert all(t["sinks"] == ["out"] for t in tapped)

        request = urllib.request.Request(f"http://{daemon.api}/api/reload", method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert json.load(resp) == {"status": "reloaded", "workers": 2}
        with open(daemon.path, "a") as f:
            f.write("\n[sinks.broken]\ntype = \"nope\"\n")
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://{daemon.api}/api/reload", method="POST"), timeout=30)
            raise AssertionError("a broken file was accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 400
            body = json.load(e)
        assert body["status"] == "refused"
        assert {p.split(":")[0] for p in body["problems"]} == {"worker 0", "worker 1"}
        assert all("sinks.broken" in p for p in body["problems"])
    finally:
        assert daemon.stop() == 0
