"""The client's reading half: frames from the server, on the loop or in a reading caller.

:class:`Receiving` turns the protocol's events into what the client does: answers go to
the calls waiting for them, pushes to update handlers, the server's calls to this
process's functions, ``observe_*`` messages to mirrors, the auth reply to ``connect``.
A caller reading the connection (see :mod:`tether.client.leader`) settles blocked
callers' plain answers itself and hands everything else to the loop, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether._caches import CacheHolder
from tether.client.deadlines import Deadlines
from tether.client.waiter import AnyFuture, Waiter
from tether.codec.capability import apply_updates
from tether.context import ClientInfo, Perspective
from tether.errors import PermissionDenied, RemoteProtocolError
from tether.protocol import (
    Authenticated,
    AuthFailed,
    CacheMessage,
    Call,
    Event,
    Failure,
    Frame,
    Push,
    Rejected,
    Response,
    session_id,
)
from tether.transports.threaded import Handoff

if TYPE_CHECKING:
    from tether.client.local import LocalCalls
    from tether.transports.tcp import FramedStream
    from tether.transports.websocket import WebSocket

__all__ = ["Receiving"]

log = logging.getLogger("tether.client")


class Receiving(CacheHolder):
    """Frames in, for :class:`~tether.client.AsyncClient` (which sets everything
    declared here)."""

    _handoff: Handoff
    _loop: asyncio.AbstractEventLoop | None
    _ws: WebSocket | FramedStream | None
    _auth: asyncio.Future[None] | None
    _closed_reason: str | None
    deadlines: Deadlines
    local: LocalCalls
    trusted: bool
    session_token: str | None
    _flush_locked: Callable[[], None]
    _apply_push: Callable[[Push], None]
    _broken: Callable[[RemoteProtocolError], None]
    _adopt_server_limits: Callable[[object], None]

    def _receive(self, frame: Frame) -> None:
        """Called by the transport for each message, on the loop."""
        self._act(frame, None)

    def receive_in_thread(self, frame: Frame) -> Callable[[], None] | None:
        """A frame read by a caller (see :mod:`tether.client.leader`): answers to blocked
        callers are given here; anything else is returned for the loop to do, in order.

        Raises:
            RemoteProtocolError: the server broke the protocol.
        """
        answers: list[tuple[Waiter, Response | Failure]] = []
        with self._guard:
            if self._handoff.pending:
                return self._handoff.later(self._act, frame, None)
            self.connection.receive_frame(frame)
            events = self.connection.events_received()
            for event in events:
                if type(event) is Response or type(event) is Failure:
                    future = self._pending.get(event.id)
                    if type(future) is Waiter and not (event.updates and event.capabilities):
                        answers.append((future, event))
                        continue
                return self._handoff.later(self._act, None, events)
            for _, answer in answers:
                del self._pending[answer.id]
            self._flush_locked()  # the protocol's own replies
        if self.connection.caches.stopped:
            self._notify_stopped()
        for waiter, answer in answers:
            if self.deadlines.armed:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self.deadlines.answered, answer.id)
            if isinstance(answer, Response):
                waiter.set_result(answer.value)
            else:
                waiter.set_exception(answer.error)
        return None

    def _act(self, frame: Frame | None, events: list[Event] | None) -> None:
        """Loop: receives ``frame`` (or acts on ``events`` already received)."""
        answers: list[tuple[AnyFuture, Response | Failure]] = []
        pushes: list[Push] = []
        observe: list[CacheMessage] = []
        with self._guard:
            try:
                if frame is not None:
                    self.connection.receive_frame(frame)
                    events = self.connection.events_received()
            except RemoteProtocolError as exc:
                broken: RemoteProtocolError | None = exc
            else:
                broken = None
                assert events is not None
                self._handle_events_locked(events, answers, pushes, observe)
                self._flush_locked()
        for push in pushes:
            self._apply_push(push)
        for message in observe:  # in order, before anything later on this connection
            self._observed.run(message)
        self._notify_stopped()
        # Settled without the lock: a concurrent future runs its callbacks right here.
        for future, answer in answers:
            self.deadlines.answered(answer.id)
            if answer.updates and answer.capabilities:
                # Before the caller wakes: it sees its objects already updated.
                try:
                    apply_updates(answer.capabilities, answer.updates)
                except Exception:
                    log.exception("an update handler raised (the call's result is unaffected)")
            if future.done():
                continue
            if isinstance(answer, Response):
                future.set_result(answer.value)
            else:
                future.set_exception(answer.error)
        if broken is not None:
            self._broken(broken)
            if self._ws is not None:
                asyncio.get_running_loop().create_task(self._ws.close(1002, str(broken)[:120]))

    def _handle_events_locked(
        self,
        events: list[Event],
        answers: list[tuple[AnyFuture, Response | Failure]],
        pushes: list[Push],
        observe: list[CacheMessage],
    ) -> None:
        for event in events:
            if type(event) is Response or type(event) is Failure:
                future = self._pending.pop(event.id, None)
                if future is not None:
                    answers.append((future, event))
            elif type(event) is Push:
                pushes.append(event)
            elif type(event) is CacheMessage:
                observe.append(event)
            elif type(event) is Call:
                self.local.start_locked(event)
            elif type(event) is Authenticated:
                self._closed_reason = None  # connected: calls may go now
                self.trusted = event.priv == "uplink"
                self._adopt_server_limits(event.extra.get("limits"))
                token = event.extra.get("session")
                if type(token) is str:
                    self.session_token = token
                known = self.session_token
                self.connection.caches.perspective = Perspective(
                    ClientInfo("server"), True, None if known is None else session_id(known)
                )
                if self._auth is not None and not self._auth.done():
                    self._auth.set_result(None)
            elif type(event) is AuthFailed:
                error = PermissionDenied(f"the server refused this connection: {event.message}")
                if self._auth is not None and not self._auth.done():
                    self._auth.set_exception(error)
                else:
                    log.error("the server ended this connection: %s", event.message)
            elif type(event) is Rejected:
                log.warning("server call to %r refused: %s", event.command, event.error)
