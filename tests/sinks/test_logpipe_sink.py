"""The typed hop: an agent's ``type = "logpipe"`` sink POSTing to an aggregator's ``type =
"http"`` source. Both daemons run in the test's loop on loopback; syslog lines go into the
agent over TCP, and what the aggregator stores is compared with what the agent stored."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import pathlib
import re
import socket
import subprocess
import time

import pytest

from logpipe.batch import Batch
from logpipe.config import ClickHouseSink, LogpipeSink, load, loads, parse_address
from logpipe.daemon.app import Daemon
from logpipe.daemon.views import stats
from logpipe.sinks.base import SendError
from logpipe.sinks.logpipe import Logpipe

from ..helpers import await_until, run_async
from ..sources.test_http_source import TOKEN, assert_problem, stored
from ..sources.test_http_source import aggregator as aggregator_config


def agent_config(data_dir: str, url: str | list[str], sink: str = "") -> str:
    """An agent shipping to ``url``, or to ``endpoints`` when given a list."""
    target = f"endpoints = {json.dumps(url)}" if isinstance(url, list) else f'url = "{url}"'
    return f"""
[daemon]
data_dir = "{data_dir}"
shutdown_timeout_s = 5

[api]
listen = "127.0.0.1:0"

[sources.edge]
type = "syslog"
tcp = "127.0.0.1:0"

[sources.metadata]
udp = "127.0.0.1:0"

[enrich]
hold_ms = 0

[sinks.hop]
type = "logpipe"
{target}
token = "{TOKEN}"
batch = {{ max_age_ms = 20 }}
retry_initial_ms = 20
retry_max_ms = 200
{sink}

[sinks.local]
type = "file"
path = "local"
batch = {{ max_age_ms = 20 }}
"""


def url_of(daemon: Daemon, scheme: str = "http") -> str:
    host, port = daemon.graph.sources["agents"].addresses["listen"]
    return f"{scheme}://{host}:{port}"


async def send_lines(daemon: Daemon, lines: list[bytes]) -> None:
    _, writer = await asyncio.open_connection(*daemon.graph.sources["edge"].addresses["tcp"])
    writer.write(b"".join(lines))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def announce(daemon: Daemon, **labels: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps(labels).encode(), daemon.graph.sources["metadata"].addresses["udp"])


def dead_letters(data_dir, sink: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(str(data_dir), "dead-letter", sink, "*.ndjson"))):
        with open(path, "rb") as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out


def run_fleet(agg_texts: list[str], agent_text_for, scenario, timeout: float = 40) -> None:
    """Start the aggregators, then the agent pointed at them; run ``scenario(agent,
    aggregators, stop)`` (``await stop(aggregator)`` stops one early); stop the agent first."""

    async def main():
        aggregators: list[Daemon] = []
        stopped: list[Daemon] = []
        agent = None

        async def stop(aggregator: Daemon) -> None:
            stopped.append(aggregator)
            await aggregator.shutdown()

        try:
            for text in agg_texts:
                aggregators.append(Daemon(loads(text)))
                await aggregators[-1].start()
            agent = Daemon(loads(agent_text_for(*aggregators)))
            await agent.start()
            await scenario(agent, aggregators, stop)
        finally:
            if agent is not None:
                await agent.shutdown()
            for aggregator in aggregators:
                if aggregator not in stopped:
                    await aggregator.shutdown()

    run_async(main, timeout=timeout)


def run_pair(agg_text: str, agent_text_for, scenario, timeout: float = 40) -> None:
    """Start the aggregator, then the agent pointed at it; run ``scenario(agent, aggregator)``."""
    run_fleet([agg_text], agent_text_for, lambda agent, aggregators, _: scenario(agent, aggregators[0]), timeout)


LINES = [
    # RFC 5424 with a JSON body: numbers, a boolean, a level the body sets (warn while the PRI says info)
    b'<14>1 2026-11-21T10:00:04.250123Z api-1 api 7 - [exampleSDID@32473 eventSource="App"] '
    b'{"level":"warn","msg":"payment retry","status":502,"latency_ms":35.5,"retried":true}\n',
    # RFC 3164 with logfmt
    b"<11>Nov 21 10:00:05 worker-1 worker[9]: level=error msg=\"job failed\" job_id=77 attempts=3\n",
    # plain text from the same container as the first
    b"<13>1 2026-11-21T10:00:06Z api-1 api 7 - - plain text line\n",
]


def test_events_arrive_exactly_as_the_agent_stored_them_and_the_aggregator_routes_on_them(tmp_path):
    agg_dir, agent_dir = tmp_path / "agg", tmp_path / "agent"
    routed = """
