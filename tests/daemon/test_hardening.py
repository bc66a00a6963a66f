"""Issue 8, in-process: the enrichment hold, the metadata snapshot, authenticated and
rate-limited announcements, idle TCP connections, TLS with client certificates, secrets.

Each scenario runs a real Daemon in the test's loop on loopback ephemeral ports, with a
file sink whose NDJSON output the assertions read.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import orjson
import pytest

from logpipe.config import loads
from logpipe.daemon.app import Daemon
from logpipe.parse.metadata import sign
from tests.helpers import await_until, daemon_config, read_ndjson, run_async

SECRET = "s3cr3t-hmac-key-do-not-log"


def make_config(tmp_path, syslog="", metadata="", enrich="hold_ms = 2000", extra="") -> str:
    return daemon_config(f"{tmp_path}/data", f"""
[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
{syslog}
[sources.metadata]
udp = "127.0.0.1:0"
{metadata}
[enrich]
{enrich}
[sinks.out]
type = "file"
path = "events"
batch = {{ max_age_ms = 20 }}
{extra}
""", shutdown_timeout_s=5)


def stored(tmp_path) -> list[dict]:
    return read_ndjson(f"{tmp_path}/data/events.ndjson")


def stored_msg(tmp_path, text: str) -> dict | None:
    for event in stored(tmp_path):
        if event.get("_msg") == text:
            return event
    return None


def metric(daemon: Daemon, name: str, *labels: str) -> float:
    family = daemon.metrics.get(name)
    return family.value(*labels) if family is not None else 0


def line(hostname: str, msg: str) -> bytes:
    return f"<14>1 2026-01-01T00:00:00Z {hostname} app - - - {msg}\n".encode()


def udp_send(address, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, address)


async def pause(seconds: float) -> None:
    """A scenario's deliberate delay (the lateness under test), not synchronization."""
    try:
        await asyncio.wait_for(asyncio.Event().wait(), seconds)
    except TimeoutError:
        pass


async def started(config_text: str) -> Daemon:
    daemon = Daemon(loads(config_text))
    await daemon.start()
    return daemon


# --- late-arrival hold --------------------------------------------------------------------


def test_line_arriving_500ms_before_its_announcement_is_stored_tagged(tmp_path):
    async def scenario():
        daemon = await started(make_config(tmp_path))
        try:
            _, writer = await asyncio.open_connection(*daemon.syslog.addresses["tcp"])
            writer.write(line("web-1", "first words of a new container") + line("other", "never announced"))
            await writer.drain()
            await await_until(lambda: metric(daemon, "logpipe_enrich_total", "held") == 2, 5, "two lines held")
            await pause(0.5)
            udp_send(daemon.metadata.address, orjson.dumps({"ip": "", "hostname": "web-1", "service": "shop"}))
            event = await await_until(lambda: stored_msg(tmp_path, "first words of a new container"), 5, "the tagged line")
            assert event["service"] == "shop" and event["hostname"] == "web-1"
            assert metric(daemon, "logpipe_enrich_total", "hit") == 1
            # the other line waits out hold_ms and goes on untagged
            other = await await_until(lambda: stored_msg(tmp_path, "never announced"), 5, "the untagged line")
            assert "service" not in other
            assert metric(daemon, "logpipe_enrich_total", "miss") == 1
            writer.close()
        finally:
            await daemon.shutdown()

    run_async(scenario, 30)


def test_held_lines_are_flushed_into_the_buffer_at_shutdown(tmp_path):
    async def scenario():
        daemon = await started(make_config(tmp_path, enrich="hold_ms = 600000"))
        _, writer = await asyncio.open_connection(*daemon.syslog.addresses["tcp"])
        writer.write(b"".join(line(f"h{i}", f"held {i}") for i in range(100)))
        await writer.drain()
        await await_until(lambda: metric(daemon, "logpipe_enrich_total", "held") == 100, 5, "lines held")
        await daemon.shutdown()
        writer.close()
        assert sorted(e["_msg"] for e in stored(tmp_path)) == sorted(f"held {i}" for i in range(100))
        assert metric(daemon, "logpipe_enrich_total", "miss") == 100

    run_async(scenario, 30)


def test_full_hold_lets_lines_through_untagged_and_counts_them(tmp_path):
    async def scenario():
        daemon = await started(make_config(tmp_path, enrich="hold_ms = 600000\nhold_max_events = 10"))
        try:
            _, writer = await asyncio.open_connection(*daemon.syslog.addresses["tcp"])
            writer.write(b"".join(line(f"h{i}", f"m{i}") for i in range(25)))
            await writer.drain()
            await await_until(lambda: len(stored(tmp_path)) == 15, 5, "the lines the hold had no room for")
            assert metric(daemon, "logpipe_enrich_total", "held") == 10
            assert metric(daemon, "logpipe_enrich_hold_full_total") == 15
            assert daemon.pipeline.hold.events == 10
            writer.close()
        finally:
            await daemon.shutdown()
        assert len(stored(tmp_path)) == 25

    run_async(scenario, 30)


def test_hold_ms_zero_disables_the_hold(tmp_path):
    async def scenario():
        daemon = await started(make_config(tmp_path, enrich="hold_ms = 0"))
        try:
            assert daemon.pipeline.hold is None
            udp_send(daemon.syslog.addresses["udp"], line("x", "straight through"))
            await await_until(lambda: stored_msg(tmp_path, "straight through\n") or stored_msg(tmp_path, "straight through"), 5)
            assert metric(daemon, "logpipe_enrich_total", "miss") == 1
        finally:
            await daemon.shutdown()

    run_async(scenario, 30)


# --- persistence ----------------------------------------------------------------------------


def test_restart_keeps_labels(tmp_path):
    async def first():
        daemon = await started(make_config(tmp_path))
        try:
            udp_send(daemon.metadata.address, orjson.dumps({"ip": "", "hostname": "db-1", "service": "postgres", "ttl_s": 3600}))
            udp_send(daemon.metadata.address, orjson.dumps({"ip": "", "hostname": "gone", "ttl_s": 1}))
            await await_until(lambda: len(daemon.table) == 2, 5, "two entries")
        finally:
            await daemon.shutdown()

    run_async(first, 30)
    with open(f"{tmp_path}/data/metadata.snapshot") as f:
        snapshot = json.load(f)
    assert {e["hostname"] for e in snapshot["entries"]} == {"db-1", "gone"}
    # age the short-lived entry past its expiry, as if the restart took that long
    for e in snapshot["entries"]:
        if e["hostname"] == "gone":
            e["expires_at"] = time.time() - 1
    with open(f"{tmp_path}/data/metadata.snapshot", "w") as f:
        json.dump(snapshot, f)

    async def second():
        daemon = await started(make_config(tmp_path, enrich="hold_ms = 0"))
        try:
            assert len(daemon.table) == 1
            udp_send(daemon.syslog.addresses["udp"], line("db-1", "after restart"))
            event = await await_until(lambda: stored_msg(tmp_path, "after restart"), 5)
            assert event["service"] == "postgres"
            remaining = daemon.table.by_hostname["db-1"].expires - daemon.table.timer()
            assert 3500 < remaining <= 3600
        finally:
            await daemon.shutdown()

    run_async(second, 30)


def test_damaged_snapshot_is_logged_and_ignored(tmp_path):
    os.makedirs(f"{tmp_path}/data")
    with open(f"{tmp_path}/data/metadata.snapshot", "wb") as f:
        f.write(b"\x00garbage")

    async def scenario():
        daemon = await started(make_config(tmp_path))
        assert len(daemon.table) == 0
        await daemon.shutdown()

    run_async(scenario, 30)


# --- authenticated announcements -----------------------------------------------------------


def signed(announcement: dict, secret: str = SECRET) -> bytes:
    payload = orjson.dumps(announcement).decode()
    return orjson.dumps({"payload": payload, "hmac": sign(payload, secret.encode())})


@pytest.mark.parametrize("how", ["secret", "secret_file", "secret_env"])
def test_forged_replayed_or_unsigned_announcements_change_nothing(tmp_path, monkeypatch, how):
    if how == "secret":
        metadata = f'secret = "{SECRET}"'
    elif how == "secret_file":
        (tmp_path / "hmac.key").write_text(SECRET + "\n")
        metadata = f'secret_file = "{tmp_path}/hmac.key"'
    else:
        monkeypatch.setenv("LOGPIPE_TEST_HMAC", SECRET)
        metadata = 'secret_env = "LOGPIPE_TEST_HMAC"'

    async def scenario():
        daemon = await started(make_config(tmp_path, metadata=metadata))
        try:
            now = int(time.time())
            target = {"hostname": "api-1", "service": "evil"}
            udp_send(daemon.metadata.address, orjson.dumps(target))  # unsigned
            udp_send(daemon.metadata.address, signed({**target, "ts": now}, "wrong-key"))  # forged
            udp_send(daemon.metadata.address, signed({**target, "ts": now - 3600}))  # replayed
            udp_send(daemon.metadata.address, signed(target))  # signed, no ts
            def results() -> dict[str, float]:
                return {r: metric(daemon, "logpipe_metadata_announcements_total", r) for r in ("malformed", "bad_hmac", "replayed")}

            await await_until(lambda: results() == {"malformed": 2, "bad_hmac": 1, "replayed": 1}, 5, "four rejections")
            assert len(daemon.table) == 0
            udp_send(daemon.metadata.address, signed({"hostname": "api-1", "service": "api", "ts": now}))
            await await_until(lambda: len(daemon.table) == 1, 5, "the genuine announcement")
            assert daemon.table.by_hostname["api-1"].labels["service"] == "api"
            dumped = json.dumps(daemon.stats()) + daemon.metrics.render()
            assert SECRET not in dumped
        finally:
            await daemon.shutdown()

    run_async(scenario, 30)


def test_announcements_beyond_the_rate_are_counted_rate_limited(tmp_path):
    async def scenario():
        daemon = await started(make_config(tmp_path, metadata="rate_per_s = 1\nrate_burst = 5"))
        try:
            for i in range(20):
                udp_send(daemon.metadata.address, orjson.dumps({"hostname": f"h{i}"}))
            def count(result: str) -> float:
                return metric(daemon, "logpipe_metadata_announcements_total", result)

            await await_until(lambda: count("ok") + count("rate_limited") == 20, 5)
            assert count("ok") <= 6 and count("rate_limited") >= 14
        finally:
            await daemon.shutdown()

    run_async(scenario, 30)


def test_secret_sources_are_exclusive_and_errors_never_show_the_secret(tmp_path):
    from logpipe.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        loads(make_config(tmp_path, metadata=f'secret = "{SECRET}"\nsecret_env = "X"'))
    assert SECRET not in str(caught.value) and "at most one of" in str(caught.value)
    config = make_config(tmp_path, metadata='secret_file = "/nonexistent/key"')
    with pytest.raises(ConfigError) as caught:
        Daemon(loads(config))
    assert "secret_file" in str(caught.value)


def test_clickhouse_password_from_env_reaches_the_header_only(tmp_path, monkeypatch):
    from logpipe.sinks.clickhouse import ClickHouse

    monkeypatch.setenv("LOGPIPE_TEST_CH_PASSWORD", "ch-pass-123")
    config = loads(make_config(tmp_path, extra='[sinks.ch]\ntype = "clickhouse"\npassword_env = "LOGPIPE_TEST_CH_PASSWORD"'))
    sink = ClickHouse("ch", config.sinks["ch"])
    assert sink.headers["X-ClickHouse-Key"] == "ch-pass-123"
    assert "ch-pass-123" not in repr(config)


# --- idle connections ----------------------------------------------------------------------


def test_1000_idle_connections_are_closed_while_a_real_sender_keeps_working(tmp_path):
    async def scenario():
        daemon = await started(make_config(tmp_path, syslog="idle_timeout_s = 1", enrich="hold_ms = 0"))
        try:
            address = daemon.syslog.addresses["tcp"]
            idle = [await asyncio.open_connection(*address) for _ in range(1000)]
            reader, writer = await asyncio.open_connection(*address)
            await await_until(lambda: len(daemon.syslog.connections) == 1001, 10, "1001 connections")
            sent = 0
            deadline = time.monotonic() + 10
            while metric(daemon, "logpipe_connections_closed_total", "syslog", "idle_timeout") < 1000:
                assert time.monotonic() < deadline, "idle connections were not closed"
                writer.write(line("sender", f"tick {sent}"))
                sent += 1
                await pause(0.05)
            # every idle client sees the close; the sender is still connected and heard
            for idle_reader, _ in idle:
                assert await asyncio.wait_for(idle_reader.read(), 5) == b""
            assert len(daemon.syslog.connections) == 1
            writer.write(line("sender", "after the sweep"))
            await writer.drain()
            await await_until(lambda: stored_msg(tmp_path, "after the sweep"), 5)
            assert {f"tick {i}" for i in range(sent)} <= {e["_msg"] for e in stored(tmp_path)}
            for _, w in idle:
                w.close()
            writer.close()
        finally:
            await daemon.shutdown()

    run_async(scenario, 60)


# --- TLS -----------------------------------------------------------------------------------


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, a client certificate from the CA and a
    rogue self-signed client certificate; made with the openssl CLI at test time."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=logpipe test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.crt", "-days", "2",
             "-subj", "/CN=rogue", cwd=d)
    return d


