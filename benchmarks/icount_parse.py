"""Instructions per line of parse_lines, this tree against another commit (valgrind).

The noise-free companion of bench_parse.py on a shared machine: each bench_parse.py format
is parsed under ``valgrind --tool=cachegrind --cache-sim=no`` (instruction counting only)
with PYTHONHASHSEED=0, once with 0 and once with ``--passes`` passes over the lines after
one warm-up pass; the difference divided by the lines parsed is the count per line. It
counts instructions, not time (no cache or branch effects), so it is a cross-check of a
timing ratio, not a replacement. Needs valgrind on PATH; ~1 minute per format.

    .venv/bin/python benchmarks/icount_parse.py --against main [--passes 3] [FORMAT ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_parse  # noqa: E402
from parse_versions import describe, import_from_ref  # noqa: E402


def child(ref: str, name: str, passes: int) -> None:
    """The measured process: parse ``name``'s lines (one warm-up pass, then ``passes``)."""
    if ref:
        parser_class = import_from_ref(ref).SyslogParser
    else:
        from logpipe.parse.syslog import SyslogParser as parser_class
    lines = bench_parse.workloads()[name]
    batches = [lines[i:i + 64] for i in range(0, len(lines), 64)]
    parser = parser_class()
    clock = 1_795_000_000.0
    for _ in range(1 + passes):
        for batch in batches:
            clock += 0.001
            parser.parse_lines(batch, clock, "10.0.3.7")


def instructions(ref: str, name: str, passes: int) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, os.path.abspath(__file__), "--child", ref, name, str(passes)]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}).stderr
    return int(re.search(r"I\s+refs:\s+([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]


def per_line(ref: str, name: str, passes: int) -> float:
    lines = len(bench_parse.workloads()[name])
    return (instructions(ref, name, passes) - instructions(ref, name, 0)) / (passes * lines)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REF", default="main")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("formats", nargs="*", help="bench_parse.py format names (default: all)")
    args = ap.parse_args()
    names = args.formats or list(bench_parse.workloads())
    print(f"before = {describe(args.against)}, after = this tree; instructions per line")
    print("| format | before | after | after / before |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        before, after = per_line(args.against, name, args.passes), per_line("", name, args.passes)
        print(f"| {name} | {before:,.0f} | {after:,.0f} | {after / before:.3f} |", flush=True)


if __name__ == "__main__":
    main()
