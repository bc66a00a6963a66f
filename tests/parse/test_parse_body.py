"""Message bodies as a specification: JSON / logfmt -> fields, level normalization, the
header/label collision rule (spec, "Precise rules" -> Bodies)."""

from __future__ import annotations

import pytest

from logpipe.parse.body import (
    HEADER_FIELDS,
    BodyEvent,
    apply_body,
    apply_labels,
    decode_body,
    normalize_level,
)


def base() -> dict:
    return {"_time": "2026-11-21T10:00:00.000000Z", "_msg": "", "hostname": "h",
            "facility": "user", "severity": "info", "level": "info"}


def body(text: str) -> dict:
    event = base()
    event["_msg"] = text
    return apply_body(event, text)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('{"a":"x","n":1,"f":1.5,"t":true}', {"a": "x", "n": 1, "f": 1.5, "t": True},
                 id="json-scalars-keep-type"),
    pytest.param('  {"a":"x"}  ', {"a": "x"}, id="json-surrounding-whitespace"),
    pytest.param('{"o":{"b":[1,2]},"l":[{"c":null}]}', {"o": '{"b":[1,2]}', "l": '[{"c":null}]'},
                 id="json-nested-as-json-text"),
    pytest.param('{"z":null,"a":"x"}', {"a": "x"}, id="json-null-dropped"),
    pytest.param('{"big":123456789012345678901234567890}',
                 {"big": "123456789012345678901234567890"}, id="json-big-int-as-text"),
    pytest.param('{"a":1,"a":2}', {"a": 2}, id="json-duplicate-last-wins"),
    pytest.param('{"a":"\\u00e9\\n"}', {"a": "é\n"}, id="json-escapes"),
    pytest.param('["not","object"]', None, id="json-array-is-not-a-body"),
    pytest.param('{"a":1} trailing', None, id="json-trailing-text"),
    pytest.param('{"a":"\\ud800"}', None, id="json-lone-surrogate-rejected"),
    pytest.param("{" * 10000 + "}" * 10000, None, id="json-too-deep"),
    pytest.param("{not json}", None, id="brace-but-not-json"),
    pytest.param('lvl=warn msg="retry in 5 seconds"', {"lvl": "warn", "msg": "retry in 5 seconds"},
                 id="logfmt-go-service"),
    pytest.param('time="2026-11-21T10:00:00Z" level=info msg="started" port=8080',
                 {"time": "2026-11-21T10:00:00Z", "level": "info", "msg": "started",
                  "port": "8080"}, id="logfmt-logrus"),
    pytest.param('a= b=""', {"a": "", "b": ""}, id="logfmt-empty-values"),
    pytest.param('a="x \\"q\\" \\\\ \\n \\t \\u00e9" b=1', {"a": 'x "q" \\ \n \t é', "b": "1"},
                 id="logfmt-quoted-escapes"),
    pytest.param("url=http://x/?a=b c=d", {"url": "http://x/?a=b", "c": "d"},
                 id="logfmt-equals-in-bare-value"),
    pytest.param("only=one", None, id="logfmt-needs-two-pairs"),
    pytest.param("authentication failure; logname= uid=0 euid=0", None,
                 id="prose-with-pairs-is-not-logfmt"),
    pytest.param('a="unterminated b=2', None, id="logfmt-unterminated-quote"),
    pytest.param('a=b"c d=e', None, id="logfmt-quote-in-bare-value"),
    # Quote placements the backslash-free logfmt path (str.split, not the regex) must judge
    # exactly as the regex does.
    pytest.param('a="x" b="y z" c=1', {"a": "x", "b": "y z", "c": "1"}, id="logfmt-several-quoted"),
    pytest.param('a="x"b=1', None, id="logfmt-no-space-after-quote"),
    pytest.param('a= "x" b=1', None, id="logfmt-space-before-quote"),
    pytest.param('a=b="c" d=1', None, id="logfmt-quote-after-bare-value"),
    pytest.param('"k"=1 a=2', None, id="logfmt-quoted-key"),
    pytest.param('a="x""y" b=1', None, id="logfmt-adjacent-quotes"),
    pytest.param('a=1 b="x y" a="z"', {"a": "z", "b": "x y"}, id="logfmt-duplicate-quoted-last-wins"),
    pytest.param('a="x"\u2003b=2\n', {"a": "x", "b": "2"}, id="logfmt-unicode-whitespace"),
    pytest.param("", None, id="empty"),
    pytest.param("plain text", None, id="plain"),
])
def test_decode_body(text: str, expected: dict | None) -> None:
    assert decode_body(text) == expected