[sinks.api_only]
type = "file"
path = "api_only"
batch = { max_age_ms = 20 }

[[transforms]]
type = "route"
routes = [{ when = { field = "service", equals = "api" }, sinks = ["out", "api_only"] }]
default = ["out"]
"""

    async def scenario(agent: Daemon, aggregator: Daemon):
        announce(agent, ip="", hostname="api-1", service="api", container_id="3f2a9c1b7d4e")
        announce(agent, ip="", hostname="worker-1", service="worker", container_id="9e8d7c6b5a4f")
        await await_until(lambda: len(agent.table) == 2, what="both announcements")
        await send_lines(agent, LINES)
        await await_until(lambda: len(stored(agg_dir)) == 3 and len(stored(agent_dir, "local")) == 3,
                          what="3 events stored")
        assert agent.metrics.get("logpipe_sent_events_total").value("hop") == 3

    run_pair(aggregator_config(str(agg_dir), extra=routed),
             lambda aggregator: agent_config(str(agent_dir), url_of(aggregator)), scenario)
    local = {e["_msg"]: e for e in stored(agent_dir, "local")}
    hopped = {e["_msg"]: e for e in stored(agg_dir)}
    assert set(local) == set(hopped) == {"payment retry", "job failed", "plain text line"}
    for msg, event in local.items():
        # Every field, in order, with its JSON type; only the source name is added when the
        # agent's events carry none (the agent's own once its syslog source names them).
        def typed(e: dict) -> dict:
            return {k: v for k, v in e.items() if k != "logpipe_source"}

        assert typed(hopped[msg]) == typed(event)
        assert hopped[msg]["logpipe_source"] == event.get("logpipe_source", "agents")
    first = hopped["payment retry"]
    assert (first["_time"], first["level"], first["status"], first["latency_ms"], first["retried"]) == (
        "2026-11-21T10:00:04.250123Z", "warn", 502, 35.5, True)
    assert (first["service"], first["container_id"], first["exampleSDID@32473.eventSource"]) == (
        "api", "3f2a9c1b7d4e", "App")
    assert hopped["job failed"]["service"] == "worker"
    assert sorted(e["_msg"] for e in stored(agg_dir, "api_only")) == ["payment retry", "plain text line"]


def test_a_batch_over_the_aggregators_body_limit_is_split_until_it_fits(tmp_path):
    agg_dir, agent_dir = tmp_path / "agg", tmp_path / "agent"
    lines = [b"<14>1 2026-11-21T10:00:00Z h app - - - seq=%03d pad=%s\n" % (i, b"p" * 200) for i in range(120)]
    too_big = b"<14>1 2026-11-21T10:00:00Z h app - - - alone " + b"z" * 9000 + b"\n"

    async def scenario(agent: Daemon, aggregator: Daemon):
        await send_lines(agent, lines + [too_big])
        await await_until(lambda: len(stored(agg_dir)) == 120 and dead_letters(agent_dir, "hop"), 20,
                          "every line that fits delivered, the one that never fits dead-lettered")
        assert aggregator.metrics.get("logpipe_http_requests_total").value("agents", "413") >= 2

    run_pair(aggregator_config(str(agg_dir), source="max_body_bytes = 8192"),
             lambda aggregator: agent_config(str(agent_dir), url_of(aggregator), 'compression = "none"'), scenario)
    assert sorted(int(e["_msg"].split()[0][4:]) for e in stored(agg_dir)) == list(range(120))
    (dead,) = dead_letters(agent_dir, "hop")
    assert "HTTP 413" in dead["error"] and dead["event"]["_msg"].startswith("alone zzz")


def test_a_refused_token_is_retried_not_dead_lettered_and_flows_once_the_aggregator_takes_it(tmp_path):
    agg_dir, agent_dir = tmp_path / "agg", tmp_path / "agent"
    old_token = aggregator_config(str(agg_dir)).replace(TOKEN, "rotated-token")

    async def scenario(agent: Daemon, aggregator: Daemon):
        await send_lines(agent, [b"<14>1 2026-11-21T10:00:00Z h app - - - waits for the token\n"])
        errors = agent.metrics.get("logpipe_send_errors_total")
        await await_until(lambda: errors.value("hop", "true") >= 3, what="401s retried")
        assert errors.value("hop", "false") == 0
        assert "refused this agent" in agent.sinks["hop"].deliverer.last_error
        assert aggregator.metrics.get("logpipe_http_requests_total").value("agents", "401") >= 3
        assert await aggregator.reload(loads(aggregator_config(str(agg_dir)))) == []  # same listen: the socket stays
        await await_until(lambda: stored(agg_dir), what="delivered after the aggregator took the agent's token")

    run_pair(old_token, lambda aggregator: agent_config(str(agent_dir), url_of(aggregator)), scenario)
    assert [e["_msg"] for e in stored(agg_dir)] == ["waits for the token"]
    assert dead_letters(agent_dir, "hop") == []


def test_what_each_answer_means_to_the_sink(tmp_path):
    full = """
