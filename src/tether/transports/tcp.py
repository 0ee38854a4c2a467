"""The raw TCP path between Python peers: length-prefixed frames on an asyncio Protocol.

Both sides use :class:`FramedStream`; the client opens one with :func:`open_tcp`, the
server makes one per accepted connection. Frames are written with ``transport.write`` at
once; when the peer stops reading and the write buffer fills up, the stream stops reading
too (so a peer cannot make this side buffer without bound).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from tether.errors import RemoteProtocolError
from tether.protocol.framing import PREAMBLE, FrameReader, pack_frame

__all__ = ["SCHEME", "FramedStream", "open_tcp", "tcp_address"]

SCHEME = "tether"
"""``tether://HOST:PORT``: the URL of a server's TCP port."""

OnFrame = Callable[[str | bytes], None]
OnClose = Callable[[str], None]
OnError = Callable[[RemoteProtocolError], None]


def tcp_address(url: str) -> tuple[str, int]:
    """``tether://HOST:PORT`` -> (HOST, PORT)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or not parts.hostname or parts.port is None:
        raise ValueError(f"not a Tether TCP URL: {url!r} (use tether://HOST:PORT)")
    return parts.hostname, parts.port


class FramedStream(asyncio.Protocol):
    """One TCP connection carrying frames.

    Args:
        max_size: the largest frame accepted from the peer.
        on_frame: gets each whole frame, on the loop.
        on_close: gets a reason once, when the connection ends.
        on_error: gets the peer's framing error; the stream then closes.
        server: this is the accepting side (expects the client's preamble).
    """

    def __init__(
        self,
        max_size: int,
        on_frame: OnFrame,
        on_close: OnClose,
        on_error: OnError,
        *,
        server: bool = False,
    ) -> None:
        self.reader = FrameReader(max_size, preamble=server)
        self.on_frame = on_frame
        self.on_close = on_close
        self.on_error = on_error
        self.server = server
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._reading_paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if not self.server:
            self.transport.write(PREAMBLE)

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

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_close(f"connection lost ({exc or 'closed by the other side'})")

    def pause_writing(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- frames -------------------------------------------------------------------------

    def send(self, frame: str | bytes) -> None:
        """Sends one frame; a no-op once closing."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(pack_frame(frame))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: int = 1000, reason: str = "", wait: float = 5.0) -> None:
        """Closes after the buffered frames are written; waits (bounded) for the end.

        ``code`` and ``reason`` are for the WebSocket's twin; a TCP stream just ends.
        """
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
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
