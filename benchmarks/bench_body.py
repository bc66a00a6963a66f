"""apply_body cost per body shape, old vs new in one process (timeit, best of 5).

The shapes are the e2e corpus's bodies (bench_e2e.build_corpus) on an RFC 3164 event, plus
prose with '=' that is not logfmt. ``--old FILE`` times another version of
logpipe/parse/body.py side by side, e.g. main's:

    git show main:logpipe/parse/body.py > /tmp/body_old.py
    .venv/bin/python benchmarks/bench_body.py --old /tmp/body_old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from logpipe.parse import body as new  # noqa: E402

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


if __name__ == "__main__":
    main()
