"""The server's raw TCP port (``tether serve --tcp-port``): one :class:`Peer` per stream.

The same peers, keys, limits and functions as the WebSocket routes, minus the WebSocket
framing: Tether's Python clients reach it at ``tether://HOST:PORT``. Browsers cannot open
it, so there is no Origin to check; anything that does not start with Tether's preamble
is dropped.

Up to ``tcp_threads`` connections are read by a thread of their own, which runs their
sync calls itself: see :mod:`tether.transports.threaded`.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import threading
from collections.abc import Callable

from tether._pool import Job
from tether.context import Location
from tether.errors import RemoteProtocolError
from tether.protocol import FRAME_SLACK, SUBPROTOCOL, Frame
from tether.runtime.dispatcher import Dispatcher
from tether.runtime.peer import Peer
from tether.transports.tcp import FramedStream
from tether.transports.threaded import Later, Overseer, ThreadReader

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
        self.thread: ThreadReader | None = None
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
        # uvloop starts reading after connection_made returns: pause it after that
        self.loop.call_soon(self._start_thread)

    def _start_thread(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._socket is None:
            return
        if self._reading_paused:  # over the high-water mark already: the loop resumes it
            return
        transport.pause_reading()
        try:
            self.thread = self.listener.reading_thread(self, self._socket.fileno())
        except Exception:  # out of file descriptors or threads: the loop reads it
            log.exception("no reading thread for a TCP connection; the event loop reads it")
            self.thread = None
        if self.thread is None:
            transport.resume_reading()

    # -- read by the loop -----------------------------------------------------------------

    def loop_reads(self) -> bool:
        return self.thread is None or not self.thread.thread_reads

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        thread = self.thread
        transport = self.transport
        if thread is None or transport is None or transport.is_closing():
            return
        if not self._reading_paused and thread.loop_take_back():
            transport.pause_reading()

    # -- read by the connection's thread (see tether.transports.threaded.Handler) ------

    def frames_in_thread(self, data: bytes) -> Job | None:
        peer = self.peer
        assert peer is not None
        try:
            frames = self.reader.feed(data)
            job: Job | None = None
            last = len(frames) - 1
            for index, frame in enumerate(frames):
                if self._closing:
                    raise ConnectionAbortedError("closing")
                job, later = peer.receive_in_thread(frame, may_run=index == last)
                if later is not None:
                    self.loop.call_soon_threadsafe(self._later, later)
        except RemoteProtocolError as exc:
            self.loop.call_soon_threadsafe(self._refuse, exc)
            raise
        return job

    def give_to_loop(self) -> None:
        self.loop.call_soon_threadsafe(self._read_if_given)

    def _read_if_given(self) -> None:
        # The loop may have given reading back since (after a read it made meanwhile).
        if self.loop_reads():
            self.read_on_loop()

    def ended_in_thread(self) -> None:
        self.loop.call_soon_threadsafe(self._ended)

    def _later(self, later: Later) -> None:
        peer = self.peer
        assert peer is not None
        if self.transport is None or self.transport.is_closing():
            return
        try:
            later()
        except RemoteProtocolError as exc:
            self._refuse(exc)
            return
        if peer.close_reason is not None:
            self.close_soon()  # after the refusal it just wrote

    def _refuse(self, error: RemoteProtocolError) -> None:
        self._broken(error)
        self.abort()

    def _ended(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------------------------------

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
            self._refuse(exc)
            return
        if peer.close_reason is not None:
            self.close_soon()  # after the refusal it just wrote

    def _broken(self, error: RemoteProtocolError) -> None:
        ip = self.peer.client_ip if self.peer is not None else None
        log.warning("closing TCP connection from %s: %s", ip, error)

    def _closed(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.thread is not None:
            self.thread.loop_close()
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
        self._overseer: Overseer | None = None
        self._threads = 0
        self._threads_lock = threading.Lock()
        self._numbers = itertools.count()

    def reading_thread(self, stream: _PeerStream, fileno: int) -> ThreadReader | None:
        """Loop: a reading thread for a new stream, while fewer than ``tcp_threads`` run."""
        with self._threads_lock:
            if self._threads >= self.dispatcher.options.tcp_threads:
                return None
            self._threads += 1
        try:
            if self._overseer is None:
                self._overseer = Overseer()
            return ThreadReader(
                fileno,
                stream,
                self._overseer,
                f"tether-tcp-{next(self._numbers)}",
                contextvars.copy_context().run,  # the loop's context variables, as the pool's
                self._thread_ended,
            )
        except BaseException:
            self._thread_ended()
            raise

    def _thread_ended(self) -> None:
        with self._threads_lock:
            self._threads -= 1

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
        if self._overseer is not None:
            self._overseer.stop()
            self._overseer = None


def _nowhere(ip: str) -> Location | None:
    return None
