"""Issue 8: the announcement decoder under fuzzing, and the metadata table under a flood of
distinct announcements (memory stays bounded by max_entries).

The fuzz budget is ``LOGPIPE_FUZZ_EXAMPLES`` examples per property (default 300, about a
second); the longer run in docs-hardening.md sets it to 200000.
"""

from __future__ import annotations

import os
import time

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpipe.enrich import Enricher, MetadataTable
from logpipe.metrics import Metrics
from logpipe.parse.metadata import AnnouncementDecoder, AnnouncementError, sign

EXAMPLES = int(os.environ.get("LOGPIPE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000.0
SECRET = b"k"

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=40))
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
key = st.one_of(st.sampled_from(["ip", "hostname", "container_id", "op", "ttl_s", "ts", "service", ""]), st.text(max_size=200))
announcement_like = st.dictionaries(key, json_value, max_size=80)


def _decode_or_error(decoder: AnnouncementDecoder, data: bytes, source_ip) -> None:
    try:
        ann = decoder.decode(data, source_ip, NOW)
    except AnnouncementError as e:
        assert e.result in ("malformed", "bad_hmac", "replayed")
        return
    assert ann.op in ("announce", "remove")
    assert ann.ip or ann.hostname or ann.container_id
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in ann.labels.items())
    assert len(ann.labels) <= 64 + 1


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([None, "10.0.0.1", "::1"]))
def test_decoder_never_raises_on_random_bytes(data, source_ip):
    _decode_or_error(AnnouncementDecoder(), data, source_ip)
    _decode_or_error(AnnouncementDecoder(secret=SECRET), data, source_ip)


@FUZZ
@given(announcement_like, st.sampled_from([None, "10.0.0.1"]))
def test_decoder_never_raises_on_json_objects(obj, source_ip):
    _decode_or_error(AnnouncementDecoder(), orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS), source_ip)


@FUZZ
@given(announcement_like, st.booleans(), st.integers(-200, 200))
def test_signed_decoder_accepts_only_genuine_fresh_payloads(obj, genuine, skew):
    obj = {**obj, "ts": NOW + skew}
    payload = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()
    mac = sign(payload, SECRET if genuine else b"other")
    data = orjson.dumps({"payload": payload, "hmac": mac})
    try:
        AnnouncementDecoder(secret=SECRET, replay_window_s=60).decode(data, "10.0.0.1", NOW)
    except AnnouncementError as e:
        if not genuine:
            assert e.result == "bad_hmac"
        elif abs(skew) > 60:
            assert e.result == "replayed"
        else:
            assert e.result == "malformed"
        return
    assert genuine and abs(skew) <= 60


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["announce", "remove"]), st.integers(0, 30), st.integers(0, 30)), max_size=60))
def test_table_indexes_stay_consistent_under_random_announce_remove(ops):
    table = MetadataTable(8, 600, Metrics())
    decoder = AnnouncementDecoder()
    for op, h, c in ops:
        table.apply(decoder.decode(orjson.dumps({"op": op, "ip": "", "hostname": f"h{h}", "container_id": f"c{c:020d}"}), None, NOW))
    assert len(table) <= 8
    live = set(map(id, table._cache.values()))
    for index in (table.by_ip, table.by_hostname, table.by_container_id):
        assert set(map(id, index.values())) <= live


def test_a_flood_of_distinct_announcements_keeps_memory_bounded():
    """30,000 distinct announcements into a 2,000-entry table: the live memory after the
    table has turned over twice does not grow over the rest of the flood. (1,000,000 into
    100,000 is in benchmarks/bench_announce_flood.py; result in docs-hardening.md.)"""
    import tracemalloc

    metrics = Metrics()
    table = MetadataTable(2000, 600, metrics)
    enricher = Enricher(table, [("hostname", "hostname")], metrics)
    decoder = AnnouncementDecoder()
    n, start_trace, checkpoint = 30_000, 4_000, 8_000
    deadline = time.monotonic() + 60
    for i in range(n):
        if i == start_trace:
            tracemalloc.start()
        elif i == checkpoint:
            at_checkpoint = tracemalloc.get_traced_memory()[0]
        data = orjson.dumps({"ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "hostname": f"host-{i}",
                             "container_id": f"{i:064x}", "service": "svc"})
        table.apply(decoder.decode(data, None, NOW))
        assert time.monotonic() < deadline
    at_end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(table) == 2000
    assert (len(table.by_ip), len(table.by_hostname)) == (2000, 2000)
    assert len(table.by_container_id) <= 4000  # full and short forms
    assert metrics.get("logpipe_metadata_removed_total").value("evicted") == n - 2000
    # the newest entries still join
    event = {"hostname": f"host-{n - 1}"}
    enricher.enrich([event])
    assert event["service"] == "svc"
    assert at_end - at_checkpoint < 512 * 1024, (at_checkpoint, at_end)
