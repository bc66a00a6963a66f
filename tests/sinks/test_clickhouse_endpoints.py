"""The ClickHouse sink's cluster keys against the small fake server of
test_clickhouse_sink.py: shards and shard_by routing, replica failover, settings passed
through with their pins, and the catch-up merge of a backlog into fewer inserts."""

from __future__ import annotations

from collections import Counter

import pytest

from logpipe.batch import Batch
from logpipe.config import loads
from logpipe.sinks.base import SendError
from logpipe.sinks.clickhouse import ClickHouse, shard_of
from tests.clickhouse_helpers import Delivery, event
from tests.helpers import free_port, run_async
from tests.sinks.test_clickhouse_sink import FakeClickHouse

ASYNC_SERVER = ("insert_deduplication_token", "async_insert", "async_insert_deduplicate", "wait_for_async_insert",
                "insert_deduplicate", "max_insert_block_size")


def ch_config(keys: str):
    text = ('[sinks.ch]\ntype = "clickhouse"\ntable = "app"\nretry_initial_ms = 20\nretry_max_ms = 200\n'
            f"request_timeout_s = 5\nmin_insert_interval_ms = 0\n{keys}\n")
    return loads(text).sinks["ch"]


def test_settings_pass_through_with_the_pins_the_server_knows():
    async def scenario():
        async with FakeClickHouse(settings=ASYNC_SERVER) as fake:
            config = ch_config(f'url = "{fake.url}"\nsettings = {{ async_insert = 1, max_insert_block_size = 100000 }}')
            sink = ClickHouse("ch", config)
            await sink.send(Batch("b1", [event(1)], 0, 0.0))
            await sink.close()
            return fake.inserts[0]["params"]

    params = run_async(scenario)
    assert params["async_insert"] == "1" and params["max_insert_block_size"] == "100000"
    # An insert is confirmed only once stored, and its token is honoured under async inserts.
    assert params["wait_for_async_insert"] == "1" and params["async_insert_deduplicate"] == "1"
    assert params["insert_deduplicate"] == "1" and params["insert_deduplication_token"].startswith("b1:app:")


def test_async_inserts_are_turned_off_where_they_would_ignore_the_token():
    async def scenario():
        async with FakeClickHouse(settings=("insert_deduplication_token", "async_insert", "wait_for_async_insert")) as fake:
            sink = ClickHouse("ch", ch_config(f'url = "{fake.url}"'))
            await sink.send(Batch("b1", [event(1)], 0, 0.0))
            await sink.close()
            return fake.inserts[0]["params"]

    params = run_async(scenario)
    assert params["async_insert"] == "0" and params["wait_for_async_insert"] == "1"
    assert "async_insert_deduplicate" not in params  # unknown to this server: not sent


def test_a_setting_the_server_does_not_know_is_a_loud_retryable_error():
    async def scenario():
        async with FakeClickHouse(version="18.16.1") as fake:
            sink = ClickHouse("ch", ch_config(f'url = "{fake.url}"\nsettings = {{ async_insert = 1 }}'))
            with pytest.raises(SendError) as caught:
                await sink.send(Batch("b1", [event(1)], 0, 0.0))
            await sink.close()
            return caught.value, fake.inserts

    error, inserts = run_async(scenario)
    assert error.retryable and "server 18.16.1 has no setting(s) settings.async_insert" in str(error)
    assert inserts == []


def test_rows_go_to_the_shard_their_value_picks_and_a_dead_first_replica_is_skipped():
    services = [f"svc{i}" for i in range(12)]

    async def scenario():
        async with FakeClickHouse() as a, FakeClickHouse() as b:
            dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
            config = ch_config(f'shards = [["{dead}", "{a.url}"], ["{b.url}"]]\nshard_by = "service"')
            sink = ClickHouse("ch", config)
            records = [event(i, service=services[i % len(services)]) for i in range(120)]
            await sink.send(Batch("b1", records, 0, 0.0))
            await sink.send(Batch("b2", [event(500, service=None)], 0, 0.0))  # no service: shard of ""
            snapshot = [s for pool in sink.endpoint_pools() for s in pool.snapshot()]
            await sink.close()
            return a.inserts, b.inserts, snapshot, dead

    a_inserts, b_inserts, snapshot, dead = run_async(scenario)
    on_a = Counter(row["service"] for i in a_inserts for row in i["rows"] if "service" in row)
    on_b = Counter(row["service"] for i in b_inserts for row in i["rows"] if "service" in row)
    assert on_a and on_b and sum(on_a.values()) + sum(on_b.values()) == 120
    assert all(shard_of(s, 2) == 0 for s in on_a) and all(shard_of(s, 2) == 1 for s in on_b)
    assert len(a_inserts) + len(b_inserts) == 3  # one insert per shard and batch (b2: one row)
    assert {s["endpoint"]: (s["shard"], s["up"]) for s in snapshot} == {
        dead: (0, False), a_inserts[0]["url"].split("/?")[0]: (0, True), b_inserts[0]["url"].split("/?")[0]: (1, True)}


@pytest.mark.parametrize("catch_up,expected", [(4, [400, 100]), (1, [100] * 5)])
def test_a_backlog_is_merged_into_fewer_inserts(catch_up, expected, tmp_path):
    async def scenario():
        async with FakeClickHouse() as fake:
            delivery = Delivery(ch_config(f'url = "{fake.url}"\ncatch_up_batches = {catch_up}'), str(tmp_path), max_events=100)
            delivery.push([event(i) for i in range(500)])  # the backlog an outage leaves
            delivery.start()
            await delivery.finish()
            return fake.inserts

    inserts = run_async(scenario)
    assert [len(i["rows"]) for i in inserts] == expected
    assert sorted(row["msg"] if "msg" in row else row["_msg"] for i in inserts for row in i["rows"]) == sorted(
        f"line {i}" for i in range(500))


def test_shard_of_matches_clickhouse_half_md5():
    # SELECT halfMD5('api'), halfMD5('web'), halfMD5('') on ClickHouse 18.16:
    assert [shard_of(v, 1 << 64) for v in ("api", "web", "")] == [
        9970306770564170877, 2695305337569143674, 15284527576400310788]
    assert shard_of(None, 3) == shard_of("", 3) and shard_of(42, 5) == shard_of("42", 5)
