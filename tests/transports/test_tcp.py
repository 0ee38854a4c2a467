"""The TCP stream driven by hand over a socketpair: writes, backlog, closing."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from tests.conftest import TIMEOUT
from tests.transports.test_websocket import FakeTransport
from tether.errors import RemoteProtocolError
from tether.protocol.framing import PREAMBLE, FrameReader, pack_frame
from tether.transports.tcp import HIGH_WATER, FramedStream


class SocketTransport(FakeTransport):
    """Hands the stream one end of a socketpair, as a real transport would."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.reading = True

    def get_extra_info(self, name: str) -> object:
        return self.sock if name == "socket" else None

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def stream(
    sock: socket.socket, server: bool = False
) -> tuple[FramedStream, SocketTransport, list[object]]:
    seen: list[object] = []

    def on_error(error: RemoteProtocolError) -> None:
        seen.append(error)

    framed = FramedStream(1 << 10, seen.append, seen.append, on_error, server=server)
    transport = SocketTransport(sock)
    framed.connection_made(transport)  # type: ignore[arg-type]
    return framed, transport, seen


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    sock.settimeout(TIMEOUT)
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


async def test_a_client_stream_starts_with_the_preamble_and_sends_frames(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    framed, _, _ = stream(pair[0])
    framed.send("hi")
    sender = threading.Thread(target=framed.send, args=(b"\x00",))  # any thread may send
    sender.start()
    sender.join(TIMEOUT)
    expected = PREAMBLE + pack_frame("hi") + pack_frame(b"\x00")
    assert read_exactly(pair[1], len(expected)) == expected
    framed.connection_lost(None)


@pytest.mark.parametrize(
    ("server", "close"),
    [(True, True), (True, False), (False, False)],
    ids=["server then close", "server then read again", "client"],
)
async def test_what_the_kernel_does_not_take_waits_in_a_backlog(
    pair: tuple[socket.socket, socket.socket], server: bool, close: bool
) -> None:
    """A server stops reading over the high-water mark; a client never does."""
    framed, transport, _ = stream(pair[0], server=server)
    big = "x" * 50_000
    frames = 0
    while len(framed._backlog) <= HIGH_WATER and frames < 10_000:  # fill the buffers
        framed.send(big)
        frames += 1
    assert len(framed._backlog) > HIGH_WATER
    framed.send("last")  # queued behind the backlog, in order
    if close:
        framed.close_soon()  # closes once drained
    await asyncio.sleep(0)
    assert transport.reading is not server  # a server takes no new work meanwhile
    reader = FrameReader(1 << 20, preamble=not server)  # a client starts with it
    received: list[str | bytes] = []
    async with asyncio.timeout(TIMEOUT):
        while not received or received[-1] != "last":
            data = await asyncio.to_thread(pair[1].recv, 1 << 20)
            received += reader.feed(data)
            await asyncio.sleep(0.001)  # let the loop drain
    assert received == [big] * frames + ["last"]
    for _ in range(100):
        if not framed._draining:
            break
        await asyncio.sleep(0.01)
    assert transport.closing is close
    assert transport.reading is not close
    framed.connection_lost(None)


async def test_writing_to_a_peer_that_left_is_a_no_op(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    framed, _, _ = stream(pair[0])
    pair[1].close()
    for _ in range(3):
        framed.send("into the void")  # EPIPE/ECONNRESET: the loop will see the end
    framed.connection_lost(None)


async def test_frames_after_a_close_are_dropped(pair: tuple[socket.socket, socket.socket]) -> None:
    framed, transport, seen = stream(pair[0], server=True)
    framed.data_received(PREAMBLE + pack_frame("one") + pack_frame("two"))
    assert seen == ["one", "two"]
    framed.close_soon()
    assert transport.closing
    framed.send("ignored")
    framed.data_received(pack_frame("three"))
    assert seen == ["one", "two"]
    framed.connection_lost(None)
    framed.send("ignored too")  # the socket is gone
    pair[1].setblocking(False)
    with pytest.raises(BlockingIOError):
        pair[1].recv(10)


async def test_a_framing_error_is_reported_and_aborts(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    framed, transport, seen = stream(pair[0], server=True)
    framed.data_received(b"nonsense!")
    assert isinstance(seen[0], RemoteProtocolError)
    assert transport.aborted
    framed.connection_lost(None)


async def test_close_waits_for_the_end_then_aborts(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    framed, transport, seen = stream(pair[0])
    assert framed.eof_received() is None
    await framed.close(wait=0.01)
    assert transport.closing
    assert transport.aborted
    framed.connection_lost(ConnectionResetError("reset"))
    framed.connection_lost(None)
    assert seen == ["connection lost (reset)", "connection lost (closed by the other side)"]
    await framed.close()  # already closed: returns at once


async def test_the_duplicate_socket_ignores_the_default_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    socket.setdefaulttimeout(2)
    try:
        framed, _, _ = stream(pair[0])
    finally:
        socket.setdefaulttimeout(None)
    assert framed._socket is not None
    assert framed._socket.gettimeout() == 0.0  # non-blocking: a full buffer never blocks
    framed.abort()
    framed.connection_lost(None)
