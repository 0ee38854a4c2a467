"""The raw TCP path between Python peers: length-prefixed frames on an asyncio Protocol.

Both sides use :class:`FramedStream`; the client opens one with :func:`open_tcp`, the
server makes one per accepted connection. The loop reads through the transport; frames
are written by whichever thread has them (the loop, a worker thread that just finished a
call, a thread blocked in a sync call), straight to a duplicate of the socket under a
lock, so no thread hands a write to another. What the kernel does not take at once waits
in a backlog that the loop drains. The server's side stops reading while its backlog is
over :data:`HIGH_WATER` (a client that does not read its answers gets no new calls taken;
answers to the calls already taken are still buffered). A client's side never stops
reading, so two peers can never wait on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Protocol, cast
from urllib.parse import urlsplit

from tether.errors import RemoteProtocolError
from tether.protocol.framing import PREAMBLE, FrameReader, pack_frame

__all__ = ["SCHEME", "FramedStream", "open_tcp", "tcp_address"]

HIGH_WATER = 1 << 20
"""Backlog bytes over which a server-side stream stops reading."""

SCHEME = "tether"
"""``tether://HOST:PORT``: the URL of a server's TCP port."""

OnFrame = Callable[[str | bytes], None]
OnClose = Callable[[str], None]
OnError = Callable[[RemoteProtocolError], None]


class FrameCutter(Protocol):
    """Cuts received bytes into frames (any thread, one at a time)."""

    def feed(self, data: bytes) -> list[str | bytes]:
        """The frames ``data`` completes, in order.

        Raises:
            RemoteProtocolError: the peer broke the framing.
        """


