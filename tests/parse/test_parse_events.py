"""parse/events.py: the http source's body, pure. NDJSON of objects in, dicts out with their
JSON types; the first line that is not an object named; gzip undone within a bound."""

from __future__ import annotations

import gzip
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logpipe.parse.events import BadBody, BodyTooLarge, decode_events, gunzip

EXAMPLES = int(os.environ.get("LOGPIPE_FUZZ_EXAMPLES", "100"))

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=4)
events = st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=5), max_size=10)
not_objects = st.sampled_from([b"[1]", b'"text"', b"42", b"null", b"{", b'{"a": }', b"plain words", b'{"a": "\xff"}'])


@settings(max_examples=EXAMPLES, deadline=None)
@given(events)
def test_events_come_back_with_their_json_types(batch):
    body = b"".join(json.dumps(e).encode() + b"\n" for e in batch)
    assert decode_events(body) == batch


@settings(max_examples=EXAMPLES, deadline=None)
@given(events, st.data(), not_objects)
def test_the_first_bad_line_is_named_whatever_surrounds_it(batch, data, bad):
    lines = [json.dumps(e).encode() for e in batch]
    at = data.draw(st.integers(0, len(lines)))
    lines.insert(at, bad)
    with pytest.raises(BadBody) as caught:
        decode_events(b"\n".join(lines) + b"\n")
    assert str(caught.value).startswith(f"line {at + 1}: ")


def test_blank_lines_count_for_the_line_number_and_crlf_is_fine():
    assert decode_events(b'{"a": 1}\r\n\r\n{"b": 2}') == [{"a": 1}, {"b": 2}]
    with pytest.raises(BadBody, match=r"^line 4: not a JSON object"):
        decode_events(b'{"a": 1}\n\n\n[2]\n')


def test_an_empty_body_is_no_events():
    assert decode_events(b"") == [] and decode_events(b"\n\n") == []


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.integers(0, 1500))
def test_gunzip_returns_every_member_or_refuses_past_the_limit(members, limit):
    body = b"".join(gzip.compress(m) for m in members)
    whole = b"".join(members)
    if len(whole) <= limit:
        assert gunzip(body, limit) == whole
    else:
        with pytest.raises(BodyTooLarge):
            gunzip(body, limit)


def test_a_zip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB from ~64 KiB
    with pytest.raises(BodyTooLarge, match="larger than 1048576 bytes once decompressed"):
        gunzip(bomb, 1 << 20)


@pytest.mark.parametrize(
    "body, reason",
    [
        pytest.param(b"not gzip", "incorrect header", id="not-gzip"),
        pytest.param(gzip.compress(b"abcdef")[:-4], "truncated", id="truncated"),
        pytest.param(gzip.compress(b"ab") + b"trailing junk", "incorrect header", id="junk-after-a-member"),
    ],
)
def test_gunzip_names_what_is_wrong(body, reason):
    with pytest.raises(BadBody, match=reason):
        gunzip(body, 1 << 20)
