"""The server's side of one WebSocket: acts on the protocol's events.

Every protocol decision stays in :class:`tether.protocol.Connection`; this class decides
what the server does about them (check the key, run a call, forward it to the peer that
registered the function) and writes frames out in order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import traceback
from collections.abc import Awaitable, Callable

from tether._caches import RemoteFuture, deliver, notify_stopped
from tether._pool import Job, on_loop
from tether.codec.capability import apply_updates, collect_updates
from tether.codec.capability_wire import CapabilitySession, SigningWire
from tether.context import CallContext, CallState, Location
from tether.errors import (
    DeadReferenceError,
    SerializationError,
    SessionExpiredError,
    TetherError,
    UplinkDisconnectedError,
)
from tether.functions import ServerFunction, missing_function
from tether.protocol import (
    SUBPROTOCOL,
    CacheMessage,
    Call,
    Connection,
    Event,
    Failure,
    Frame,
    Hello,
    Register,
    Rejected,
    Response,
    Role,
)
from tether.runtime.builtins import answer_builtin, is_builtin
from tether.runtime.dispatcher import Dispatcher, _report
from tether.runtime.handshake import Handshake
from tether.runtime.sessions import CallSession, SessionSlot
from tether.runtime.updates import hub
from tether.transports.threaded import Handoff, Later

__all__ = ["Peer"]

log = logging.getLogger("tether")

Send = Callable[[Frame], Awaitable[None]]
Write = Callable[[Frame], None]
AnyFuture = asyncio.Future[object] | RemoteFuture
Settle = tuple[AnyFuture, Response | Failure]


class Peer(Handshake):
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
        browser: bool = False,
        slot: SessionSlot | None = None,
        location: Location | None = None,
        origin: str | None = None,
        tasks_only: bool = False,
    ) -> None:
        self.dispatcher = dispatcher
        self.tasks_only = tasks_only
        """On the tasks' private port: the hello must be a task process's."""
        self.browser = browser
        self.origin = origin
        """The app's public origin as this connection reached it (``get_app_origin()``)."""
        self.location = location
        self.slot = slot
        """Which session this connection's calls use (set at the handshake)."""
        # Whom capabilities are signed for: the session's, once the handshake found it.
        self.cap_session = CapabilitySession(os.urandom(16))
        self.wire = SigningWire(dispatcher.signer, self.cap_session)
        self.connection = Connection(
            Role.SERVER,
            registry=dispatcher.registry,
            limits=dispatcher.limits,
            compact=subprotocol == SUBPROTOCOL,
            capabilities=self.wire,
            unjellyables=dispatcher.unjellyables,
        )
        self.connection.caches.enabled = dialect == "tether"
        self._hold(self.connection)
        self._send = send
        self._write = write
        self._lock = asyncio.Lock()
        self._guard = threading.RLock()  # re-entered only to refuse (call_remote in a hook)
        self._start_caches()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.client_ip = client_ip
        self.dialect = dialect
        self.trusted = False
        self.closed = False
        self.close_reason: str | None = None
        self._pending: dict[str, AnyFuture] = {}
        self._originating: dict[str, CallState] = {}
        """Our calls to this peer still running: a call it makes while handling one
        (``originating-call``) runs in that caller's session, for that client."""
        self._resuming: asyncio.Task[None] | None = None
        self._handoff = Handoff(self._guard)
        """What a reading thread handed to the loop, not yet done there."""
        self.context: CallContext | None = None
        self.task_id: str | None = None
        """The background task whose process this is, if it is one."""

    # -- frames -------------------------------------------------------------------------
    #
    # ``_guard`` serializes every use of the Connection and the order of writes: the loop
    # reads, and with ``write`` a worker thread that finished a call answers it itself.
    # Methods ending in ``_locked`` expect it held.

    async def receive(self, frame: Frame) -> None:
        """Handles one frame. Raises RemoteProtocolError when the peer broke the protocol."""
        settle: list[Settle] = []
        observe: list[CacheMessage] = []
        with self._guard:
            self._handle_locked(frame, settle, observe)
        self._after_frame(settle, observe)
        await self.flush()

    def receive_now(self, frame: Frame) -> None:
        """:meth:`receive` for a peer with ``write``: answers without awaiting."""
        settle: list[Settle] = []
        observe: list[CacheMessage] = []
        with self._guard:
            self._handle_locked(frame, settle, observe)
            self._write_locked()
        self._after_frame(settle, observe)

    def _after_frame(self, settle: list[Settle], observe: list[CacheMessage]) -> None:
        """Outside the lock: wake callers, run mirrors' ``observe_*`` methods (in order),
        and make the ``stopped_observing`` calls a DECACHE may have owed."""
        if settle:
            self._settle(settle)
        for message in observe:
            self._observed.run(message)
        self._notify_stopped()

    def receive_in_thread(self, frame: Frame, *, may_run: bool) -> tuple[Job | None, Later | None]:
        """:meth:`receive_now` for a connection's own reading thread (see
        :mod:`tether.transports.threaded`). Returns the call this thread may run itself
        (``may_run``: the frame is its read's last), or what the loop must do, in order:
        act on the frame's events or, while it has not done that yet for an earlier
        frame, receive the frame itself (it may depend on them: a hello, a reply).

        Raises:
            RemoteProtocolError: the peer broke the protocol; close this connection.
        """
        job: Job | None = None
        with self._guard:
            if self._handoff.pending:
                return None, self._handoff.later(self.receive_now, frame)
            connection = self.connection
            connection.receive_frame(frame)
            events = connection.events_received()
            if events:
                call = events[0]
                target = self._runnable_locked(call) if may_run and len(events) == 1 else None
                if target is None:
                    return None, self._handoff.later(self._act_now, events)
                assert type(call) is Call
                job = self._start_call_locked(call, target)
            self._write_locked()  # the protocol's own replies (UNCACHE, a refusal)
        if self.connection.caches.stopped:  # a DECACHE ended an observation
            self._notify_stopped()
        return job, None

    def _act_now(self, events: list[Event]) -> None:
        """Loop: acts on events that the reading thread handed over."""
        settle: list[Settle] = []
        observe: list[CacheMessage] = []
        with self._guard:
            self._act_locked(events, settle, observe)
            self._write_locked()
        self._after_frame(settle, observe)

    def _runnable_locked(self, event: Event) -> ServerFunction | None:
        """The local sync function a reading thread may run ``event`` with, if it is a
        plain call: not Tether's own, not forwarded to a peer, not checking the user."""
        if type(event) is not Call or self.context is None or self.slot is None:
            return None
        if self.close_reason is not None or is_builtin(event.command):
            return None
        target = self.dispatcher.resolve(event.command)
        if type(target) is not ServerFunction or target.is_async:
            return None
        return target if target.require_user is False else None

    def _handle_locked(
        self, frame: Frame, settle: list[Settle], observe: list[CacheMessage]
    ) -> None:
        connection = self.connection
        connection.receive_frame(frame)
        self._act_locked(connection.events_received(), settle, observe)

    def _act_locked(
        self, events: list[Event], settle: list[Settle], observe: list[CacheMessage]
    ) -> None:
        for event in events:
            if self.close_reason is not None:
                break  # refused: nothing after the refusal is acted on
            if type(event) is Call:
                self._start_call_locked(event)
            elif type(event) is Response or type(event) is Failure:
                future = self._pending.pop(event.id, None)
                if future is not None:
                    settle.append((future, event))
            elif type(event) is CacheMessage:
                observe.append(event)
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
        write = self._write
        if write is not None:
            for frame in self.connection.frames_to_send():
                write(frame)
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

    def _start_call_locked(self, call: Call, runnable: ServerFunction | None = None) -> Job | None:
        """Starts a call; with ``runnable`` (from :meth:`_runnable_locked`), returns it
        for this thread to run instead (None when it was refused)."""
        assert self.context is not None
        assert self.slot is not None
        if runnable is None and is_builtin(call.command):
            self._builtin_locked(call)
            return None
        dispatcher = self.dispatcher
        done = functools.partial(self._finish_call, call)
        try:
            try:
                self.slot.check()
            except SessionExpiredError:
                if self.dialect == "tether":
                    raise
                # Anvil's uplink client keeps no token to come back with and cannot reset:
                # its per-connection session simply starts afresh.
                self.slot.reset()
            origin = None
            if self._originating:  # only while we wait on this peer: not on every call
                origin = self._originating.get(str(call.meta.get("originating-call")))
            if origin is not None:  # nested in a call we made: the original caller's
                state = CallState(
                    CallContext(
                        type="server_module",
                        client=origin.context.client,
                        remote_caller=self.context.remote_caller,
                        background_task_id=origin.context.background_task_id,
                    ),
                    dispatcher.caller,
                    cap_session=self.cap_session,
                    session=origin.session,
                    origin=origin.origin,
                )
            else:
                state = CallState(
                    self.context,
                    dispatcher.caller,
                    cap_session=self.cap_session,
                    session=CallSession(self.slot),
                    origin=self.origin,
                )
            target = runnable or dispatcher.require(call.command)
            if isinstance(target, ServerFunction):
                # With ``write``, a worker thread answers the call itself: no hop back.
                return dispatcher.start_local(
                    target,
                    call.args,
                    call.kwargs,
                    state,
                    done,
                    in_thread=self._write is not None,
                    owns_session=True,
                    inline=runnable is not None,
                )
        except Exception as exc:  # expired, no such function, refused (require_user)
            self._reply_error_locked(call, exc)
            return None
        task = asyncio.ensure_future(target.call_peer(call.command, call.args, call.kwargs, state))
        task.add_done_callback(functools.partial(_report, done))
        return None

    def _finish_call(self, call: Call, result: object, error: BaseException | None) -> None:
        """Answers a call: on the loop, or on the worker thread that ran it (with ``write``).

        The updates queued on the capabilities that arrived in the call go back with a
        successful answer (collected before taking the lock: ``get_update`` is user code).
        """
        updates: dict[str, object] | None = None
        if error is None and call.capabilities:
            try:
                updates = collect_updates(call.capabilities)
            except Exception as exc:
                error = exc
        failures: list[tuple[RemoteFuture, BaseException]] | None = None
        with self._guard:
            if self.closed:
                return
            if self._outbox.queue:  # call_remote's queue first: see Outbox
                failures = self._outbox.send_locked()
            if error is None:
                try:
                    self.connection.send_response(call.id, result, updates=updates)
                except SerializationError as exc:
                    error = exc
            if error is not None:
                self._reply_error_locked(call, error)
            else:
                self._schedule_flush_locked()
        if failures:
            deliver(failures)
        if self.connection.caches.stopped:
            self._notify_stopped()

    def _builtin_locked(self, call: Call) -> None:
        """Tether's own requests (see :mod:`tether.runtime.builtins`)."""
        try:
            self.connection.send_response(call.id, answer_builtin(self, call))
        except Exception as exc:  # refused, or an answer that cannot be sent
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
        try:
            with self._guard:
                call_id = self.connection.send_call(name, args, kwargs, meta)
                self._pending[call_id] = future
                self._originating[call_id] = state  # its nested calls run for that caller
        finally:
            self._notify_stopped()
        try:
            await self.flush()
            return await future
        finally:
            with self._guard:
                self._originating.pop(call_id, None)

    def _settle(self, settle: list[Settle]) -> None:
        """Answers from the peer, outside the lock: apply their capability updates (and
        push them live: they happened outside this process), then wake the callers."""
        for future, event in settle:
            if event.capabilities and event.updates:
                try:
                    for cap, update in apply_updates(event.capabilities, event.updates):
                        hub.publish(cap._key, update)
                except Exception:
                    log.exception("applying the updates of a call to %s failed", self.client_ip)
            if future.done():
                continue
            if type(event) is Response:
                future.set_result(event.value)
            else:
                assert type(event) is Failure
                future.set_exception(event.error)

    # -- live pushes --------------------------------------------------------------------

    def push(self, key: str, update: object, shared: dict[bool, Frame]) -> bool:
        """Queues a PUSH of ``update`` for the subscribed scope ``key`` (any thread);
        ``shared`` holds frames encoded once for the whole fan-out. Returns True when the
        loop must still flush it (the WebSocket path; see :meth:`flush_soon`).

        Raises:
            SerializationError: the update cannot be sent.
        """
        try:
            with self._guard:
                if self.closed:
                    return False
                self.connection.send_push(key, update, shared)
                if self._write is not None:
                    self._write_locked()
                    return False
        finally:
            self._notify_stopped()
        return True

    def flush_soon(self) -> None:
        """On the loop: sends what :meth:`push` queued (the WebSocket path)."""
        if not self.closed:
            self._schedule_flush_locked()

    # -- Cacheables (the rest is CacheHolder's) ------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop | None:
        return self.dispatcher.loop

    def _flush_from_any_thread_locked(self) -> None:
        loop = self.dispatcher.loop
        if self._write is not None:
            self._write_locked()
        elif loop is not None and on_loop(loop):
            self._schedule_flush_locked()
        elif loop is not None:
            loop.call_soon_threadsafe(self.flush_soon)

    # -- end ----------------------------------------------------------------------------

    def close(self) -> None:
        """The transport closed: forget this peer's functions, fail what waits on it."""
        with self._guard:
            if self.closed:
                return
            self.closed = True
            self.connection.receive_close()
            stopped = self.connection.caches.take_stopped()
        self.dispatcher.unregister_peer(self)
        hub.drop(self)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    DeadReferenceError("the connection of this mirror closed")
                    if isinstance(future, RemoteFuture)
                    else UplinkDisconnectedError("the client serving this call disconnected")
                )
        self._pending.clear()
        self._outbox.fail_all(DeadReferenceError("the connection of this mirror closed"))
        notify_stopped(stopped)
        if self._writer is not None:
            self._wake.set()


def _trace(error: BaseException) -> list[object]:
    frames = traceback.extract_tb(error.__traceback__)
    return [[frame.filename, frame.lineno] for frame in reversed(frames)]
