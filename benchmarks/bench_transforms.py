"""Transform cost: events/s through parse + enrich + transforms (+ the route's targets and
the one msgspec encode per event, as Pipeline.ingest does), with the example transforms of
config/clickhouse-http.toml off, then added one at a time until all are on.

Usage: .venv/bin/python benchmarks/bench_transforms.py [--batch 64] [--seconds 1.0] [--engine re2|re]

The lines are a synthetic mix shaped like docs/sample-lines.log: 60 % nginx access lines
(10 % of those health checks), 25 % application logfmt, 15 % application JSON, with varied
clients, paths, numbers and a secret in some. Figures are the best of ~5 rounds of process
CPU time (time.process_time), one core.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from timing import best_rate  # noqa: E402

from logpipe.config import load  # noqa: E402
from logpipe.enrich import Enricher, MetadataTable  # noqa: E402
from logpipe.metrics import Metrics  # noqa: E402
from logpipe.parse.syslog import SyslogParser  # noqa: E402
from logpipe.transforms import Transforms  # noqa: E402

CONFIG = ROOT / "config" / "clickhouse-http.toml"


def lines(n: int = 4000) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        sec = i % 60
        r = rng.random()
        if r < 0.06:
            out.append(b'<14>Nov 21 10:00:%02d web-1 nginx[12]: 10.0.0.9 - - [21/Nov/2026:10:00:%02d +0000] '
                       b'"GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.28" 0.001' % (sec, sec))
        elif r < 0.60:
            path = rng.choice([b"/orders/%d" % rng.randrange(10**5), b"/api/login?token=%x" % rng.getrandbits(64),
                               b"/static/app.%x.js" % rng.getrandbits(32), b"/search?q=shoes&page=%d" % rng.randrange(9)])
            out.append(b'<14>Nov 21 10:00:%02d web-%d nginx[12]: 203.0.113.%d - - [21/Nov/2026:10:00:%02d +0000] '
                       b'"%s %s HTTP/1.1" %d %d "https://shop.example/" "Mozilla/5.0 (X11; Linux x86_64)" 0.%03d'
                       % (sec, rng.randrange(4), rng.randrange(255), sec, rng.choice([b"GET", b"POST"]), path,
                          rng.choice([200, 200, 200, 304, 404, 500]), rng.randrange(10**6), rng.randrange(1000)))
        elif r < 0.85:
            who = b"user%d@example.com" % rng.randrange(1000) if rng.random() < 0.3 else b"user %d" % rng.randrange(1000)
            out.append(b'<11>Nov 21 10:00:%02d api-1 api[7]: level=%s msg="payment retry for %s" order_id=%d latency_ms=%d.%d retries=%d'
                       % (sec, rng.choice([b"info", b"warn", b"error"]), who, rng.randrange(10**6),
                          rng.randrange(500), rng.randrange(10), rng.randrange(5)))
        else:
            out.append(b'<11>1 2026-11-21T10:00:%02d.%03dZ api-1 api 7 - - {"level":"error","msg":"db connect '
                       b'postgres://app:s3cret@db:5432/main failed after %d ms","order_id":"%d"}'
                       % (sec, i % 1000, rng.randrange(5000), rng.randrange(10**6)))
    return out


def measure(transforms: Transforms, data: list[bytes], batch: int, seconds: float) -> float:
    metrics = Metrics()
    parser = SyslogParser()
    enricher = Enricher(MetadataTable(1000, 600, metrics), [("source_ip", "ip")], metrics)
    encode = msgspec.json.Encoder().encode  # the encoder Pipeline uses (see pipeline.py)
    batches = [data[i:i + batch] for i in range(0, len(data), batch)]
    clock = [1_795_000_000.0]

    def run_once() -> int:
        for chunk in batches:
            clock[0] += 0.001
            events = parser.parse_lines(chunk, clock[0], "10.0.3.7")
            enricher.enrich(events)
            if transforms.routed:
                events, _targets = transforms.apply_routed(events)
            elif transforms:
                events = transforms.apply(events)
            [encode(e) for e in events]
        return len(data)

    return best_rate(run_once, seconds)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--batch", type=int, default=64, help="lines per chunk")
    args.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per row")
    args.add_argument("--engine", choices=["re2", "re"], default="re2",
                      help="re: Python's backtracking re with the static check (the fallback), for comparison")
    options = args.parse_args()
    if options.engine == "re":
        import logpipe.safe_regex

        logpipe.safe_regex._re2 = None
    config = load(str(CONFIG))
    all_steps = list(config.transforms)
    # Cumulative: each row adds the next transform of the example, so the difference between
    # two rows is that transform's cost on events shaped by the ones before it.
    rows = {"transforms off": []}
    for i, t in enumerate(all_steps):
        rows[f"+ {t.name or type(t).__struct_config__.tag} ({type(t).__struct_config__.tag})"] = all_steps[: i + 1]
    data = lines()
    print(f"python {sys.version.split()[0]}, regex engine {options.engine}, batch {options.batch}, "
          f"{len(data)} lines, best of ~5 rounds in {options.seconds:g} CPU s per row")
    print(f"{'transforms':<44} {'events/s':>11} {'us/event':>9}")
    base = None
    for name, steps in rows.items():
        rate = measure(Transforms(steps, Metrics()), data, options.batch, options.seconds)
        base = base or rate
        print(f"{name:<44} {rate:>11,.0f} {1e6 / rate:>9.2f}")


if __name__ == "__main__":
    main()
