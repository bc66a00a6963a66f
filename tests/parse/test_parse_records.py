"""parse/records.py: exported lines and rows -> events as the live path makes them. Each
rule fed whole: line classification, dead letters, --map, message keys, level, _time."""

from __future__ import annotations

import orjson
import pytest

from logpipe.parse.records import RecordReader, dead_letter_event
from logpipe.parse.syslog import SyslogParser
from logpipe.parse.timestamps import format_time

FILE_TIME = 1_600_000_000.25  # the replayed file's modification time
FILE_TIME_TEXT = format_time(FILE_TIME)


def reader(mapping=None, timezone="UTC") -> RecordReader:
    return RecordReader(SyslogParser(timezone), 65536, mapping, timezone)


def one(record: dict, **kw) -> dict:
    return reader(**kw).record(record, FILE_TIME)


@pytest.mark.parametrize("given,stored", [
    pytest.param("2020-01-02T03:04:05.000006Z", "2020-01-02T03:04:05.000006Z", id="already-normal"),
    pytest.param("2020-01-02T03:04:05Z", "2020-01-02T03:04:05.000000Z", id="no-fraction"),
    pytest.param("2020-01-02 03:04:05.5+02:00", "2020-01-02T01:04:05.500000Z", id="space-and-offset"),
    pytest.param("2020-01-02T03:04:05.123456789Z", "2020-01-02T03:04:05.123456Z", id="nanoseconds-cut-not-rounded"),
    pytest.param(1700000000, "2023-11-14T22:13:20.000000Z", id="epoch-seconds"),
    pytest.param(1700000000123, "2023-11-14T22:13:20.123000Z", id="epoch-ms"),
    pytest.param("1700000000.5", "2023-11-14T22:13:20.500000Z", id="epoch-as-text"),
])
def test_a_readable_time_is_rewritten_as_every_stored_time(given, stored):
    r = reader()
    event = r.record({"_time": given, "_msg": "m"}, FILE_TIME)
    assert event == {"_time": stored, "_msg": "m"}
    assert (r.time_missing, r.time_unreadable) == (0, 0)


