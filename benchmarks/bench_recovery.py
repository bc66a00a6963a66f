"""Recovery after a VictoriaLogs outage: time from the sink's return to the first delivered batch.

Per run: a fresh VictoriaLogs and a logpipe daemon (sink defaults: retry 200 ms doubling to
30 s, memory buffer), a steady load over TCP (``--rate`` lines/s), VictoriaLogs stopped with
SIGTERM for ``--outage`` seconds and started again on the same port and data directory. The
figure is the time from its /health answering 200 again to the daemon's
``logpipe_sent_events_total`` first growing (both polled every 20 ms), and the run checks that
every line sent was delivered. "before" and "after" alternate in the same run, each a
separate daemon; ``--before`` is a checkout of the commit to compare (its tree goes first on
PYTHONPATH; the venv is this one's).

    git worktree add /tmp/recover-before 3350bb0
    LOGPIPE_VICTORIALOGS_BIN=/opt/victorialogs/victoria-logs \\
        .venv/bin/python benchmarks/bench_recovery.py --before /tmp/recover-before --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
POLL_S = 0.02
LINE = b"<14>1 - host bench - - - recovery seq=%d\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    raise SystemExit(f"timed out waiting for {what}")


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.load(resp)
    except OSError:
        return None


class Store:
    def __init__(self, binary: str, data: str, port: int) -> None:
        self.binary, self.data, self.port = binary, data, port
        self.proc: subprocess.Popen | None = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self) -> float:
        """Start; the monotonic time /health first answered."""
        self.proc = subprocess.Popen(
            [self.binary, f"-storageDataPath={self.data}", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-loggerLevel=WARN", "-retentionPeriod=100y", "-futureRetention=100y"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.healthy, 30, "VictoriaLogs /health")
        return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None


class Daemon:
    def __init__(self, tree: str, workdir: str, store_port: int) -> None:
        self.api = f"127.0.0.1:{free_port()}"
        self.tcp = ("127.0.0.1", free_port())
        path = os.path.join(workdir, "logpipe.toml")
        with open(path, "w") as f:
            f.write(f"""
[daemon]
data_dir = "{workdir}/data"
log_level = "warning"

[api]
listen = "{self.api}"

[sources.syslog]
tcp = "{self.tcp[0]}:{self.tcp[1]}"

[sinks.vl]
type = "victorialogs"
url = "http://127.0.0.1:{store_port}"
""")
        env = {**os.environ, "PYTHONPATH": tree}
        self.proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "-c", path], cwd=workdir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: get_json(f"http://{self.api}/api/stats"), 30, "the daemon's API")

    def sent(self) -> float:
        stats = get_json(f"http://{self.api}/api/stats") or {}
        return stats.get("metrics", {}).get("logpipe_sent_events_total", {}).get("sink=vl", -1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Load(threading.Thread):
    """``rate`` lines/s in 20 chunks a second over one TCP connection."""

    def __init__(self, address: tuple[str, int], rate: int) -> None:
        super().__init__(daemon=True)
        self.address, self.per_chunk = address, max(1, rate // 20)
        self.sent = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with socket.create_connection(self.address) as sock:
            next_at = time.monotonic()
            while not self.stopping.is_set():
                first = self.sent
                chunk = b"".join(LINE % (first + i) for i in range(self.per_chunk))
                sock.sendall(chunk)
                self.sent += self.per_chunk
                next_at += 0.05
                time.sleep(max(0.0, next_at - time.monotonic()))


def one_run(label: str, tree: str, binary: str, outage_s: float, rate: int) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"bench-recovery-{label}-")
    store = Store(binary, os.path.join(workdir, "vl"), free_port())
    store.start()
    daemon = Daemon(tree, workdir, store.port)
    load = Load(daemon.tcp, rate)
    try:
        load.start()
        wait_for(lambda: daemon.sent() >= 2 * rate, 60, "steady delivery")
        store.stop()
        time.sleep(outage_s)  # the outage itself: the thing being simulated, not a synchronization
        before = daemon.sent()
        back_at = store.start()
        first_at = wait_for(lambda: daemon.sent() > before and time.monotonic(), 120, "the first batch after it")
        load.stopping.set()
        load.join(10)
        drained = wait_for(lambda: (s := daemon.sent()) >= load.sent and s, 120, "the backlog to drain")
        return {"label": label, "resume_s": first_at - back_at, "lines": load.sent, "delivered": int(drained)}
    finally:
        load.stopping.set()
        daemon.stop()
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a checkout of the commit to compare (e.g. 3350bb0)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds VictoriaLogs is down")
    parser.add_argument("--rate", type=int, default=2000, help="lines/s of steady load")
    args = parser.parse_args()
    binary = os.environ.get("LOGPIPE_VICTORIALOGS_BIN")
    if not binary:
        raise SystemExit("set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(args.rounds):
        order = [("before", args.before), ("after", ROOT)]
        for label, tree in order if i % 2 == 0 else order[::-1]:
            run = one_run(label, tree, binary, args.outage, args.rate)
            results[label].append(run)
            print(f"round {i + 1} {label:6} resume {run['resume_s']:6.2f} s  lines {run['lines']}  "
                  f"delivered {run['delivered']}", flush=True)
    print(f"\noutage {args.outage:.0f} s, load {args.rate} lines/s, {args.rounds} rounds")
    print("| build | resume after /health, median s | min | max | every line delivered |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, runs in results.items():
        times = [r["resume_s"] for r in runs]
        complete = all(r["delivered"] >= r["lines"] for r in runs)
        print(f"| {label} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} | {complete} |")


if __name__ == "__main__":
    main()
