"""The agent/aggregator topology as processes: syslog into an agent logpipe, its ``logpipe``
sink to aggregator logpipes (``http`` source, disk buffers), each routing per service into
ClickHouse tables (Debian's clickhouse-server 18.16). One aggregator is SIGKILLed while the
lines stream and started again on its port and data_dir later. With ``url`` the agent waits
for it; with ``endpoints`` (two aggregators) the other one takes every batch meanwhile, and
the restarted one is probed back into the rotation.

What must hold: every line is in ClickHouse at least once, duplicates are counted (the
agent's possible duplicates plus what a replayed) and bounded by what was in flight at the
kill, and every row carries the labels, the typed body fields, the body's ``level`` and the
exact ``_time`` the agent stored."""

from __future__ import annotations

import json
import os
import socket

import orjson
import pytest

from tests.helpers import DaemonProcess, wait_until

pytestmark = pytest.mark.clickhouse

LINES = 3000
CHUNK = 100
TOKEN = "hop-secret"
AGENT_BATCH = 200
AGGREGATOR_BATCH = 500
SERVICES = {"api-1": ("api", "3f2a9c1b7d4e"), "worker-1": ("worker", "9e8d7c6b5a4f")}
HOSTS = ("api-1", "worker-1", "stray-1")  # stray-1 is never announced: its lines go to logs_other
LEVELS = ("warn", "error", "info", "debug")

TABLE = """CREATE TABLE logs.{name} (
    ts DateTime, time_text String, level String, service String, container_id String, seq UInt32,
    status UInt16, latency_ms Float64, retried UInt8, msg String, aggregator String
) ENGINE = MergeTree ORDER BY (service, ts)"""


# column = event field
COLUMNS = ", ".join(f'{column} = "{field}"' for column, field in {
    "ts": "_time", "time_text": "_time", "level": "level", "service": "service", "container_id": "container_id",
    "seq": "seq", "status": "status", "latency_ms": "latency_ms", "retried": "retried", "msg": "_msg",
    "aggregator": "aggregator"}.items())


def aggregator_config(name: str, data_dir: str, url: str, port: int = 0) -> str:
    return f"""
[daemon]
data_dir = "{data_dir}"
log_format = "json"
shutdown_timeout_s = 10

[api]
listen = "127.0.0.1:0"

[sources.agents]
type = "http"
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[enrich]
hold_ms = 0

[[transforms]]
type = "set"
fields = {{ aggregator = "{name}" }}

[sinks.ch]
type = "clickhouse"
url = "{url}"
database = "logs"
table = "logs_{{service}}"
default_table = "logs_other"
columns = {{ {COLUMNS} }}
min_insert_interval_ms = 1000
retry_initial_ms = 50
retry_max_ms = 500
batch = {{ max_events = {AGGREGATOR_BATCH}, max_age_ms = 200 }}
buffer = {{ type = "disk" }}
"""


def agent_config(data_dir: str, target: str) -> str:
    return f"""
[daemon]
data_dir = "{data_dir}"
log_format = "json"
shutdown_timeout_s = 10

[api]
listen = "127.0.0.1:0"

[sources.syslog]
tcp = "127.0.0.1:0"

[sources.metadata]
udp = "127.0.0.1:0"

[enrich]
hold_ms = 0

[sinks.hop]
type = "logpipe"
{target}
token = "{TOKEN}"
request_timeout_s = 5
retry_initial_ms = 50
retry_max_ms = 500
batch = {{ max_events = {AGENT_BATCH}, max_age_ms = 100 }}
"""


def line(seq: int) -> bytes:
    host = HOSTS[seq % len(HOSTS)]
    body = {"level": LEVELS[seq % len(LEVELS)], "msg": f"seq={seq}", "seq": seq, "status": 200 + seq % 5,
            "latency_ms": seq / 10, "retried": seq % 2 == 0}
    return b"<14>1 %s %s app 7 - - %s\n" % (stamp(seq).encode(), host.encode(), json.dumps(body).encode())


def stamp(seq: int) -> str:
    return f"2026-11-21T10:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq:06d}Z"


def received(daemon: DaemonProcess) -> float:
    return daemon.metric("logpipe_received_events_total", "source=agents,protocol=http")


def endpoint_states(agent: DaemonProcess) -> dict[str, dict]:
    """The agent's view of each aggregator (/api/stats), by URL."""
    return {e["endpoint"]: e for e in agent.stats()["sinks"]["hop"]["endpoints"]}


def rows(server, sql: str) -> list[dict]:
    return [orjson.loads(r) for r in server.query(sql + " FORMAT JSONEachRow").splitlines() if r]


def all_rows(server) -> list[dict]:
    out = []
    for table in ("logs_api", "logs_worker", "logs_other"):
        out += [{**r, "table": table} for r in rows(server, f"SELECT * FROM logs.{table}")]
    return out


