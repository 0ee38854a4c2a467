"""The async Python client: one WebSocket, calls both ways.

Every protocol decision stays in :class:`tether.protocol.Connection`; this class moves
frames with ``websockets`` and turns events into results. Its sync twin
(:class:`tether.client.sync.Client`) runs it on a loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from urllib.parse import urlsplit

import websockets

from tether._caches import RemoteFuture, deliver, notify_stopped
from tether._pool import on_loop
from tether.client.deadlines import Deadlines
from tether.client.leader import CallerReading
from tether.client.local import LocalCalls
from tether.client.receiving import Receiving
from tether.client.reconnect import keep_alive, start_reconnecting
from tether.client.subscriptions import Subscriptions
from tether.client.urls import TCP_SCHEME, http_origin, websocket_url
from tether.client.waiter import AnyFuture, Waiter
from tether.codec import Limits, PortableRegistry, portable_registry
from tether.codec.capability import Capability
from tether.codec.capability_wire import HolderWire
from tether.codec.flavors import Unjellyables, unjellyables
from tether.context import call_timeout
from tether.errors import (
    AppOfflineError,
    DeadReferenceError,
    RemoteProtocolError,
)
from tether.functions import FunctionRegistry, function_registry
from tether.protocol import (
    FRAME_SLACK,
    INVALIDATE,
    RESET_SESSION,
    SESSION_PUSH,
    SUBPROTOCOL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Connection,
    Push,
    Role,
    State,
    session_id,
)
from tether.transports.tcp import FramedStream, open_tcp
from tether.transports.threaded import Handoff, Overseer
from tether.transports.websocket import WebSocket, open_websocket
from tether.transports.wsstream import open_ws_stream

__all__ = ["AsyncClient", "Waiter", "websocket_url"]

log = logging.getLogger("tether.client")


class AsyncClient(Receiving):
    """A connection to a Tether server.

    Args:
        url: ``ws://HOST:PORT/_/ws`` or the ``http://HOST:PORT`` origin; or
            ``tether://HOST:PORT`` for a server's raw TCP port (``tether serve --tcp-port``),
            the cheaper path between Python processes.
        key: the uplink key (trusted) or the client key; None for an untrusted client.
        register: offer this process's ``@server.callable`` functions to the server (needs
            the uplink key; without it, connecting with functions raises PermissionDenied).
        limits: bounds on messages this side builds and accepts.
        open_timeout: seconds to connect and authenticate.
        call_timeout: seconds a call may wait for its answer before raising
            ``TimeoutError`` (None: no limit); ``server.call_timeout(s)`` overrides it
            for the calls made inside.
        reconnect: when the connection drops, reconnect with backoff (presenting the
            session token, so the session carries on) until :meth:`close`. Meanwhile
            calls raise ``AppOfflineError`` at once.
        reconnect_delay, max_reconnect_delay: the first wait, doubled after each
            failed attempt up to the maximum (seconds; each with up to 50 % jitter).
        keepalive_interval, keepalive_timeout: every ``keepalive_interval`` seconds of
            the connection, an ``anvil.private.echo`` must come back within
            ``keepalive_timeout`` seconds, or the connection counts as lost (a silently
            dead network: calls in flight then fail and reconnecting starts). None: off.
        hello_extra: more fields for the handshake (Tether's own use: a background
            task's process names its task).
        caller_reads: over ``tether://`` and plain ``ws://``, a thread blocked in
            :meth:`call_blocking` writes its call and reads its answer itself (see
            :mod:`tether.client.leader`); the sync ``Client`` turns it on. Otherwise, and
            over ``wss://``, the loop reads.
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        register: bool = False,
        limits: Limits | None = None,
        registry: PortableRegistry = portable_registry,
        unjellyables: Unjellyables = unjellyables,
        functions: FunctionRegistry = function_registry,
        open_timeout: float = 10.0,
        threads: int = 8,
        call_timeout: float | None = None,
        reconnect: bool = True,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        keepalive_interval: float | None = 20.0,
        keepalive_timeout: float = 20.0,
        hello_extra: dict[str, object] | None = None,
        caller_reads: bool = False,
    ) -> None:
        if call_timeout is not None and not call_timeout > 0:
            raise ValueError("call_timeout must be a positive number of seconds (or None)")
        self.url = websocket_url(url)
        self.key = key
        self.register = register
        self.limits = limits or Limits()
        self.registry = registry
        self.unjellyables = unjellyables
        self.functions = functions
        self.open_timeout = open_timeout
        self.call_timeout = call_timeout
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.hello_extra = dict(hello_extra or {})
        self.caller_reads = caller_reads
        self._reading: CallerReading | None = None
        self._overseer: Overseer | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.deadlines = Deadlines(self)
        self.trusted = False
        self.session_token: str | None = None
        """The token of this connection's session (from the server's auth reply)."""
        self.wire = HolderWire()
        self.connection = self._new_connection()
        # Serializes the Connection, ``_pending`` and the order of writes: the loop reads,
        # and on the TCP path a thread blocked in a sync call writes its CALL itself.
        self._guard = threading.RLock()  # re-entered only to refuse (call_remote in a hook)
        self._handoff = Handoff(self._guard)
        """What a reading caller handed to the loop, not yet done there."""
        self._ws: WebSocket | FramedStream | None = None
        self._pending: dict[str, AnyFuture] = {}
        self._auth: asyncio.Future[None] | None = None  # made on the loop, in connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed_reason: str | None = "not connected yet"
        self._closing = False  # close() was called: do not reconnect
        self._epoch = 0  # which transport is current (a late loss of an old one is moot)
        self._reconnecting: asyncio.Task[bool] | None = None
        self.subscriptions = Subscriptions(self._subscription_ended)
        self._start_caches()
        self.local = LocalCalls(self, threads)

    # -- lifetime -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._closed_reason is None

    @property
    def origin(self) -> str | None:
        """The server's HTTP origin (``http://HOST:PORT``); None over ``tether://``."""
        return http_origin(self.url)

    @property
    def session_id(self) -> str | None:
        """This connection's session id (``server.get_session_id()`` on the server)."""
        return None if self.session_token is None else session_id(self.session_token)

    def _new_connection(self) -> Connection:
        connection = Connection(
            Role.CLIENT,
            registry=self.registry,
            limits=self.limits,
            capabilities=self.wire,
            unjellyables=self.unjellyables,
        )
        self._hold(connection)
        return connection

    async def connect(self) -> AsyncClient:
        """Connects and authenticates.

        Raises:
            AppOfflineError: the server cannot be reached.
            PermissionDenied: the key was refused, or functions would be registered
                without the uplink key.
        """
        self._loop = asyncio.get_running_loop()
        self._closing = False
        await self._open()
        return self

    async def _open(self) -> None:
        """Opens a transport, authenticates (with the session token, if any), registers."""
        loop = asyncio.get_running_loop()
        self._auth = loop.create_future()
        self._epoch += 1
        with self._guard:
            if self.connection.state is not State.NEW:  # a reconnect: a fresh protocol state
                self.connection = self._new_connection()
        lost = functools.partial(self._lost_transport, self._epoch)
        try:
            async with asyncio.timeout(self.open_timeout):
                max_size = self.limits.max_frame_bytes + FRAME_SLACK
                if urlsplit(self.url).scheme == TCP_SCHEME:
                    ws: WebSocket | FramedStream = await open_tcp(
                        self.url, max_size, self._receive, lost, self._broken
                    )
                    compact = True  # only Tether serves this path
                else:
                    if self.caller_reads and urlsplit(self.url).scheme == "ws":
                        ws, subprotocol = await open_ws_stream(  # callers read it too
                            self.url, [SUBPROTOCOL], max_size, self._receive, lost, self._broken
                        )
                    else:
                        ws, subprotocol = await open_websocket(
                            self.url, [SUBPROTOCOL], max_size, self._receive, lost
                        )
                    compact = subprotocol == SUBPROTOCOL
                with self._guard:
                    self._ws = ws
                    self.connection.compact = compact
                    extra = dict(self.hello_extra)
                    extra["limits"] = {"max_cacheables": self.limits.max_cacheables}
                    if self.session_token is not None:
                        extra["session"] = self.session_token
                    self.connection.send_hello(self.key, **extra)
                    self._flush_locked()
                await self._auth
            with self._guard:
                self.local.register_locked()
                self._flush_locked()
            if self.caller_reads and isinstance(ws, FramedStream):
                self._callers_read(ws)
        except (OSError, TimeoutError, websockets.InvalidHandshake, AppOfflineError) as exc:
            await self._abort()
            raise AppOfflineError(
                f"cannot connect to {self.url}: {exc or type(exc).__name__}"
            ) from exc
        except BaseException:
            await self._abort()
            raise
        if self.connected and self.keepalive_interval is not None:
            if self._keepalive is not None:
                self._keepalive.cancel()
            self._keepalive = loop.create_task(keep_alive(self, self._epoch))

    def _callers_read(self, stream: FramedStream) -> None:
        """From now on, threads blocked in calls read this connection (see leader.py)."""
        if self._overseer is None:
            self._overseer = Overseer("tether-client-overseer")
        self._reading = CallerReading(
            stream, self.receive_in_thread, self._overseer, self._loop_waits, self._broken
        )
        stream.after_read = self._reading.loop_read_done
        self._reading.loop_read_done()

    def _loop_waits(self) -> bool:
        """True while a coroutine's call waits for its answer: the loop must read."""
        with self._guard:  # callers add and remove theirs meanwhile
            return any(type(future) is not Waiter for future in self._pending.values())

    def _lost_transport(self, epoch: int, reason: str) -> None:
        if epoch == self._epoch:
            self._lost(reason)

    async def wait_online(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Waits until connected (after a drop, until reconnected); False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not self.connected:
                    if self._closing or self._reconnecting is None:
                        return False  # closed, not reconnecting, or the server refused it
                    await asyncio.sleep(0.02)
        except TimeoutError:
            return False
        return True

    def _adopt_server_limits(self, limits: object) -> None:
        """Sends no frame larger than the server accepts (from its auth reply)."""
        if type(limits) is dict:
            mirrors = limits.get("max_cacheables")
            if type(mirrors) is int and mirrors > 0:
                self.connection.caches.peer_limit = mirrors
            frame = limits.get("max_frame_bytes")
            if type(frame) is int and 0 < frame < self.limits.max_frame_bytes:
                fields = {n: getattr(self.limits, n) for n in self.limits.__slots__}
                fields["max_frame_bytes"] = frame
                self.connection.limits = Limits(**fields)

    async def close(self) -> None:
        """Closes the connection; calls still waiting fail with AppOfflineError."""
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        reconnecting, self._reconnecting = self._reconnecting, None
        if reconnecting is not None and reconnecting is not asyncio.current_task():
            reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconnecting
        if self._closed_reason is None:  # before the transport reports its own end
            self._closed_reason = "the client was closed"
        if self._ws is not None:
            await self._ws.close()
        self._lost("the client was closed")
        self.local.shutdown()  # no more calls from the server, no more registrations
        if self._overseer is not None:
            self._overseer.stop()
            self._overseer = None

    async def _abort(self) -> None:
        self._closed_reason = self._closed_reason or "connect failed"
        if self._ws is not None:
            await self._ws.close(wait=1.0)

    async def wait_closed(self) -> None:
        """Waits until the connection ends for good (reconnects included)."""
        while self._ws is not None:
            await asyncio.shield(self._ws.closed)
            await asyncio.sleep(0)  # let the loss start reconnecting
            task = self._reconnecting
            if self._closing or (task is None and not self.connected):
                return
            if task is not None:
                await asyncio.shield(task)  # ends when reconnected, or when it gave up
                if not self.connected:
                    return

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- calls --------------------------------------------------------------------------

    async def call(self, name: str, *args: object, **kwargs: object) -> object:
        """Calls server function ``name`` and returns its result (a copy).

        Raises:
            NoServerFunctionError, PermissionDenied, RemoteError, ...: as raised remotely.
            SerializationError: an argument cannot be sent; nothing was sent.
            AppOfflineError: not connected, or the connection was lost during the call.
        """
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.start_call(name, args, kwargs, future, self._timeout())
        return await future

    def _timeout(self) -> float | None:
        """The deadline of a call made here now: ``server.call_timeout``, else the default."""
        timeout = call_timeout.get()
        return self.call_timeout if timeout is None else timeout

    def call_threadsafe(
        self, name: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> concurrent.futures.Future[object]:
        """Starts a call from any thread but the loop's; the future gets the result."""
        assert self._loop is not None, "not connected"
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(
            self.start_call, name, args, kwargs, future, self._timeout()
        )
        return future

    def call_blocking(
        self, name: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        """Calls from any thread but the loop's and blocks until the answer (the sync path).

        Over ``tether://`` and plain ``ws://`` this thread writes the CALL itself; over a
        loop-driven WebSocket (``wss://``, or without ``caller_reads``) the loop does.
        """
        assert self._loop is not None, "not connected"
        waiter = Waiter()
        timeout = self._timeout()
        reading = self._reading
        if reading is not None:  # this thread reads its answer itself (see leader.py)
            lead = reading.enter(waiter)
            try:
                self.start_call(name, args, kwargs, waiter, timeout)
            except BaseException:  # interrupted: never leave the others without a reader
                reading.leave(waiter, lead)
                raise
            deadline = None if timeout is None else time.monotonic() + timeout
            return reading.wait(waiter, deadline, lead)
        if (self._ws is not None and self._ws.threadsafe_send) or self._loop.is_closed():
            self.start_call(name, args, kwargs, waiter, timeout)  # closed: it fails at once
        else:
            self._loop.call_soon_threadsafe(self.start_call, name, args, kwargs, waiter, timeout)
        return waiter.result()

    def start_call(
        self,
        name: str,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        future: AnyFuture,
        timeout: float | None = None,
    ) -> None:
        """Sends the CALL (on the loop, or any thread on the TCP path); ``future`` gets the
        result or the error (``TimeoutError`` after ``timeout`` seconds)."""
        failures: list[tuple[RemoteFuture, BaseException]] | None = None
        with self._guard:
            error: BaseException | None
            if not self.connected:
                error = AppOfflineError(f"not connected to the server ({self._closed_reason})")
            else:
                if self._outbox.queue:  # call_remote's messages this thread queued go first
                    failures = self._outbox.send_locked()
                try:
                    call_id = self.connection.send_call(name, args, kwargs)
                except Exception as exc:  # SerializationError; never leave the caller waiting
                    error = exc
                else:
                    self._pending[call_id] = future
                    self._flush_locked()
                    if timeout is not None:
                        self.deadlines.arm(call_id, name, future, timeout)
                    error = None
        if failures:
            deliver(failures)
        if self.connection.caches.stopped:
            self._notify_stopped()
        if error is not None:
            future.set_exception(error)

    # -- live updates -------------------------------------------------------------------

    async def subscribe(self, cap: Capability) -> None:
        """Asks the server to push every update on ``cap``'s scope to this connection at
        once; each runs ``cap``'s update handler. It ends with :meth:`unsubscribe`, when
        ``cap`` is garbage-collected, or when the connection closes.

        Raises:
            PermissionDenied: the server refused the capability (forged, invalidated).
        """
        if type(cap) is not Capability:
            raise TypeError(f"subscribe needs a Capability, got {type(cap).__name__}")
        await self.call(SUBSCRIBE, cap)
        self.subscriptions.add(cap, asyncio.get_running_loop())

    async def unsubscribe(self, cap: Capability) -> None:
        """Ends the pushes :meth:`subscribe` asked for (for this capability object)."""
        if self.subscriptions.remove(cap) and self.connected:
            await self.call(UNSUBSCRIBE, cap._key)

    async def reset_session(self) -> None:
        """Starts a fresh, empty session for this connection (after SessionExpiredError,
        or to log out): later calls, and reconnects, use it."""
        token = await self.call(RESET_SESSION)
        if type(token) is str:
            self.session_token = token

    async def invalidate_client_objects(self) -> None:
        """Invalidates every capability the server signed for this client's session (and
        ends its subscriptions); capabilities held here turn invalid too."""
        await self.call(INVALIDATE)
        self.wire.invalidate()
        self.subscriptions.clear()

    def _subscription_ended(self, key: str) -> None:
        """The last capability subscribed to ``key`` was collected: tell the server."""
        if self.connected:
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_ignore)
            self.start_call(UNSUBSCRIBE, (key,), {}, future)

    def _apply_push(self, push: Push) -> None:
        if push.key == SESSION_PUSH:
            if type(push.update) is str:
                self.session_token = push.update  # the server reset this session
            return
        self.subscriptions.apply(push)

    # -- Cacheables (the rest is CacheHolder's) ------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def _dead(self) -> str | None:
        return None if self._closed_reason is None else "the connection of this mirror closed"

    def _flush_from_any_thread_locked(self) -> None:
        loop = self._loop
        if (self._ws is not None and self._ws.threadsafe_send) or loop is None or on_loop(loop):
            self._flush_locked()
        else:
            loop.call_soon_threadsafe(self._flush_now)

    def _flush_now(self) -> None:
        with self._guard:
            self._flush_locked()

    # -- frames -------------------------------------------------------------------------

    def _flush_locked(self) -> None:
        ws = self._ws
        if ws is None:
            return
        for frame in self.connection.frames_to_send():
            ws.send(frame)

    def _broken(self, error: RemoteProtocolError) -> None:
        log.error("the server broke the protocol: %s", error)
        self._lost(f"the server broke the protocol: {error}")

    def _lost(self, reason: str) -> None:
        """The connection ended: what waits on it fails with AppOfflineError, and unless
        :meth:`close` ended it, reconnecting starts."""
        if self._reading is not None:
            self._reading.loop_close()
            self._reading = None
        with self._guard:
            was_open = self._closed_reason is None and self._auth is not None and self._auth.done()
            if self._closed_reason is None:
                self._closed_reason = reason
            self.connection.receive_close()
            stopped = self.connection.caches.take_stopped()
            pending, self._pending = self._pending, {}
            if self._closing or not self.reconnect:
                self.subscriptions.clear()
        notify_stopped(stopped)
        self._outbox.fail_all(DeadReferenceError(f"the connection of this mirror closed: {reason}"))
        if self._auth is not None and not self._auth.done():
            self._auth.set_exception(AppOfflineError(reason))
            self._auth.exception()  # retrieved: after a failed connect, nobody awaits it
        self.deadlines.cancel_all()
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    DeadReferenceError(f"the connection of this mirror closed: {reason}")
                    if isinstance(future, RemoteFuture)
                    else AppOfflineError(f"the connection to the server was lost: {reason}")
                )
        if was_open and self.reconnect and not self._closing and self._reconnecting is None:
            log.warning("lost the connection to %s (%s): reconnecting", self.url, reason)
            start_reconnecting(self)


def _ignore(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed unsubscribe of a collected capability is moot
