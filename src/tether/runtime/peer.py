"""The server's side of one WebSocket: acts on the protocol's events.

Every protocol decision stays in :class:`tether.protocol.Connection`; this class decides
what the server does about them (check the key, run a call, forward it to the peer that
registered the function) and writes frames out in order.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import threading
import traceback
from collections.abc import Awaitable, Callable

from tether.context import CallContext, CallState, ClientInfo, StackFrame
from tether.errors import (
    SerializationError,
    TetherError,
    UplinkDisconnectedError,
)
from tether.functions import ServerFunction, missing_function
from tether.protocol import (
    SUBPROTOCOL,
    Call,
    Connection,
    Failure,
    Frame,
    Hello,
    Register,
    Rejected,
    Response,
    Role,
)
from tether.runtime.dispatcher import Dispatcher, _report

__all__ = ["Peer"]

log = logging.getLogger("tether")

Send = Callable[[Frame], Awaitable[None]]
Write = Callable[[Frame], None]


class Peer:
    """One connected peer (a Python client, an uplink script or a browser).

    Frames go out through ``send`` (a coroutine: the ASGI WebSocket) or ``write`` (a
    plain call that never blocks, from any thread: the TCP stream); give one of them.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        send: Send | None = None,
        *,
        write: Write | None = None,
        client_ip: str | None,
        dialect: str,
        subprotocol: str | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.connection = Connection(
            Role.SERVER,
            registry=dispatcher.registry,
            limits=dispatcher.limits,
            compact=subprotocol == SUBPROTOCOL,
        )
        self._send = send
        self._write = write
        self._lock = asyncio.Lock()
        self._guard = threading.Lock()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.client_ip = client_ip
        self.dialect = dialect
        self.trusted = False
        self.closed = False
        self.close_reason: str | None = None
        self._pending: dict[str, asyncio.Future[object]] = {}
        self.context: CallContext | None = None

    # -- frames -------------------------------------------------------------------------
    #
    # ``_guard`` serializes every use of the Connection and the order of writes: the loop
    # reads, and with ``write`` a worker thread that finished a call answers it itself.
    # Methods ending in ``_locked`` expect it held.

    async def receive(self, frame: Frame) -> None:
        """Handles one frame. Raises RemoteProtocolError when the peer broke the protocol."""
        with self._guard:
            self._handle_locked(frame)
        await self.flush()

    def receive_now(self, frame: Frame) -> None:
        """:meth:`receive` for a peer with ``write``: answers without awaiting."""
        with self._guard:
            self._handle_locked(frame)
            self._write_locked()

    def _handle_locked(self, frame: Frame) -> None:
        connection = self.connection
        connection.receive_frame(frame)
        for event in connection.events_received():
            if self.close_reason is not None:
                break  # refused: nothing after the refusal is acted on
            if type(event) is Call:
                self._start_call_locked(event)
            elif type(event) is Response:
                self._resolve_locked(event.id, event.value, None)
            elif type(event) is Failure:
                self._resolve_locked(event.id, None, event.error)
            elif type(event) is Hello:
                self._hello_locked(event)
            elif type(event) is Register:
                self._register_locked(event)
            elif type(event) is Rejected:
                log.info("call to %r refused: %s", event.command, event.error)

    async def flush(self) -> None:
        """Sends what the connection has queued (on the loop)."""
        with self._guard:
            if self._write is not None:
                self._write_locked()
                return
            frames = self.connection.frames_to_send()
        if frames:
            assert self._send is not None
            async with self._lock:
                for frame in frames:
                    await self._send(frame)

    def _write_locked(self) -> None:
        if self._write is not None:
            for frame in self.connection.frames_to_send():
                self._write(frame)

    def _schedule_flush_locked(self) -> None:
        if self._write is not None:
            self._write_locked()
            return
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        self._wake.set()

    async def _write_forever(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the connection is going away; the reader will notice
                log.debug("write failed", exc_info=True)
                return

    # -- handshake ----------------------------------------------------------------------

    def _hello_locked(self, hello: Hello) -> None:
        options = self.dispatcher.options
        key = hello.key or None
        if options.uplink_key is not None and key is not None and _same(key, options.uplink_key):
            self.trusted = True
        elif key is not None and not (options.client_key and _same(key, options.client_key)):
            self.connection.reject("Incorrect uplink key")
            self.close_reason = "incorrect key"
            return
        client_type = "uplink"
        self.context = CallContext(
            type="uplink" if self.trusted else "client",
            client=ClientInfo(client_type, self.client_ip),
            remote_caller=StackFrame("uplink" if self.trusted else "client_uplink", self.trusted),
        )
        extra: dict[str, object] = {}
        if self.dialect == "tether":
            limits = self.dispatcher.limits
            extra["limits"] = {
                "max_frame_bytes": limits.max_frame_bytes,
                "max_depth": limits.max_depth,
                "max_objects": limits.max_objects,
            }
        info: dict[str, object] = {
            "id": options.app_id,
            "branch": "master",
            "environment": {"description": "Tether", "tags": []},
        }
        self.connection.accept("uplink" if self.trusted else "client", info, **extra)

    def _register_locked(self, event: Register) -> None:
        if not self.trusted:
            self.connection.reject(
                "Cannot register server functions from an untrusted client"
                " (connect with the uplink key)"
            )
            self.close_reason = "untrusted register"
            return
        log.info("peer registered %r", event.name)
        self.dispatcher.register_peer_function(event.name, self)

    # -- calls from the peer ------------------------------------------------------------

    def _start_call_locked(self, call: Call) -> None:
        assert self.context is not None
        state = CallState(self.context, self.dispatcher.caller)
        dispatcher = self.dispatcher
        done = functools.partial(self._finish_call, call)
        try:
            target = dispatcher.require(call.command)
            if isinstance(target, ServerFunction):
                # With ``write``, a worker thread answers the call itself: no hop back.
                dispatcher.start_local(
                    target, call.args, call.kwargs, state, done, in_thread=self._write is not None
                )
                return
        except Exception as exc:  # no such function, or refused before it ran (require_user)
            self._reply_error_locked(call, exc)
            return
        task = asyncio.ensure_future(target.call_peer(call.command, call.args, call.kwargs, state))
        task.add_done_callback(functools.partial(_report, done))

    def _finish_call(self, call: Call, result: object, error: BaseException | None) -> None:
        """Answers a call: on the loop, or on the worker thread that ran it (with ``write``)."""
        with self._guard:
            if self.closed:
                return
            if error is not None:
                self._reply_error_locked(call, error)
                return
            try:
                self.connection.send_response(call.id, result)
            except SerializationError as exc:
                self._reply_error_locked(call, exc)
                return
            self._schedule_flush_locked()

    def _reply_error_locked(self, call: Call, error: BaseException) -> None:
        if isinstance(error, TetherError) or type(error) in self.dispatcher.registry.by_class:
            log.info("call to %r raised %s: %s", call.command, type(error).__name__, error)
        else:
            log.error("call to %r failed", call.command, exc_info=error)
        trace = _trace(error) if self.dispatcher.options.dev else None
        self.connection.send_error(call.id, error, trace=trace)
        self._schedule_flush_locked()

    # -- calls to the peer --------------------------------------------------------------

    async def call_peer(
        self, name: str, args: list[object], kwargs: dict[str, object], state: CallState
    ) -> object:
        """Runs ``name`` on this peer (it registered it) and waits for the answer."""
        if self.closed:
            raise missing_function(name)
        context = state.context
        caller = context.remote_caller
        meta: dict[str, object] = {
            "call-stack": [{"type": caller.type if caller else context.type}],
            "client": {"type": context.client.type, "ip": context.client.ip},
        }
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        with self._guard:
            call_id = self.connection.send_call(name, args, kwargs, meta)
            self._pending[call_id] = future
        await self.flush()
        return await future

    def _resolve_locked(self, call_id: str, value: object, error: BaseException | None) -> None:
        future = self._pending.pop(call_id, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    # -- end ----------------------------------------------------------------------------

    def close(self) -> None:
        """The transport closed: forget this peer's functions, fail what waits on it."""
        with self._guard:
            if self.closed:
                return
            self.closed = True
            self.connection.receive_close()
        self.dispatcher.unregister_peer(self)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    UplinkDisconnectedError("the client serving this call disconnected")
                )
        self._pending.clear()
        if self._writer is not None:
            self._wake.set()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _trace(error: BaseException) -> list[object]:
    frames = traceback.extract_tb(error.__traceback__)
    return [[frame.filename, frame.lineno] for frame in reversed(frames)]
