"""Command line: argv -> run | validate | test | announce. The only place that exits.

Exit codes: 0 success, 2 invalid config or usage, 1 runtime failure (e.g. a port that
cannot be bound).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time

import orjson

from .config import ConfigError, load, parse_address

__all__ = ["main"]


def _load_or_exit(path: str):
    try:
        return load(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        sys.exit(2)


def cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from .app import Daemon
    from .logs import configure

    config = _load_or_exit(args.config)
    configure(config.daemon.log_level, config.daemon.log_format)
    import structlog

    log = structlog.get_logger().bind(component="daemon")

    async def main() -> None:
        await Daemon(config).run()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except OSError as e:
        log.error("start_failed", stage="binding", error=f"{e.strerror or e}")
        return 1
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.config)
    sources = []
    if config.sources.syslog:
        s = config.sources.syslog
        sources += [f"syslog/udp {s.udp}"] if s.udp else []
        sources += [f"syslog/tcp {s.tcp}"] if s.tcp else []
        try:
            from .parse.syslog import SyslogParser

            SyslogParser(s.timezone)
        except ValueError as e:
            print(f"sources.syslog.timezone: {e}", file=sys.stderr)
            return 2
    if config.sources.metadata and config.sources.metadata.udp:
        sources.append(f"metadata/udp {config.sources.metadata.udp}")
    sinks = ", ".join(f"{name} ({type(s).__struct_config__.tag})" for name, s in config.sinks.items())
    print(f"ok: {len(sources)} listener(s) [{'; '.join(sources)}], {len(config.transforms)} transform(s), sinks: {sinks}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Parse + enrich + transforms on raw lines. By default prints each resulting event as
    one JSON line (the spec's contract) and names the transform that dropped a line on
    stderr; ``--explain`` prints one JSON object per input line instead:
    ``{"event": {...}, "sinks": [...]}`` or ``{"event": {...}, "dropped_by": "1:drop"}``."""
    from .enrich import Enricher, MetadataTable
    from .metrics import Metrics
    from .parse.framing import truncate_datagram
    from .parse.metadata import AnnouncementDecoder, AnnouncementError
    from .parse.syslog import SyslogParser
    from .transforms import Transforms

    config = _load_or_exit(args.config)
    metrics = Metrics()
    syslog = config.sources.syslog
    parser = SyslogParser(syslog.timezone if syslog else "UTC", (syslog.parse_body if syslog else "auto") == "auto")
    max_line = syslog.max_line_bytes if syslog else 65536
    metadata = config.sources.metadata
    table = MetadataTable(metadata.max_entries if metadata else 100_000, metadata.ttl_s if metadata else 600, metrics)
    if args.metadata:
        decoder = AnnouncementDecoder()
        with open(args.metadata, "rb") as f:
            for n, raw in enumerate(f, 1):
                if raw.strip():
                    try:
                        table.apply(decoder.decode(raw.strip(), None, time.time()))
                    except AnnouncementError as e:
                        print(f"{args.metadata}:{n}: {e.result}: {e}", file=sys.stderr)
    enricher = Enricher(table, config.enrich.pairs(), metrics)
    transforms = Transforms(config.transforms, metrics)
    all_sinks = list(config.sinks)
    stream = open(args.lines, "rb") if args.lines else sys.stdin.buffer
    out = sys.stdout.buffer
    with stream:
        for n, raw in enumerate(stream, 1):
            line = truncate_datagram(raw.rstrip(b"\n"), max_line)
            if not line:
                continue
            events = [parser.parse(line, time.time(), args.source_ip)]
            enricher.enrich(events)
            event, dropped_by, sinks = transforms.trace(events[0])
            if args.explain:
                shown = {"event": event, "dropped_by": dropped_by} if dropped_by else {
                    "event": event, "sinks": all_sinks if sinks is None else list(sinks)}
                out.write(orjson.dumps(shown) + b"\n")
            elif dropped_by:
                out.flush()
                print(f"line {n}: dropped by {dropped_by}", file=sys.stderr)
            else:
                out.write(orjson.dumps(event) + b"\n")
    out.flush()
    return 0


def cmd_announce(args: argparse.Namespace) -> int:
    from .parse.metadata import sign

    announcement: dict = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            print(f"announce: expected KEY=VALUE, got {pair!r}", file=sys.stderr)
            return 2
        if key in ("ttl_s", "ts"):
            try:
                announcement[key] = int(value)
            except ValueError:
                print(f"announce: {key} must be an integer, got {value!r}", file=sys.stderr)
                return 2
        else:
            announcement[key] = value
    payload = orjson.dumps(announcement)
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read().rstrip()
        announcement.setdefault("ts", int(time.time()))
        text = orjson.dumps(announcement).decode()
        payload = orjson.dumps({"payload": text, "hmac": sign(text, secret)})
    try:
        host, port = parse_address(args.to)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if args.bind:
                sock.bind((args.bind, 0))
            sock.sendto(payload, (host, port))
    except (OSError, ValueError) as e:
        print(f"announce: sending to {args.to}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_clickhouse_schema(args: argparse.Namespace) -> int:
    from .config import ClickHouseSink
    from .sinks.clickhouse_ddl import schema_text

    config = _load_or_exit(args.config)
    sinks = {name: s for name, s in config.sinks.items() if isinstance(s, ClickHouseSink)}
    if not sinks:
        print(f"{args.config}: no sink of type clickhouse", file=sys.stderr)
        return 2
    print(schema_text(sinks))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logpipe", description="Syslog in, container metadata joined, batched out.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", required=True)
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a config file")
    validate.add_argument("-c", "--config", required=True)
    validate.set_defaults(func=cmd_validate)

    test = sub.add_parser("test", help="parse, enrich and transform raw lines; print events as JSON lines")
    test.add_argument("-c", "--config", required=True)
    test.add_argument("lines", nargs="?", help="file of raw syslog lines (default: stdin)")
    test.add_argument("--metadata", help="file of announcements (JSON lines) loaded first")
    test.add_argument("--source-ip", help="the sender's address for every line")
    test.add_argument(
        "--explain",
        action="store_true",
        help='one JSON object per line: {"event": ..., "sinks": [...]} or {"event": ..., "dropped_by": "N:TYPE"}',
    )
    test.set_defaults(func=cmd_test)

    announce = sub.add_parser("announce", help="send one metadata announcement")
    announce.add_argument("--to", required=True, help="HOST:PORT of sources.metadata.udp")
    announce.add_argument("--secret-file", help="sign with the secret in this file")
    announce.add_argument("--bind", help="source address to send from")
    announce.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    announce.set_defaults(func=cmd_announce)

    schema = sub.add_parser("clickhouse-schema", help="print a recommended CREATE TABLE for each clickhouse sink's table")
    schema.add_argument("-c", "--config", required=True)
    schema.set_defaults(func=cmd_clickhouse_schema)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    main()
