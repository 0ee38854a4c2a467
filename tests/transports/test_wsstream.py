"""The ws:// stream driven by hand over a socketpair, against websockets' own server
protocol: handshake, messages, pings, the close handshake, bad data, any-thread sends."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from tests.conftest import TIMEOUT
from tests.transports.test_tcp import SocketTransport
from tether.errors import RemoteProtocolError
from tether.transports.wsstream import WsStream, open_ws_stream

URL = "ws://127.0.0.1:1/_/ws"


class Server:
    """The far end of the pair, speaking WebSocket with websockets' sans-I/O server."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = ServerProtocol(subprotocols=["tether.v1"])  # type: ignore[list-item]
        sock.settimeout(TIMEOUT)

    def read(self) -> list[object]:
        """Reads what the client sent until it completes at least one event."""
        while True:
            self.ws.receive_data(self.sock.recv(1 << 16))
            events = self.ws.events_received()
            if events:
                return list(events)

    def write(self) -> bytes:
        data = b"".join(self.ws.data_to_send())
        self.sock.sendall(data)
        return data


MADE: list[WsStream] = []


@pytest.fixture(autouse=True)
def _ended() -> Iterator[None]:
    """Every stream a test made ends (its duplicate socket closed)."""
    yield
    while MADE:
        stream = MADE.pop()
        if stream._socket is not None:
            stream.connection_lost(None)


def new_stream(
    sock: socket.socket,
) -> tuple[WsStream, SocketTransport, list[object], list[RemoteProtocolError]]:
    seen: list[object] = []
    errors: list[RemoteProtocolError] = []
    stream = WsStream(URL, ["tether.v1"], 1 << 10, seen.append, seen.append, errors.append)
    transport = SocketTransport(sock)
    stream.connection_made(transport)  # type: ignore[arg-type]
    MADE.append(stream)
    return stream, transport, seen, errors


async def opened(
    pair: tuple[socket.socket, socket.socket],
) -> tuple[WsStream, Server, list[object], list[RemoteProtocolError]]:
    stream, _, seen, errors = new_stream(pair[0])
    return await accepted(stream, pair, seen, errors)


async def accepted(
    stream: WsStream,
    pair: tuple[socket.socket, socket.socket],
    seen: list[object],
    errors: list[RemoteProtocolError],
) -> tuple[WsStream, Server, list[object], list[RemoteProtocolError]]:
    server = Server(pair[1])
    [request] = server.read()
    server.ws.send_response(server.ws.accept(request))  # type: ignore[arg-type]
    stream.data_received(server.write())
    assert await stream.opened == "tether.v1"
    return stream, server, seen, errors


