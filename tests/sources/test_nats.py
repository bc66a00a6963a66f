"""The JetStream hop: receiver logpipe -> nats sink -> stream -> nats source -> shipper logpipes.

Real nats-server processes on loopback (tests/nats_server.py). What must hold: every line
arrives when a shipper is SIGKILLed mid-stream (its unacknowledged messages go to the other
shipper; duplicates are counted and reported), when a node of a 3-node R3 cluster dies, and
when JetStream is down for a while under load (the receiver's disk buffer holds the lines).
Bad input is stored raw or counted, never a crash; unreachable servers are named.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from logpipe.config import ConfigError, loads
from logpipe.daemon.app import Daemon
from logpipe.parse.metadata import sign

from ..helpers import DaemonProcess, await_until, daemon_config, read_ndjson, run_async, wait_until

pytestmark = pytest.mark.nats
OUTAGE_S = float(os.environ.get("LOGPIPE_OUTAGE_S", "5"))


def line(i: int) -> bytes:
    body = json.dumps({"msg": f"line {i}", "seq": i, "ok": True})
    return f"<14>Nov 21 10:00:01 web-1 app{i % 5}[7]: {body}\n".encode()


def lines(start: int, stop: int) -> bytes:
    return b"".join(line(i) for i in range(start, stop))


def receiver_config(data_dir: str, servers: list[str], extra: str = "", buffer: str = "disk") -> str:
    return daemon_config(data_dir, f"""[sources.syslog]
tcp = "127.0.0.1:0"
[sources.metadata]
udp = "127.0.0.1:0"
[enrich]
hold_ms = 0
match_on = ["hostname=hostname"]
[sinks.js]
type = "nats"
servers = {json.dumps(servers)}
subject = "logs.{{app_name}}"
default_subject = "logs.other"
stream = "LOGS"
create_stream = true
events_per_message = 20
retry_max_ms = 500
request_timeout_s = 5
batch = {{ max_age_ms = 50 }}
buffer = {{ type = "{buffer}" }}
{extra}
""", shutdown_timeout_s=5, log_format="json")


def shipper_config(data_dir: str, servers: list[str], extra: str = "") -> str:
    return daemon_config(data_dir, f"""[sources.metadata]
