"""Idle footprint: what `logpipe run -c config/logpipe.toml` costs while nothing happens.

For each tree (``--before``: a checkout of another commit; ``--after``: this one), in each
round both daemons start at the same moment and run side by side, untouched:
- RSS: VmRSS 10 s after start;
- wakeups per minute: voluntary + involuntary context switches of all the process's threads
  (``/proc/PID/task/*/status``) over the next ``--window`` seconds, scaled to 60 s;
- threads at the end of the window;
- RSS after one GET /health at the end (the API used once: what a lazy import costs then).
The config is config/logpipe.toml as shipped (console logs, file sink, memory buffer, the
metadata source), rewritten to ephemeral loopback ports and a temp data_dir. Medians of
``--rounds``. Also printed: the RSS of a bare interpreter and of one importing every runtime
dependency (the floor the issue quotes).

Run: ``.venv/bin/python benchmarks/bench_idle.py --before /tmp/idle-before [--rounds 3]``
(``git worktree add /tmp/idle-before 3350bb0`` first). Both trees run on this venv's
interpreter, each with ``PYTHONPATH`` set to its tree.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import stop_process  # noqa: E402

RUNTIME_DEPS = ["asyncio", "uvloop", "orjson", "msgspec", "aiohttp", "aiohttp.web", "structlog", "cachetools", "re2",
                "nats"]


def rss_kb(pid: int | str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def switches(pid: int) -> dict[str, int]:
    """Context switches per thread id, of the threads alive now."""
    out = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        out[task.name] = sum(int(m) for m in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return out


def config_for(tree: pathlib.Path, data_dir: str) -> str:
    text = (tree / "config" / "logpipe.toml").read_text()
    text = text.replace('data_dir = "./data"', f'data_dir = "{data_dir}"')
    return re.sub(r'"(0\.0\.0\.0|127\.0\.0\.1):\d+"', '"127.0.0.1:0"', text)


class Idle:
    """One daemon of one tree, started in its own temp dir; its output is read for the
    API address and the ``started`` line."""

    def __init__(self, tree: pathlib.Path, workdir: str) -> None:
        path = os.path.join(workdir, "logpipe.toml")
        pathlib.Path(path).write_text(config_for(tree, os.path.join(workdir, "data")))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "-c", path], cwd=workdir, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        self.api: str | None = None
        self.started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = re.sub(r"\x1b\[[0-9;]*m", "", raw.decode(errors="replace"))
            if "component=api" in line and "listening" in line:
                self.api = re.search(r"address=(\S+)", line).group(1)  # type: ignore[union-attr]
            if re.search(r"\]\s+started\s", line):
                self.started.set()

    def stop(self) -> None:
        stop_process(self.proc, 30)


def one_round(trees: dict[str, pathlib.Path], window: float) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        daemons = {}
        for name, tree in trees.items():
            os.makedirs(os.path.join(tmp, name))
            daemons[name] = Idle(tree, os.path.join(tmp, name))
        try:
            for name, d in daemons.items():
                if not d.started.wait(30):
                    raise RuntimeError(f"{name}: the daemon did not start (exit {d.proc.poll()})")
            first = min(d.started_at for d in daemons.values())
            time.sleep(max(0.0, first + 10 - time.monotonic()))
            result = {name: {"rss_mb": rss_kb(d.proc.pid) / 1024} for name, d in daemons.items()}
            before = {name: switches(d.proc.pid) for name, d in daemons.items()}
            time.sleep(window)
            for name, d in daemons.items():
                after = switches(d.proc.pid)
                woken = sum(n - before[name].get(tid, 0) for tid, n in after.items())
                result[name]["wakeups_per_min"] = woken * 60 / window
                result[name]["threads"] = len(after)
                with urllib.request.urlopen(f"http://{d.api}/health", timeout=10) as resp:
                    resp.read()
                result[name]["rss_api_used_mb"] = rss_kb(d.proc.pid) / 1024
            return result
        finally:
            for d in daemons.values():
                d.stop()


def import_rss_mb(modules: list[str]) -> float:
    code = "import sys\nfor m in sys.argv[1:]: __import__(m)\n" \
           "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])"
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, check=True, cwd="/")
    return int(out.stdout) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=pathlib.Path, help="a checkout of the commit to compare with")
    parser.add_argument("--after", type=pathlib.Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=60.0, help="seconds over which wakeups are counted")
    args = parser.parse_args()
    trees = {"after": args.after}
    if args.before:
        trees = {"before": args.before, **trees}
    rounds = []
    for i in range(args.rounds):
        rounds.append(one_round(trees, args.window))
        print(f"round {i + 1}: " + "; ".join(
            f"{name} {r['rss_mb']:.1f} MB, {r['wakeups_per_min']:.0f} wakeups/min" for name, r in rounds[-1].items()),
            file=sys.stderr)
    bare = statistics.median(import_rss_mb([]) for _ in range(3))
    deps = statistics.median(import_rss_mb(RUNTIME_DEPS) for _ in range(3))
    keys = [("rss_mb", "RSS after 10 s (MB)"), ("wakeups_per_min", "wakeups per minute"), ("threads", "threads"),
            ("rss_api_used_mb", "RSS after one /health (MB)")]
    print(f"medians of {args.rounds} rounds, window {args.window:.0f} s")
    print("| | " + " | ".join(trees) + (" | after / before |" if "before" in trees else " |"))
    print("| --- " * (len(trees) + 1 + ("before" in trees)) + "|")
    for key, label in keys:
        values = {name: statistics.median(r[name][key] for r in rounds) for name in trees}
        row = f"| {label} | " + " | ".join(f"{v:.1f}" for v in values.values())
        if "before" in trees:
            row += f" | {values['after'] / values['before']:.2f}" if values["before"] else " | -"
        print(row + " |")
    print(f"| bare interpreter RSS (MB) | {bare:.1f} |")
    print(f"| interpreter + every runtime dependency imported (MB) | {deps:.1f} |")


if __name__ == "__main__":
    main()