[sinks.stuck]
type = "logpipe"
url = "http://127.0.0.1:9"
retry_initial_ms = 5000
buffer = { max_bytes = 100 }
"""

    async def main():
        # shutdown_timeout_s = 1: the stuck sink never delivers, and the stop need not wait for it
        text = aggregator_config(str(tmp_path), extra=full)
        aggregator = Daemon(loads(text.replace("shutdown_timeout_s = 5", "shutdown_timeout_s = 1")))
        await aggregator.start()
        url = url_of(aggregator)

        def sink(**keys: str) -> Logpipe:
            keys = {"url": url, "token": TOKEN, **keys}
            text = '[sinks.s]\ntype = "logpipe"\n' + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
            return Logpipe("s", loads(text).sinks["s"])

        try:
            good, wrong, nowhere = sink(), sink(token="nope"), sink(url="http://127.0.0.1:9")
            assert await good.check() is None
            assert "HTTP 401" in await wrong.check() and "unreachable" in await nowhere.check()
            with pytest.raises(SendError) as caught:
                await good.send(Batch("b1", [b'{"_msg": "ok"}', b"[1]"], 20, 0.0))
            assert (caught.value.status, caught.value.retryable) == (400, False) and "line 2" in str(caught.value)
            with pytest.raises(SendError) as caught:
                await wrong.send(Batch("b2", [b'{"_msg": "ok"}'], 15, 0.0))
            assert (caught.value.status, caught.value.retryable) == (401, True)
            with pytest.raises(SendError) as caught:
                await nowhere.send(Batch("b3", [b'{"_msg": "ok"}'], 15, 0.0))
            assert caught.value.retryable and caught.value.status is None
            await good.send(Batch("b4", [b'{"_msg": "fills the stuck sink", "pad": "%s"}' % (b"p" * 100)], 150, 0.0))
            with pytest.raises(SendError) as caught:
                await good.send(Batch("b5", [b'{"_msg": "refused while full"}'], 30, 0.0))
            assert (caught.value.status, caught.value.retryable) == (503, True)
        finally:
            for s in (good, wrong, nowhere):
                await s.close()
            await aggregator.shutdown()

    run_async(main, timeout=30)
    assert [e["_msg"] for e in stored(tmp_path)] == ["fills the stuck sink"]


def _certificates(directory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it."""
    d = str(directory)
    names = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
    paths = {name: os.path.join(d, name) for name in names}

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", paths["ca.key"], "-out", paths["ca.pem"],
        "-days", "1", "-subj", "/CN=hop-test-ca")
    ext = os.path.join(d, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    for who, extra in (("server", ["-extfile", ext]), ("client", [])):
        csr = os.path.join(d, f"{who}.csr")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", paths[f"{who}.key"], "-out", csr,
            "-subj", f"/CN=hop-{who}")
        run("openssl", "x509", "-req", "-in", csr, "-CA", paths["ca.pem"], "-CAkey", paths["ca.key"], "-CAcreateserial",
            "-out", paths[f"{who}.pem"], "-days", "1", *extra)
    return paths