def _client_context(certs, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if cert:
        context.load_cert_chain(str(certs / f"{cert}.crt"), str(certs / f"{cert}.key"))
    return context


async def _tls_send(address, context, data: bytes) -> str:
    """Send over TLS; return "sent" if the server kept the connection, else the failure."""
    try:
        reader, writer = await asyncio.open_connection(*address, ssl=context, server_hostname="127.0.0.1")
    except (ssl.SSLError, ConnectionError) as e:
        return f"handshake refused: {type(e).__name__}"
    try:
        writer.write(data)
        await writer.drain()
        # TLS 1.3: a refused client certificate is reported after the client's handshake ends
        got = await asyncio.wait_for(reader.read(1), 2)
        return "closed" if got == b"" else "sent"
    except (ssl.SSLError, ConnectionError) as e:
        return f"refused: {type(e).__name__}"
    except TimeoutError:
        return "sent"
    finally:
        writer.close()


def test_tls_client_without_a_valid_certificate_is_refused_one_with_it_works(tmp_path, certs):
    tls = f'tls = {{ cert = "{certs}/server.crt", key = "{certs}/server.key", client_ca = "{certs}/ca.crt", handshake_timeout_s = 2 }}'

    async def scenario():
        daemon = await started(make_config(tmp_path, syslog=tls, enrich="hold_ms = 0"))
        try:
            address = daemon.syslog.addresses["tcp"]
            def octets(text: str) -> bytes:
                return f"{len(line('c', text))} ".encode() + line("c", text)

            no_cert = await _tls_send(address, _client_context(certs, None), octets("from a client without a cert"))
            rogue = await _tls_send(address, _client_context(certs, "rogue"), octets("from a rogue cert"))
            assert no_cert != "sent" and rogue != "sent", (no_cert, rogue)
            # a client that never starts the handshake is cut off after handshake_timeout_s
            silent_reader, silent_writer = await asyncio.open_connection(*address)
            # plain TCP on the TLS port is not a way in either
            _, writer = await asyncio.open_connection(*address)
            writer.write(line("c", "plaintext on the TLS port"))
            await writer.drain()
            good = await _tls_send(address, _client_context(certs, "client"), octets("from a good client"))
            assert good == "sent"
            await await_until(lambda: stored_msg(tmp_path, "from a good client"), 5)
            writer.close()
            assert await asyncio.wait_for(silent_reader.read(), 5) == b""
            silent_writer.close()
            assert metric(daemon, "logpipe_received_events_total", "syslog", "tls") == 1
        finally:
            await daemon.shutdown()
        assert [e["_msg"] for e in stored(tmp_path)] == ["from a good client"]

    run_async(scenario, 60)


def test_a_mistyped_secret_is_not_echoed_in_the_config_error(tmp_path):
    from logpipe.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        loads(make_config(tmp_path, metadata="secret = 987654321"))
    assert "987654321" not in str(caught.value) and "sources.metadata.secret" in str(caught.value)


# --- the hold on its own -------------------------------------------------------------------


def test_hold_releases_by_announcement_or_deadline_and_leaves_no_index_behind():
    from logpipe.enrich import Enricher, MetadataTable
    from logpipe.hold import Hold
    from logpipe.metrics import Metrics
    from logpipe.parse.metadata import AnnouncementDecoder

    async def scenario():
        metrics = Metrics()
        table = MetadataTable(100, 600, metrics)
        match_on = [("source_ip", "ip"), ("hostname", "hostname"), ("hostname", "container_id")]
        enricher = Enricher(table, match_on, metrics)
        released: list[tuple[list[dict], bool]] = []

        def release(events, holdable):
            enricher.enrich(events)
            released.append((events, holdable))

        hold = Hold(300, 1000, 1 << 20, match_on, release, metrics)
        table.on_store = hold.announced
        events = [{"_msg": "a", "hostname": "3f2a9c1b7d4e"}, {"_msg": "b", "hostname": "late"}, {"_msg": "c"}]
        passing = hold.add(enricher.enrich(events, count_misses=False), False)
        assert [e["_msg"] for e in passing] == ["c"]  # nothing could be announced for it
        decoder = AnnouncementDecoder()
        # a full container id announces the short id the line carries
        table.apply(decoder.decode(orjson.dumps({"ip": "", "container_id": "3f2a9c1b7d4e" + "0" * 52, "svc": "x"}), None, 0))
        await await_until(lambda: released, 2)
        assert [(e["_msg"], e["svc"]) for e in released[0][0]] == [("a", "x")]
        assert released[0][1] is False  # UDP events keep their flow-control mode
        await await_until(lambda: len(released) == 2, 2, "the deadline release")
        assert released[1][0] == [{"_msg": "b", "hostname": "late"}]
        assert hold.events == 0 and hold.bytes == 0 and not hold._index
        hit_miss = metrics.get("logpipe_enrich_total")
        assert (hit_miss.value("hit"), hit_miss.value("miss")) == (1, 1)

    run_async(scenario, 10)


def test_a_reload_that_moves_the_metadata_port_keeps_authentication(tmp_path):
    metadata = f'secret = "{SECRET}"'

    async def scenario():
        daemon = await started(make_config(tmp_path, metadata=metadata))
        try:
            new = make_config(tmp_path, metadata=metadata).replace('[sources.metadata]\nudp = "127.0.0.1:0"',
                                                                   '[sources.metadata]\nudp = "127.0.0.2:0"')
            assert await daemon.reload(loads(new)) == []
            assert daemon.metadata.address[0] == "127.0.0.2"
            udp_send(daemon.metadata.address, orjson.dumps({"hostname": "x", "service": "evil"}))
            udp_send(daemon.metadata.address, signed({"hostname": "y", "ts": int(time.time())}))
            await await_until(lambda: metric(daemon, "logpipe_metadata_announcements_total", "ok") == 1, 5)
            assert metric(daemon, "logpipe_metadata_announcements_total", "malformed") == 1
            assert set(daemon.table.by_hostname) == {"y"}
        finally:
            await daemon.shutdown()

    run_async(scenario, 30)


def test_a_source_still_unannounced_after_the_hold_is_not_held_again_until_it_announces():
    from logpipe.enrich import Enricher, MetadataTable
    from logpipe.hold import Hold
    from logpipe.metrics import Metrics
    from logpipe.parse.metadata import AnnouncementDecoder

    async def scenario():
        metrics = Metrics()
        table = MetadataTable(100, 600, metrics)
        match_on = [("source_ip", "ip"), ("hostname", "hostname")]
        enricher = Enricher(table, match_on, metrics)
        released: list[list[dict]] = []

        def release(events, holdable):
            enricher.enrich(events)
            released.append(events)

        hold = Hold(100, 1000, 1 << 20, match_on, release, metrics)
        table.on_store = hold.announced

        def offer(*events):
            return [e["_msg"] for e in hold.add(enricher.enrich(list(events), count_misses=False), True)]

        assert offer({"_msg": "first", "hostname": "router", "source_ip": "10.0.0.1"}) == []  # held
        await await_until(lambda: released, 2, "the deadline release")
        # The router never announced: its next lines go on at once, untagged.
        assert offer({"_msg": "later", "hostname": "router", "source_ip": "10.0.0.1"}) == ["later"]
        # A new container behind the same IP has a new hostname: still held.
        assert offer({"_msg": "new", "hostname": "web-1", "source_ip": "10.0.0.1"}) == []
        # Once the router announces, it is forgotten as unannounced.
        table.apply(AnnouncementDecoder().decode(orjson.dumps({"ip": "", "hostname": "router", "svc": "r"}), None, 0))
        assert offer({"_msg": "tagged", "hostname": "router", "source_ip": "10.0.0.1"}) == []  # matched first
        assert offer({"_msg": "unknown", "hostname": "router2", "source_ip": "10.0.0.1"}) == []  # held again
        await await_until(lambda: hold.events == 0, 2, "the hold to empty")

    run_async(scenario, 10)


def test_a_held_event_comes_back_identical_with_its_body_provenance():
    """Held events wait encoded; what leaves the hold must be the event that went in."""
    from logpipe.enrich import Enricher, MetadataTable
    from logpipe.hold import Hold
    from logpipe.metrics import Metrics
    from logpipe.parse.body import BodyEvent, apply_body
    from logpipe.parse.metadata import AnnouncementDecoder

    async def scenario():
        metrics = Metrics()
        table = MetadataTable(100, 600, metrics)
        match_on = [("hostname", "hostname")]
        enricher = Enricher(table, match_on, metrics)
        released: list[dict] = []

        seen_on_release: list[tuple] = []  # each event as it left the hold, before the join

        def release(events, holdable):
            seen_on_release.extend((type(e), list(e.items()), getattr(e, "body_keys", None)) for e in events)
            released.extend(events)
            enricher.enrich(events)

        hold = Hold(60_000, 1000, 1 << 20, match_on, release, metrics)
        table.on_store = hold.announced
        plain = {"_time": "2026-11-21T10:00:00Z", "_msg": "x\n\"é\"", "hostname": "h1", "n": 7, "f": 0.1, "b": True}
        body = apply_body({"_time": "2026-11-21T10:00:00Z", "_msg": "", "hostname": "h1"},
                          '{"msg": "hi", "service": "from-body", "dur": 1.5e-7}')
        assert type(body) is BodyEvent
        expected = [list(plain.items()), list(body.items())]
        assert hold.add([plain, body], True) == []
        table.apply(AnnouncementDecoder().decode(orjson.dumps({"ip": "", "hostname": "h1", "service": "svc"}), None, 0))
        await await_until(lambda: len(released) == 2, 5, "the release")
        # released together, in no promised order
        assert sorted(seen_on_release, key=lambda s: s[0] is BodyEvent) == [
            (dict, expected[0], None), (BodyEvent, expected[1], body.body_keys)]
        got_plain = next(e for e in released if type(e) is dict)
        got_body = next(e for e in released if type(e) is BodyEvent)
        # the join ran on the released events: the body key that collides with the label moved
        assert got_body["service"] == "svc" and got_body["body.service"] == "from-body"
        assert got_body["dur"] == 1.5e-7 and got_plain["n"] == 7 and got_plain["b"] is True

    run_async(scenario, 10)


def recording_hold(match_on: list[tuple[str, str]]):
    """A hold whose releases are appended to the returned list, with room for any test."""
    from logpipe.hold import Hold
    from logpipe.metrics import Metrics

    released: list[dict] = []
    return Hold(60_000, 100_000, 1 << 30, match_on, lambda events, holdable: released.extend(events), Metrics()), released


def announcement(hostname=None, container_id=None):
    """What ``Hold.announced`` reads of a table Entry: its identifiers."""
    from types import SimpleNamespace

    return SimpleNamespace(ip=None, hostname=hostname, container_id=container_id)


def test_the_hold_counts_at_least_the_memory_its_lines_take():
    """``hold_max_bytes`` bounds memory only if the bytes counted per line cover what the
    line really costs: its JSON, its item and its index entries (tracemalloc)."""
    import tracemalloc

    async def scenario():
        hold, _ = recording_hold([("source_ip", "ip"), ("hostname", "hostname"), ("hostname", "container_id"),
                                  ("app_name", "container_id")])
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for start in range(0, 3000, 300):
                # every line's strings are its own, as they are for lines parsed off a socket
                chunk = [{"_time": "2026-12-05T12:04:58.495185Z", "_msg": f"message number {i} " + "x" * (i % 200),
                          "hostname": f"host-{i % 40}", "app_name": f"app-{i % 7}", "proc_id": str(i),
                          "source_ip": f"127.0.0.{i % 3}", "logpipe_source": "syslog"} for i in range(start, start + 300)]
                assert hold.add(chunk, True) == []
                del chunk
            taken = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert hold.events == 3000
        assert taken <= hold.bytes, (taken, hold.bytes)
        hold.flush()

    run_async(scenario, 10)


def test_an_identifier_every_held_line_shares_keeps_a_compact_index_while_lines_come_and_go():
    async def scenario():
        hold, released = recording_hold([("source_ip", "ip"), ("hostname", "hostname")])
        shared = ("ip", "10.0.0.1")  # one sender address in front of many new containers
        for n in range(200):  # each round: a new host's line is held, the previous host announces
            assert hold.add([{"_msg": f"m{n}", "hostname": f"h{n}", "source_ip": "10.0.0.1"}], True) == []
            if n:
                hold.announced(announcement(hostname=f"h{n - 1}"))
            assert len(hold._index[shared]) <= 2 * hold._index[shared].live + 16
        await await_until(lambda: len(released) == 199, 5, "the announced lines")
        assert [e["_msg"] for e in released] == [f"m{n}" for n in range(199)]
        assert hold.events == 1 and hold._index[shared].live == 1
        hold.flush()
        assert hold.events == 0 and not hold._index and [e["_msg"] for e in released][-1] == "m199"

    run_async(scenario, 10)


def test_a_line_with_the_same_identifier_under_two_match_on_pairs_is_released_once():
    async def scenario():
        hold, released = recording_hold([("hostname", "container_id"), ("app_name", "container_id")])
        assert hold.add([{"_msg": "m", "hostname": "abc", "app_name": "abc"}], True) == []
        hold.announced(announcement(container_id="abc"))
        await await_until(lambda: released, 5, "the release")
        assert released == [{"_msg": "m", "hostname": "abc", "app_name": "abc"}]
        assert hold.events == 0 and hold.bytes == 0 and not hold._index

    run_async(scenario, 10)
