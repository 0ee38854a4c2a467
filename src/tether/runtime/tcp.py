"""The server's raw TCP port (``tether serve --tcp-port``): one :class:`Peer` per stream.

The same peers, keys, limits and functions as the WebSocket routes, minus the WebSocket
framing: Tether's Python clients reach it at ``tether://HOST:PORT``. Browsers cannot open
it, so there is no Origin to check; anything that does not start with Tether's preamble
is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tether.context import Location
from tether.errors import RemoteProtocolError
from tether.protocol import FRAME_SLACK, SUBPROTOCOL, Frame
from tether.runtime.dispatcher import Dispatcher
from tether.runtime.peer import Peer
from tether.transports.tcp import FramedStream

__all__ = ["TcpListener"]

log = logging.getLogger("tether")


class _PeerStream(FramedStream):
    def __init__(self, listener: TcpListener) -> None:
        dispatcher = listener.dispatcher
        super().__init__(
            dispatcher.limits.max_frame_bytes + FRAME_SLACK,
            self._frame,
            self._closed,
            self._broken,
            server=True,
        )
        self.listener = listener
        self.peer: Peer | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        address = transport.get_extra_info("peername")
        self.peer = Peer(
            self.listener.dispatcher,
            write=self.send,
            client_ip=address[0] if isinstance(address, tuple) else None,
            dialect="tether",
            subprotocol=SUBPROTOCOL,
            location=self.listener.locate(address[0]) if isinstance(address, tuple) else None,
            tasks_only=self.listener.tasks_only,
        )
        self.listener.streams.add(self)
        timeout = self.listener.dispatcher.options.handshake_timeout
        self._timer = asyncio.get_running_loop().call_later(timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        if self.peer is not None and self.peer.context is None:
            log.info("closing TCP connection from %s: no key in time", self.peer.client_ip)
            self.abort()

    def _frame(self, frame: Frame) -> None:
        peer = self.peer
        assert peer is not None
        try:
            peer.receive_now(frame)
        except RemoteProtocolError as exc:
            self._broken(exc)
            self.abort()
            return
        if peer.close_reason is not None:
            self.close_soon()  # after the refusal it just wrote

    def _broken(self, error: RemoteProtocolError) -> None:
        ip = self.peer.client_ip if self.peer is not None else None
        log.warning("closing TCP connection from %s: %s", ip, error)

    def _closed(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.peer is not None:
            self.peer.close()
        self.listener.streams.discard(self)


class TcpListener:
    """Accepts TCP connections for one dispatcher, on the running loop."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        host: str,
        port: int,
        locate: Callable[[str], Location | None] | None = None,
        *,
        tasks_only: bool = False,
    ) -> None:
        self.dispatcher = dispatcher
        self.tasks_only = tasks_only
        """The background tasks' private port: only a task's own hello is accepted."""
        self.locate = locate or _nowhere
        self.host = host
        self.port = port
        self.streams: set[_PeerStream] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> tuple[str, int]:
        """Starts listening; returns the bound address (the port, when 0 was asked)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _PeerStream(self), self.host, self.port, reuse_address=True
        )
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    def stop(self) -> None:
        """Stops listening and drops every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for stream in list(self.streams):
            stream.abort()


def _nowhere(ip: str) -> Location | None:
    return None