def tcp_address(url: str) -> tuple[str, int]:
    """``tether://HOST:PORT`` -> (HOST, PORT)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or not parts.hostname or parts.port is None:
        raise ValueError(f"not a Tether TCP URL: {url!r} (use tether://HOST:PORT)")
    return parts.hostname, parts.port


class FramedStream(asyncio.Protocol):
    """One TCP connection carrying frames.

    ``send`` may be called from any thread (``threadsafe_send``).

    Args:
        max_size: the largest frame accepted from the peer.
        on_frame: gets each whole frame, on the loop.
        on_close: gets a reason once, when the connection ends.
        on_error: gets the peer's framing error; the stream then closes.
        server: this is the accepting side (expects the client's preamble).
    """

    threadsafe_send = True

    def __init__(
        self,
        max_size: int,
        on_frame: OnFrame,
        on_close: OnClose,
        on_error: OnError,
        *,
        server: bool = False,
    ) -> None:
        self.reader: FrameCutter = FrameReader(max_size, preamble=server)
        self.on_frame = on_frame
        self.on_close = on_close
        self.on_error = on_error
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._socket: socket.socket | None = None
        self._write_lock = threading.Lock()
        self._backlog = bytearray()
        self._draining = False
        self._close_when_drained = False
        self._closing = False
        self._reading_paused = False
        self._pause_asked = False
        self.after_read: Callable[[], None] | None = None
        """Runs on the loop after each read (a client whose callers read: see
        :mod:`tether.client.leader`)."""

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        self._socket = socket.socket(fileno=os.dup(sock.fileno()))
        self._socket.setblocking(False)  # not socket.getdefaulttimeout()
        greeting = self.greeting()
        if greeting:
            self._write(greeting)

    def greeting(self) -> bytes:
        """What this side sends first: the client's preamble."""
        return b"" if self.server else PREAMBLE

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except RemoteProtocolError as exc:
            self.on_error(exc)
            self.abort()
            return
        on_frame = self.on_frame
        for frame in frames:
            if self.transport is None or self.transport.is_closing():
                return
            on_frame(frame)
        if self.after_read is not None:
            self.after_read()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        with self._write_lock:
            sock, self._socket = self._socket, None
            self._backlog.clear()
        if sock is not None:
            if self._draining:
                self.loop.remove_writer(sock.fileno())
            sock.close()
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_close(self.lost_reason(exc))

    def lost_reason(self, exc: Exception | None) -> str:
        """Why the connection ended, for ``on_close``."""
        return f"connection lost ({exc or 'closed by the other side'})"

    # -- frames -------------------------------------------------------------------------

    def send(self, frame: str | bytes) -> None:
        """Sends one frame, from any thread; a no-op once closing."""
        self._write(pack_frame(frame))

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            sock = self._socket
            if sock is None or self._closing:
                return
            if not self._backlog:
                try:
                    sent = sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    return  # the connection is going away; the loop will see it
                if sent == len(data):
                    return
                data = data[sent:]
            self._backlog += data
            if not self._draining:
                self._draining = True
                self.loop.call_soon_threadsafe(self._start_draining)
            elif self.server and not self._pause_asked and len(self._backlog) > HIGH_WATER:
                self._pause_asked = True  # asked once per backlog, not once per write
                self.loop.call_soon_threadsafe(self._pause_reading)

    def _start_draining(self) -> None:
        """Loop: waits until the socket takes the backlog."""
        with self._write_lock:
            sock = self._socket
            if sock is None or self.transport is None:
                return
            self.loop.add_writer(sock.fileno(), self._drain)
        if self.server and len(self._backlog) > HIGH_WATER:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused and self._draining:
            self._reading_paused = True
            self.transport.pause_reading()

    def _drain(self) -> None:
        with self._write_lock:
            sock = self._socket
            if sock is None or self.transport is None:
                return
            try:
                sent = sock.send(self._backlog)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                sent = len(self._backlog)  # going away: drop it
            del self._backlog[:sent]
            if self._backlog:
                return
            self._draining = False
            self._pause_asked = False
            self.loop.remove_writer(sock.fileno())
            if self._close_when_drained:
                self._closing = True
                self.transport.close()
            elif self._reading_paused and not self.transport.is_closing():
                self._reading_paused = False
                if self.loop_reads():
                    self.transport.resume_reading()

    def fileno(self) -> int:
        """The connection's socket (a duplicate: reading threads duplicate it again)."""
        assert self._socket is not None, "not connected"
        return self._socket.fileno()

    def read_on_loop(self) -> None:
        """Loop: reads again (unless closing, or paused over the high-water mark)."""
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._reading_paused:
            transport.resume_reading()

    def pause_reading(self) -> None:
        """Loop: stops reading (a thread reads instead)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def loop_reads(self) -> bool:
        """Whether the loop reads this stream (a subclass may read it on a thread)."""
        return True

    def backlog_full(self) -> bool:
        """True while the peer is not reading what we send (any thread)."""
        return self._draining and len(self._backlog) > HIGH_WATER

    def abort(self) -> None:
        """Loop: ends the connection now (the duplicate socket too, whatever runs next)."""
        with self._write_lock:
            self._closing = True
            if self._socket is not None:
                with contextlib.suppress(OSError):  # already gone
                    self._socket.shutdown(socket.SHUT_RDWR)
        if self.transport is not None:
            self.transport.abort()

    def close_soon(self, wait: float = 5.0) -> None:
        """Loop: closes once the backlog is written, at once when there is none.

        A peer that does not read it within ``wait`` seconds is cut off.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        with self._write_lock:
            if self._draining:
                self._close_when_drained = True
                self.loop.call_later(wait, self.abort)
                return
            self._closing = True
        transport.close()

    async def close(self, code: int = 1000, reason: str = "", wait: float = 5.0) -> None:
        """Closes after the backlog is written; waits (bounded) for the end.

        ``code`` and ``reason`` are for the WebSocket's twin; a TCP stream just ends.
        """
        self.close_soon(wait)
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(self.closed)
        except TimeoutError:
            self.abort()


async def open_tcp(
    url: str, max_size: int, on_frame: OnFrame, on_close: OnClose, on_error: OnError
) -> FramedStream:
    """Connects to ``tether://HOST:PORT``."""
    host, port = tcp_address(url)
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(
        lambda: FramedStream(max_size, on_frame, on_close, on_error), host, port
    )
    return stream