udp = "127.0.0.1:0"
[sources.jetstream]
type = "nats"
servers = {json.dumps(servers)}
stream = "LOGS"
consumer = "shippers"
ack_wait_s = 2
fetch_messages = 32
max_in_flight = 256
[sinks.out]
type = "file"
path = "out"
batch = {{ max_age_ms = 200 }}
{extra}
""", shutdown_timeout_s=5, log_format="json")


def sequences(*paths: str) -> list[int]:
    return [e["seq"] for path in paths for e in read_ndjson(path) if "seq" in e]


def send_tcp(address: tuple[str, int], data: bytes) -> None:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(data)


async def send_async(address: tuple[str, int], data: bytes) -> None:
    _, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def announce(address: tuple[str, int], payload: dict, secret: bytes | None = None) -> None:
    text = json.dumps(payload)
    data = json.dumps({"payload": text, "hmac": sign(text, secret)}) if secret else text
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data.encode(), address)


def test_a_shipper_killed_mid_stream_loses_nothing(nats_server, tmp_path):
    """50,000 lines through a receiver, JetStream and two shippers sharing one durable
    consumer; one shipper is SIGKILLed halfway: every line arrives, labels, types and _time
    intact; the duplicates (messages the dead shipper had written but not acknowledged)
    are counted and reported."""
    total = 50_000
    servers = [nats_server.url]
    paths = []
    for name in ("receiver", "victim", "survivor"):
        os.makedirs(tmp_path / name)
    receiver = DaemonProcess(str(tmp_path / "receiver"), receiver_config(str(tmp_path / "receiver" / "data"), servers))
    victim = survivor = None
    try:
        announce(receiver.metadata, {"hostname": "web-1", "service": "shop", "ip": ""})
        wait_until(lambda: receiver.stats()["metadata_entries"] == 1, 10, "the announcement")
        victim = DaemonProcess(str(tmp_path / "victim"), shipper_config(str(tmp_path / "victim" / "data"), servers))
        survivor = DaemonProcess(str(tmp_path / "survivor"), shipper_config(str(tmp_path / "survivor" / "data"), servers))
        paths = [str(tmp_path / name / "data" / "out.ndjson") for name in ("victim", "survivor")]
        send_tcp(receiver.tcp, lines(0, total // 2))
        wait_until(lambda: sequences(paths[0]), 30, "the victim to write lines")
        victim.kill()
        send_tcp(receiver.tcp, lines(total // 2, total))
        wait_until(lambda: len(set(sequences(*paths))) >= total, 60, "every line in the shippers' files")
        got = sequences(*paths)
        assert sorted(set(got)) == list(range(total))
        duplicates = len(got) - total
        redelivered = survivor.metric("logpipe_nats_messages_total", "source=jetstream,result=redelivered")
        print(f"\n{total} lines delivered; victim wrote {len(sequences(paths[0]))}, duplicates {duplicates}, "
              f"messages redelivered to the survivor {redelivered:.0f}")
        # A duplicate can only come from a redelivered message (20 events per message).
        assert duplicates <= redelivered * 20
        event = next(e for e in read_ndjson(paths[1]) if e["seq"] == total - 1)
        assert event["_time"] == "2026-11-21T10:00:01.000000Z"
        assert event["service"] == "shop" and event["hostname"] == "web-1" and event["app_name"] == f"app{(total - 1) % 5}"
        assert event["ok"] is True and event["_msg"] == f"line {total - 1}"
        assert receiver.metric("logpipe_nats_publish_acked_messages_total", "sink=js") >= total / 20
    finally:
        for daemon in (survivor, receiver):
            if daemon is not None:
                daemon.stop()


def test_a_cluster_node_killed_mid_stream_loses_nothing(nats_cluster, tmp_path):
    """3-node JetStream cluster, R3 stream: the stream leader is SIGKILLed between two halves
    of the traffic; the receiver and the shipper fail over to the other nodes."""
    total = 20_000
    servers = nats_cluster.urls
    receiver = loads(receiver_config(str(tmp_path / "r"), servers, "stream_replicas = 3", buffer="memory"))
    shipper = loads(shipper_config(str(tmp_path / "s"), servers))
    out = str(tmp_path / "s" / "out.ndjson")

    async def leader() -> str:
        import nats

        client = await nats.connect(servers)
        try:
            async def named() -> str | None:
                try:
                    info = await client.jetstream().stream_info("LOGS")
                except Exception:  # the cluster may still be electing the stream's leader
                    return None
                return info.cluster.leader if info.cluster else None

            return str(await await_until(named, 10, "the R3 stream's leader"))
        finally:
            await client.close()

    async def scenario():
        r = Daemon(receiver)
        s = Daemon(shipper)
        await r.start()
        await s.start()
        try:
            address = r.graph.sources["syslog"].addresses["tcp"]
            await send_async(address, lines(0, total // 2))
            await await_until(lambda: len(sequences(out)) >= 1000, 30, "the first lines through the cluster")
            name = await leader()
            victim = next(node for node in nats_cluster.nodes if node.name == name)
            victim.kill()
            await send_async(address, lines(total // 2, total))
            await await_until(lambda: len(set(sequences(out))) >= total, 60, "every line after the node died")
            assert sorted(set(sequences(out))) == list(range(total))
        finally:
            await s.shutdown()
            await r.shutdown()

    run_async(scenario, timeout=120)


def test_jetstream_down_under_load_the_receiver_disk_buffer_keeps_everything(nats_server, tmp_path):
    """JetStream stops for OUTAGE_S (5 s here, LOGPIPE_OUTAGE_S=20 for the long run) while
    lines keep coming; the receiver's disk buffer holds them, and the backlog drains after."""
    servers = [nats_server.url]
    receiver = loads(receiver_config(str(tmp_path / "r"), servers))
    shipper = loads(shipper_config(str(tmp_path / "s"), servers))
    out = str(tmp_path / "s" / "out.ndjson")
    chunk = 1000

    async def scenario():
        r = Daemon(receiver)
        s = Daemon(shipper)
        await r.start()
        await s.start()
        try:
            address = r.graph.sources["syslog"].addresses["tcp"]
            await send_async(address, lines(0, chunk))
            await await_until(lambda: len(sequences(out)) >= chunk, 30, "traffic before the outage")
            nats_server.stop()
            sent = chunk
            down_until = time.monotonic() + OUTAGE_S
            while time.monotonic() < down_until and sent < 200 * chunk:  # under load, bounded
                await send_async(address, lines(sent, sent + chunk))
                sent += chunk
                await asyncio.sleep(0.1)  # pacing the load through the outage, not a synchronization
            held = r.sinks["js"].buffer.events
            assert held > 0 and r.sinks["js"].deliverer.failing_since is not None
            nats_server.start()
            await await_until(lambda: len(set(sequences(out))) >= sent, 60, "the backlog to drain")
            assert sorted(set(sequences(out))) == list(range(sent))
            await await_until(lambda: r.sinks["js"].buffer.events == 0, 10, "the receiver's buffer to empty")
            print(f"\n{sent} lines, {held} held by the receiver's disk buffer during a {OUTAGE_S:.0f} s outage")
        finally:
            await s.shutdown()
            await r.shutdown()

    run_async(scenario, timeout=120 + OUTAGE_S)


