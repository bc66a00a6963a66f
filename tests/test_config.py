"""Config loading: defaults, the example files, and errors that name every problem's path."""

import pathlib

import pytest

from logpipe.config import ConfigError, FileSink, VictoriaLogsSink, load, loads, parse_address

ROOT = pathlib.Path(__file__).resolve().parent.parent


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
    assert 'sinks.k.type: expected one of victorialogs, clickhouse, file, syslog, elasticsearch, logpipe, got "kafka" (line 19)' in problems
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
