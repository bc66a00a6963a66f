"""Parse cost per line kind on the end-to-end benchmark's corpus.

The e2e corpus (bench_e2e.build_corpus: loghub messages dressed as RFC 3164 and RFC 5424,
some with structured data, plain, JSON and logfmt bodies) grouped by kind; each group
parsed in batches of 64 (as the TCP source does), best of 5 rounds of process CPU time.
"weighted" is the corpus mix; "header only" is every line with parse_body off.

    .venv/bin/python benchmarks/bench_parse_mix.py [--lines 100000] [--against main]

``--against REF`` measures that commit's parser (parse_versions.py) in the same process,
rounds alternating with this tree's, and prints both with their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_e2e  # noqa: E402
from parse_versions import describe, import_from_ref  # noqa: E402

from logpipe.parse.syslog import SyslogParser  # noqa: E402


def kind(line: bytes) -> str:
    close = line.index(b">")
    name = "rfc5424" if line[close + 1:close + 2] == b"1" else "rfc3164"
    if b"[meta@" in line:
        name += " + SD"
    if b'{"level"' in line:
        name += " + JSON body"
    elif b"level=warn" in line:
        name += " + logfmt body"
    return name


def cpu_us_per_line(parser: SyslogParser, lines: list[bytes], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for i in range(0, len(lines), 64):
            parser.parse_lines(lines[i:i + 64], time.time(), "127.0.0.1")
        best = min(best, time.process_time() - start)
    return best / len(lines) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--corpus", default=os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    ap.add_argument("--against", metavar="REF", help="also measure the parser at this git ref")
    ap.add_argument("--turns", type=int, default=7, help="alternating passes per row with --against")
    args = ap.parse_args()
    corpus = bench_e2e.build_corpus(args.lines, bench_e2e.loghub_messages(args.corpus), [f"h{i}" for i in range(300)])
    lines = corpus.split(b"\n")[:-1]
    groups: dict[str, list[bytes]] = {}
    for line in lines:
        groups.setdefault(kind(line), []).append(line)
    if args.against:
        compare(args.against, lines, groups, args.turns)
        return
    parser = SyslogParser()
    print("| line kind | share | µs/line |")
    print("| --- | ---: | ---: |")
    total = 0.0
    for name, group in sorted(groups.items()):
        us = cpu_us_per_line(parser, group)
        total += us * len(group)
        print(f"| {name} | {len(group) / len(lines) * 100:.1f} % | {us:.2f} |")
    print(f"| weighted (the corpus mix) | 100 % | {total / len(lines):.2f} |")
    print(f"| header only (parse_body off) | 100 % | {cpu_us_per_line(SyslogParser(parse_body=False), lines):.2f} |")


def compare(ref: str, lines: list[bytes], groups: dict[str, list[bytes]], turns: int) -> None:
    """Each row for both parsers, passes alternating (best of ``turns`` each)."""
    old = import_from_ref(ref).SyslogParser
    print(f"before = {describe(ref)}, after = this tree")
    print("| line kind | share | before µs/line | after µs/line | after / before |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = [(name, group, True) for name, group in sorted(groups.items())] + [("header only (parse_body off)", lines, False)]
    totals = [0.0, 0.0]
    for name, group, parse_body in rows:
        parsers = (old(parse_body=parse_body), SyslogParser(parse_body=parse_body))
        best = [float("inf"), float("inf")]
        for _ in range(turns):
            for i, parser in enumerate(parsers):
                best[i] = min(best[i], cpu_us_per_line(parser, group, rounds=1))
        if parse_body:
            totals = [total + us * len(group) for total, us in zip(totals, best, strict=True)]
        else:
            weighted = [total / len(lines) for total in totals]
            print(f"| weighted (the corpus mix) | 100 % | {weighted[0]:.2f} | {weighted[1]:.2f} "
                  f"| {weighted[1] / weighted[0]:.3f} |")
        print(f"| {name} | {len(group) / len(lines) * 100:.1f} % | {best[0]:.2f} | {best[1]:.2f} | {best[1] / best[0]:.3f} |")


if __name__ == "__main__":
    main()