def test_bad_input_is_stored_raw_or_counted_never_a_crash(nats_server, tmp_path):
    """Foreign messages on the stream are stored raw with parse_error and acknowledged; an
    event lacking the subject template's field goes to default_subject, counted."""
    servers = [nats_server.url]
    receiver = loads(receiver_config(str(tmp_path / "r"), servers, buffer="memory").replace(
        'subject = "logs.{app_name}"', 'subject = "logs.{service}"'))
    shipper = loads(shipper_config(str(tmp_path / "s"), servers))
    out = str(tmp_path / "s" / "out.ndjson")

    async def scenario():
        import nats

        r = Daemon(receiver)
        await r.start()
        s = Daemon(shipper)
        client = await nats.connect(servers)
        try:
            await send_async(r.graph.sources["syslog"].addresses["tcp"], line(1))
            await await_until(lambda: r.sinks["js"].buffer.events == 0 and r.graph.metrics.get(
                "logpipe_nats_publish_acked_messages_total").value("js") == 1, 10, "the line in the stream")
            assert r.graph.metrics.get("logpipe_nats_subject_fallback_events_total").value("js") == 1
            js = client.jetstream()
            stored = await js.get_last_msg("LOGS", "logs.other")
            assert json.loads(stored.data)["seq"] == 1
            for payload in (b"hello from another producer", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b""):
                await js.publish("logs.other", payload)
            await js.publish("logs.other", b'{"_msg": "foreign json", "n": 3}\nnot json\n')
            await s.start()
            await await_until(lambda: len(read_ndjson(out)) >= 7, 20, "every message in the file")
            events = read_ndjson(out)
            raw = [e for e in events if e.get("parse_error") == "true"]
            assert sorted(e["_msg"] for e in raw) == sorted(
                ["hello from another producer", "\ufffd\ufffd\x00garbage", "[1, 2, 3]", "", "not json"])
            foreign = next(e for e in events if e.get("_msg") == "foreign json")
            assert foreign["n"] == 3 and foreign["_time"].endswith("Z")
            assert s.graph.metrics.get("logpipe_parse_errors_total").value("jetstream") == 5

            async def all_acknowledged():
                info = await js.consumer_info("LOGS", "shippers")
                return info.num_ack_pending == 0 and info.num_pending == 0

            await await_until(all_acknowledged, 5, "every message acknowledged")
        finally:
            await client.close()
            await s.shutdown()
            await r.shutdown()

    run_async(scenario, timeout=60)


