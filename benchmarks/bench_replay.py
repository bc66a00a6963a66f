"""`logpipe replay` throughput into a real VictoriaLogs, interrupted and resumed.

Writes an N-line history file (raw RFC 5424 syslog lines with a JSON body, or NDJSON;
gzip'd by default), starts VictoriaLogs on loopback (LOGPIPE_VICTORIALOGS_BIN), runs
`logpipe replay` as a subprocess, sends it SIGINT once the checkpoint passes
--interrupt-at of the file, runs it again to completion, then checks in VictoriaLogs that
every line is there exactly once. Prints one table row per run.

    LOGPIPE_VICTORIALOGS_BIN=/opt/victorialogs/victoria-logs \\
        .venv/bin/python benchmarks/bench_replay.py --lines 1000000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.helpers import VictoriaLogsServer, victorialogs_bin, wait_until  # noqa: E402


def write_history(path: str, lines: int, fmt: str, compress: bool) -> int:
    """Returns the uncompressed size (the unit of the checkpoint's position)."""
    written = 0
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:  # type: ignore[operator]
        chunk = []
        for i in range(lines):
            day = 1 + i % 28
            stamp = f"2024-03-{day:02d}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000000:06d}Z"
            if fmt == "syslog":
                chunk.append(f'<134>1 {stamp} web-{i % 16} api {1000 + i % 50} - - '
                             f'{{"msg":"GET /orders/{i} 200","seq":"{i}","status":200,"user":"u{i % 977}"}}\n')
            else:
                chunk.append(json.dumps({"_time": stamp, "_msg": f"GET /orders/{i} 200", "seq": str(i), "status": 200,
                                         "hostname": f"web-{i % 16}", "app_name": "api"}) + "\n")
            if len(chunk) == 10000:
                text = "".join(chunk)
                written += len(text.encode())
                f.write(text)
                chunk = []
        text = "".join(chunk)
        written += len(text.encode())
        f.write(text)
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--format", choices=("syslog", "ndjson"), default="syslog")
    parser.add_argument("--no-gzip", action="store_true")
    parser.add_argument("--interrupt-at", type=float, default=0.4, help="fraction of the file before SIGINT")
    parser.add_argument("--batch", type=int, default=10000)
    args = parser.parse_args()
    binary = victorialogs_bin()
    if not binary:
        sys.exit("set LOGPIPE_VICTORIALOGS_BIN")
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "history.log" + ("" if args.no_gzip else ".gz"))
        t0 = time.monotonic()
        size = write_history(source, args.lines, args.format, not args.no_gzip)
        print(f"wrote {args.lines:,} lines ({os.path.getsize(source) / 1e6:.1f} MB) in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        server = VictoriaLogsServer(binary, os.path.join(tmp, "vl"))
        server.start()
        try:
            config = os.path.join(tmp, "replay.toml")
            with open(config, "w") as f:
                f.write(f'[daemon]\ndata_dir = "{tmp}/data"\n[sinks.vl]\ntype = "victorialogs"\nurl = "{server.url}"\n'
                        f"batch = {{ max_events = {args.batch}, max_bytes = 8000000, max_age_ms = 200 }}\n")
            argv = [sys.executable, "-m", "logpipe", "replay", "-c", config, "--sink", "vl", source, "--no-progress"]
            checkpoint = os.path.join(tmp, "data", "replay", "vl.checkpoint.json")

            def past_interrupt_point() -> bool:
                try:
                    with open(checkpoint) as f:
                        position = json.load(f)["sources"][os.path.abspath(source)]["position"]
                except (OSError, ValueError, KeyError):
                    return False
                return position >= args.interrupt_at * size

            rows = []
            started = time.monotonic()
            first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            wait_until(lambda: past_interrupt_point() or first.poll() is not None, timeout=600, what="interrupt point")
            first.send_signal(signal.SIGINT)
            out, _ = first.communicate(timeout=120)
            s1 = json.loads(out.splitlines()[-1])
            rows.append(("run 1 (SIGINT)", s1["sent_events"], s1["elapsed_s"], first.returncode))
            second = subprocess.run(argv, capture_output=True, timeout=1800)
            s2 = json.loads(second.stdout.splitlines()[-1])
            rows.append(("run 2 (resume)", s2["sent_events"], s2["elapsed_s"], second.returncode))
            wall = time.monotonic() - started
            counts = server.query("* | stats count() as n, count_uniq(seq) as u")
        finally:
            server.stop()
    print(f"\nreplay of {args.lines:,} {args.format} lines ({'plain' if args.no_gzip else 'gzip'}), batch {args.batch}\n")
    print("| run | events confirmed | seconds | events/s | exit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, events, seconds, rc in rows:
        print(f"| {name} | {events:,} | {seconds:.1f} | {events / seconds if seconds else 0:,.0f} | {rc} |")
    total = sum(r[1] for r in rows)
    print(f"| total | {total:,} | {sum(r[2] for r in rows):.1f} | {total / sum(r[2] for r in rows):,.0f} | |")
    print(f"\nwall time incl. process starts: {wall:.1f}s; VictoriaLogs: {counts}")
    ok = counts == [{"n": str(args.lines), "u": str(args.lines)}] and total == args.lines
    print("no loss, no duplicates" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
