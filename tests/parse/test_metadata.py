"""Announcements (decoder) and the metadata table (TTL, eviction, indexes, join)."""

import orjson
import pytest

from logpipe.enrich import Enricher, MetadataTable
from logpipe.metrics import Metrics
from logpipe.parse.metadata import AnnouncementDecoder, AnnouncementError, sign


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decode(obj, source_ip="10.0.0.9", **kw):
    data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return AnnouncementDecoder(**kw).decode(data, source_ip, 1_700_000_000.0)


def test_announcement_without_ip_uses_source_address():
    ann = decode({"container_id": "3f2a9c1b7d4e", "service": "api"})
    assert ann.ip == "10.0.0.9"
    assert ann.labels == {"container_id": "3f2a9c1b7d4e", "service": "api", "ip": "10.0.0.9"}


def test_empty_ip_means_no_ip():
    ann = decode({"ip": "", "hostname": "api-1", "service": "api"})
    assert ann.ip is None and "ip" not in ann.labels


def test_op_ttl_ts_are_not_labels():
    ann = decode({"hostname": "h", "ttl_s": 30, "service": "x", "op": "announce"})
    assert ann.ttl_s == 30 and set(ann.labels) == {"hostname", "service", "ip"}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1,2]", id="array"),
        pytest.param(b'{"hostname": {"nested": 1}}', id="nested-label"),
        pytest.param(b'{"hostname": "h", "ttl_s": "soon"}', id="ttl-not-int"),
        pytest.param(b'{"hostname": "h", "op": "explode"}', id="unknown-op"),
        pytest.param(b'{"ip": "", "service": "x"}', id="no-identifier"),
        pytest.param(orjson.dumps({"hostname": "h", "big": "x" * 5000}), id="label-too-large"),
        pytest.param(orjson.dumps({"hostname": "h", **{f"k{i}": "v" for i in range(100)}}), id="too-many-labels"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
    ],
)
def test_malformed_announcements_raise_counted_error(data):
    with pytest.raises(AnnouncementError) as info:
        decode(data)
    assert info.value.result == "malformed"


def test_signed_announcements():
    secret = b"s3cret"
    payload = orjson.dumps({"hostname": "h", "service": "x", "ts": 1_700_000_000}).decode()
    good = orjson.dumps({"payload": payload, "hmac": sign(payload, secret)})
    assert decode(good, secret=secret).labels["service"] == "x"
    forged = orjson.dumps({"payload": payload, "hmac": sign(payload, b"other")})
    with pytest.raises(AnnouncementError) as info:
        decode(forged, secret=secret)
    assert info.value.result == "bad_hmac"
    old = orjson.dumps({"hostname": "h", "ts": 1_700_000_000 - 120}).decode()
    with pytest.raises(AnnouncementError) as info:
        decode(orjson.dumps({"payload": old, "hmac": sign(old, secret)}), secret=secret)
    assert info.value.result == "replayed"
    with pytest.raises(AnnouncementError) as info:
        decode({"hostname": "h"}, secret=secret)
    assert info.value.result == "malformed"


def make_table(max_entries=100, ttl=600):
    clock = Clock()
    metrics = Metrics()
    table = MetadataTable(max_entries, ttl, metrics, timer=clock)
    return table, clock, metrics


def announce(table, source_ip="10.0.0.9", **obj):
    return table.apply(decode(obj, source_ip))


def test_lookup_by_each_identifier_and_short_container_id():
    table, _, _ = make_table()
    long_id = "3f2a9c1b7d4e" + "a" * 52
    announce(table, container_id=long_id, hostname="api-1", ip="10.0.3.7", service="api")
    for index, key in (("ip", "10.0.3.7"), ("hostname", "api-1"), ("container_id", long_id), ("container_id", long_id[:12])):
        assert table.index(index)[key].labels["service"] == "api"