def test_unreachable_servers_at_start_are_named(tmp_path):
    closed = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed.append(f"nats://127.0.0.1:{s.getsockname()[1]}")
    config = tmp_path / "shipper.toml"
    config.write_text(shipper_config(str(tmp_path / "data"), closed).replace("ack_wait_s = 2", "connect_timeout_s = 1"))
    done = subprocess.run([sys.executable, "-m", "logpipe", "run", "-c", str(config)], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 1
    error = done.stderr.decode()
    assert "start_failed" in error and f"cannot connect to NATS ({closed[0]}, {closed[1]})" in error


def test_announcements_over_nats_reach_every_daemon_and_are_verified_by_each(nats_server, tmp_path):
    secret = b"announce-secret"
    table = f"""
[sources.metadata]
udp = "127.0.0.1:0"
secret = "{secret.decode()}"
nats = {{ servers = ["{nats_server.url}"], subject = "test.announcements" }}
[sinks.f]
type = "file"
"""
    a = loads(f'[daemon]\ndata_dir = "{tmp_path / "a"}"\n[api]\nlisten = "127.0.0.1:0"\n' + table)
    b = loads(f'[daemon]\ndata_dir = "{tmp_path / "b"}"\n[api]\nlisten = "127.0.0.1:0"\n' + table)

    async def scenario():
        import nats

        first, second = Daemon(a), Daemon(b)
        await first.start()
        await second.start()
        client = await nats.connect([nats_server.url])
        try:
            address = first.graph.sources["metadata"].addresses["udp"]
            announce(address, {"container_id": "3f2a9c1b7d4e", "service": "api", "ts": int(time.time())}, secret)
            await await_until(lambda: len(second.table) == 1, 10, "the announcement at the second daemon")
            forged = json.dumps({"payload": json.dumps({"container_id": "bad", "ts": int(time.time())}), "hmac": "00" * 32})
            announce(address, {"container_id": "abc", "ts": int(time.time())}, b"wrong secret")
            await client.publish("test.announcements", forged.encode())
            results = second.graph.metrics.get("logpipe_metadata_announcements_total")
            await await_until(lambda: results.value("bad_hmac") == 1, 10, "the forged message refused")
            # The first refused the bad datagram and the forged message; the bad one never left it.
            await await_until(lambda: first.graph.metrics.get("logpipe_metadata_announcements_total").value("bad_hmac") == 2,
                              10, "the first daemon to refuse both")
            assert results.value("bad_hmac") == 1 and results.value("ok") == 1
            assert len(first.table) == 1 and len(second.table) == 1
        finally:
            await client.close()
            await second.shutdown()
            await first.shutdown()

    run_async(scenario, timeout=60)


@pytest.mark.parametrize(
    "keys, expected",
    [
        ('subject = "logs.{service}"', "sinks.n.default_subject: required when subject is a template"),
        ('servers = ["http://a:4222"]', 'sinks.n.servers: expected "nats://HOST:PORT" or "tls://HOST:PORT"'),
        ('token = "t"\nuser = "u"\npassword = "p"', "sinks.n.user: give one kind of credentials, not token and user"),
        ('user = "u"', "sinks.n.user: user and password go together"),
        ('subject = "logs.a b"', "sinks.n.subject: expected dot-separated tokens"),
    ],
)
def test_nats_sink_config_problems_name_the_key(keys, expected):
    with pytest.raises(ConfigError) as caught:
        loads(f'[sinks.n]\ntype = "nats"\n{keys}\n')
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_created_stream_subjects_cover_the_template_and_the_default():
    from logpipe.config.nats import default_stream_subjects

    assert default_stream_subjects("logs.{service}", "logs.other") == ["logs.*"]
    assert default_stream_subjects("logs.{service}", "other") == ["logs.*", "other"]
    assert default_stream_subjects("logs", None) == ["logs"]


def test_a_reload_adds_a_nats_source_and_a_change_reconnects_it(nats_server, tmp_path):
    servers = [nats_server.url]
    base = shipper_config(str(tmp_path / "s"), servers)
    without = base.replace(base[base.index("[sources.jetstream]"):base.index("[sinks.out]")], "")
    out = str(tmp_path / "s" / "out.ndjson")

    async def scenario():
        import nats

        client = await nats.connect(servers)
        daemon = Daemon(loads(without))
        await daemon.start()
        try:
            js = client.jetstream()
            await js.add_stream(name="LOGS", subjects=["logs.>"])
            await js.publish("logs.a", b'{"_msg": "one", "seq": 1}\n')
            assert await daemon.reload(loads(base)) == []
            await await_until(lambda: sequences(out) == [1], 10, "the added source to consume")
            assert await daemon.reload(loads(base.replace("fetch_messages = 32", "fetch_messages = 8"))) == []
            await js.publish("logs.a", b'{"_msg": "two", "seq": 2}\n')
            await await_until(lambda: sorted(sequences(out)) == [1, 2], 10, "the changed source to consume")
        finally:
            await client.close()
            await daemon.shutdown()

    run_async(scenario, timeout=60)


def test_a_stop_returns_even_when_the_client_turns_the_cancel_into_its_own_error(nats_server, tmp_path, monkeypatch):
    """At a stop the puller may be inside a JetStream request; nats-py can answer the cancel
    with its own error (asyncio.wait_for in 3.11 loses a cancel that meets the answer), and the
    retry loop went on: the stop waited forever (seen in test_example_configs_run). Here every
    consumer lookup turns its cancel into NotFoundError; the stop must still return."""
    import nats.js
    import nats.js.errors

    looking_up = asyncio.Event()

    async def consumer_info(self, stream, consumer, timeout=None):
        looking_up.set()
        try:
            await asyncio.sleep(3600)  # a lookup that only the stop's cancel ends (under test)
        except asyncio.CancelledError:
            raise nats.js.errors.NotFoundError() from None

    monkeypatch.setattr(nats.js.JetStreamContext, "consumer_info", consumer_info)
    config = loads(shipper_config(str(tmp_path / "s"), [nats_server.url]))

    async def scenario():
        daemon = Daemon(config)
        await daemon.start()
        await asyncio.wait_for(looking_up.wait(), 10)  # the puller is inside its lookup
        await asyncio.wait_for(daemon.shutdown(), 15)

    run_async(scenario, timeout=60)
