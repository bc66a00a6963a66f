"""Field-by-field correctness of a parser version on the header-shape table.

The table is tests/parse/test_parse_shapes.py (SHAPES: wire line -> the whole expected event).
For each line, every field of the expected event and of the parsed one counts once: it is
right when both have it with the same value. The figure is right fields / all fields,
over the whole table and per row, for this tree and, with ``--against REF``, for that
commit's parser (parse_versions.py), so before and after come from one run.

    .venv/bin/python benchmarks/fidelity_parse.py --against main [--rows]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from parse_versions import describe, import_from_ref  # noqa: E402

from logpipe.parse.syslog import SyslogParser  # noqa: E402
from tests.parse.test_parse_shapes import SHAPES  # noqa: E402
from tests.parse.test_parse_syslog import IP, RECV  # noqa: E402


def score(parser_class: type) -> list[tuple[str, int, int]]:
    """(row id, right fields, all fields) per table row."""
    rows = []
    for param in SHAPES:
        line, expected = param.values
        got = parser_class().parse(line, RECV, IP)
        keys = expected.keys() | got.keys()
        right = sum(1 for key in keys if key in expected and key in got and expected[key] == got[key])
        rows.append((param.id, right, len(keys)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REF", help="also score the parser at this git ref")
    ap.add_argument("--rows", action="store_true", help="print every row, not only the total")
    args = ap.parse_args()
    versions = {"this tree": SyslogParser}
    if args.against:
        versions = {describe(args.against): import_from_ref(args.against).SyslogParser, **versions}
    scores = {name: score(parser_class) for name, parser_class in versions.items()}
    if args.rows:
        print("| shape | " + " | ".join(versions) + " |")
        print("| --- |" + " ---: |" * len(versions))
        for i, param in enumerate(SHAPES):
            print(f"| {param.id} | " + " | ".join(f"{rows[i][1]}/{rows[i][2]}" for rows in scores.values()) + " |")
    print(f"{len(SHAPES)} lines")
    for name, rows in scores.items():
        right = sum(row[1] for row in rows)
        total = sum(row[2] for row in rows)
        whole = sum(1 for row in rows if row[1] == row[2])
        print(f"{name}: {right}/{total} fields right ({right / total * 100:.1f} %), "
              f"{whole} of {len(rows)} events whole")


if __name__ == "__main__":
    main()