async def test_messages_both_ways_whole_and_fragmented(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, server, seen, _ = await opened(pair)
    server.ws.send_text(b"hel", fin=False)
    server.ws.send_continuation(b"lo", fin=True)
    server.ws.send_binary(b"\x00", fin=False)
    server.ws.send_continuation(b"\x01", fin=True)
    server.ws.send_text("whole ✓".encode())
    assert stream.reader.feed(server.write()) == ["hello", b"\x00\x01", "whole ✓"]
    stream.send("up")
    stream.send(b"\x02")
    received = server.read()
    while len(received) < 2:
        received += server.read()
    assert [bytes(f.data) for f in received] == [b"up", b"\x02"]  # type: ignore[attr-defined]
    assert seen == []


async def test_a_ping_read_by_any_thread_is_answered_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, server, _, _ = await opened(pair)
    server.ws.send_ping(b"are you there")
    data = server.write()
    done: list[list[str | bytes]] = []
    thread = threading.Thread(target=lambda: done.append(stream.reader.feed(data)))
    thread.start()
    thread.join(TIMEOUT)
    assert done == [[]]  # a ping is no message
    [pong] = server.read()
    assert isinstance(pong, Frame)
    assert bytes(pong.data) == b"are you there"


async def test_threads_sending_at_once_each_send_whole_messages(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, server, _, _ = await opened(pair)

    def send(me: int) -> None:
        for n in range(50):
            stream.send(f"{me}:{n}")

    threads = [threading.Thread(target=send, args=(me,)) for me in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    received: list[str] = []
    while len(received) < 200:
        received += [bytes(f.data).decode() for f in server.read()]  # type: ignore[attr-defined]
    assert sorted(received) == sorted(f"{me}:{n}" for me in range(4) for n in range(50))
    for me in range(4):  # each thread's messages in the order it sent them
        assert [m for m in received if m.startswith(f"{me}:")] == [f"{me}:{n}" for n in range(50)]


async def test_the_close_handshake_from_the_server(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, _, seen, _ = new_stream(pair[0])
    transport = stream.transport
    assert isinstance(transport, SocketTransport)
    stream, server, seen, _ = await accepted(stream, pair, seen, [])
    server.ws.send_close(1001, "going away")
    data = server.write()
    thread = threading.Thread(target=stream.reader.feed, args=(data,))  # a caller reads it
    thread.start()
    thread.join(TIMEOUT)
    [answer] = server.read()  # the client answers the close frame
    assert isinstance(answer, Frame)
    assert answer.opcode is Opcode.CLOSE
    assert answer.data[:2] == (1001).to_bytes(2, "big")
    stream.send("ignored after close")
    assert not transport.closing
    await asyncio.sleep(0)  # the loop ends the connection once the handshake is done
    assert transport.closing
    server.sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        server.sock.recv(100)  # nothing was written after the close frame
    stream.connection_lost(None)
    assert seen == ["connection to the server lost (code 1001, going away)"]
    assert stream.closed.done()


async def test_close_sends_a_close_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    stream, server, _, _ = await opened(pair)
    closing = asyncio.ensure_future(stream.close(1000, "bye", wait=0.2))
    await asyncio.sleep(0)  # it writes the close frame first thing
    [close] = server.read()
    assert isinstance(close, Frame)
    assert close.opcode is Opcode.CLOSE
    assert close.data == (1000).to_bytes(2, "big") + b"bye"
    await closing  # nobody ends the connection here: it is cut off after ``wait``


async def test_bad_data_from_the_server_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, server, _, errors = await opened(pair)
    with pytest.raises(RemoteProtocolError, match="bad WebSocket data"):
        stream.reader.feed(b"\x8f\x00")  # a frame with a reserved opcode
    [close] = server.read()  # the client said why before giving up
    assert isinstance(close, Frame)
    assert close.opcode is Opcode.CLOSE
    assert close.data[:2] == (1002).to_bytes(2, "big")
    transport = stream.transport
    assert isinstance(transport, SocketTransport)
    stream.data_received(b"\x8f\x00")  # on the loop: reported, and the stream ends
    assert len(errors) == 1
    assert transport.aborted


async def test_a_text_message_that_is_not_utf8_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, server, _, _ = await opened(pair)
    server.ws.send_text(b"\xff")
    with pytest.raises(RemoteProtocolError, match="not UTF-8"):
        stream.reader.feed(server.write())


async def test_a_message_over_max_size_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, server, _, _ = await opened(pair)
    server.ws.send_text(b"x" * (2 << 10))  # the stream takes 1 KiB
    with pytest.raises(RemoteProtocolError, match="bad WebSocket data"):
        stream.reader.feed(server.write())
    [close] = server.read()
    assert isinstance(close, Frame)
    assert close.data[:2] == (1009).to_bytes(2, "big")  # message too big


async def test_a_refused_handshake_fails_opened(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, _, _, _ = new_stream(pair[0])
    stream.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(InvalidStatus, match="403"):
        await stream.opened


async def test_an_answer_that_is_not_http_names_the_reason(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, _, seen, _ = new_stream(pair[0])
    stream.data_received(b"SSH-2.0-not a web server\r\n\r\n")
    stream.connection_lost(None)
    with pytest.raises(ConnectionError, match="during the handshake"):
        await stream.opened
    assert "closed without a close frame" not in str(seen[0])


async def test_connection_lost_during_the_handshake(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    stream, _, seen, _ = new_stream(pair[0])
    stream.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(ConnectionError, match="during the handshake"):
        await stream.opened
    assert seen == ["connection to the server lost (reset)"]


async def test_open_ws_stream_is_for_plain_ws_only() -> None:
    with pytest.raises(ValueError, match="ws:// only"):
        await open_ws_stream("wss://127.0.0.1:1/", [], 1, print, print, print)
