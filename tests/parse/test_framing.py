"""The TCP framer: per-frame choice of octet counting vs LF/NUL, truncation, resync."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logpipe.parse.framing import StreamFramer, Truncated, cut_utf8, truncate_datagram


def frame_all(data: bytes, max_line: int = 1024) -> list[bytes]:
    framer = StreamFramer(max_line)
    return framer.feed(data) + framer.finish()


def frame_bytewise(data: bytes, max_line: int = 1024) -> list[bytes]:
    framer = StreamFramer(max_line)
    out = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    return out + framer.finish()


CASES = [
    pytest.param(b"a\nb\n", [b"a", b"b"], id="lf"),
    pytest.param(b"a\r\nb\r\n", [b"a", b"b"], id="crlf-stripped"),
    pytest.param(b"<14>hello\x00<14>world\x00", [b"<14>hello", b"<14>world"], id="nul-sysloghandler"),
    pytest.param(b"11 <13>1 hello", [b"<13>1 hello"], id="octet-counted"),
    pytest.param(b"12 <13>1 hello\n5 <1>x\n", [b"<13>1 hello", b"<1>x"], id="octet-count-includes-trailing-lf"),
    pytest.param(b"3 <1>6 <1>abc", [b"<1>", b"<1>abc"], id="octet-back-to-back"),
    pytest.param(b"10 <13>1 a\nb\nplain\n", [b"<13>1 a\nb", b"plain"], id="octet-keeps-embedded-lf"),
    pytest.param(b"123 abc\n", [b"123 abc"], id="digits-without-pri-is-newline-frame"),
    pytest.param(b"5 <1>a\nplain line\n6 <2>bc\n", [b"<1>a", b"plain line", b"<2>bc"], id="mixed-per-frame"),
    pytest.param(b"\n\n\x00\r\n", [], id="empty-messages-skipped"),
    pytest.param(b"tail-without-newline", [b"tail-without-newline"], id="tail-at-eof"),
]


@pytest.mark.parametrize("data,expected", CASES)
def test_framer_whole(data, expected):
    assert frame_all(data) == expected


@pytest.mark.parametrize("data,expected", CASES)
def test_framer_byte_by_byte(data, expected):
    assert frame_bytewise(data) == expected


def test_newline_frame_over_limit_is_truncated_and_stream_resyncs():
    framer = StreamFramer(10)
    out = framer.feed(b"x" * 25)
    out += framer.feed(b"y" * 25 + b"\nnext\n")
    assert out == [b"x" * 10, b"next"]
    assert type(out[0]) is Truncated
    assert framer.truncated == 1


def test_octet_frame_over_limit_is_truncated_and_rest_discarded():
    framer = StreamFramer(10)
    payload = b"<1>" + b"z" * 37  # 40 bytes
    out = framer.feed(b"40 " + payload[:20])
    out += framer.feed(payload[20:] + b"4 <1>x")
    assert out == [b"<1>zzzzzzz", b"<1>x"]
    assert type(out[0]) is Truncated


def test_truncation_cuts_on_utf8_boundary():
    text = ("é" * 10).encode()  # 2 bytes each
    cut = cut_utf8(text, 5)
    assert cut == ("é" * 2).encode()
    cut.decode("utf-8")  # would raise if split


def test_truncate_datagram_strips_and_flags():
    assert truncate_datagram(b"<1>hi\n\x00", 100) == b"<1>hi"
    long = truncate_datagram(b"a" * 50, 10)
    assert long == b"a" * 10 and type(long) is Truncated


def test_buffer_stays_bounded_without_terminator():
    framer = StreamFramer(100)
    for _ in range(1000):
        framer.feed(b"q" * 1000)
    assert len(framer._buf) <= 100 + 1000


@settings(max_examples=int(os.environ.get("LOGPIPE_FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_framer_never_raises_and_respects_limit(data, chunk):
    framer = StreamFramer(64)
    out = []
    for i in range(0, len(data), chunk):
        out += framer.feed(data[i : i + chunk])
    out += framer.finish()
    assert all(0 < len(m) <= 64 for m in out)


@settings(max_examples=int(os.environ.get("LOGPIPE_FUZZ_EXAMPLES", "200")), deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80).filter(lambda b: b.rstrip(b"\r\n\x00") == b and b), max_size=20),
       st.integers(min_value=1, max_value=30))
def test_octet_counted_messages_round_trip_in_any_chunking(messages, chunk):
    messages = [b"<1>" + m for m in messages]
    stream = b"".join(str(len(m)).encode() + b" " + m for m in messages)
    framer = StreamFramer(1024)
    out = []
    for i in range(0, len(stream), chunk):
        out += framer.feed(stream[i : i + chunk])
    assert out + framer.finish() == messages


def as_text(message):
    return message if type(message) is str else message.decode("utf-8", "replace")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"<13>a b", "<13>\u00e9t\u00e9 \u2603".encode(), b"<1>x\r", b"\xe2\x82", b"\xf0\x9f\x98",
                              b"<13>" + b"y" * 40, "<1>\u00e9".encode() * 12, b"7 <1>abc", b"<1>\x00z", b""]), max_size=30),
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_feed_text_gives_the_messages_of_feed_decoded_as_the_parser_would(messages, cuts):
    data = b"\n".join(messages) + b"\n"
    by_bytes, by_text = StreamFramer(32), StreamFramer(32)
    plain, decoded = [], []
    pos = 0
    for cut in cuts * (len(data) // sum(cuts) + 1):
        chunk, pos = data[pos : pos + cut], pos + cut
        plain += by_bytes.feed(chunk)
        decoded += by_text.feed_text(chunk)
    plain += by_bytes.finish()
    decoded += by_text.finish()
    assert [as_text(m) for m in decoded] == [as_text(m) for m in plain]
    # what comes back as bytes is exactly what feed() gives (Truncated included)
    assert [type(m) for m in decoded if type(m) is not str] == [type(m) for m, d in zip(plain, decoded, strict=True) if type(d) is not str]


def test_feed_text_decodes_the_common_chunk_once_and_keeps_invalid_utf8_as_replacement():
    framer = StreamFramer(1024)
    assert framer.feed_text(b"<13>caf\xc3\xa9\r\n<13>bad \xe2\x82\n<13>tail") == ["<13>caf\u00e9", "<13>bad \ufffd"]
    assert framer.finish() == [b"<13>tail"]
    # a chunk the general loop frames (a NUL) comes back as feed() gives it: bytes
    assert StreamFramer(1024).feed_text(b"<13>a\x00<13>b\n") == [b"<13>a", b"<13>b"]
