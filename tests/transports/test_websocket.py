"""The client WebSocket driven frame by frame against websockets' own server protocol."""

from __future__ import annotations

import asyncio

import pytest
from websockets.server import ServerProtocol

from tether.transports.websocket import WebSocket


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.eof = False
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = True

    def take(self) -> bytes:
        data, self.written = b"".join(self.written), []
        return data


async def opened_pair() -> tuple[WebSocket, ServerProtocol, FakeTransport, list[object], list[str]]:
    frames: list[object] = []
    closes: list[str] = []
    ws = WebSocket("ws://127.0.0.1:1/_/ws", ["tether.v1"], 1 << 20, frames.append, closes.append)
    transport = FakeTransport()
    ws.connection_made(transport)  # type: ignore[arg-type]
    server = ServerProtocol(subprotocols=["tether.v1"])  # type: ignore[list-item]
    server.receive_data(transport.take())
    [request] = server.events_received()
    server.send_response(server.accept(request))  # type: ignore[arg-type]
    ws.data_received(b"".join(server.data_to_send()))
    assert await ws.opened == "tether.v1"
    return ws, server, transport, frames, closes


async def test_whole_and_fragmented_messages_both_ways() -> None:
    ws, server, transport, frames, _ = await opened_pair()
    server.send_text(b"hel", fin=False)
    server.send_continuation(b"lo", fin=True)
    server.send_binary(b"\x00", fin=False)
    server.send_continuation(b"\x01", fin=True)
    server.send_text("whole ✓".encode())
    ws.data_received(b"".join(server.data_to_send()))
    assert frames == ["hello", b"\x00\x01", "whole ✓"]
    ws.send("up")
    ws.send(b"\x02")
    server.receive_data(transport.take())
    assert [bytes(f.data) for f in server.events_received()] == [b"up", b"\x02"]  # type: ignore[union-attr]


async def test_close_from_the_server_and_connection_lost() -> None:
    ws, server, transport, _, closes = await opened_pair()
    server.send_close(1001, "going away")
    ws.data_received(b"".join(server.data_to_send()))
    assert transport.closing  # ws answered the close and expects the end
    ws.send("ignored after close")
    ws.connection_lost(None)
    assert closes == ["connection to the server lost (code 1001, going away)"]
    assert ws.closed.done()
    await ws.close()  # already closed: returns at once


async def test_close_that_gets_no_answer_aborts() -> None:
    ws, _, transport, _, _ = await opened_pair()
    await ws.close(wait=0.01)
    assert transport.aborted
    ws.eof_received()
    assert not transport.eof  # closing: nothing more is written


async def test_a_lost_transport_is_never_written_to() -> None:
    """A peer that reset the connection: closing it writes nothing (uvloop would raise)."""
    ws, _, transport, _, _ = await opened_pair()
    transport.take()
    transport.closing = True
    ws.send("late")
    await ws.close(wait=0.01)
    assert transport.take() == b""


async def test_a_refused_handshake_fails_opened() -> None:
    ws = WebSocket("ws://127.0.0.1:1/_/ws", [], 1 << 20, lambda frame: None, lambda reason: None)
    transport = FakeTransport()
    ws.connection_made(transport)  # type: ignore[arg-type]
    ws.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(Exception, match="403"):
        await ws.opened


async def test_connection_lost_during_the_handshake() -> None:
    closes: list[str] = []
    ws = WebSocket("ws://127.0.0.1:1/_/ws", [], 1 << 20, lambda frame: None, closes.append)
    ws.connection_made(FakeTransport())  # type: ignore[arg-type]
    ws.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(ConnectionError, match="during the handshake"):
        await ws.opened
    assert "reset" in closes[0]
    await asyncio.sleep(0)
