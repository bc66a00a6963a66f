"""Named, typed sources: several syslog listeners side by side with their own settings, the
source name on every event, routes by source, reload by source name, and the config checks
that name both keys of a clash. Real sockets on loopback, the daemon in the test's loop."""

from __future__ import annotations

import asyncio
import ssl
import subprocess

import pytest

from logpipe.config import SOURCE_TYPES, ConfigError, loads

from ..helpers import await_until, daemon_config, read_ndjson, run_async, running

LINE = b"<14>Nov 21 10:00:00 web-1 app[7]: same line\n"


def two_sources(data_dir: str, extra: str = "") -> str:
    return daemon_config(data_dir, f"""
[sources.plain]
type = "syslog"
tcp = "127.0.0.1:0"
timezone = "UTC"

[sources.legacy]
type = "syslog"
tcp = "127.0.0.1:0"
timezone = "Asia/Kolkata"

[enrich]
hold_ms = 0

[sinks.all]
type = "file"
path = "all"
batch = {{ max_age_ms = 50 }}

[sinks.legacy_only]
type = "file"
path = "legacy_only"
batch = {{ max_age_ms = 50 }}
{extra}
[[transforms]]
type = "route"
routes = [{{ when = {{ field = "logpipe_source", equals = "legacy" }}, sinks = ["all", "legacy_only"] }}]
default = ["all"]
""", shutdown_timeout_s=5)


async def send(address: tuple[str, int], data: bytes) -> None:
    _, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_two_syslog_sources_keep_their_own_timezone_and_name_their_events(tmp_path):
    config = loads(two_sources(str(tmp_path)))

    async def scenario():
        async with running(config) as daemon:
            plain, legacy = daemon.graph.sources["plain"], daemon.graph.sources["legacy"]
            await send(plain.addresses["tcp"], LINE)
            await send(legacy.addresses["tcp"], LINE)
            await await_until(lambda: len(read_ndjson(str(tmp_path / "all.ndjson"))) == 2, what="both stored")
            await await_until(lambda: len(read_ndjson(str(tmp_path / "legacy_only.ndjson"))) == 1, what="legacy routed")
            metrics = daemon.metrics.get("logpipe_received_events_total")
            assert metrics.value("plain", "tcp") == 1 and metrics.value("legacy", "tcp") == 1

    run_async(scenario, timeout=30)
    stored = {e["logpipe_source"]: e for e in read_ndjson(str(tmp_path / "all.ndjson"))}
    assert set(stored) == {"plain", "legacy"}
    # 10:00 read as UTC and as India Standard Time (+05:30): 5 h 30 min apart
    assert stored["plain"]["_time"].endswith("T10:00:00.000000Z")
    assert stored["legacy"]["_time"].endswith("T04:30:00.000000Z")
    assert stored["plain"]["_msg"] == stored["legacy"]["_msg"] == "same line"
    only = read_ndjson(str(tmp_path / "legacy_only.ndjson"))
    assert [e["logpipe_source"] for e in only] == ["legacy"]


