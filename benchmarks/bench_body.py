"""apply_body cost per body shape, old vs new in one process (timeit, best of 5).

The shapes are the e2e corpus's bodies (bench_e2e.build_corpus) on an RFC 3164 event, plus
prose with '=' that is not logfmt; "new" is this tree's parser-side reader
(``BodyReader.apply``). ``--against REF`` times that commit's body.py side by side (its
``apply_body``, or its ``BodyReader`` where it has one), e.g. main's:

    .venv/bin/python benchmarks/bench_body.py --against main

With ``--against``, a second table parses the e2e corpus's body lines (bench_parse_mix.py's
groups, batches of 64) with that commit's whole parser and this tree's in turn, best of 5
rounds of process CPU time each, rounds interleaved.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_e2e  # noqa: E402
import bench_parse_mix  # noqa: E402
from parse_versions import import_from_ref  # noqa: E402

from logpipe.parse import syslog  # noqa: E402
from logpipe.parse.body import BodyReader  # noqa: E402

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
    ap.add_argument("--against", metavar="REF", help="time this git ref's body.py side by side")
    ap.add_argument("--number", type=int, default=200_000)
    ap.add_argument("--corpus", default=os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    args = ap.parse_args()
    versions = {"new": BodyReader().apply}
    if args.against:
        old = import_from_ref(args.against, "logpipe.parse.body")
        reader = getattr(old, "BodyReader", None)
        versions = {"old": reader().apply if reader else old.apply_body, "new": BodyReader().apply}
    print("| body | " + " | ".join(f"{v} µs" for v in versions) + (" | new / old |" if args.against else " |"))
    print("| --- |" + " ---: |" * (len(versions) + bool(args.against)))
    for name, text in SHAPES.items():
        figures = [best_us(fn, text, args.number) for fn in versions.values()]
        row = f"| {name} | " + " | ".join(f"{f:.2f}" for f in figures)
        if args.against:
            row += f" | {figures[1] / figures[0]:.2f}"
        print(row + " |")
    if args.against:
        parse_table(import_from_ref(args.against).SyslogParser, args.corpus)


def parse_table(old_parser: type, corpus_dir: str) -> None:
    corpus = bench_e2e.build_corpus(100_000, bench_e2e.loghub_messages(corpus_dir), [f"h{i}" for i in range(300)])
    groups: dict[str, list[bytes]] = {}
    for line in corpus.split(b"\n")[:-1]:
        kind = bench_parse_mix.kind(line)
        if "body" in kind:
            groups.setdefault(kind, []).append(line)
    parsers = {"old": old_parser(), "new": syslog.SyslogParser()}
    print()
    print("| e2e line kind (parse_lines) | old µs/line | new µs/line | new / old |")
    print("| --- | ---: | ---: | ---: |")
    for kind in sorted(groups):
        best = {name: float("inf") for name in parsers}
        for _ in range(5):
            for name, parser in parsers.items():
                best[name] = min(best[name], bench_parse_mix.cpu_us_per_line(parser, groups[kind], rounds=1))
        print(f"| {kind} | {best['old']:.2f} | {best['new']:.2f} | {best['new'] / best['old']:.2f} |")


if __name__ == "__main__":
    main()