@pytest.mark.parametrize("given", [
    pytest.param("garbage", id="prose"),
    pytest.param("2020-13-45T00:00:00Z", id="month-13"),
    pytest.param(True, id="boolean"),
    pytest.param([1, 2], id="list"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(-1e300, id="before-year-1"),
])
def test_an_unreadable_time_gets_the_file_time_is_flagged_counted_and_kept(given):
    r = reader()
    event = r.record({"_time": given, "_msg": "m"}, FILE_TIME)
    assert event["_time"] == FILE_TIME_TEXT and event["parse_error"] == "true"
    assert event["body._time"] == given or given != given  # nan != nan
    assert (r.time_missing, r.time_unreadable) == (0, 1)


@pytest.mark.parametrize("record", [{"_msg": "m"}, {"_time": None, "_msg": "m"}], ids=["absent", "null"])
def test_a_record_without_time_gets_the_file_time_not_the_wall_clock(record):
    r = reader()
    event = r.record(record, FILE_TIME)
    assert event == {"_msg": "m", "_time": FILE_TIME_TEXT} and "parse_error" not in event
    assert (r.time_missing, r.time_unreadable) == (1, 0)


def test_an_offset_less_stamp_is_read_in_the_listener_timezone():
    assert one({"_time": "2020-01-02T03:04:05"}, timezone="+05:30")["_time"] == "2020-01-01T21:34:05.000000Z"


@pytest.mark.parametrize("record,expected", [
    pytest.param({"message": "a"}, {"_msg": "a"}, id="message"),
    pytest.param({"msg": "b", "message": "c"}, {"_msg": "b", "message": "c"}, id="msg-before-message"),
    pytest.param({"msg": None, "message": "c"}, {"msg": None, "_msg": "c"}, id="null-msg-is-absent"),
    pytest.param({"_msg": "x", "msg": "y"}, {"_msg": "x", "msg": "y"}, id="an-own-msg-wins"),
    pytest.param({"msg": {"k": 1}}, {"_msg": '{"k":1}'}, id="non-string-as-json-text"),
    pytest.param({"_msg": "m", "lvl": "WARNING"}, {"_msg": "m", "lvl": "WARNING", "level": "warn"}, id="lvl"),
    pytest.param({"_msg": "m", "level": "ERROR", "severity": "info"}, {"_msg": "m", "level": "error", "severity": "info"},
                 id="level-first"),
    pytest.param({"_msg": "m", "level": "loud", "lvl": "info"}, {"_msg": "m", "level": "loud", "lvl": "info"},
                 id="unknown-level-left-alone"),
    pytest.param({"_msg": "m", "severity": 3}, {"_msg": "m", "severity": 3, "level": "error"}, id="numeric-severity"),
])
def test_message_and_level_keys_follow_the_body_rule(record, expected):
    event = one(dict(record, _time="2020-01-02T03:04:05Z"))
    del event["_time"]
    assert event == expected


def test_map_renames_before_the_other_rules():
    event = one({"ts": 1700000000, "text": "hello", "host": "h"}, mapping={"_time": "ts", "_msg": "text", "hostname": "host"})
    assert event == {"_time": "2023-11-14T22:13:20.000000Z", "_msg": "hello", "hostname": "h"}


def test_lines_are_told_apart_one_by_one_so_a_cut_first_line_spoils_nothing():
    lines = [
        b'ime": "2020-01-02T03:04:05Z", "_msg": "cut at the front"}\n',
        b'{"_time": "2020-01-02T03:04:06Z", "_msg": "record 1"}\n',
        b"\n",
        b"<13>1 2021-06-07T08:09:10Z web app - - - a syslog line\n",
        b'  {"_time": "2020-01-02T03:04:07Z", "message": "record 2"}\n',
        b'{"not": "closed"\n',
        b"[1, 2]\n",
    ]
    events = reader().lines(lines, FILE_TIME)
    assert [e["_msg"] for e in events] == [
        'ime": "2020-01-02T03:04:05Z", "_msg": "cut at the front"}', "record 1", "a syslog line", "record 2",
        '{"not": "closed"', "[1, 2]"]
    assert [e.get("parse_error") for e in events] == ["true", None, None, None, "true", "true"]
    assert events[0]["_time"] == FILE_TIME_TEXT  # a raw line gets the file's time, as before
    assert (events[2]["hostname"], events[2]["_time"]) == ("web", "2021-06-07T08:09:10.000000Z")


def test_format_syslog_reads_every_line_as_syslog():
    events = reader().lines([b'{"_msg": "json"}\n'], FILE_TIME, json_records=False)
    assert events[0]["_msg"] == '{"_msg": "json"}' and events[0]["parse_error"] == "true"


def test_a_dead_letter_is_replayed_as_its_original_event():
    original = {"_time": "2024-05-06T07:08:09.000000Z", "_msg": "refused", "service": "api"}
    wrapped = orjson.dumps({"time": "2024-05-07T00:00:00Z", "sink": "vl", "error": "400: bad", "response": "bad",
                            "event": original})
    text_only = orjson.dumps({"time": "2024-05-07T00:00:00Z", "sink": "vl", "error": "x",
                              "event_text": "<13>1 2024-05-06T07:08:09Z h a - - - from text"})
    events = reader().lines([wrapped + b"\n", text_only + b"\n"], FILE_TIME)
    assert events[0] == original
    assert (events[1]["_msg"], events[1]["hostname"]) == ("from text", "h")


@pytest.mark.parametrize("record", [
    {"sink": "vl", "error": "e", "event": {"_msg": "x"}, "service": "an extra key: an event, not a wrapper"},
    {"time": "t", "error": "e", "event": {"_msg": "x"}},
    {"sink": "vl", "error": "e", "event": "not an object"},
], ids=["extra-key", "no-sink", "event-not-object"])
def test_only_the_dead_letter_shape_is_unwrapped(record):
    assert dead_letter_event(record) is None