def test_tls_with_client_certificates_both_ways(tmp_path):
    certs = _certificates(tmp_path)
    agg_dir, agent_dir = tmp_path / "agg", tmp_path / "agent"
    tls = f'tls = {{ cert = "{certs["server.pem"]}", key = "{certs["server.key"]}", client_ca = "{certs["ca.pem"]}" }}'
    client = f'tls_ca = "{certs["ca.pem"]}"\ntls_cert = "{certs["client.pem"]}"\ntls_key = "{certs["client.key"]}"'

    async def scenario(agent: Daemon, aggregator: Daemon):
        await send_lines(agent, [b"<14>1 2026-11-21T10:00:00Z h app - - - over tls\n"])
        await await_until(lambda: stored(agg_dir), what="delivered over TLS")
        no_cert = Logpipe("n", loads(f'[sinks.n]\ntype = "logpipe"\nurl = "{url_of(aggregator, "https")}"\n'
                                     f'token = "{TOKEN}"\ntls_ca = "{certs["ca.pem"]}"\n').sinks["n"])
        try:
            with pytest.raises(SendError) as caught:
                await no_cert.send(Batch("b", [b'{"_msg": "no client certificate"}'], 32, 0.0))
            assert caught.value.retryable
        finally:
            await no_cert.close()

    run_pair(aggregator_config(str(agg_dir), source=tls),
             lambda aggregator: agent_config(str(agent_dir), url_of(aggregator, "https"), client), scenario)
    assert [e["_msg"] for e in stored(agg_dir)] == ["over tls"]


def endpoint_states(agent: Daemon) -> dict[str, dict]:
    return {e["endpoint"]: e for e in stats(agent.graph, time.time())["sinks"]["hop"]["endpoints"]}


async def send_one_by_one(agent: Daemon, messages: list[str]) -> None:
    """Each message its own batch: sent, and confirmed, before the next one goes in."""
    sent = agent.metrics.get("logpipe_sent_events_total")
    for msg in messages:
        wanted = sent.value("hop") + 1
        await send_lines(agent, [b"<14>1 2026-11-21T10:00:00Z h app - - - %s\n" % msg.encode()])
        await await_until(lambda wanted=wanted: sent.value("hop") >= wanted, what=f"{msg} sent")


def test_an_agent_spreads_batches_over_its_aggregators_and_rides_out_one_stopping(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]

    async def scenario(agent: Daemon, aggregators: list[Daemon], stop):
        a, b = (url_of(aggregator) for aggregator in aggregators)
        await send_one_by_one(agent, [f"both-{i}" for i in range(6)])
        await await_until(lambda: len(stored(dirs[0])) + len(stored(dirs[1])) == 6, what="6 events stored")
        # Round robin over two healthy aggregators: every other batch each.
        assert len(stored(dirs[0])) == len(stored(dirs[1])) == 3
        await stop(aggregators[0])
        await send_one_by_one(agent, [f"after-{i}" for i in range(6)])
        await await_until(lambda: len(stored(dirs[1])) == 9, what="the rest in aggregator b")
        states = endpoint_states(agent)
        assert not states[a]["up"] and states[a]["last_error"]
        assert states[a]["errors"] >= 1 and states[a]["possible_duplicate_events"] == 0  # refused: nothing stored
        assert states[b]["up"] and states[b]["errors"] == 0
        metrics = agent.metrics.render()
        assert f'logpipe_sink_endpoint_up{{sink="hop",endpoint="{a}"}} 0' in metrics
        assert f'logpipe_sink_endpoint_requests_total{{sink="hop",endpoint="{b}"}}' in metrics
        assert agent.metrics.get("logpipe_send_errors_total").value("hop", "true") == 0  # failover is no failed send

    run_fleet([aggregator_config(str(d)) for d in dirs],
              lambda *aggregators: agent_config(str(tmp_path / "agent"), [url_of(x) for x in aggregators]), scenario)
    everything = [e["_msg"] for d in dirs for e in stored(d)]
    assert sorted(everything) == sorted([f"both-{i}" for i in range(6)] + [f"after-{i}" for i in range(6)])
    assert all(e["_msg"].startswith("both-") for e in stored(dirs[0]))


