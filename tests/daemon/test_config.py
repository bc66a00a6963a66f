"""Config loading: defaults, the example files, and errors that name every problem's path."""

import pathlib

import pytest

from logpipe.config import ConfigError, FileSink, VictoriaLogsSink, load, loads, parse_address

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.toml")))
def test_example_configs_load(name):
    config = load(str(ROOT / "config" / name))
    assert config.sinks


def test_default_config_needs_no_server_and_uses_unprivileged_ports():
    config = load(str(ROOT / "config" / "logpipe.toml"))
    assert all(isinstance(s, FileSink) for s in config.sinks.values())
    for address in (config.sources["syslog"].udp, config.sources["syslog"].tcp, config.sources["metadata"].udp):
        assert parse_address(address)[1] >= 1024


def test_minimal_config_gets_spec_defaults():
    config = loads('[sinks.vl]\ntype = "victorialogs"\n')
    sink = config.sinks["vl"]
    assert isinstance(sink, VictoriaLogsSink)
    assert (sink.batch.max_events, sink.batch.max_bytes, sink.batch.max_age_ms) == (10000, 4000000, 1000)
    assert config.enrich.pairs()[0] == ("source_ip", "ip")
    assert config.daemon.data_dir == "./data"


BROKEN = """\
[sources.syslog]
udp = "0.0.0.0:5514"
max_line_bytes = 10
tcp = "nonsense"

[enrich]
match_on = ["hostname=colour"]

[sinks.vl]
type = "victorialogs"
batch = { max_events = "ten", max_age_ms = 0 }
colour = "blue"

[sinks.ch]
type = "clickhouse"
table = "logs_{service}"

[sinks.k]
type = "kafka"
"""


def test_every_problem_is_reported_with_its_path_and_line():
    with pytest.raises(ConfigError) as info:
        loads(BROKEN)
    problems = info.value.problems
    assert 'sinks.vl.batch.max_events: expected int >= 1, got "ten" (line 11)' in problems
    assert "sinks.vl.batch.max_age_ms: expected int >= 1, got 0 (line 11)" in problems
    assert "sinks.vl.colour: unknown key (line 12)" in problems
    assert "sources.syslog.max_line_bytes: expected int >= 64, got 10 (line 3)" in problems
    assert 'sources.syslog.tcp: expected "HOST:PORT", got "nonsense" (line 4)' in problems
    assert any(p.startswith("enrich.match_on: ") for p in problems)
    assert any(p.startswith("sinks.ch.default_table: required") for p in problems)
    # Every sink type is listed (more come with new sinks), then what was given.
    assert any(p.startswith("sinks.k.type: expected one of victorialogs, clickhouse, file, syslog, elasticsearch")
               and p.endswith('got "kafka" (line 19)') for p in problems), problems
    assert len(problems) == 8


@pytest.mark.parametrize(
    "text,expected",
    [
        pytest.param("[sinks", "TOML syntax", id="toml-syntax"),
        pytest.param("", "sinks: at least one sink is required", id="no-sinks"),
        pytest.param('[sinks.vl]\ntype="victorialogs"\nurl="ftp://x"\n', "sinks.vl.url: expected", id="bad-url"),
        pytest.param('[sinks."a b"]\ntype="file"\n', "sink names", id="bad-sink-name"),
        pytest.param('[sinks.f]\ntype="file"\n[sources.syslog]\nallow=["10.0.0.0/33"]\n', "not a CIDR", id="bad-cidr"),
    ],
)
def test_invalid_configs_explain_themselves(text, expected):
    with pytest.raises(ConfigError) as info:
        loads(text)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "nope.toml"))
    assert "cannot read" in info.value.problems[0]


@pytest.mark.parametrize("text,expected", [("0.0.0.0:514", ("0.0.0.0", 514)), ("[::]:5514", ("::", 5514))])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.toml")))
def test_example_configs_run(name, tmp_path, monkeypatch, request):
    """Each shipped config starts, binds every listener it names and stops. Only what this
    machine cannot give it changes: listeners move to 127.0.0.1 port 0 (the real ports may be
    taken or privileged), data_dir goes under tmp, the secret files and variables it names
    are made, and NATS servers are a real local nats-server."""
    import msgspec

    from logpipe.config import Config

    from ..helpers import run_async, running

    raw = msgspec.to_builtins(load(str(ROOT / "config" / name)))
    nats_url: list[str] = []
    made: list[str] = []

    def certificate() -> list[str]:
        """A self-signed certificate and key, made once, for every TLS file the config names."""
        if not made:
            import subprocess

            cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
            made.extend([cert, key])
        return made

    def local(value, key=""):
        if isinstance(value, dict):
            return {k: local(v, k) for k, v in value.items()}
        if isinstance(value, list):
            if key == "servers" and any(str(v).startswith("nats://") for v in value):
                if not nats_url:
                    nats_url.append(request.getfixturevalue("nats_server").url)
                return list(nats_url)
            return [local(v, key) for v in value]
        if isinstance(value, str) and key in ("cert", "client_ca", "tls_ca", "tls_cert", "key", "tls_key"):
            return certificate()[1 if key in ("key", "tls_key") else 0]
        if isinstance(value, str) and key.endswith("_file"):
            path = tmp_path / f"{key}.txt"
            path.write_text("example-secret\n")
            return str(path)
        if isinstance(value, str) and key.endswith("_env"):
            monkeypatch.setenv(value, "example-secret")
        return value

    raw = local(raw)
    for source in raw["sources"].values():
        for key in ("udp", "tcp", "listen"):
            if source.get(key):
                source[key] = "127.0.0.1:0"
    raw["daemon"].update(data_dir=str(tmp_path / "data"), shutdown_timeout_s=1)
    raw["api"]["listen"] = "127.0.0.1:0"
    config = msgspec.convert(raw, Config)

    async def scenario():
        async with running(config) as daemon:
            bound = {f"{n}.{k}" for n, s in daemon.graph.sources.items() for k in s.addresses}
            expected = {f"{n}.{k}" for n, s in config.sources.items() for k, _, _ in s.listeners()}
            assert bound == expected
            assert set(daemon.sinks) == set(config.sinks)

    run_async(scenario, timeout=60)
