"""Parse throughput per wire format, single core: lines/s and microseconds per line.

Usage: .venv/bin/python benchmarks/bench_parse.py [--batch 64] [--seconds 1.0] [--against main]

Lines come from the loghub corpus (/work/shared/corpus/loghub, or $LOGPIPE_CORPUS); the
RFC 5424, PRI and body variants are the same corpus lines re-dressed in that format, so
every row parses the same message texts. Lines are parsed in batches through
``SyslogParser.parse_lines`` (one call per TCP read / UDP burst, as the daemon does), with
a new receive time per batch; the figure is the best of several rounds, CPU time of this
process (time.process_time), so other load on the machine matters less.

``--against REF`` measures that commit's parser (parse_versions.py) in the same process,
``--turns`` short turns alternating with this tree's (the best of each side counts, so a
burst of load on the shared machine spoils a turn, not a side), and prints both with
their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parse_versions import describe, import_from_ref  # noqa: E402
from timing import best_rate  # noqa: E402

from logpipe.parse.syslog import SyslogParser  # noqa: E402

CORPUS = Path(os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
MONTHS = {m: i for i, m in enumerate(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def corpus(name: str) -> list[bytes]:
    path = next(CORPUS.glob(f"{name}/*.log"))
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def as_rfc5424(lines: list[bytes], sd: bool = False) -> list[bytes]:
    """``Mmm dd hh:mm:ss host app[pid]: msg`` -> RFC 5424 with the same fields."""
    out = []
    for line in lines:
        month, day, clock, host, rest = line.split(None, 4)
        tag, _, msg = rest.partition(b": ")
        app, _, pid = tag.rstrip(b"]").partition(b"[")
        stamp = b"2026-%02d-%02dT%s.%03d+01:00" % (
            MONTHS[month.decode()], int(day), clock, len(out) % 1000)
        data = b'[meta@32473 seq="%d" src="corpus"]' % len(out) if sd else b"-"
        out.append(b"<30>1 %s %s %s %s - %s %s" % (stamp, host, app, pid or b"-", data, msg))
    return out


def workloads() -> dict[str, list[bytes]]:
    linux = corpus("Linux")
    openssh = corpus("OpenSSH")
    return {
        "rfc3164 no PRI (Linux_2k)": linux,
        "rfc3164 no PRI (OpenSSH_2k)": openssh,
        "rfc3164 with PRI (OpenSSH_2k)": [b"<38>" + line for line in openssh],
        "rfc3164 ISO stamp (OpenSSH_2k)": [
            b"<38>2026-11-21T10:00:%02d.123+01:00 " % (i % 60) + line.split(None, 3)[3]
            for i, line in enumerate(openssh)],
        "rfc5424 (OpenSSH_2k)": as_rfc5424(openssh),
        "rfc5424 + SD (OpenSSH_2k)": as_rfc5424(openssh, sd=True),
        "rfc5424 + JSON body": [
            b'<30>1 2026-11-21T10:00:00.%03dZ web1 api 12 - - {"level":"info","msg":"%s","n":%d}'
            % (i % 1000, line.split(b": ", 1)[-1][:60].replace(b'"', b"'"), i)
            for i, line in enumerate(openssh)],
        "rfc3164 + logfmt body": [
            b'<30>Nov 21 10:00:%02d web1 api[12]: lvl=warn msg="%s" n=%d'
            % (i % 60, line.split(b": ", 1)[-1][:60].replace(b'"', b"'"), i)
            for i, line in enumerate(openssh)],
        "raw, not syslog (HDFS_2k)": corpus("HDFS"),
    }


def measure(lines: list[bytes], batch: int, seconds: float, parser_class: type = SyslogParser) -> float:
    """Best lines/s over rounds of ~``seconds`` / 5 each."""
    parser = parser_class()
    batches = [lines[i:i + batch] for i in range(0, len(lines), batch)]
    clock = [1_795_000_000.0]

    def run_once() -> int:
        for chunk in batches:
            clock[0] += 0.001  # a new receive time per chunk, as the listeners pass it
            parser.parse_lines(chunk, clock[0], "10.0.3.7")
        return len(lines)

    return best_rate(run_once, seconds)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--batch", type=int, default=64, help="lines per parse_lines call")
    args.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per format")
    args.add_argument("--against", metavar="REF", help="also measure the parser at this git ref")
    args.add_argument("--turns", type=int, default=10, help="alternating turns per format with --against")
    options = args.parse_args()
    print(f"python {sys.version.split()[0]}, batch {options.batch}, "
          f"best of ~5 rounds in {options.seconds:g} CPU s per format")
    if options.against:
        compare(options)
        return
    print(f"{'format':<34} {'lines/s':>12} {'us/line':>9}")
    for name, lines in workloads().items():
        rate = measure(lines, options.batch, options.seconds)
        print(f"{name:<34} {rate:>12,.0f} {1e6 / rate:>9.2f}")


def compare(options: argparse.Namespace) -> None:
    """Both parsers per format, ``turns`` alternating turns of ``seconds`` / ``turns`` each."""
    old = import_from_ref(options.against).SyslogParser
    print(f"before = {describe(options.against)}, after = this tree; µs/line")
    print("| format | before µs | after µs | after / before |")
    print("| --- | ---: | ---: | ---: |")
    for name, lines in workloads().items():
        best = [0.0, 0.0]
        for _ in range(options.turns):
            for i, parser_class in enumerate((old, SyslogParser)):
                best[i] = max(best[i], measure(lines, options.batch, options.seconds / options.turns, parser_class))
        print(f"| {name} | {1e6 / best[0]:.2f} | {1e6 / best[1]:.2f} | {best[0] / best[1]:.3f} |")


if __name__ == "__main__":
    main()