def test_an_aggregator_refusing_the_token_is_passed_over_and_probed_back(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    rotated = aggregator_config(str(dirs[0])).replace(TOKEN, "rotated-token")

    async def scenario(agent: Daemon, aggregators: list[Daemon], stop):
        a = url_of(aggregators[0])
        await send_one_by_one(agent, [f"first-{i}" for i in range(4)])
        await await_until(lambda: len(stored(dirs[1])) == 4, what="every batch in aggregator b")
        assert stored(dirs[0]) == []
        assert "HTTP 401" in endpoint_states(agent)[a]["last_error"]
        assert aggregators[0].metrics.get("logpipe_http_requests_total").value("agents", "401") >= 1
        assert await aggregators[0].reload(loads(aggregator_config(str(dirs[0])))) == []
        await await_until(lambda: endpoint_states(agent)[a]["up"], what="aggregator a probed back")
        await send_one_by_one(agent, [f"then-{i}" for i in range(4)])
        await await_until(lambda: len(stored(dirs[0])) + len(stored(dirs[1])) == 8, what="8 events stored")
        assert len(stored(dirs[0])) == 2  # back in the rotation: every other batch

    run_fleet([rotated, aggregator_config(str(dirs[1]))],
              lambda *aggregators: agent_config(str(tmp_path / "agent"), [url_of(x) for x in aggregators]), scenario)
    assert dead_letters(tmp_path / "agent", "hop") == []
    everything = sorted(e["_msg"] for d in dirs for e in stored(d))
    assert everything == sorted([f"first-{i}" for i in range(4)] + [f"then-{i}" for i in range(4)])


def test_the_url_defaults_to_a_local_aggregator():
    assert loads('[sinks.s]\ntype = "logpipe"\n').sinks["s"].endpoint_urls() == ["http://127.0.0.1:8687"]


ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_topology() -> tuple[str, str]:
    """The agent and aggregator configs the README's "Scaling out" section says to copy."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text[text.index("#### Agents and aggregators"):], re.S)
    return (next(b for b in blocks if b.startswith("# agent.toml")),
            next(b for b in blocks if b.startswith("# aggregator.toml")))


@pytest.mark.parametrize("where", ["README", "config"])
def test_the_shipped_topology_is_an_agent_over_several_aggregators_with_disk_buffers(where):
    """What test_hop_process.py runs, in the shape users copy: README's blocks and
    config/agent.toml + config/aggregator.toml."""
    if where == "README":
        agent, aggregator = (loads(text) for text in readme_topology())
    else:
        agent, aggregator = load(str(ROOT / "config/agent.toml")), load(str(ROOT / "config/aggregator.toml"))
    (hop,) = [s for s in agent.sinks.values() if isinstance(s, LogpipeSink)]
    source = aggregator.sources["agents"]
    assert len(hop.endpoint_urls()) >= 2 and hop.url is None
    for url in hop.endpoint_urls():
        assert url.startswith("https://" if source.tls else "http://")
        assert int(url.rsplit(":", 1)[1]) == parse_address(source.listen)[1]
    assert hop.path == source.path and hop.token_file and hop.token_file == source.token_file
    assert hop.buffer.type == "disk"
    assert [s.buffer.type for s in aggregator.sinks.values()] == ["disk"]
    (ch,) = aggregator.sinks.values()
    assert isinstance(ch, ClickHouseSink) and ch.table == "logs_{service}"


@pytest.mark.parametrize(
    "keys, expected",
    [
        pytest.param('url = "http://agg:8687/logpipe/v1/events"', "sinks.s.url: expected", id="path-in-url"),
        pytest.param('url = "http://agg:8687"\ntls_ca = "/ca.pem"', "sinks.s.url: tls_* keys need an https:// url",
                     id="tls-over-http"),
        pytest.param('url = "https://agg:8687"\ntls_cert = "/c.pem"',
                     "sinks.s.tls_cert: tls_cert and tls_key go together", id="cert-without-key"),
        pytest.param('token = "a"\ntoken_file = "/t"', "sinks.s.token: give at most one", id="two-tokens"),
        pytest.param('compression = "zstd"', 'sinks.s.compression: invalid enum value', id="compression"),
        pytest.param('endpoints = ["http://agg-1:8687", "agg-2:8687"]', 'sinks.s.endpoints.1: expected "http(s)://HOST[:PORT]',
                     id="endpoint-not-a-url"),
        pytest.param('endpoints = ["http://agg-1:8687/logpipe/v1/events"]', "sinks.s.endpoints.0: expected",
                     id="path-in-endpoint"),
        pytest.param('endpoints = ["http://u:p@agg-1:8687"]', "sinks.s.endpoints.0: expected",
                     id="credentials-in-endpoint"),
        pytest.param('endpoints = ["http://agg-1:8687", "http://agg-1:8687/"]',
                     "sinks.s.endpoints.1: 'http://agg-1:8687/' is already", id="endpoint-twice"),
        pytest.param('url = "http://agg-1:8687"\nendpoints = ["http://agg-2:8687"]',
                     "sinks.s.endpoints: give either url", id="url-and-endpoints"),
        pytest.param('endpoints = ["https://agg-1:8687", "http://agg-2:8687"]\ntls_ca = "/ca.pem"',
                     "sinks.s.endpoints.1: tls_* keys need https:// endpoints", id="tls-over-http-endpoint"),
    ],
)
def test_logpipe_sink_config_problems_name_the_key(keys, expected):
    assert_problem(f'[sinks.s]\ntype = "logpipe"\n{keys}\n', expected)
