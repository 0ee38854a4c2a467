"""The server's side of a connection's handshake: the key and the session.

:class:`Handshake` answers a peer's hello (trusted with the uplink key, an untrusted
client with the client key or none; a background task's process only on its private
port), finds or resumes its session, and follows it when server code resets it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable

from tether._caches import CacheHolder
from tether._pool import on_loop
from tether.codec.capability_wire import CapabilitySession, SigningWire
from tether.context import CallContext, ClientInfo, Location, Perspective, StackFrame
from tether.protocol import SESSION_PUSH, Hello
from tether.runtime.dispatcher import Dispatcher
from tether.runtime.sessions import SessionSlot

__all__ = ["MAX_TOKEN", "Handshake"]

log = logging.getLogger("tether")

MAX_TOKEN = 256
"""Longest session token read from a hello (Tether's are 43 characters)."""


class Handshake(CacheHolder):
    """The handshake of :class:`~tether.runtime.peer.Peer` (which sets everything
    declared here)."""

    dispatcher: Dispatcher
    tasks_only: bool
    browser: bool
    dialect: str
    client_ip: str | None
    location: Location | None
    slot: SessionSlot | None
    trusted: bool
    task_id: str | None
    context: CallContext | None
    close_reason: str | None
    closed: bool
    cap_session: CapabilitySession
    wire: SigningWire
    _resuming: asyncio.Task[None] | None
    _schedule_flush_locked: Callable[[], None]
    push: Callable[[str, object, dict[bool, str | bytes]], bool]
    flush_soon: Callable[[], None]

    def _hello_locked(self, hello: Hello) -> None:
        options = self.dispatcher.options
        key = hello.key or None
        task_id = hello.extra.get("task")
        if self.tasks_only or task_id is not None:
            # a background task's own process: only on the private port, with its key
            if not (self.tasks_only and key and self.dispatcher.tasks.accepts(task_id, key)):
                self.connection.reject("Incorrect uplink key")
                self.close_reason = "not a running task's process"
                return
            self.trusted, self.task_id = True, str(task_id)
        elif options.uplink_key is not None and key is not None and _same(key, options.uplink_key):
            self.trusted = True
        elif key is not None and not (options.client_key and _same(key, options.client_key)):
            self.connection.reject("Incorrect uplink key")
            self.close_reason = "incorrect key"
            return
        if self.trusted:  # trusted peers sign and mint as server code does: no session
            self.cap_session = self.wire.session = CapabilitySession(None)
            self.wire.trusted = True
        peer_limits = hello.extra.get("limits")
        if type(peer_limits) is dict:  # a Tether client says how many mirrors it keeps
            mirrors = peer_limits.get("max_cacheables")
            if type(mirrors) is int and mirrors > 0:
                self.connection.caches.peer_limit = mirrors
        caller = "browser" if self.browser else "uplink" if self.trusted else "client_uplink"
        client = "browser" if self.browser else "uplink"
        if self.task_id is not None:
            caller = client = "background_task"
        self.context = CallContext(
            type="server_module",
            client=ClientInfo(client, self.client_ip, self.location),
            remote_caller=StackFrame(caller, self.trusted),
            background_task_id=self.task_id,
        )
        if self.slot is not None:  # a browser: the cookie chose it
            self._accept_locked(self.slot)
            return
        token = hello.extra.get("session") if self.dialect == "tether" else None
        if not (type(token) is str and 0 < len(token) <= MAX_TOKEN):
            token = None
        sessions = self.dispatcher.sessions
        slot = sessions.slot(token)
        if slot is not None:
            self._accept_locked(slot)
            return
        assert token is not None
        task = asyncio.get_running_loop().create_task(self._resume(token))
        self._resuming = task  # held until done

    async def _resume(self, token: str) -> None:
        """The client presented a session token this process does not hold: ask the store."""
        sessions = self.dispatcher.sessions
        try:
            slot = await sessions.resume(token)
        except Exception:
            log.exception(
                "could not read session from %s: it counts as expired", sessions.store.url
            )
            slot = SessionSlot(sessions, None, token)
        with self._guard:
            if self.closed:
                return
            self._accept_locked(slot)
            self._schedule_flush_locked()

    def _accept_locked(self, slot: SessionSlot) -> None:
        """The key was right and the session is known: answer the hello."""
        self.slot = slot
        slot.on_reset = self._session_reset
        self._bind_session(slot)
        assert self.context is not None
        self.connection.caches.perspective = Perspective(
            self.context.client,
            self.trusted,
            slot.session.id if slot.session is not None else None,
        )
        options = self.dispatcher.options
        extra: dict[str, object] = {}
        if self.dialect == "tether":
            limits = self.dispatcher.limits
            extra["limits"] = {
                "max_frame_bytes": limits.max_frame_bytes,
                "max_depth": limits.max_depth,
                "max_objects": limits.max_objects,
                "max_cacheables": limits.max_cacheables,
            }
            if not self.browser:  # a browser's token stays in its HttpOnly cookie
                extra["session"] = slot.token
        info: dict[str, object] = {
            "id": options.app_id,
            "branch": "master",
            # anvil-uplink reads the environment's name from its "description"
            "environment": {"description": options.environment, "tags": []},
        }
        self.connection.accept("uplink" if self.trusted else "client", info, **extra)

    def _bind_session(self, slot: SessionSlot) -> None:
        """Capabilities from an untrusted peer are signed for its session."""
        if not self.trusted and slot.session is not None:
            self.cap_session = self.wire.session = slot.session.cap

    def _session_reset(self, token: str) -> None:
        """Server code called ``reset_session()`` (any thread): sign for the new session,
        and give a Python client its new token (ahead of the call's answer)."""
        assert self.slot is not None
        self._bind_session(self.slot)
        if self.dialect != "tether" or self.browser:
            return
        if self.push(SESSION_PUSH, token, {}):
            loop = self.dispatcher.loop
            if loop is not None:
                if on_loop(loop):
                    self.flush_soon()
                else:
                    loop.call_soon_threadsafe(self.flush_soon)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
