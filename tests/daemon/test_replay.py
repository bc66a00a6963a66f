"""``logpipe replay``: every source format through the daemon's path, timestamps kept, the
checkpoint advanced only on acknowledgement, resume without loss or duplicates (in process
and, against a real VictoriaLogs, as a subprocess interrupted by SIGINT), and the rate cap."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys

import orjson
import pytest

from logpipe.config import loads
from logpipe.replay import Checkpoint, Replay, ReplayOptions, epoch_to_time
from logpipe.sinks.base import SendError, Sink

from ..helpers import VictoriaLogsServer, await_until, run_async, victorialogs_bin, wait_until


def file_config(tmp_path, extra: str = "") -> str:
    return f"""
[daemon]
data_dir = "{tmp_path}/data"
shutdown_timeout_s = 1
{extra}
[sinks.out]
type = "file"
path = "out"
batch = {{ max_events = 500, max_age_ms = 10 }}
"""


def read_out(tmp_path) -> list[dict]:
    with open(tmp_path / "data" / "out.ndjson", "rb") as f:
        return [orjson.loads(line) for line in f]


def write_ndjson(path, n: int, start: int = 0, compress: bool = False) -> None:
    opener = gzip.open if compress else open
    with opener(path, "wt") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"ts": 1700000000 + i, "message": f"line {i}", "i": i}) + "\n")


def replay(config_text: str, **options) -> dict:
    config = loads(config_text)
    options.setdefault("progress", False)
    return run_async(lambda: Replay(config, ReplayOptions(**options)).run(install_signals=False), timeout=60)


@pytest.mark.parametrize(
    "value,expected",
    [(1700000000, "2023-11-14T22:13:20.000000Z"), (1700000000123, "2023-11-14T22:13:20.123000Z"),
     (1700000000123456, "2023-11-14T22:13:20.123456Z"), (1700000000123456789, "2023-11-14T22:13:20.123457Z")],
)
def test_epoch_units(value, expected):
    assert epoch_to_time(value) == expected


def test_every_source_format_keeps_original_timestamps(tmp_path):
    write_ndjson(tmp_path / "a.ndjson.gz", 3, compress=True)
    with open(tmp_path / "b.ndjson", "w") as f:
        f.write('{"_time": "2020-01-02T03:04:05.000006Z", "_msg": "kept as is"}\nnot json at all\n\n')
    with open(tmp_path / "c.log", "wb") as f:
        f.write(b'<165>1 2021-06-07T08:09:10.5Z web app 1 ID [x@1 k="v"] {"msg":"json body","user":"ann"}\n')
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("CREATE TABLE logs (created INTEGER, text TEXT, host TEXT)")
    db.executemany("INSERT INTO logs VALUES (?, ?, ?)", [(1600000000000, "from sqlite", "db-1"), (1600000001000, "second", "db-2")])
    db.commit()
    db.close()
    cfg = file_config(tmp_path)
    summary = replay(cfg, sink="out", sources=[str(tmp_path / "a.ndjson.gz"), str(tmp_path / "b.ndjson"), str(tmp_path / "c.log")],
                     mapping={"_time": "ts", "_msg": "message"})
    assert summary["complete"] and summary["sent_events"] == 6
    summary = replay(cfg, sink="out", sources=[str(tmp_path / "old.db")], table="logs",
                     mapping={"_time": "created", "_msg": "text", "hostname": "host"}, checkpoint=str(tmp_path / "db.ckpt"))
    assert summary["complete"] and summary["sent_events"] == 2
    out = read_out(tmp_path)
    assert [(e["_time"], e["_msg"]) for e in out[:3]] == [
        ("2023-11-14T22:13:20.000000Z", "line 0"), ("2023-11-14T22:13:21.000000Z", "line 1"), ("2023-11-14T22:13:22.000000Z", "line 2")]
    assert out[3] == {"_time": "2020-01-02T03:04:05.000006Z", "_msg": "kept as is"}
    assert out[4]["_msg"] == "not json at all" and out[4]["parse_error"] == "true"  # kept, flagged
    assert out[5]["_time"] == "2021-06-07T08:09:10.500000Z" and out[5]["_msg"] == "json body"
    assert (out[5]["user"], out[5]["x@1.k"], out[5]["severity"]) == ("ann", "v", "notice")
    assert out[6] == {"_time": "2020-09-13T12:26:40.000000Z", "_msg": "from sqlite", "hostname": "db-1"}
    assert out[7]["_msg"] == "second"


def test_transforms_apply_during_replay(tmp_path):
    write_ndjson(tmp_path / "a.ndjson", 10)
    cfg = file_config(tmp_path, '[[transforms]]\ntype = "drop"\nfield = "_msg"\ncontains = "line 3"\n')
    summary = replay(cfg, sink="out", sources=[str(tmp_path / "a.ndjson")], mapping={"_msg": "message"})
    assert summary["complete"] and summary["read_events"] == 10 and summary["sent_events"] == 9
    assert [e["i"] for e in read_out(tmp_path)] == [0, 1, 2, 4, 5, 6, 7, 8, 9]


class RefusingSink(Sink):
    async def send(self, batch):
        raise SendError("connection refused", retryable=True)


def test_checkpoint_advances_only_when_the_sink_confirms_and_resume_is_exact(tmp_path):
    source = tmp_path / "a.ndjson"
    write_ndjson(source, 5000)
    cfg = file_config(tmp_path)
    config = loads(cfg)
    options = ReplayOptions(sink="out", sources=[str(source)], progress=False, rate=5000.0)

    async def refused_then_stopped():
        r = Replay(config, options)
        r.sink = r.deliverer.sink = RefusingSink("out")

        async def stop_when_failing():
            await await_until(lambda: r.deliverer.failing_since is not None and r.read_events > 0, what="sink failing")
            r.request_stop()

        stopper = asyncio.create_task(stop_when_failing())
        summary = await r.run(install_signals=False)
        await stopper
        return summary

    summary = run_async(refused_then_stopped, timeout=60)
    assert not summary["complete"] and summary["interrupted"] and summary["sent_events"] == 0
    ckpt = Checkpoint(summary["checkpoint"], "out")
    assert ckpt.position(str(source))[0] == 0  # read, never confirmed: nothing recorded
    assert not os.path.exists(tmp_path / "data" / "out.ndjson")

    # Part of the file delivered, then interrupted after a few acknowledged chunks.
    async def partial():
        r = Replay(config, options)

        async def stop_after_some():
            await await_until(lambda: r.buffer.acked >= 1000, what="1000 acknowledged")
            r.request_stop()

        stopper = asyncio.create_task(stop_after_some())
        summary = await r.run(install_signals=False)
        await stopper
        return summary

    first = run_async(partial, timeout=60)
    assert not first["complete"] and 1000 <= first["sent_events"] < 5000
    second = replay(cfg, sink="out", sources=[str(source)])
    assert second["complete"] and first["sent_events"] + second["sent_events"] == 5000
    assert [e["i"] for e in read_out(tmp_path)] == list(range(5000))  # no loss, no duplicate


def test_resume_refuses_a_source_whose_content_changed(tmp_path):
    source = tmp_path / "a.ndjson"
    write_ndjson(source, 100)
    cfg = file_config(tmp_path)
    assert replay(cfg, sink="out", sources=[str(source)])["complete"]
    with open(source, "a") as f:  # appended: same file, the new lines are replayed
        f.write(json.dumps({"message": "appended", "i": 100}) + "\n")
    again = replay(cfg, sink="out", sources=[str(source)])
    assert again["complete"] and again["sent_events"] == 1  # only the appended line
    assert replay(cfg, sink="out", sources=[str(source)])["sent_events"] == 0
    write_ndjson(source, 100, start=1000)  # rewritten: a different file at the same path
    with pytest.raises(ValueError, match="content changed since the checkpoint"):
        replay(cfg, sink="out", sources=[str(source)])
    assert [e["i"] for e in read_out(tmp_path)] == list(range(101))


def test_rate_cap_is_a_lower_bound_on_duration(tmp_path):
    write_ndjson(tmp_path / "a.ndjson", 3000)
    summary = replay(file_config(tmp_path), sink="out", sources=[str(tmp_path / "a.ndjson")], rate=5000.0)
    assert summary["complete"] and summary["sent_events"] == 3000
    # 3000 events at <= 5000/s cannot take less than ~0.6 s (first chunk is free).
    assert summary["elapsed_s"] >= 0.3


def test_unknown_sink_and_sqlite_without_table_are_clear_errors(tmp_path):
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (a)")
    db.close()
    cfg = file_config(tmp_path)
    for argv, needle in [
        (["--sink", "nope", str(tmp_path / "x.db")], "no such sink"),
        (["--sink", "out", str(tmp_path / "x.db")], "--table"),
    ]:
        (tmp_path / "c.toml").write_text(cfg)
        proc = subprocess.run([sys.executable, "-m", "logpipe", "replay", "-c", str(tmp_path / "c.toml"), *argv],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and needle in proc.stderr


@pytest.mark.victorialogs
@pytest.mark.skipif(victorialogs_bin() is None, reason="set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")
def test_replay_into_victorialogs_interrupted_and_resumed_without_loss_or_duplicates(tmp_path):
    n = 50_000
    source = tmp_path / "history.ndjson.gz"
    with gzip.open(source, "wt") as f:
        for i in range(n):
            f.write(json.dumps({"_time": f"2024-01-{1 + i % 28:02d}T00:00:00.{i:06d}Z", "_msg": f"history {i}",
                                "service": "legacy", "seq": str(i)}) + "\n")
    server = VictoriaLogsServer(victorialogs_bin(), str(tmp_path / "vl"))
    server.start()
    try:
        cfg = tmp_path / "replay.toml"
        cfg.write_text(f"""
