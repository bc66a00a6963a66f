"""Two real ClickHouse 18.16 servers as the two shards of one cluster (remote_servers in
each server's config, a Distributed table over plain MergeTree tables: no ZooKeeper), and
`logpipe clickhouse-schema` output piped into a real server."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections import Counter

import pytest

from logpipe.config import loads
from logpipe.sinks.clickhouse import shard_of
from tests.clickhouse_helpers import Delivery, event
from tests.clickhouse_server import BINARY, ClickHouseServer, wait_for
from tests.helpers import free_port, run_async

pytestmark = pytest.mark.skipif(BINARY is None, reason="clickhouse-server is not installed (.ci/run installs it)")

LOCAL = "CREATE TABLE logs.app (_time DateTime, service String, _msg String) ENGINE = MergeTree PARTITION BY toYYYYMM(_time) ORDER BY (service, _time)"


@pytest.fixture
def two_shards(tmp_path):
    """Servers a and b, each with cluster `logs` = shard 1: a, shard 2: b; logs.app on
    both, the Distributed logs.app_all (sharding key halfMD5(service)) on a."""
    servers = [ClickHouseServer(str(tmp_path / name)) for name in ("a", "b")]
    try:
        for server in servers:
            server.start()
        shards = "".join(f"<shard><replica><host>127.0.0.1</host><port>{s.tcp_port}</port></replica></shard>" for s in servers)
        for server in servers:
            server.add_config("cluster", f"<remote_servers><logs>{shards}</logs></remote_servers>")
        for server in servers:
            wait_for(lambda server=server: server.query("SELECT count() FROM system.clusters WHERE cluster = 'logs'").strip() == "2",
                     30, "the cluster config to be loaded")
            server.query("CREATE DATABASE logs")
            server.query(LOCAL)
        servers[0].query("CREATE TABLE logs.app_all AS logs.app ENGINE = Distributed(logs, logs, app, halfMD5(service))")
        yield servers
    finally:
        for server in servers:
            server.stop()


def deliver(config_text: str, tmp_path, records: list[bytes]) -> Delivery:
    config = loads('[sinks.ch]\ntype = "clickhouse"\ntable = "app"\nretry_initial_ms = 20\nretry_max_ms = 300\n'
                   f"request_timeout_s = 5\nmin_insert_interval_ms = 0\n{config_text}\n").sinks["ch"]

    async def scenario() -> Delivery:
        delivery = Delivery(config, str(tmp_path), max_events=100)
        delivery.push(records)
        delivery.start()
        await delivery.finish(timeout=60)
        return delivery

    return run_async(scenario)


def services_on(server: ClickHouseServer) -> Counter:
    rows = server.query("SELECT service, count() FROM logs.app GROUP BY service FORMAT TSV").split("\n")
    return Counter({line.split("\t")[0]: int(line.split("\t")[1]) for line in rows if line})


def test_rows_land_on_the_shard_their_service_picks_and_the_distributed_table_sees_each_once(two_shards, tmp_path):
    a, b = two_shards
    services = [f"svc-{i}" for i in range(10)]
    records = [event(i, service=services[i % 10]) for i in range(1000)]
    delivery = deliver(f'shards = [["{a.url}"], ["{b.url}"]]\nshard_by = "service"', tmp_path, records)
    on_a, on_b = services_on(a), services_on(b)
    assert on_a and on_b, (on_a, on_b)
    assert all(shard_of(s, 2) == 0 for s in on_a) and all(shard_of(s, 2) == 1 for s in on_b)
    assert sum(on_a.values()) + sum(on_b.values()) == 1000
    total, unique = a.query("SELECT count(), uniqExact(_msg) FROM logs.app_all FORMAT TSV").split()
    assert (int(total), int(unique)) == (1000, 1000)
    assert delivery.dead_letters() == []
    # ClickHouse itself, inserting through the Distributed table, picks the same shards.
    url = a.url + "/?" + urllib.parse.urlencode({"query": "INSERT INTO logs.app_all FORMAT JSONEachRow",
                                                 "insert_distributed_sync": "1"})
    body = "".join(f'{{"_time": 1714557600, "service": "probe-{i}", "_msg": "p"}}\n' for i in range(8)).encode()
    urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10).read()
    probes_a = {s for s in services_on(a) if s.startswith("probe-")}
    probes_b = {s for s in services_on(b) if s.startswith("probe-")}
    assert probes_a | probes_b == {f"probe-{i}" for i in range(8)}
    assert all(shard_of(s, 2) == 0 for s in probes_a) and all(shard_of(s, 2) == 1 for s in probes_b)


def test_a_replica_list_with_a_dead_first_replica_still_delivers(two_shards, tmp_path):
    a, b = two_shards
    dead = f"http://127.0.0.1:{free_port()}"
    records = [event(i, service=f"svc-{i % 7}") for i in range(700)]
    delivery = deliver(f'shards = [["{dead}", "{a.url}"], ["{b.url}"]]\nshard_by = "service"', tmp_path, records)
    assert sum(services_on(a).values()) + sum(services_on(b).values()) == 700
    assert a.query("SELECT uniqExact(_msg) FROM logs.app_all").strip() == "700"
    states = {s["endpoint"]: s for pool in delivery.sink.endpoint_pools() for s in pool.snapshot()}
    assert not states[dead]["up"] and states[dead]["errors"] >= 1 and states[dead]["possible_duplicate_events"] == 0
    assert states[a.url]["up"] and states[a.url]["requests"] >= 1


def _statements(sql: str) -> list[str]:
    text = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def _schema(tmp_path, config: str, *args: str) -> str:
    import subprocess
    import sys

    path = tmp_path / "ch.toml"
    path.write_text(config)
    result = subprocess.run([sys.executable, "-m", "logpipe", "clickhouse-schema", "-c", str(path), *args],
                            capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_schema_for_the_probed_server_pipes_into_it_and_takes_inserts(clickhouse, tmp_path):
    config = f'[sinks.ch]\ntype = "clickhouse"\nurl = "{clickhouse.url}"\ntable = "app"\n'
    probed = _schema(tmp_path, config, "--probe")
    assert "-- for ClickHouse 18.16." in probed
    assert _statements(probed) == _statements(_schema(tmp_path, config, "--server-version", "18.16"))
    statements = _statements(probed)
    assert [s.split("\n")[0] for s in statements] == ["CREATE DATABASE IF NOT EXISTS `logs`", "CREATE TABLE `logs`.`app`"]
    for statement in statements:  # exactly one set: each runs once, without an error
        clickhouse.query(statement)
    deliver(f'url = "{clickhouse.url}"', tmp_path, [event(i) for i in range(50)])
    assert clickhouse.query("SELECT count() FROM logs.app").strip() == "50"


def test_cluster_schema_is_accepted_up_to_the_distributed_ddl_it_needs(clickhouse, tmp_path):
    config = (f'[sinks.ch]\ntype = "clickhouse"\nshards = [["{clickhouse.url}"], ["http://127.0.0.1:9"]]\n'
              'shard_by = "service"\ntable = "app"\n')
    out = _schema(tmp_path, config, "--cluster", "logs", "--server-version", "18.16")
    statements = _statements(out)
    assert len(statements) == 3 and all(" ON CLUSTER `logs`" in s for s in statements)
    assert "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/logs/app', '{replica}')" in statements[1]
    assert statements[2].endswith("ENGINE = Distributed(`logs`, `logs`, `app`, halfMD5(`service`))")
    clickhouse.add_config("cluster", "<remote_servers><logs><shard><replica><host>127.0.0.1</host>"
                          f"<port>{clickhouse.tcp_port}</port></replica></shard></logs></remote_servers>")
    wait_for(lambda: clickhouse.query("SELECT count() FROM system.clusters WHERE cluster = 'logs'").strip() == "1",
             30, "the cluster config to be loaded")
    for statement in statements:
        # A server without ZooKeeper parses each statement, then refuses to run distributed
        # DDL: anything else (a syntax error) would be a bug in the printed schema.
        with pytest.raises(RuntimeError) as caught:
            clickhouse.query(statement)
        assert "DDL background thread is not initialized" in str(caught.value), str(caught.value)[:300]
