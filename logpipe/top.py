"""``logpipe top``: a live table of a running daemon, from successive /api/stats scrapes.

Rates are differences between two scrapes divided by the time between them; batch latency
is the mean of the batches confirmed in that interval (histogram sum and count deltas).
A sink with several endpoints gets one row per endpoint under it (state, request rate,
errors, possible duplicates). Plain ANSI (clear screen, home), no curses; every line fits
in 80 columns. Rendering is a pure function of two scrapes, so ``--once`` and the tests see
exactly what the live view shows.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any

__all__ = ["fetch_stats", "render", "run"]

WIDTH = 80
_TYPE_NAMES = {"victorialogs": "vlogs", "clickhouse": "clickhs"}  # fit the 7-column TYPE


def fetch_stats(api: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(api.rstrip("/") + "/api/stats", timeout=timeout) as resp:
        return json.load(resp)


def _series(stats: dict, name: str) -> dict[str, Any]:
    return stats.get("metrics", {}).get(name, {})


def _labels(key: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in key.split(",") if "=" in part)


def _sum(stats: dict, name: str, **match: str) -> float:
    total = 0.0
    for key, value in _series(stats, name).items():
        labels = _labels(key)
        if all(labels.get(k) == v for k, v in match.items()):
            total += value["sum"] if isinstance(value, dict) else value
    return total


def _hist(stats: dict, name: str, **match: str) -> tuple[float, float]:
    count = total = 0.0
    for key, value in _series(stats, name).items():
        labels = _labels(key)
        if isinstance(value, dict) and all(labels.get(k) == v for k, v in match.items()):
            count += value["count"]
            total += value["sum"]
    return count, total


def _scaled(value: float, step: int, units: tuple[str, ...]) -> str:
    """``value`` in the largest unit it reaches: whole in the first unit and from 100 up,
    one decimal below (``1.5k``)."""
    for unit in units:
        if abs(value) < step:
            return f"{value:.0f}{unit}" if unit == units[0] or value >= 100 else f"{value:.1f}{unit}"
        value /= step
    return f"{value:.0f}T"


def _si(value: float) -> str:
    return _scaled(value, 1000, ("", "k", "M", "G"))


def _bytes(value: float) -> str:
    return _scaled(value, 1024, ("B", "K", "M", "G"))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}d{hours:02d}h{minutes:02d}m" if days else f"{hours}h{minutes:02d}m{secs:02d}s"


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.0f}s"


def render(api: str, previous: dict | None, current: dict, interval_s: float) -> str:
    """One frame. Without ``previous`` (or a restarted daemon) rates show as ``-``."""
    if previous is not None and previous.get("uptime_s", 0) > current.get("uptime_s", 0):
        previous = None  # the daemon restarted: counters went back to zero
    dt = interval_s if interval_s > 0 else 1.0

    def rate(name: str, **match: str) -> str:
        if previous is None:
            return "-"
        return _si(max(0.0, _sum(current, name, **match) - _sum(previous, name, **match)) / dt)

    def byte_rate(name: str, **match: str) -> str:
        if previous is None:
            return "-"
        return _bytes(max(0.0, _sum(current, name, **match) - _sum(previous, name, **match)) / dt) + "/s"

    lines = []
    head = f"logpipe top  {api}"
    tail = f"up {_duration(current.get('uptime_s', 0))}  {time.strftime('%H:%M:%S')}"
    lines.append(head[: WIDTH - len(tail) - 1].ljust(WIDTH - len(tail)) + tail)
    lines.append(f"metadata entries {current.get('metadata_entries', 0)}   reloads "
                 f"{_sum(current, 'logpipe_reloads_total', result='ok'):.0f} ok "
                 f"{_sum(current, 'logpipe_reloads_total', result='refused'):.0f} refused")
    lines.append("")
    lines.append(f"{'SOURCE':<16}{'EVENTS/S':>10}{'BYTES/S':>10}{'TOTAL':>10}{'ERRORS':>9}{'TRUNC':>8}{'KDROP':>8}")
    sources = sorted({(_labels(k).get("source", "?"), _labels(k).get("protocol", "?"))
                      for k in _series(current, "logpipe_received_events_total")})
    shown: set[str] = set()
    for source, protocol in sources:
        # Parse errors and truncations are counted per source, kernel drops per UDP socket:
        # each is shown once, on the row it belongs to.
        errors = trunc = ""
        if source not in shown:
            shown.add(source)
            if source == "metadata":
                bad = _sum(current, "logpipe_metadata_announcements_total") - sum(
                    _sum(current, "logpipe_metadata_announcements_total", result=r) for r in ("ok", "removed"))
                errors = _si(bad)
            else:
                errors = _si(_sum(current, "logpipe_parse_errors_total", source=source))
                trunc = _si(_sum(current, "logpipe_truncated_events_total", source=source))
        kdrop = _si(_sum(current, "logpipe_udp_kernel_drops_total", source=source)) if protocol == "udp" and source != "metadata" else ""
        lines.append(
            f"{(source + '/' + protocol)[:15]:<16}"
            f"{rate('logpipe_received_events_total', source=source, protocol=protocol):>10}"
            f"{byte_rate('logpipe_received_bytes_total', source=source, protocol=protocol):>10}"
            f"{_si(_sum(current, 'logpipe_received_events_total', source=source, protocol=protocol)):>10}"
            f"{errors:>9}{trunc:>8}{kdrop:>8}"
        )
    lines.append("")
    lines.append(f"{'SINK':<12}{'TYPE':<8}{'SENT/S':>8}{'TOTAL':>8}{'ERR/S':>7}{'DEAD':>6}"
                 f"{'BUFFER':>8}{'FILL':>6}{'LATENCY':>9}  {'STATUS':<6}")
    problems = []
    for name, sink in sorted(current.get("sinks", {}).items()):
        fill = ""
        if sink.get("buffer_max_bytes"):
            fill = f"{100 * sink.get('buffer_bytes', 0) / sink['buffer_max_bytes']:.0f}%"
        latency = None
        if previous is not None:
            count0, sum0 = _hist(previous, "logpipe_batch_latency_seconds", sink=name)
            count1, sum1 = _hist(current, "logpipe_batch_latency_seconds", sink=name)
            if count1 > count0:
                latency = (sum1 - sum0) / (count1 - count0)
        status = "FAIL" if sink.get("failing") else "ok"
        if sink.get("failing") and sink.get("last_error"):
            problems.append(f"{name}: {sink['last_error']}")
        lines.append(
            f"{name[:11]:<12}{_TYPE_NAMES.get(sink.get('type', '?'), sink.get('type', '?'))[:7]:<8}"
            f"{rate('logpipe_sent_events_total', sink=name):>8}"
            f"{_si(_sum(current, 'logpipe_sent_events_total', sink=name)):>8}"
            f"{rate('logpipe_send_errors_total', sink=name):>7}"
            f"{_si(_sum(current, 'logpipe_dead_letter_events_total', sink=name)):>6}"
            f"{_si(sink.get('buffer_events', 0)):>8}{fill:>6}{_latency(latency):>9}  {status:<6}"
        )
        endpoints = sink.get("endpoints") or []
        if len(endpoints) > 1:
            before = {}
            if previous is not None:
                before = {e.get("endpoint"): e for e in previous.get("sinks", {}).get(name, {}).get("endpoints") or []}
            lines += _endpoint_rows(endpoints, before, dt)
    lines += _nats_lines(current, rate)
    drops = [(k, v) for k, v in _series(current, "logpipe_dropped_events_total").items() if v]
    lines.append("")
    if drops:
        text = "drops: " + ", ".join(f"{_labels(k).get('stage')}/{_labels(k).get('reason')} {_si(v)}" for k, v in sorted(drops))
        lines.append(text)
    else:
        lines.append("drops: none")
    for problem in problems:
        lines.append(problem)
    return "\n".join(line[:WIDTH] for line in lines) + "\n"


def _endpoint_rows(endpoints: list[dict], before: dict[str, dict], dt: float) -> list[str]:
    """Under a sink with several endpoints: each one's state, request rate and counts
    (DUP? = events that may have been stored twice: sent again after a timeout)."""
    rows = [f"  {'ENDPOINT':<38}{'STATE':<6}{'REQ/S':>8}{'REQS':>8}{'ERRS':>8}{'DUP?':>8}"]
    for e in endpoints:
        label = (f"s{e['shard']} " if "shard" in e else "") + str(e.get("endpoint", "?"))
        state = "up" if e.get("up") else "DOWN"
        old = before.get(e.get("endpoint"))
        req_rate = "-" if old is None else _si(max(0.0, e.get("requests", 0) - old.get("requests", 0)) / dt)
        rows.append(f"  {label[:37]:<38}{state:<6}{req_rate:>8}{_si(e.get('requests', 0)):>8}"
                    f"{_si(e.get('errors', 0)):>8}{_si(e.get('possible_duplicate_events', 0)):>8}")
    return rows


def _nats_lines(current: dict, rate) -> list[str]:
    """JetStream per nats sink (messages published, stored, duplicates dropped by the stream)
    and per nats source (messages received, acknowledged, redelivered, the consumer's
    pending, held here): only when the daemon has either."""
    sinks = sorted({_labels(k).get("sink", "?") for k in _series(current, "logpipe_nats_published_messages_total")})
    sources = sorted({_labels(k).get("source", "?") for k in _series(current, "logpipe_nats_messages_total")})
    if not sinks and not sources:
        return []
    out = ["", f"{'NATS':<16}{'MSGS/S':>8}{'TOTAL':>8}{'ACKED':>8}{'REDELIV':>8}{'PENDING':>8}{'HELD':>7}{'DUPS':>7}"]
    for name in sinks:
        out.append(f"{(name + ' >pub')[:15]:<16}{rate('logpipe_nats_published_messages_total', sink=name):>8}"
                   f"{_si(_sum(current, 'logpipe_nats_published_messages_total', sink=name)):>8}"
                   f"{_si(_sum(current, 'logpipe_nats_publish_acked_messages_total', sink=name)):>8}"
                   f"{'':>8}{'':>8}{'':>7}{_si(_sum(current, 'logpipe_nats_publish_duplicates_total', sink=name)):>7}")
    for name in sources:
        out.append(f"{(name + ' <sub')[:15]:<16}{rate('logpipe_nats_messages_total', source=name, result='received'):>8}"
                   f"{_si(_sum(current, 'logpipe_nats_messages_total', source=name, result='received')):>8}"
                   f"{_si(_sum(current, 'logpipe_nats_messages_total', source=name, result='acked')):>8}"
                   f"{_si(_sum(current, 'logpipe_nats_messages_total', source=name, result='redelivered')):>8}"
                   f"{_si(_sum(current, 'logpipe_nats_pending_messages', source=name)):>8}"
                   f"{_si(_sum(current, 'logpipe_nats_in_flight_messages', source=name)):>7}{'':>7}")
    return out


def run(api: str, once: bool, interval_s: float = 1.0, out=None) -> int:
    out = out or sys.stdout
    try:
        previous = fetch_stats(api)
    except (OSError, ValueError) as e:
        print(f"top: cannot read {api}/api/stats: {e}", file=sys.stderr)
        return 1
    stamp = time.monotonic()
    if not once:
        out.write("\x1b[?25l")  # hide the cursor while redrawing
    try:
        while True:
            # Waiting here is the refresh period itself, not a synchronization.
            time.sleep(max(0.0, interval_s - (time.monotonic() - stamp)))
            try:
                current = fetch_stats(api)
            except (OSError, ValueError) as e:
                if once:
                    print(f"top: cannot read {api}/api/stats: {e}", file=sys.stderr)
                    return 1
                out.write(f"\x1b[H\x1b[2Jlogpipe top  {api}\n\ncannot read /api/stats: {e}\nretrying...\n")
                out.flush()
                stamp = time.monotonic()
                continue
            now = time.monotonic()
            frame = render(api, previous, current, now - stamp)
            previous, stamp = current, now
            if once:
                out.write(frame)
                out.flush()
                return 0
            out.write("\x1b[H\x1b[2J" + frame)
            out.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        if not once:
            out.write("\x1b[?25h")
            out.flush()
