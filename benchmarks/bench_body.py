"""apply_body cost per body shape, old vs new in one process (timeit, best of 5).

The shapes are the e2e corpus's bodies (bench_e2e.build_corpus) on an RFC 3164 event, plus
prose with '=' that is not logfmt. ``--old FILE`` times another version of
logpipe/parse/body.py side by side, e.g. main's:

    git show main:logpipe/parse/body.py > /tmp/body_old.py
    .venv/bin/python benchmarks/bench_body.py --old /tmp/body_old.py

With ``--old``, a second table parses the e2e corpus's body lines (bench_parse_mix.py's
groups, batches of 64) with each version's apply_body in turn, best of 5 rounds of process
CPU time each, rounds interleaved.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_e2e  # noqa: E402
import bench_parse_mix  # noqa: E402

from logpipe.parse import body as new  # noqa: E402
from logpipe.parse import syslog  # noqa: E402

EVENT = {"_time": "2026-11-21T10:00:00.000000Z", "_msg": "", "hostname": "h1", "app_name": "sshd",
         "proc_id": "4242", "facility": "auth", "severity": "info", "level": "info"}
SHAPES = {
    "JSON": '{"level": "info", "msg": "Failed password for invalid user webmaster from 173.234.31.186 '
            'port 38926 ssh2", "req_id": "9755d4c1", "dur_ms": 967}',
    "logfmt": 'level=warn msg="Failed password for invalid user webmaster from 173.234.31.186 port '
              '38926 ssh2 \\"x\\"" req_id=9755d4c1 dur_ms=967',
    "logfmt, no escapes": 'level=warn msg="Failed password for invalid user webmaster from '
                          '173.234.31.186 port 38926 ssh2" req_id=9755d4c1 dur_ms=967',
    "prose with '='": "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4",
}


def best_us(fn, text: str, number: int) -> float:
    timer = timeit.Timer("f(dict(e), t)", globals={"f": fn, "e": EVENT, "t": text})
    base = timeit.Timer("dict(e)", globals={"e": EVENT})
    # The event copy is the caller's, not apply_body's: subtract it.
    return (min(timer.repeat(5, number)) - min(base.repeat(5, number))) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", help="another body.py to time side by side")
    ap.add_argument("--number", type=int, default=200_000)
    ap.add_argument("--corpus", default=os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    args = ap.parse_args()
    versions = {"new": new.apply_body}
    if args.old:
        spec = importlib.util.spec_from_file_location("body_old", args.old)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)  # type: ignore[union-attr]
        versions = {"old": old.apply_body, "new": new.apply_body}
    print("| body | " + " | ".join(f"{v} µs" for v in versions) + (" | new / old |" if args.old else " |"))
    print("| --- |" + " ---: |" * (len(versions) + bool(args.old)))
    for name, text in SHAPES.items():
        figures = [best_us(fn, text, args.number) for fn in versions.values()]
        row = f"| {name} | " + " | ".join(f"{f:.2f}" for f in figures)
        if args.old:
            row += f" | {figures[1] / figures[0]:.2f}"
        print(row + " |")
    if args.old:
        parse_table(versions, args.corpus)


def parse_table(versions: dict, corpus_dir: str) -> None:
    corpus = bench_e2e.build_corpus(100_000, bench_e2e.loghub_messages(corpus_dir), [f"h{i}" for i in range(300)])
    groups: dict[str, list[bytes]] = {}
    for line in corpus.split(b"\n")[:-1]:
        kind = bench_parse_mix.kind(line)
        if "body" in kind:
            groups.setdefault(kind, []).append(line)
    parser = syslog.SyslogParser()
    print()
    print("| e2e line kind (parse_lines) | old µs/line | new µs/line | new / old |")
    print("| --- | ---: | ---: | ---: |")
    for kind in sorted(groups):
        best = {name: float("inf") for name in versions}
        for _ in range(5):
            for name, fn in versions.items():
                syslog.apply_body = fn  # the parser module's own reference
                best[name] = min(best[name], bench_parse_mix.cpu_us_per_line(parser, groups[kind], rounds=1))
        syslog.apply_body = new.apply_body
        print(f"| {kind} | {best['old']:.2f} | {best['new']:.2f} | {best['new'] / best['old']:.2f} |")


if __name__ == "__main__":
    main()
