"""The command line: validate's exit codes and messages, announce on the wire."""

import socket
import subprocess
import sys

import orjson
import pytest

from logpipe.parse.metadata import sign


def logpipe(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "logpipe", *args], capture_output=True, text=True, input=stdin, timeout=60)


def test_validate_ok_prints_one_line_summary(tmp_path):
    result = logpipe("validate", "-c", "config/logpipe.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ") and result.stdout.count("\n") == 1


def test_validate_reports_each_problem_and_exits_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[sources.syslog]\ntimezone = "Mars/Olympus"\n[sinks.vl]\ntype = "victorialogs"\nbatch = { max_events = "ten" }\n')
    result = logpipe("validate", "-c", str(path))
    assert result.returncode == 2
    assert 'sinks.vl.batch.max_events: expected int >= 1, got "ten" (line 5)' in result.stderr.splitlines()


def test_validate_rejects_unknown_timezone(tmp_path):
    path = tmp_path / "tz.toml"
    path.write_text('[sources.syslog]\ntimezone = "Mars/Olympus"\n[sinks.f]\ntype = "file"\n')
    result = logpipe("validate", "-c", str(path))
    assert result.returncode == 2 and result.stderr.startswith("sources.syslog.timezone: ")


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "signed"])
def test_announce_sends_one_datagram(tmp_path, signed):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        args = ["announce", "--to", "127.0.0.1:%d" % sock.getsockname()[1], "service=api", "container_id=abc", "ttl_s=30"]
        if signed:
            (tmp_path / "secret").write_text("s3cret\n")
            args[1:1] = ["--secret-file", str(tmp_path / "secret")]
        result = logpipe(*args)
        assert result.returncode == 0, result.stderr
        data = orjson.loads(sock.recv(65536))
    if signed:
        assert data["hmac"] == sign(data["payload"], b"s3cret")  # trailing newline of the file ignored
        data = orjson.loads(data["payload"])
        assert isinstance(data.pop("ts"), int)
    assert data == {"service": "api", "container_id": "abc", "ttl_s": 30}


@pytest.mark.parametrize("to", ["nohostport", "127.0.0.1:", "127.0.0.1:99999"])
def test_announce_with_a_malformed_address_is_a_usage_error(to):
    result = logpipe("announce", "--to", to, "service=api")
    assert result.returncode == 2
    assert result.stderr.startswith("announce: --to: ") and repr(to) in result.stderr


def test_test_command_parses_enriches_and_prints_json_lines(tmp_path):
    (tmp_path / "meta.jsonl").write_text('{"ip": "", "hostname": "api-1", "service": "api"}\n')
    lines = "<14>Nov 21 10:00:00 api-1 app[3]: hello\nnot syslog at all\n"
    result = logpipe("test", "-c", "config/logpipe.toml", "--metadata", str(tmp_path / "meta.jsonl"), "--source-ip", "10.0.0.1", stdin=lines)
    assert result.returncode == 0, result.stderr
    first, second = [orjson.loads(out) for out in result.stdout.splitlines()]
    assert (first["_msg"], first["service"], first["app_name"], first["source_ip"]) == ("hello", "api", "app", "10.0.0.1")
    assert second["parse_error"] == "true" and second["_msg"] == "not syslog at all"


def test_logpipe_test_piped_into_a_reader_that_quits_exits_quietly(tmp_path):
    import subprocess
    import sys

    lines = tmp_path / "lines.log"
    lines.write_text("".join(f"<14>Nov 21 10:00:00 host app[1]: line {i}\n" for i in range(20000)))
    proc = subprocess.run(
        f"{sys.executable} -m logpipe test -c config/logpipe.toml {lines} | head -1",
        shell=True, capture_output=True, text=True, timeout=60, cwd=str(__import__('pathlib').Path(__file__).parent.parent.parent),
    )
    assert '"_msg":"line 0"' in proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
