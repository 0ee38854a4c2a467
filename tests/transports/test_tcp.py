"""The TCP stream driven by hand: back-pressure, closing, frames after a close."""

from __future__ import annotations

from tests.transports.test_websocket import FakeTransport
from tether.errors import RemoteProtocolError
from tether.protocol.framing import PREAMBLE, pack_frame
from tether.transports.tcp import FramedStream


class PausableTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def stream(server: bool = False) -> tuple[FramedStream, PausableTransport, list[object]]:
    seen: list[object] = []

    def on_error(error: RemoteProtocolError) -> None:
        seen.append(error)

    framed = FramedStream(1 << 10, seen.append, seen.append, on_error, server=server)
    transport = PausableTransport()
    framed.connection_made(transport)  # type: ignore[arg-type]
    return framed, transport, seen


async def test_a_client_stream_starts_with_the_preamble_and_sends_frames() -> None:
    framed, transport, _ = stream()
    framed.send("hi")
    framed.send(b"\x00")
    assert transport.take() == PREAMBLE + pack_frame("hi") + pack_frame(b"\x00")


async def test_a_peer_that_stops_reading_stops_our_reading_too() -> None:
    framed, transport, _ = stream(server=True)
    framed.pause_writing()
    framed.pause_writing()
    assert not transport.reading
    framed.resume_writing()
    framed.resume_writing()
    assert transport.reading


async def test_frames_after_a_close_are_dropped() -> None:
    framed, transport, seen = stream(server=True)
    framed.data_received(PREAMBLE + pack_frame("one") + pack_frame("two"))
    assert seen == ["one", "two"]
    transport.closing = True
    framed.send("ignored")
    framed.data_received(pack_frame("three"))
    assert seen == ["one", "two"]
    assert transport.take() == b""


async def test_a_framing_error_is_reported_and_aborts() -> None:
    framed, transport, seen = stream(server=True)
    framed.data_received(b"nonsense!")
    assert isinstance(seen[0], RemoteProtocolError)
    assert transport.aborted


async def test_close_waits_for_the_end_then_aborts() -> None:
    framed, transport, seen = stream()
    assert framed.eof_received() is None
    await framed.close(wait=0.01)
    assert transport.closing
    assert transport.aborted
    framed.connection_lost(ConnectionResetError("reset"))
    framed.connection_lost(None)
    assert seen == ["connection lost (reset)", "connection lost (closed by the other side)"]
    await framed.close()  # already closed: returns at once