[daemon]
data_dir = "{tmp_path}/data"
[sinks.vl]
type = "victorialogs"
url = "{server.url}"
batch = {{ max_events = 2000, max_age_ms = 50 }}
""")
        checkpoint = tmp_path / "data" / "replay" / "vl.checkpoint.json"
        argv = [sys.executable, "-m", "logpipe", "replay", "-c", str(cfg), "--sink", "vl", str(source)]

        def position() -> int:
            try:
                return json.loads(checkpoint.read_text())["sources"][str(source)]["position"]
            except (OSError, ValueError, KeyError):
                return 0

        first = subprocess.Popen(argv + ["--rate", "20000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: position() > 0 or first.poll() is not None, timeout=30, what="first acknowledged chunk")
            first.send_signal(signal.SIGINT)
            out, err = first.communicate(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        summary1 = json.loads(out.splitlines()[-1])
        assert first.returncode == 1 and summary1["interrupted"], err
        assert 0 < summary1["sent_events"] < n
        second = subprocess.run(argv, capture_output=True, timeout=120)
        assert second.returncode == 0, second.stderr
        summary2 = json.loads(second.stdout.splitlines()[-1])
        assert summary1["sent_events"] + summary2["sent_events"] == n
        assert b"ev/s" in second.stderr  # progress / summary on stderr
        rows = server.query("service:legacy | stats count() as n, count_uniq(seq) as u")
        assert rows == [{"n": str(n), "u": str(n)}]
        sample = server.query('seq:="12345"')
        assert [(r["_time"], r["_msg"]) for r in sample] == [("2024-01-26T00:00:00.012345Z", "history 12345")]
    finally:
        server.stop()


# --- NDJSON as the live path would have stored it (issue: nothing lost silently) -------------


def replay_cli(tmp_path, config_text: str, *argv: str) -> tuple[int, dict, str]:
    (tmp_path / "c.toml").write_text(config_text)
    proc = subprocess.run([sys.executable, "-m", "logpipe", "replay", "-c", str(tmp_path / "c.toml"), "--no-progress", *argv],
                          capture_output=True, text=True, timeout=60)
    summary = json.loads(proc.stdout.splitlines()[-1]) if proc.stdout.strip() else {}
    return proc.returncode, summary, proc.stderr


def test_ndjson_time_and_message_keys_are_normalized_and_a_cut_first_line_spoils_nothing(tmp_path):
    source = tmp_path / "export.ndjson"
    source.write_text(
        'e":"2020-01-02T03:04:05Z","_msg":"cut at the front"}\n'  # `tail -c` of an export
        '{"_time": "garbage", "_msg": "bad time"}\n'
        '{"_msg": "no time"}\n'
        '{"_time": "2020-01-02 03:04:05+02:00", "message": "message key", "lvl": "WARNING"}\n'
        '{"_time": 1700000000123, "msg": "msg key"}\n'
    )
    os.utime(source, (1_600_000_000, 1_600_000_000))
    mtime = "2020-09-13T12:26:40.000000Z"
    code, summary, err = replay_cli(tmp_path, file_config(tmp_path), "--sink", "out", str(source))
    assert code == 0, err
    out = read_out(tmp_path)
    assert [e["_msg"] for e in out] == ['e":"2020-01-02T03:04:05Z","_msg":"cut at the front"}', "bad time", "no time",
                                        "message key", "msg key"]
    assert [e["_time"] for e in out] == [mtime, mtime, mtime, "2020-01-02T01:04:05.000000Z", "2023-11-14T22:13:20.123000Z"]
    assert [e.get("parse_error") for e in out] == ["true", "true", None, None, None]
    assert out[1]["body._time"] == "garbage" and out[3]["level"] == "warn"
    assert (summary["sent_events"], summary["time_missing_events"], summary["time_unreadable_events"]) == (5, 1, 1)
    assert summary["fallback_times"] == {str(source): mtime}
    assert "1 record(s) without _time and 1 with an unreadable one" in err and f"{source}: {mtime}" in err


ROUTED = """
[sinks.other]
type = "file"
path = "other"

