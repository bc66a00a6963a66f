"""The disk buffer's record codec: round trips, and every kind of damage is a status."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logpipe.buffer import record

EVENTS = [b'{"_msg":"hello","i":1}', b'{"_msg":"world","i":2}', b"{}"]


def units(events: list[bytes]) -> int:
    return sum(map(len, events)) + len(events)


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(EVENTS, id="json-events"),
        pytest.param([b"x"], id="one-event"),
        pytest.param([b""], id="one-empty-event"),
        pytest.param([b"a\nb", b"c"], id="newline-inside-falls-back-to-lengths"),
        pytest.param([b"", b"", b""], id="empty-events"),
    ],
)
def test_round_trip_keeps_events_count_size_and_time(events):
    data = record.encode(events, 1700000000.25)
    decoded = record.decode(data)
    assert decoded.status == record.OK
    assert decoded.records == events
    assert decoded.count == len(events)
    assert decoded.nbytes == units(events)
    assert decoded.written_at == 1700000000.25
    assert decoded.start == 0 and decoded.end == len(data) == decoded.size


def test_records_back_to_back_decode_in_order():
    data = record.encode([b"a"], 1.0) + record.encode([b"b", b"c"], 2.0)
    first = record.decode(data, 0)
    second = record.decode(data, first.end)
    assert first.records == [b"a"] and second.records == [b"b", b"c"]
    assert second.end == len(data)


def test_without_records_requested_only_checks():
    decoded = record.decode(record.encode(EVENTS, 0.0), 0, want_records=False)
    assert decoded.status == record.OK and decoded.records is None and decoded.count == 3


@pytest.mark.parametrize("cut", [1, 5, record.HEADER_SIZE - 1, record.HEADER_SIZE, record.HEADER_SIZE + 3])
def test_cut_record_is_truncated_not_an_error(cut):
    data = record.encode(EVENTS, 0.0)
    decoded = record.decode(data[:cut])
    assert decoded.status == record.TRUNCATED
    if cut >= record.HEADER_SIZE:  # the header is whole, so its count is known
        assert decoded.count == 3 and decoded.size == len(data)


def test_flipped_payload_byte_is_bad_payload_with_exact_end_and_count():
    data = bytearray(record.encode(EVENTS, 0.0) + record.encode([b"next"], 0.0))
    data[record.HEADER_SIZE + 4] ^= 0x40
    decoded = record.decode(bytes(data))
    assert decoded.status == record.BAD_PAYLOAD
    assert decoded.count == 3
    assert record.decode(bytes(data), decoded.end).records == [b"next"]


def test_flipped_header_byte_resyncs_to_the_next_record():
    first = record.encode(EVENTS, 0.0)
    data = bytearray(first + record.encode([b"next"], 0.0))
    data[9] ^= 0x01  # inside the count field
    decoded = record.decode(bytes(data))
    assert decoded.status == record.BAD_HEADER
    assert decoded.end == len(first)
    assert record.decode(bytes(data), decoded.end).records == [b"next"]


def test_garbage_without_any_record_is_one_bad_header_to_the_end():
    data = b"not a record at all, just text" * 3
    decoded = record.decode(data)
    assert decoded.status == record.BAD_HEADER and decoded.end == len(data)


def test_resync_keeps_a_magic_cut_at_the_end_of_the_buffer():
    data = b"garbage" + record.MAGIC[:2]
    assert record.resync(data, 0) == len(data) - 2


def test_magic_inside_payload_does_not_fool_resync():
    # The magic is invalid UTF-8 so JSON never holds it; raw bytes might, but a
    # candidate must also pass the header CRC.
    sneaky = [b"xx" + record.MAGIC + b"\x00" * 40]
    data = bytearray(record.encode(sneaky, 0.0) + record.encode([b"real"], 0.0))
    data[0] ^= 0xFF
    decoded = record.decode(bytes(data))
    assert decoded.status == record.BAD_HEADER
    assert record.decode(bytes(data), decoded.end).records == [b"real"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_decode_never_raises_on_any_bytes(data, pos):
    pos = min(pos, len(data))
    decoded = record.decode(data, pos)
    assert decoded.status in (record.OK, record.TRUNCATED, record.BAD_PAYLOAD, record.BAD_HEADER)
    assert decoded.end >= pos


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=5), min_size=1, max_size=6),
    st.data(),
)
def test_single_flipped_byte_never_yields_wrong_events(chunks, data):
    """Flip one byte anywhere: every record decoded as OK is one that was written."""
    stream = bytearray(b"".join(record.encode(c, 0.0) for c in chunks))
    index = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
    stream[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    pos = 0
    good = []
    while pos < len(stream):
        decoded = record.decode(bytes(stream), pos)
        if decoded.status == record.OK:
            good.append(decoded.records)
        if decoded.status == record.TRUNCATED:
            break
        assert decoded.end > pos
        pos = decoded.end
    assert all(g in chunks for g in good)
    assert len(good) >= len(chunks) - 2  # one flip damages at most two neighbours' view
