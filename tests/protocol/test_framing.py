"""Length-prefixed frames of the TCP path: cut anywhere, bounded, preamble checked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import FrameTooLarge, RemoteProtocolError
from tether.protocol.framing import PREAMBLE, FrameReader, pack_frame

frames = st.lists(st.one_of(st.text(max_size=50), st.binary(max_size=50)), max_size=8)


@given(frames, st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20))
def test_frames_survive_any_cutting_of_the_stream(sent: list[str | bytes], cuts: list[int]) -> None:
    stream = PREAMBLE + b"".join(pack_frame(f) for f in sent)
    reader = FrameReader(1000, preamble=True)
    received: list[str | bytes] = []
    position = 0
    for size in cuts * (len(stream) // len(cuts) + 1):
        if position >= len(stream):
            break
        received += reader.feed(stream[position : position + size])
        position += size
    assert received == sent
    assert [type(f) for f in received] == [type(f) for f in sent]  # text stays text


def test_a_header_over_the_limit_fails_before_the_payload_arrives() -> None:
    reader = FrameReader(10)
    assert reader.feed(pack_frame("0123456789")) == ["0123456789"]
    with pytest.raises(FrameTooLarge, match="11 bytes is over the limit of 10"):
        reader.feed(pack_frame(b"01234567890")[:4])


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\n", b"TETHER/2\n", b"X"])
def test_a_stream_without_the_preamble_is_refused(start: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="not a Tether stream"):
        FrameReader(100, preamble=True).feed(start)


def test_the_preamble_may_arrive_in_pieces() -> None:
    reader = FrameReader(100, preamble=True)
    assert reader.feed(PREAMBLE[:3]) == []
    assert reader.feed(PREAMBLE[3:] + pack_frame("x")) == ["x"]


def test_a_text_frame_must_be_utf8() -> None:
    bad = len(b"\xff").to_bytes(4, "big") + b"\xff"
    with pytest.raises(RemoteProtocolError, match="not UTF-8"):
        FrameReader(100).feed(bad)