@pytest.mark.parametrize(("value", "expected"), [
    *[pytest.param(word, level, id=word) for word, level in [
        ("emerg", "emerg"), ("EMERGENCY", "emerg"), ("panic", "emerg"), ("alert", "alert"),
        ("crit", "crit"), ("Critical", "crit"), ("FATAL", "crit"), ("err", "error"),
        ("error", "error"), ("warn", "warn"), ("WARNING", "warn"), ("notice", "notice"),
        ("info", "info"), ("information", "info"), ("informational", "info"),
        ("debug", "debug"), ("trace", "debug"), ("verbose", "debug"), (" info ", "info")]],
    *[pytest.param(str(n), level, id=f"digit-{n}") for n, level in enumerate(
        ["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"])],
    pytest.param(3, "error", id="json-int-3"),
    pytest.param(8, None, id="json-int-8"),
    pytest.param(True, None, id="json-bool"),
    pytest.param("chatty", None, id="unknown-word"),
    pytest.param(None, None, id="none"),
])
def test_normalize_level(value, expected) -> None:
    assert normalize_level(value) == expected


def test_msg_becomes_message_and_is_not_repeated() -> None:
    event = body('{"msg":"hello","message":"other","x":1}')
    assert event["_msg"] == "hello" and event["message"] == "other" and "msg" not in event


def test_message_used_when_no_msg() -> None:
    event = body('{"message":"hello","x":1}')
    assert event["_msg"] == "hello" and "message" not in event


def test_without_msg_the_whole_body_is_msg() -> None:
    assert body('{"x":1}')["_msg"] == '{"x":1}'


def test_null_msg_counts_as_absent() -> None:
    event = body('{"msg":null,"message":"m"}')
    assert event["_msg"] == "m"


def test_non_string_msg_is_json_text() -> None:
    assert body('{"msg":{"a":1}}')["_msg"] == '{"a":1}'
    assert body('{"msg":42}')["_msg"] == "42"


def test_first_present_level_key_wins_even_when_unknown() -> None:
    # "level" is present but unknown: level stays as the syslog severity gave it; "lvl"
    # is not consulted.
    event = body('{"level":"chatty","lvl":"error"}')
    assert event["level"] == "info"
    assert body('{"lvl":"error","severity":"debug"}')["level"] == "error"
    assert body('{"loglevel":"7"}')["level"] == "debug"


def test_body_level_sets_level_without_pri() -> None:
    event = apply_body({"_time": "t", "_msg": "x"}, "a=1 level=warn")
    assert event["level"] == "warn"


@pytest.mark.parametrize("key", sorted(HEADER_FIELDS | {"parse_error", "truncated"}))
def test_body_key_named_like_header_field_is_stored_as_body_key(key: str) -> None:
    event = apply_body({"_time": "t", "_msg": "x"}, f'{{"{key}":"from body","z":1}}')
    assert event[f"body.{key}"] == "from body"
    if key not in ("_msg", "level"):  # these two the rule itself may set
        assert event.get(key) != "from body"


def test_body_keys_name_the_fields_from_the_body() -> None:
    event = body('{"msg":"m","hostname":"x","a":1}')
    assert isinstance(event, BodyEvent)
    assert event.body_keys == {"body.hostname", "a"}


def test_no_body_returns_the_same_plain_dict() -> None:
    event = base()
    assert apply_body(event, "just text") is event and type(event) is dict


def test_labels_never_overwrite_line_fields_but_move_body_keys() -> None:
    event = body('{"service":"from-body","msg":"m"}')
    apply_labels(event, {"service": "api", "hostname": "announced", "container_id": "3f2a"})
    assert event["service"] == "api" and event["body.service"] == "from-body"
    assert event["hostname"] == "h"  # the line's own header field wins
    assert event["container_id"] == "3f2a"


def test_labels_on_plain_event_fill_only_missing_fields() -> None:
    event = {"_time": "t", "_msg": "m", "x@1.service": "sd"}
    apply_labels(event, {"hostname": "announced", "x@1.service": "label"})
    assert event == {"_time": "t", "_msg": "m", "x@1.service": "sd", "hostname": "announced"}


def test_body_event_encodes_like_a_dict() -> None:
    import msgspec
    import orjson

    event = body('{"a":1}')
    assert orjson.loads(orjson.dumps(event)) == dict(event)
    assert msgspec.json.decode(msgspec.json.encode(event)) == dict(event)
