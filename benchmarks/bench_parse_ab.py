"""Another version of the parser against this one, in one process.

Both parse the end-to-end benchmark's corpus (bench_e2e.build_corpus) in batches of 64, as
the TCP source does; per line kind and for the whole mix, with parse_body off and on. Each
figure is the best of ``--rounds`` passes of process CPU time, old and new alternating, so
both see the same machine load.

The old version is a git ref (``--against``, default main): its whole ``logpipe.parse``
package is imported from that commit (parse_versions.py), body.py and timestamps.py
included. ``--old-file`` instead loads one syslog.py next to this tree's package (it then
imports logpipe.parse.body etc. from this tree).

    .venv/bin/python benchmarks/bench_parse_ab.py [--against main] [--lines 100000] [--rounds 7]
    git show main:logpipe/parse/syslog.py > /tmp/syslog_old.py
    .venv/bin/python benchmarks/bench_parse_ab.py --old-file /tmp/syslog_old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_e2e  # noqa: E402
from parse_versions import describe, import_from_ref  # noqa: E402

import logpipe.parse  # noqa: E402,F401
from logpipe.parse import syslog as new  # noqa: E402


def load_old(path: str):
    spec = importlib.util.spec_from_file_location("logpipe.parse._syslog_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def kind(line: bytes) -> str:
    close = line.index(b">")
    if line[close + 1:close + 2] != b"1":
        return "rfc3164"
    return "rfc5424 + SD" if b"[meta@" in line else "rfc5424"


def cpu_us_per_line(parser, lines: list[bytes]) -> float:
    start = time.process_time()
    for i in range(0, len(lines), 64):
        parser.parse_lines(lines[i:i + 64], time.time(), "127.0.0.1")
    return (time.process_time() - start) / len(lines) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REF", default="main", help="git ref of the other parser")
    ap.add_argument("--old-file", help="path of another syslog.py (instead of --against)")
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--corpus", default=os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    args = ap.parse_args()
    old = load_old(args.old_file) if args.old_file else import_from_ref(args.against)
    print(f"old = {args.old_file or describe(args.against)}, new = this tree")
    corpus = bench_e2e.build_corpus(args.lines, bench_e2e.loghub_messages(args.corpus), [f"h{i}" for i in range(300)])
    lines = corpus.split(b"\n")[:-1]
    groups: dict[str, list[bytes]] = {"all (the corpus mix)": lines}
    for line in lines:
        groups.setdefault(kind(line), []).append(line)
    print("| lines | parse_body | old µs/line | new µs/line | new/old |")
    print("| --- | --- | ---: | ---: | ---: |")
    for parse_body in (False, True):
        for name, group in groups.items():
            parsers = (old.SyslogParser(parse_body=parse_body), new.SyslogParser(parse_body=parse_body))
            best = [float("inf"), float("inf")]
            for _ in range(args.rounds):
                for i, parser in enumerate(parsers):
                    best[i] = min(best[i], cpu_us_per_line(parser, group))
            print(f"| {name} ({len(group) / len(lines) * 100:.0f} %) | {'on' if parse_body else 'off'} "
                  f"| {best[0]:.2f} | {best[1]:.2f} | {best[1] / best[0]:.2f} |")


if __name__ == "__main__":
    main()
