"""A client WebSocket over plain ``ws://`` as a :class:`FramedStream`.

``websockets``' sans-I/O client protocol does the framing; the stream does the rest as
on ``tether://``: any thread writes its messages straight to the socket, and a sync
``Client``'s blocked callers read their own answers (:mod:`tether.client.leader`), so a
call costs one thread wake-up on the client instead of three. The protocol object is
not thread-safe: every use of it holds the stream's ``_ws_lock`` (then, to write, the
stream's write lock; never the other way round).

``wss://`` keeps :class:`~tether.transports.websocket.WebSocket`, read and written by
the loop: the TLS state lives in the loop's transport, and no other thread may touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from websockets.frames import Frame
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from tether._pool import on_loop
from tether.errors import RemoteProtocolError
from tether.transports.tcp import FramedStream, OnClose, OnError, OnFrame
from tether.transports.websocket import (
    Fragments,
    answered,
    client_protocol,
    loss_reason,
    queue_message,
)

__all__ = ["WsStream", "open_ws_stream"]


class WsStream(FramedStream):
    """One client WebSocket on a plain TCP connection (``ws://``). ``send`` and
    ``reader.feed`` may be called from any thread."""

    def __init__(
        self,
        url: str,
        subprotocols: list[str],
        max_size: int,
        on_frame: OnFrame,
        on_close: OnClose,
        on_error: OnError,
    ) -> None:
        super().__init__(max_size, on_frame, on_close, on_error)
        self.ws = client_protocol(url, subprotocols, max_size)
        self.reader = self
        self.opened: asyncio.Future[str | None] = self.loop.create_future()
        """The subprotocol the server chose, once the handshake is done."""
        self._ws_lock = threading.Lock()
        self._fragments = Fragments()
        self._ending = False  # the close handshake is done: the loop ends the connection

    def greeting(self) -> bytes:
        with self._ws_lock:
            self.ws.send_request(self.ws.connect())
            return b"".join(self.ws.data_to_send())

    # -- frames in ----------------------------------------------------------------------

    def feed(self, data: bytes) -> list[str | bytes]:
        """The messages ``data`` completes (the handshake's answer, pings and the close
        handshake are handled here, their replies written at once).

        Raises:
            RemoteProtocolError: the server broke the WebSocket protocol.
        """
        with self._ws_lock:
            ws = self.ws
            ws.receive_data(data)
            events = ws.events_received()
            self._flush_locked()
            error = ws.parser_exc
        messages: list[str | bytes] = []
        try:
            for event in events:
                if isinstance(event, Frame):
                    message = self._fragments.message(event)
                    if message is not None:
                        messages.append(message)
                elif isinstance(event, Response):
                    self._answered(event)
        except UnicodeDecodeError as exc:  # websockets leaves text frames unchecked
            raise RemoteProtocolError(
                f"a text message from the server is not UTF-8: {exc}"
            ) from None
        if error is not None:
            raise RemoteProtocolError(f"bad WebSocket data from the server: {error}")
        return messages

    def _answered(self, response: Response) -> None:
        """The server's answer to the upgrade request (it comes before any caller
        reads, so on the loop; a late one is moot)."""
        if on_loop(self.loop):
            answered(self.ws, self.opened, response)

    # -- frames out ---------------------------------------------------------------------

    def send(self, frame: str | bytes) -> None:
        """Sends one message (text for str, binary for bytes); a no-op once closing."""
        with self._ws_lock:
            if queue_message(self.ws, frame):
                self._flush_locked()

    def _flush_locked(self) -> None:
        """Writes what the protocol queued, in order (under ``_ws_lock``)."""
        for data in self.ws.data_to_send():
            if data:
                self._write(data)
        if self.ws.close_expected() and not self._ending:  # the close handshake is done
            self._ending = True
            with contextlib.suppress(RuntimeError):  # the loop closed: it is over anyway
                self.loop.call_soon_threadsafe(self.close_soon)

    async def close(self, code: int = 1000, reason: str = "", wait: float = 5.0) -> None:
        """Sends a close frame, then closes once it is written (bounded by ``wait``)."""
        with self._ws_lock:
            if self.ws.state is State.OPEN:
                self.ws.send_close(code, reason)
                self._flush_locked()
        await super().close(code, reason, wait)

    # -- the end ------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            reason = self._why(exc)
            self.opened.set_exception(
                ConnectionError(f"connection closed during the handshake ({reason})")
            )
        super().connection_lost(exc)

    def lost_reason(self, exc: Exception | None) -> str:
        return f"connection to the server lost ({self._why(exc)})"

    def _why(self, exc: Exception | None) -> str:
        with self._ws_lock:  # a caller may be reading the close frame right now
            return loss_reason(self.ws, exc)


async def open_ws_stream(
    url: str,
    subprotocols: list[str],
    max_size: int,
    on_frame: OnFrame,
    on_close: OnClose,
    on_error: OnError,
) -> tuple[WsStream, str | None]:
    """Connects to a ``ws://`` URL and completes the handshake; returns the stream and
    the subprotocol."""
    uri = parse_uri(url)
    if uri.secure:
        raise ValueError(f"WsStream is for ws:// only, not {url!r}")
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(
        lambda: WsStream(url, subprotocols, max_size, on_frame, on_close, on_error),
        uri.host,
        uri.port,
    )
    try:
        subprotocol = await stream.opened
    except BaseException:
        stream.abort()
        raise
    return stream, subprotocol
