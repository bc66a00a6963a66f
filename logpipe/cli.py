"""Command line: argv -> run | validate | test | announce | replay. The only place that exits.

Exit codes: 0 success, 2 invalid config or usage, 1 runtime failure (e.g. a port that
cannot be bound).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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

    from .daemon.app import Daemon
    from .logs import configure
    from .sources.base import BindError

    config = _load_or_exit(args.config)
    configure(config.daemon.log_level, config.daemon.log_format)
    import structlog

    log = structlog.get_logger().bind(component="daemon")
    worker = getattr(args, "worker", None)
    if worker is None and config.daemon.workers > 1:
        from .daemon.supervisor import run_supervisor

        try:
            return run_supervisor(config, args.config)
        except OSError as e:
            log.error("start_failed", stage="binding", error=f"{e.strerror or e}")
            return 1
        except ConfigError as e:
            log.error("start_failed", stage="config", error=str(e))
            return 2

    async def main() -> None:
        if worker is None:
            await Daemon(config, config_path=args.config).run()
            return
        from .daemon.worker import apply_worker_overrides, serve_worker_channel

        structlog.contextvars.bind_contextvars(worker=worker)
        ports = dict(_worker_port(p) for p in args.worker_port)
        daemon = Daemon(config, config_path=args.config, reuse_port=True,
                        rewrite=lambda c: apply_worker_overrides(c, worker, ports))
        channel = asyncio.create_task(serve_worker_channel(daemon, args.worker_fd))
        try:
            await daemon.run()
        finally:
            channel.cancel()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except BindError as e:
        log.error("start_failed", stage="binding", error=str(e))
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        log.error("start_failed", stage="starting", error=f"{where}{e.strerror or e}")
        return 1
    except ConfigError as e:  # a secret file or variable that cannot be read
        log.error("start_failed", stage="config", error=str(e))
        return 2
    except ValueError as e:  # a setting only checked when built (a timezone name)
        log.error("start_failed", stage="config", error=str(e))
        return 2
    return 0


def _worker_port(text: str) -> tuple[str, int]:
    key, _, port = text.partition("=")
    return key, int(port)


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import SyslogSource
    from .daemon.preflight import environment_problems

    config = _load_or_exit(args.config)
    listeners = []
    problems = [] if args.no_environment else environment_problems(config)
    for name, source in config.sources.items():
        listeners += [f"{name}/{key} {address}" for key, _, address in source.listeners()]
        if isinstance(source, SyslogSource):
            from .parse.syslog import SyslogParser

            try:
                SyslogParser(source.timezone)
            except ValueError as e:
                problems.append(f"sources.{name}.timezone: {e}")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    sinks = ", ".join(f"{name} ({type(s).__struct_config__.tag})" for name, s in config.sinks.items())
    print(f"ok: {len(listeners)} listener(s) [{'; '.join(listeners)}], {len(config.transforms)} transform(s), sinks: {sinks}")
    if not args.no_environment:
        for warning in asyncio.run(_check_sinks(config)):
            print(f"warning: {warning}", file=sys.stderr)
    return 0


async def _check_sinks(config, timeout_s: float = 5.0) -> list[str]:
    """Each sink's reachability probe, concurrently and bounded: warnings, never errors
    (a destination that is down now may be up when the daemon runs)."""
    from .daemon.assemble import build_sink

    async def probe(name: str, sink_config) -> str | None:
        sink = None
        try:
            sink = build_sink(name, sink_config, config.daemon.data_dir)
            problem = await asyncio.wait_for(sink.check(), timeout_s)
        except TimeoutError:
            problem = f"no answer within {timeout_s:.0f}s"
        except Exception as e:  # a probe must not turn validation into a crash
            problem = f"{type(e).__name__}: {e}"
        finally:
            if sink is not None:
                try:
                    await sink.close()
                except Exception:
                    pass
        return f"sinks.{name} ({sink_config.__struct_config__.tag}) not ready: {problem}" if problem else None

    results = await asyncio.gather(*(probe(n, s) for n, s in config.sinks.items()))
    return [r for r in results if r]


def cmd_test(args: argparse.Namespace) -> int:
    """Parse + enrich + transforms on raw lines. By default prints each resulting event as
    one JSON line (the spec's contract) and names the transform that dropped a line on
    stderr; ``--explain`` prints one JSON object per input line instead:
    ``{"event": {...}, "sinks": [...]}`` or ``{"event": {...}, "dropped_by": "1:drop"}``."""
    from .daemon.assemble import assemble, syslog_settings
    from .parse.framing import truncate_datagram
    from .parse.metadata import AnnouncementDecoder, AnnouncementError
    from .parse.syslog import SyslogParser

    config = _load_or_exit(args.config)
    try:
        source, syslog = syslog_settings(config, args.source)
        parser = SyslogParser(syslog.timezone, syslog.parse_body == "auto", source=source)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    max_line = syslog.max_line_bytes
    graph = assemble(config, sink_names=[], offline=True)
    table = graph.table
    if args.metadata:
        decoder = AnnouncementDecoder()
        with open(args.metadata, "rb") as f:
            for n, raw in enumerate(f, 1):
                if raw.strip():
                    try:
                        table.apply(decoder.decode(raw.strip(), None, time.time()))
                    except AnnouncementError as e:
                        print(f"{args.metadata}:{n}: {e.result}: {e}", file=sys.stderr)
    enricher = graph.pipeline.enricher
    transforms = graph.pipeline.transforms
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
    try:
        host, port = parse_address(args.to)
    except ValueError as e:
        print(f"announce: --to: {e}", file=sys.stderr)
        return 2
    payload = orjson.dumps(announcement)
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read().rstrip()
        announcement.setdefault("ts", int(time.time()))
        text = orjson.dumps(announcement).decode()
        payload = orjson.dumps({"payload": text, "hmac": sign(text, secret)})
    try:
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
    from .sinks.clickhouse_ddl import schema_text, server_info

    config = _load_or_exit(args.config)
    sinks = {name: s for name, s in config.sinks.items() if isinstance(s, ClickHouseSink)}
    if not sinks:
        print(f"{args.config}: no sink of type clickhouse", file=sys.stderr)
        return 2
    if args.cluster is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", args.cluster):
        print(f"--cluster: expected a cluster name from remote_servers, got {args.cluster!r}", file=sys.stderr)
        return 2
    server = None
    if args.server_version:
        try:
            server = server_info(args.server_version)
        except ValueError as e:
            print(f"--server-version: {e}", file=sys.stderr)
            return 2
    elif args.probe:
        from .logs import configure

        configure("warning")  # stdout is the schema: the sink's log lines stay out of it
        name, sink = next(iter(sinks.items()))
        try:
            server = asyncio.run(_probe_clickhouse(name, sink))
        except Exception as e:  # the reason the server could not be asked, whatever it is
            print(f"--probe: sinks.{name}: {e}", file=sys.stderr)
            return 1
    print(schema_text(sinks, cluster=args.cluster, server=server))
    return 0


async def _probe_clickhouse(name: str, config):
    from .sinks.clickhouse import ClickHouse
    from .sinks.clickhouse_ddl import ServerInfo

    sink = ClickHouse(name, config)
    try:
        return ServerInfo(*await sink.server_features())
    finally:
        await sink.close()


def cmd_replay(args: argparse.Namespace) -> int:
    """Backfill old logs into one sink; see replay.py. Prints a JSON summary on stdout."""
    import uvloop

    from .logs import configure
    from .replay import Replay, ReplayOptions

    config = _load_or_exit(args.config)
    configure(config.daemon.log_level, config.daemon.log_format)
    mapping = {}
    for pair in args.map:
        new, sep, old = pair.partition("=")
        if not sep or not new or not old:
            print(f"replay: --map expects NEW=OLD, got {pair!r}", file=sys.stderr)
            return 2
        mapping[new] = old
    if args.rate is not None and args.rate <= 0:
        print("replay: --rate must be > 0", file=sys.stderr)
        return 2
    options = ReplayOptions(sink=args.sink, sources=args.sources, source=args.source, checkpoint=args.checkpoint, rate=args.rate,
                            format=args.format, table=args.table, mapping=mapping, progress=not args.no_progress)

    async def main() -> dict:
        return await Replay(config, options).run()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            summary = runner.run(main())
    except (OSError, ValueError) as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    print(orjson.dumps(summary).decode())
    for note in _replay_notes(summary, args.sink):
        print(f"replay: {note}", file=sys.stderr)
    if summary["already_complete"]:
        print(f"replay already complete: the checkpoint {summary['checkpoint']} says every source was sent; nothing "
              "was sent now (delete the checkpoint to replay from the start)", file=sys.stderr)
        return 0
    if summary["complete"]:
        print(f"replay complete: {summary['sent_events']:,} events sent in {summary['elapsed_s']} s "
              f"({summary['events_per_s']:,} ev/s), {summary['dead_letter_events']} dead letter(s)", file=sys.stderr)
        return 0
    print(f"replay stopped: {summary['sent_events']:,} events confirmed this run; checkpoint {summary['checkpoint']}; "
          "run the same command to resume", file=sys.stderr)
    return 1


def _replay_notes(summary: dict, sink: str) -> list[str]:
    """What a replay read but did not send to ``sink``, and which times were not the data's."""
    notes = []
    if summary["routed_elsewhere_events"]:
        notes.append(f"{summary['routed_elsewhere_events']:,} event(s) routed by the transforms to other sinks only: "
                     f"not sent (replay feeds {sink} alone)")
    if summary["dropped_by_transforms_events"]:
        notes.append(f"{summary['dropped_by_transforms_events']:,} event(s) dropped by transforms")
    missing, unreadable = summary["time_missing_events"], summary["time_unreadable_events"]
    if missing or unreadable:
        times = ", ".join(f"{path}: {when}" for path, when in summary["fallback_times"].items())
        notes.append(f"{missing:,} record(s) without _time and {unreadable:,} with an unreadable one (flagged "
                     f"parse_error, the value kept as body._time) got their file's modification time ({times})")
    return notes

def _api_url(args: argparse.Namespace) -> str:
    """``--api URL``, else ``api.listen`` of ``-c FILE`` (a wildcard host means loopback)."""
    if args.api:
        return args.api if "://" in args.api else "http://" + args.api
    if args.config:
        config = _load_or_exit(args.config)
        if not config.api.address:
            print(f"{args.config}: the API is off (api.enabled = false or no api.listen); the daemon serves none",
                  file=sys.stderr)
            sys.exit(2)
        host, port = parse_address(config.api.address)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return "http://127.0.0.1:8686"


def cmd_top(args: argparse.Namespace) -> int:
    from .top import run

    return run(_api_url(args), args.once, args.interval)


def cmd_tap(args: argparse.Namespace) -> int:
    """Streams /api/tap to stdout, one JSON object per line: {"sinks": [...], "event": {...}}.
    Exit 0 after --limit events or Ctrl-C, 1 when the daemon ends the stream (it stopped
    or died) or cannot be reached, 2 for a refused request (an unknown --sink)."""
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    query = {"limit": str(args.limit), "rate": str(args.rate)}
    if args.sink:
        query["sink"] = args.sink
    url = _api_url(args).rstrip("/") + "/api/tap?" + urllib.parse.urlencode(query)
    out = sys.stdout.buffer
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=None) as resp:
            for line in resp:
                out.write(line)
                out.flush()
                received += 1
    except urllib.error.HTTPError as e:
        print(f"tap: {e.code}: {e.read().decode(errors='replace')}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # piped into head
        return 0
    except (OSError, ValueError, http.client.HTTPException) as e:
        print(f"tap: reading {url}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    if args.limit and received >= args.limit:
        return 0
    # The daemon ends a stream only when it stops (or dies): not what the user asked for.
    print(f"tap: the daemon closed the stream after {received} event(s)"
          + (f" of --limit {args.limit}" if args.limit else ""), file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logpipe", description="Syslog in, container metadata joined, batched out.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", required=True)
    # Internal: how a daemon.workers > 1 supervisor starts its workers (logpipe/daemon/supervisor.py, worker.py).
    run.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--worker-port", action="append", default=[], help=argparse.SUPPRESS)  # SOURCE.udp=PORT
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a config file")
    validate.add_argument("-c", "--config", required=True)
    validate.add_argument("--no-environment", action="store_true",
                          help="skip the checks of this machine: files, environment variables, data_dir, sink reachability")
    validate.set_defaults(func=cmd_validate)

    test = sub.add_parser("test", help="parse, enrich and transform raw lines; print events as JSON lines")
    test.add_argument("-c", "--config", required=True)
    test.add_argument("lines", nargs="?", help="file of raw syslog lines (default: stdin)")
    test.add_argument("--metadata", help="file of announcements (JSON lines) loaded first")
    test.add_argument("--source", help="the syslog source whose timezone and parse_body apply (default: the first)")
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

    replay = sub.add_parser("replay", help="backfill old logs (NDJSON, syslog text, gzip'd or not, SQLite) into a sink")
    replay.add_argument("-c", "--config", required=True)
    replay.add_argument("--sink", required=True, help="name of the sink in the config")
    replay.add_argument("--source", help="the syslog source whose timezone and parse_body apply (default: the first)")
    replay.add_argument("sources", nargs="+", metavar="SOURCE", help="files, read in order")
    replay.add_argument("--checkpoint", help="resume file (default: DATA_DIR/replay/SINK.checkpoint.json)")
    replay.add_argument("--rate", type=float, help="at most this many events per second")
    replay.add_argument("--format", choices=("auto", "ndjson", "syslog"), default="auto", help="text files: auto-detected by default")
    replay.add_argument("--table", help="SQLite sources: the table to read")
    replay.add_argument("--map", action="append", default=[], metavar="NEW=OLD", help="rename a field/column (repeatable)")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    replay.set_defaults(func=cmd_replay)

    top = sub.add_parser("top", help="live table of a running daemon: rates, errors, buffers, latency")
    top.add_argument("--api", help="the daemon's API URL (default http://127.0.0.1:8686)")
    top.add_argument("-c", "--config", help="read api.listen from this config instead")
    top.add_argument("--once", action="store_true", help="print one frame (two scrapes --interval apart) and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.set_defaults(func=cmd_top)

    tap = sub.add_parser("tap", help="print a sample of the events flowing through a running daemon as JSON lines")
    tap.add_argument("--api", help="the daemon's API URL (default http://127.0.0.1:8686)")
    tap.add_argument("-c", "--config", help="read api.listen from this config instead")
    tap.add_argument("--limit", type=int, default=0, help="stop after N events (default: until interrupted)")
    tap.add_argument("--sink", help="only events going to this sink")
    tap.add_argument("--rate", type=float, default=100, help="at most this many events per second (default 100)")
    tap.set_defaults(func=cmd_tap)

    schema = sub.add_parser("clickhouse-schema", help="print a recommended CREATE TABLE for each clickhouse sink's table")
    schema.add_argument("-c", "--config", required=True)
    schema.add_argument("--cluster", help="ReplicatedMergeTree ON CLUSTER tables plus a Distributed table for this cluster")
    which = schema.add_mutually_exclusive_group()
    which.add_argument("--server-version", help="print only the statements this ClickHouse version accepts (e.g. 18.16)")
    which.add_argument("--probe", action="store_true", help="ask the first clickhouse sink's server its version instead")
    schema.set_defaults(func=cmd_clickhouse_schema)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except BrokenPipeError:
        # `logpipe test ... | head`: the reader is gone, which is not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