[[transforms]]
type = "drop"
field = "_msg"
contains = "noise"

[[transforms]]
type = "route"
routes = [{ when = { field = "_msg", contains = "audit" }, sinks = ["other"] }]
"""


def test_events_routed_to_other_sinks_or_dropped_are_reported_not_sent_silently(tmp_path):
    source = tmp_path / "a.ndjson"
    source.write_text("".join(json.dumps({"_time": 1700000000 + i, "_msg": m}) + "\n"
                              for i, m in enumerate(["app 1", "audit 1", "noise", "app 2", "audit 2"])))
    code, summary, err = replay_cli(tmp_path, file_config(tmp_path, ROUTED), "--sink", "out", str(source))
    assert code == 0, err
    assert [e["_msg"] for e in read_out(tmp_path)] == ["app 1", "app 2"]
    assert (summary["read_events"], summary["sent_events"], summary["routed_elsewhere_events"],
            summary["dropped_by_transforms_events"]) == (5, 2, 2, 1)
    assert "replay: 2 event(s) routed by the transforms to other sinks only: not sent (replay feeds out alone)" in err
    assert "replay: 1 event(s) dropped by transforms" in err
    assert not (tmp_path / "data" / "other.ndjson").exists()


def test_a_second_run_says_already_complete(tmp_path):
    write_ndjson(tmp_path / "a.ndjson", 3)
    code, first, _ = replay_cli(tmp_path, file_config(tmp_path), "--sink", "out", str(tmp_path / "a.ndjson"))
    assert code == 0 and first["sent_events"] == 3 and not first["already_complete"]
    code, again, err = replay_cli(tmp_path, file_config(tmp_path), "--sink", "out", str(tmp_path / "a.ndjson"))
    assert code == 0 and again["already_complete"] and again["sent_events"] == 0
    assert "replay already complete: the checkpoint" in err and "delete the checkpoint" in err


def test_dead_letters_are_replayed_as_their_original_events(tmp_path):
    from logpipe.deliver import DeadLetters

    events = [{"_time": "2024-05-06T07:08:09.000001Z", "_msg": "refused once", "service": "api", "n": 1},
              {"_time": "2024-05-06T07:08:09.000002Z", "_msg": "refused twice", "n": 2}]
    letters = DeadLetters(str(tmp_path / "old"), "vl")
    letters.write([orjson.dumps(e) for e in events], SendError("400: cannot parse", retryable=False, response="bad"))
    [path] = [os.path.join(letters.directory, name) for name in os.listdir(letters.directory)]
    code, summary, err = replay_cli(tmp_path, file_config(tmp_path), "--sink", "out", path)
    assert code == 0 and summary["sent_events"] == 2, err
    assert read_out(tmp_path) == events


@pytest.mark.victorialogs
@pytest.mark.skipif(victorialogs_bin() is None, reason="set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")
def test_every_replayed_ndjson_event_is_stored_by_victorialogs_with_the_time_replay_reports(tmp_path):
    source = tmp_path / "export.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in [
        {"_time": "2024-01-01T00:00:01Z", "_msg": "good", "seq": "1"},
        {"_time": "garbage", "_msg": "bad time", "seq": "2"},  # VictoriaLogs skipped this one with a 200
        {"_msg": "no time", "seq": "3"},  # ... and stamped this one with its own clock
        {"_time": "2024-01-01 00:00:04", "message": "message key", "seq": "4"},
    ]))
    os.utime(source, (1_700_000_000, 1_700_000_000))
    server = VictoriaLogsServer(victorialogs_bin(), str(tmp_path / "vl"))
    server.start()
    try:
        config = f'[daemon]\ndata_dir = "{tmp_path}/data"\n[sinks.vl]\ntype = "victorialogs"\nurl = "{server.url}"\n' \
                 'batch = { max_events = 100, max_age_ms = 10 }\n'
        code, summary, err = replay_cli(tmp_path, config, "--sink", "vl", str(source))
        assert code == 0 and summary["sent_events"] == 4, err
        rows = sorted(server.query("seq:*"), key=lambda r: r["seq"])
    finally:
        server.stop()
    assert [(r["seq"], r["_time"], r["_msg"]) for r in rows] == [
        ("1", "2024-01-01T00:00:01Z", "good"), ("2", "2023-11-14T22:13:20Z", "bad time"),
        ("3", "2023-11-14T22:13:20Z", "no time"), ("4", "2024-01-01T00:00:04Z", "message key")]
    assert rows[1]["body._time"] == "garbage" and rows[1]["parse_error"] == "true"