def test_a_tls_source_and_a_plain_source_in_one_daemon(tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    text = two_sources(str(tmp_path)).replace(
        '[sources.legacy]\ntype = "syslog"\ntcp = "127.0.0.1:0"\n',
        f'[sources.legacy]\ntype = "syslog"\ntcp = "127.0.0.1:0"\ntls = {{ cert = "{cert}", key = "{key}" }}\n')
    config = loads(text)

    async def scenario():
        async with running(config) as daemon:
            await send(daemon.graph.sources["plain"].addresses["tcp"], b"<14>Nov 21 10:00:00 h app: over plain\n")
            context = ssl.create_default_context(cafile=cert)
            context.check_hostname = False
            _, writer = await asyncio.open_connection(*daemon.graph.sources["legacy"].addresses["tcp"], ssl=context)
            writer.write(b"<14>Nov 21 10:00:00 h app: over tls\n")
            await writer.drain()
            writer.close()
            await await_until(lambda: len(read_ndjson(str(tmp_path / "all.ndjson"))) == 2, what="both stored")
            assert daemon.metrics.get("logpipe_received_events_total").value("legacy", "tls") == 1

    run_async(scenario, timeout=30)
    by_source = {e["logpipe_source"]: e["_msg"] for e in read_ndjson(str(tmp_path / "all.ndjson"))}
    assert by_source == {"plain": "over plain", "legacy": "over tls"}


def test_reload_adds_changes_and_removes_sources_while_another_streams(tmp_path):
    base = two_sources(str(tmp_path))
    config = loads(base)
    lines = 2000

    async def scenario():
        async with running(config) as daemon:
            plain = daemon.graph.sources["plain"]
            _, writer = await asyncio.open_connection(*plain.addresses["tcp"])

            async def stream():
                for i in range(lines):
                    writer.write(b"<14>Nov 21 10:00:00 h app: streamed seq=%d\n" % i)
                    if i % 50 == 0:
                        await writer.drain()
                        await asyncio.sleep(0)  # a loop turn, so the reloads land mid-stream (under test)
                await writer.drain()

            streaming = asyncio.create_task(stream())
            added = base.replace("[enrich]", '[sources.extra]\ntype = "syslog"\nudp = "127.0.0.1:0"\n\n[enrich]')
            assert await daemon.reload(loads(added)) == []
            assert "extra" in daemon.graph.sources and daemon.graph.sources["extra"].addresses["udp"]
            changed = added.replace('timezone = "Asia/Kolkata"', 'timezone = "UTC"')
            assert await daemon.reload(loads(changed)) == []
            assert daemon.graph.sources["legacy"].config.timezone == "UTC"
            removed = changed.replace('[sources.extra]\ntype = "syslog"\nudp = "127.0.0.1:0"\n', "")
            assert await daemon.reload(loads(removed)) == []
            assert set(daemon.graph.sources) == {"plain", "legacy"}
            await streaming
            writer.close()
            await await_until(lambda: len(read_ndjson(str(tmp_path / "all.ndjson"))) == lines, 20, "every streamed line")
            assert daemon.graph.sources["plain"] is plain  # untouched by the reloads

    run_async(scenario, timeout=60)
    seqs = sorted(int(e["_msg"].rpartition("=")[2]) for e in read_ndjson(str(tmp_path / "all.ndjson")))
    assert seqs == list(range(lines))


@pytest.mark.parametrize(
    "tables, expected",
    [
        pytest.param('[sources.a]\ntype = "syslog"\ntcp = "0.0.0.0:6000"\n[sources.b]\ntype = "syslog"\ntcp = "127.0.0.1:6000"\n',
                     "sources.b.tcp: 127.0.0.1:6000 (tcp) is already bound by sources.a.tcp = 0.0.0.0:6000",
                     id="two-syslog-sources-one-port"),
        pytest.param('[sources.syslog]\nudp = "127.0.0.1:6001"\n[sources.metadata]\nudp = "127.0.0.1:6001"\n',
                     "sources.metadata.udp: 127.0.0.1:6001 (udp) is already bound by sources.syslog.udp = 127.0.0.1:6001",
                     id="metadata-on-a-syslog-port"),
        pytest.param('[api]\nlisten = "127.0.0.1:6002"\n[sources.s]\ntype = "syslog"\ntcp = "127.0.0.1:6002"\n',
                     "sources.s.tcp: 127.0.0.1:6002 (tcp) is already bound by api.listen = 127.0.0.1:6002",
                     id="syslog-on-the-api-port"),
        pytest.param('[sources.x]\ntype = "kafka"\n', f'sources.x.type: expected one of {", ".join(SOURCE_TYPES)}, got "kafka"',
                     id="unknown-type-lists-known"),
        pytest.param('[sources.edge]\ntcp = "127.0.0.1:0"\n',
                     "sources.edge.type: required key is missing (known types: syslog, metadata", id="no-type"),
    ],
)
def test_source_config_problems_name_the_keys(tables, expected):
    with pytest.raises(ConfigError) as caught:
        loads(tables + '[sinks.f]\ntype = "file"\n')
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


def test_same_port_on_udp_and_tcp_and_port_zero_are_not_clashes():
    config = loads('[sources.s]\ntype = "syslog"\nudp = "127.0.0.1:6003"\ntcp = "127.0.0.1:6003"\n'
                   '[sources.t]\ntype = "syslog"\ntcp = "127.0.0.1:0"\n[sources.u]\ntype = "syslog"\ntcp = "127.0.0.1:0"\n'
                   '[sinks.f]\ntype = "file"\n')
    assert list(config.sources) == ["s", "t", "u"]


def test_classic_tables_read_as_named_sources_of_their_type():
    config = loads('[sources.syslog]\nudp = "127.0.0.1:0"\n[sources.metadata]\nudp = "127.0.0.1:0"\n[sinks.f]\ntype = "file"\n')
    assert [type(s).__name__ for s in config.sources.values()] == ["SyslogSource", "MetadataSource"]