def test_ttl_expiry_stops_joining_then_reaps():
    table, clock, metrics = make_table(ttl=60)
    enricher = Enricher(table, [("hostname", "hostname")], metrics)
    announce(table, hostname="api-1", service="api")
    announce(table, hostname="w-1", service="worker", ttl_s=600)
    events = [{"hostname": "api-1"}, {"hostname": "w-1"}]
    enricher.enrich(events)
    assert events[0]["service"] == "api" and events[1]["service"] == "worker"
    clock.now += 61
    later = [{"hostname": "api-1"}, {"hostname": "w-1"}]
    enricher.enrich(later)
    assert "service" not in later[0] and later[1]["service"] == "worker"
    table.expire()
    assert len(table) == 1 and "api-1" not in table.by_hostname
    assert metrics.get("logpipe_metadata_removed_total").value("expired") == 1


def test_reannounce_refreshes_ttl_and_replaces_labels():
    table, clock, _ = make_table(ttl=60)
    announce(table, hostname="h", service="old", extra="gone")
    clock.now += 50
    announce(table, hostname="h", service="new")
    clock.now += 50
    entry = table.by_hostname["h"]
    assert entry.expires > clock.now and entry.labels.get("service") == "new" and "extra" not in entry.labels


def test_remove_op():
    table, _, _ = make_table()
    announce(table, hostname="h", service="x")
    assert announce(table, hostname="h", op="remove") == "removed"
    assert len(table) == 0 and not table.by_hostname and not table.by_ip


def test_max_entries_evicts_least_recently_announced():
    table, clock, metrics = make_table(max_entries=3)
    for name in ("a", "b", "c"):
        clock.now += 1
        announce(table, ip="", hostname=name)
    announce(table, ip="", hostname="a")  # re-announced: now the newest
    announce(table, ip="", hostname="d")
    assert set(table.by_hostname) == {"a", "c", "d"}
    assert metrics.get("logpipe_metadata_removed_total").value("evicted") == 1


def test_join_never_overwrites_line_fields_and_first_match_wins():
    table, _, metrics = make_table()
    announce(table, source_ip="127.0.0.5", hostname="announced-host", service="by-ip")
    announce(table, ip="", hostname="api-1", service="by-hostname")
    enricher = Enricher(table, [("source_ip", "ip"), ("hostname", "hostname")], metrics)
    events = [
        {"source_ip": "127.0.0.5", "hostname": "api-1"},
        {"source_ip": "127.0.0.1", "hostname": "api-1"},
        {"source_ip": "127.0.0.1"},
    ]
    enricher.enrich(events)
    assert events[0]["service"] == "by-ip" and events[0]["hostname"] == "api-1"
    assert events[1]["service"] == "by-hostname"
    assert "service" not in events[2]
    enrich_total = metrics.get("logpipe_enrich_total")
    assert (enrich_total.value("hit"), enrich_total.value("miss")) == (2, 1)


def test_identifier_taken_over_by_newer_entry_survives_old_expiry():
    table, clock, _ = make_table(ttl=60)
    announce(table, container_id="old", ip="10.0.0.1", service="old")
    clock.now += 30
    announce(table, container_id="new", ip="10.0.0.1", service="new", ttl_s=600)
    clock.now += 31
    table.expire()
    assert table.by_ip["10.0.0.1"].labels["service"] == "new"


def test_labels_are_appended_in_announcement_order_after_the_line_fields():
    from logpipe.parse.body import apply_body

    table, _, metrics = make_table()
    announce(table, ip="", container_id="c" * 64, hostname="3f2a9c1b7d4e", service="api", service_id="svc-17")
    enricher = Enricher(table, [("hostname", "container_id"), ("hostname", "hostname")], metrics)
    with_host = {"_msg": "a", "hostname": "3f2a9c1b7d4e"}
    without_host = {"_msg": "b", "app_name": "c" * 12}
    body = apply_body({"_msg": "", "hostname": "3f2a9c1b7d4e"}, '{"msg": "c", "service": "own"}')
    enricher.enrich([with_host, body])
    Enricher(table, [("app_name", "container_id")], metrics).enrich([without_host])
    label_order = ["container_id", "service", "service_id"]
    assert list(with_host) == ["_msg", "hostname"] + label_order
    assert list(without_host) == ["_msg", "app_name", "container_id", "hostname", "service", "service_id"]
    assert with_host["hostname"] == "3f2a9c1b7d4e" and without_host["hostname"] == "3f2a9c1b7d4e"
    # a body key named like a label moves aside, the label takes its name
    assert body["service"] == "api" and body["body.service"] == "own" and body["service_id"] == "svc-17"
