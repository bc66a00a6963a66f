"""Differential check: this tree's parser against another commit's on many lines.

Every line is parsed by both versions through ``parse`` and through ``parse_lines`` (batches
of 64, and the same lines decoded to str); an event differs when its fields, their order,
their value types, its class or its ``body_keys`` differ. Lines: every loghub corpus file,
bench_parse.py's re-dressed workloads, the e2e corpus (bench_e2e.build_corpus) and
``--fuzz N`` generated syslog-like lines. A restructuring must show 0 differences; a
behaviour change shows exactly the lines it means to change (``--show N`` prints some).

    .venv/bin/python benchmarks/diff_parse.py --against main [--fuzz 200000] [--show 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_e2e  # noqa: E402
import bench_parse  # noqa: E402
from parse_versions import describe, import_from_ref  # noqa: E402

from logpipe.parse.syslog import SyslogParser  # noqa: E402

RECV = 1_795_000_000.25
FRAGMENTS = [b"<13>", b"<191>", b"<192>", b"<7> ", b" ", b"  ", b"\n", b"\t", b"1 ", b"100 ", b"- ",
             b"[", b"]", b"=", b'"', b"\\", b"[a]", b"[x@1 k=\"v\"]", b"2026-11-21T10:00:00",
             b"2026-11-21 10:00:00", b".123", b".1234567890123", b".", b"Z", b"+05:30",
             b"Nov 21 10:00:00 ", b"NOV 21 10:00:00 ", b"Feb 29 ", b"host ", b"fd00:: ", b"app[12]: ",
             b"app[12]:", b"app: ", b": ", b":", b"%ASA-6-1: ", b"%LINK-3-UPDOWN: ", b"*", b"35: ",
             b"Message forwarded from h: ", b"{", b"}", b'"msg":', b"lvl=warn ", b"\xef\xbb\xbf",
             b"\xff", b"\x00", b"x"]


def fuzz_lines(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [b"".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 14))) for _ in range(count)]


def corpus_lines(corpus: Path) -> dict[str, list[bytes]]:
    sets = {}
    for path in sorted(corpus.glob("*/*.log")):
        sets[path.name] = [line for line in path.read_bytes().splitlines() if line.strip()]
    sets.update(bench_parse.workloads())
    e2e = bench_e2e.build_corpus(100_000, bench_e2e.loghub_messages(str(corpus)), [f"h{i}" for i in range(300)])
    sets["e2e corpus"] = e2e.split(b"\n")[:-1]
    return sets


def signature(event: dict) -> tuple:
    return (type(event).__name__, tuple((k, type(v).__name__, repr(v)) for k, v in event.items()),
            tuple(sorted(getattr(event, "body_keys", ()))))


def events(parser_class: type, lines: list[bytes]) -> list[tuple]:
    one = parser_class()
    out = [[signature(one.parse(line, RECV, "10.0.0.1")) for line in lines]]
    for decoded in (False, True):
        batch = parser_class()
        got = []
        for i in range(0, len(lines), 64):
            chunk = lines[i:i + 64]
            if decoded:
                chunk = [line.decode("utf-8", "replace") for line in chunk]
            got += [signature(e) for e in batch.parse_lines(chunk, RECV, "10.0.0.1")]
        out.append(got)
    return list(zip(*out, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REF", default="main")
    ap.add_argument("--fuzz", type=int, default=200_000, help="generated lines")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--show", type=int, default=10, help="differing lines to print")
    ap.add_argument("--corpus", default=os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    args = ap.parse_args()
    old = import_from_ref(args.against).SyslogParser
    sets = corpus_lines(Path(args.corpus))
    sets["fuzz"] = fuzz_lines(args.fuzz, args.seed)
    print(f"before = {describe(args.against)}, after = this tree")
    total = differ = inconsistent = 0
    shown = 0
    kinds: collections.Counter[str] = collections.Counter()
    for name, lines in sets.items():
        before, after = events(old, lines), events(SyslogParser, lines)
        set_differ = 0
        for line, was, now in zip(lines, before, after, strict=True):
            if len(set(now)) != 1:
                inconsistent += 1  # parse and parse_lines disagree in this tree
                print(f"INCONSISTENT {line!r}")
            if was != now:
                set_differ += 1
                kinds[name] += 1
                if shown < args.show:
                    shown += 1
                    print(f"{line!r}\n  before {dict((k, v) for k, _, v in was[0][1])}"
                          f"\n  after  {dict((k, v) for k, _, v in now[0][1])}")
        total += len(lines)
        differ += set_differ
    print(f"{total:,} lines, {differ:,} differ from before, {inconsistent} where parse and parse_lines disagree")
    for name, count in kinds.most_common():
        print(f"  {name}: {count:,}")


if __name__ == "__main__":
    main()