@pytest.mark.parametrize(
    "topology",
    [
        pytest.param("url", id="one-aggregator-killed-and-restarted"),
        pytest.param("endpoints", id="two-aggregators-one-killed"),
    ],
)
def test_agent_to_aggregators_to_clickhouse_survives_a_killed_aggregator(clickhouse, tmp_path, topology):  # noqa: F811
    clickhouse.query("CREATE DATABASE logs")
    for table in ("logs_api", "logs_worker", "logs_other"):
        clickhouse.query(TABLE.format(name=table))
    names = ["a", "b"] if topology == "endpoints" else ["a"]
    dirs = {n: str(tmp_path / n) for n in names}
    for d in dirs.values():
        os.makedirs(d)
    aggregators = {n: DaemonProcess(dirs[n], aggregator_config(n, dirs[n], clickhouse.url)) for n in names}
    ports = {n: aggregators[n].listeners["agents.listen"][1] for n in names}
    urls = [f"http://127.0.0.1:{ports[n]}" for n in names]
    target = f"endpoints = {json.dumps(urls)}" if topology == "endpoints" else f'url = "{urls[0]}"'
    os.makedirs(tmp_path / "agent")
    agent = DaemonProcess(str(tmp_path / "agent"), agent_config(str(tmp_path / "agent"), target))
    restarted = None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for hostname, (service, container_id) in SERVICES.items():
                udp.sendto(json.dumps({"ip": "", "hostname": hostname, "service": service,
                                       "container_id": container_id}).encode(), agent.metadata)
        wait_until(lambda: agent.stats()["metadata_entries"] == 2, 10, "both announcements")
        with socket.create_connection(agent.tcp) as tcp:
            def send(first_chunk: int, last_chunk: int) -> None:
                for chunk in range(first_chunk, last_chunk):
                    tcp.sendall(b"".join(line(seq) for seq in range(chunk * CHUNK, (chunk + 1) * CHUNK)))

            send(0, 10)
            # Killed while lines it answered 200 for wait in its disk buffer (one insert per
            # table per second keeps some there), right after more lines went into the agent:
            # the agent may have a request to it in flight.
            wait_until(lambda: received(aggregators["a"]) >= 500 // len(names)
                       and aggregators["a"].buffer_events("ch") >= 100, 15, "aggregator a to hold acknowledged lines")
            send(10, 15)
            aggregators["a"].kill()
            send(15, 20)
            if topology == "endpoints":
                # Every line so far confirmed while a is dead: b took a's share, at once.
                wait_until(lambda: agent.metric("logpipe_sent_events_total", "sink=hop") >= 2000, 15,
                           "aggregator b to take every batch")
                assert not endpoint_states(agent)[urls[0]]["up"]
            restarted = DaemonProcess(dirs["a"], aggregator_config("a", dirs["a"], clickhouse.url, ports["a"]))
            replayed = restarted.metric("logpipe_buffer_replayed_events_total", "sink=ch")
            assert replayed > 0, "the restarted aggregator found nothing to replay: the kill proved nothing"
            if topology == "endpoints":
                wait_until(lambda: endpoint_states(agent)[urls[0]]["up"], 15, "the agent's probe to find a back")
            send(20, LINES // CHUNK)

        def distinct() -> int:
            return sum(int(rows(clickhouse, f"SELECT uniqExact(seq) AS n FROM logs.{t}")[0]["n"])
                       for t in ("logs_api", "logs_worker", "logs_other"))

        wait_until(lambda: distinct() >= LINES, 25, f"all {LINES} lines in ClickHouse")
        # What the agent counted: events of requests to a that may have been stored before
        # the answer was lost, sent again.
        possible_duplicates = sum(e["possible_duplicate_events"] for e in endpoint_states(agent).values())
        rejoined = received(restarted)
    finally:
        for daemon in (agent, restarted, *aggregators.values()):
            if daemon is not None and daemon.proc.poll() is None:
                assert daemon.stop() == 0

    stored = all_rows(clickhouse)
    seqs = [r["seq"] for r in stored]
    duplicates = len(seqs) - len(set(seqs))
    assert set(seqs) == set(range(LINES))
    # At most what was in flight when aggregator a died: the agent's batch it had taken but
    # not answered, and a's own insert the server had stored but a had not acknowledged.
    assert duplicates <= AGENT_BATCH + AGGREGATOR_BATCH, f"{duplicates} duplicates"
    # ... and every duplicate is counted: sent again by the agent, or replayed by a.
    assert duplicates <= possible_duplicates + replayed, (duplicates, possible_duplicates, replayed)
    if topology == "endpoints":
        assert rejoined > 0, "the restarted aggregator got no batch: it never rejoined the rotation"
    for r in stored:
        seq = r["seq"]
        service, container_id = SERVICES.get(HOSTS[seq % len(HOSTS)], ("", ""))
        assert r["table"] == f"logs_{service or 'other'}"
        assert (r["service"], r["container_id"]) == (service, container_id)
        assert (r["time_text"], r["level"], r["msg"]) == (stamp(seq), LEVELS[seq % len(LEVELS)], f"seq={seq}")
        assert (r["status"], r["latency_ms"], r["retried"]) == (200 + seq % 5, seq / 10, int(seq % 2 == 0))
    by_aggregator = {r["aggregator"] for r in stored}
    assert by_aggregator == set(names), by_aggregator
    print(f"{topology}: {len(seqs)} rows for {LINES} lines, {duplicates} duplicates "
          f"({possible_duplicates} possible duplicates counted by the agent, {replayed:.0f} replayed by a)")
