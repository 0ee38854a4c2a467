"""Sessions: which session each connection uses, ``server.session``, expiry, reset.

A session is opened by a token: the browser's cookie, or the token a Python client got
in its auth reply and presents again when it reconnects. Its public id
(``get_session_id()``) is a hash of the token, so showing it gives nothing away.

Values are kept encoded, one per key, so a call saves only the keys it changed: two
concurrent calls that change different keys both persist. For one key, the call that
finishes last wins (its value is the one stored, and the one later calls read).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import orjson

from tether._pool import on_loop
from tether.codec import Limits, PortableRegistry, decode_values, encode_values
from tether.codec.capability_wire import CapabilitySession, Signer, SigningWire
from tether.errors import SerializationError, SessionExpiredError
from tether.protocol import session_id
from tether.runtime.stores import SessionRecord, Store

__all__ = [
    "COOKIE",
    "DEFAULT_TIMEOUT",
    "CallSession",
    "LiveSession",
    "SessionManager",
    "SessionSlot",
    "SessionView",
    "cookie_token",
]

log = logging.getLogger("tether")

COOKIE = "tether-session"
"""The browser's session cookie."""
SAVE_TIMEOUT = 60.0
"""Seconds a sync function's thread waits for its session to be saved (a stopped server
never answers)."""
MAX_UNUSED = 10_000
"""Fresh sessions held in memory before their first call (each a few hundred bytes)."""
DEFAULT_TIMEOUT = 30 * 60.0
"""Seconds a session may stay unused before it expires."""
MAX_TOUCH_INTERVAL = 60.0
"""At most this often (and at most every quarter of the timeout) a busy session's last
use is written to the store; its last use in memory is always exact."""


class LiveSession:
    """One session as this process holds it (shared by its connections and calls)."""

    __slots__ = ("__weakref__", "cap", "data", "expired", "id", "last_seen", "lock", "stored_seen")

    def __init__(self, sid: str, record: SessionRecord) -> None:
        self.id = sid
        self.data = record.data
        self.last_seen = record.last_seen
        self.stored_seen = record.last_seen
        self.cap = CapabilitySession(bytes.fromhex(sid), record.generation)
        self.expired = False
        self.lock = threading.Lock()


class SessionSlot:
    """Which session one connection's calls use; ``reset`` puts a fresh one in.

    ``session`` is None while the connection's session has expired (or was unknown):
    calls then raise SessionExpiredError until the client resets it.
    ``on_reset`` tells the client the new token (a Python client keeps it to reconnect).
    """

    __slots__ = ("manager", "on_reset", "session", "token")

    def __init__(self, manager: SessionManager, session: LiveSession | None, token: str) -> None:
        self.manager = manager
        self.session = session
        self.token = token
        self.on_reset: Callable[[str], None] | None = None

    def check(self) -> LiveSession:
        """The session for a call starting now (marked used).

        Raises:
            SessionExpiredError: it expired, or the server does not know it.
        """
        session = self.session
        manager = self.manager
        now = time.time()
        if session is None or session.expired or now - session.last_seen > manager.timeout:
            if session is not None:
                manager.expire(session)
                self.session = None
            raise SessionExpiredError(
                "your session has expired: call server.reset_session() to start a new one"
            )
        session.last_seen = now
        if now - session.stored_seen > manager.touch_interval:
            store = manager.store
            if session.stored_seen == 0.0:  # first use: store it
                manager.used(session)
                work = store.create_session(session.id, now)
            else:
                work = store.touch_session(session.id, now)
            session.stored_seen = now
            manager.background(work)
        return session

    def reset(self) -> LiveSession:
        """Starts a fresh, empty session for this connection (the old one is deleted)."""
        old = self.session
        if old is not None:
            self.manager.expire(old)
        self.token, self.session = self.manager.new()
        if self.on_reset is not None:
            self.on_reset(self.token)
        return self.session


class SessionManager:
    """A server's sessions: creates, resumes, expires and saves them through its store."""

    def __init__(
        self,
        store: Store,
        registry: PortableRegistry,
        limits: Limits,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the session timeout must be positive")
        self.store = store
        self.registry = registry
        self.limits = limits
        self.timeout = timeout
        self.touch_interval = min(MAX_TOUCH_INTERVAL, timeout / 4)
        # The store's last use lags by up to touch_interval: judge it with that margin, so
        # a session in use is never purged (in memory, expiry is exact).
        self.stored_timeout = timeout + self.touch_interval
        self._active = 0  # calls that will save a session
        self._count_lock = threading.Lock()
        self._live: weakref.WeakValueDictionary[str, LiveSession] = weakref.WeakValueDictionary()
        self._unused: collections.OrderedDict[str, LiveSession] = collections.OrderedDict()
        self._wire: SigningWire | None = None
        self._tasks: set[asyncio.Future[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._purger: asyncio.Task[None] | None = None

    # -- lifetime -----------------------------------------------------------------------

    async def open(self, signer: Signer) -> None:
        """Starts on the running loop; ``signer`` signs the capabilities kept in sessions
        (as for a trusted peer: they verify whoever's session they are read in)."""
        self._loop = asyncio.get_running_loop()
        self._wire = SigningWire(signer, CapabilitySession(None))
        self._purger = self._loop.create_task(self._purge_forever())

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            self._purger = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _purge_forever(self) -> None:
        while True:
            try:
                count = await self.store.purge_sessions(time.time() - self.stored_timeout)
                if count:
                    log.info("purged %d expired sessions", count)
            except Exception:
                log.exception("purging expired sessions failed")
            await asyncio.sleep(min(self.timeout, 300.0))

    def background(self, work: Any) -> None:
        """Runs a store coroutine soon, from any thread; failures are logged."""
        loop = self._loop
        if loop is None:
            work.close()
            return
        if on_loop(loop):
            self._track(asyncio.ensure_future(work))
        else:
            loop.call_soon_threadsafe(lambda: self._track(asyncio.ensure_future(work)))

    def _track(self, future: asyncio.Future[object]) -> None:
        self._tasks.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: asyncio.Future[object]) -> None:
        self._tasks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("a session store write failed", exc_info=future.exception())

    # -- sessions -----------------------------------------------------------------------

    def new(self, *, held: bool = True) -> tuple[str, LiveSession]:
        """A fresh session, usable at once; the store gets it at its first call or save
        (a crawler's cookie-less requests write nothing). Returns its token.

        With ``held=False`` this manager does not know it until :meth:`adopt` (an HTTP
        endpoint's session, kept only if the endpoint writes to it)."""
        token = secrets.token_urlsafe(32)
        sid = session_id(token)
        session = LiveSession(sid, SessionRecord(time.time()))
        session.stored_seen = 0.0  # written to the store by its first use, not before
        if held:
            self.adopt(session)
        return token, session

    def adopt(self, session: LiveSession) -> None:
        """Holds a session made with ``new(held=False)``, as :meth:`new` does."""
        sid = session.id
        self._live[sid] = session
        # Held here until first used (a page's cookie, before its WebSocket opens); past
        # MAX_UNUSED the oldest go: an unused session holds nothing, and its cookie then
        # simply gets a new one.
        self._unused[sid] = session
        if len(self._unused) > MAX_UNUSED:
            self._unused.popitem(last=False)

    def used(self, session: LiveSession) -> None:
        """Its first call: the store has it from now on (see :meth:`new`)."""
        self._unused.pop(session.id, None)

    def slot(self, token: str | None = None) -> SessionSlot | None:
        """A slot for a new connection, when it can be had without the store: a fresh
        session (no token) or one this process holds. None: use :meth:`resume`."""
        if token is None:
            new_token, session = self.new()
            return SessionSlot(self, session, new_token)
        live = self._live.get(session_id(token))
        if live is None or (self.store.shared and not live.expired):
            return None
        return SessionSlot(self, None if live.expired else live, token)

    async def resume(self, token: str) -> SessionSlot:
        """The slot for a token a client presented: its session, or an expired slot when
        the session is unknown or idle for too long."""
        sid = session_id(token)
        record = await self.store.load_session(sid)
        if record is None:
            return SessionSlot(self, None, token)
        if time.time() - record.last_seen > self.stored_timeout:
            await self.store.delete_session(sid)
            return SessionSlot(self, None, token)
        live = self._live.get(sid)
        if live is None:
            live = self._live[sid] = LiveSession(sid, record)
        elif self.store.shared:
            with live.lock:
                live.data = record.data
        return SessionSlot(self, live, token)

    def expire(self, session: LiveSession) -> None:
        """Ends a session: every connection on it sees SessionExpiredError."""
        if session.expired:
            return
        session.expired = True
        self._live.pop(session.id, None)
        self._unused.pop(session.id, None)
        self.background(self.store.delete_session(session.id))

    def invalidated(self, session: CapabilitySession) -> None:
        """``invalidate_client_objects()`` moved a session to a new generation: keep it."""
        if session.id is not None:
            self.background(self.store.set_generation(session.id.hex(), session.generation))

    # -- values -------------------------------------------------------------------------

    def encode(self, key: str, value: object) -> bytes:
        """One session value, as stored.

        Raises:
            SerializationError: the value cannot be kept (Media, or anything a server
                function could not return).
        """
        wire = self._wire
        assert wire is not None, "sessions not open"
        try:
            encoded = encode_values(
                {"v": value}, self.registry, self.limits, functools.partial(wire.encode, [])
            )
        except SerializationError as exc:
            raise SerializationError(f"cannot store {key!r} in server.session: {exc}") from None
        if encoded.media:
            raise SerializationError(
                f"cannot store Media in server.session (at {key!r}): keep it in a"
                " database or a file and store a reference"
            )
        document = {"v": encoded.values["v"], "objects": encoded.objects}
        if encoded.vt_global is not None:
            document["vt_global"] = encoded.vt_global
        return orjson.dumps(document)

    def decode(self, data: bytes) -> object:
        wire = self._wire
        assert wire is not None, "sessions not open"
        document = orjson.loads(data)
        decode_values(
            document,
            ("v",),
            self.registry,
            self.limits,
            None,
            {"Capability": functools.partial(wire.decode, [])},
        )
        return document["v"]

    def call_started(self) -> None:
        """A call that will save a session began (any thread; see :meth:`drain`)."""
        with self._count_lock:
            self._active += 1

    def call_ended(self) -> None:
        with self._count_lock:
            self._active -= 1

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """At shutdown: waits (at most ``timeout`` seconds) for calls still running to end
        and save their sessions, so a restart loses no change they made."""
        if not self._active:
            return
        log.info("waiting up to %g s for %d calls to finish", timeout, self._active)
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline:  # noqa: ASYNC110 - shutdown only
            await asyncio.sleep(0.02)
        if self._active:
            log.warning(
                "%d calls still running at shutdown: their session changes are lost",
                self._active,
            )

    async def save(self, session: LiveSession, view: SessionView) -> None:
        """Saves what one call changed (it has finished using ``view``)."""
        changed, deleted = view.changes()
        if not changed and not deleted:
            return
        now = time.time()
        with session.lock:
            data = dict(session.data)
            data.update(changed)
            for key in deleted:
                data.pop(key, None)
            session.data = data  # copy on write: views keep the snapshot they began with
        if not session.expired:
            await self.store.save_session(session.id, changed, deleted, now)
            session.stored_seen = max(session.stored_seen, now)

    def save_blocking(self, session: LiveSession, view: SessionView) -> None:
        """:meth:`save` from a worker thread (a sync server function)."""
        loop = self._loop
        assert loop is not None
        work = self.save(session, view)
        try:
            future = asyncio.run_coroutine_threadsafe(work, loop)
        except RuntimeError:  # the loop closed: the server stopped
            work.close()
            raise RuntimeError("the server stopped: this call's session changes are lost") from None
        future.result(SAVE_TIMEOUT)


class SessionView(MutableMapping[str, object]):
    """``server.session`` in one call: the session as the call began, with its own
    changes. Values are decoded on first use, so reading them costs only when asked."""

    def __init__(self, manager: SessionManager, session: LiveSession) -> None:
        self._manager = manager
        self._stored = session.data  # not copied: the session replaces it on save
        self._values: dict[str, object] = {}  # read or set by this call
        self._set: set[str] = set()  # assigned by this call: always written
        self._deleted: set[str] = set()

    def __getitem__(self, key: str) -> object:
        if key in self._values:
            return self._values[key]
        if key in self._deleted or key not in self._stored:
            raise KeyError(key)
        value = self._values[key] = self._manager.decode(self._stored[key])
        return value

    def __setitem__(self, key: str, value: object) -> None:
        if type(key) is not str:
            raise TypeError(f"server.session keys are strings, not {type(key).__name__}")
        self._manager.encode(key, value)  # refuses what cannot be kept, at once
        self._values[key] = value
        self._set.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._values.pop(key, None)
        self._set.discard(key)
        self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._values or (key in self._stored and key not in self._deleted)

    def __iter__(self) -> Iterator[str]:
        yield from self._values
        for key in self._stored:
            if key not in self._values and key not in self._deleted:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<server.session with keys {sorted(self)!r}>"

    def changes(self) -> tuple[dict[str, bytes], set[str]]:
        """The keys this call assigned (always written, even to the value it began with:
        the call that finishes last wins) or changed in place (encoded again now and
        compared with what it read), and those it deleted (each delete is written)."""
        changed: dict[str, bytes] = {}
        for key, value in self._values.items():
            data = self._manager.encode(key, value)
            if key in self._set or self._stored.get(key) != data:
                changed[key] = data
        return changed, set(self._deleted)


class CallSession:
    """The session of one call tree: a call from a connection and its nested calls share
    it, and the call that made it saves it when it ends."""

    __slots__ = ("_view", "slot")

    def __init__(self, slot: SessionSlot) -> None:
        self.slot = slot
        self._view: tuple[LiveSession, SessionView] | None = None

    @property
    def id(self) -> str:
        session = self.slot.session
        if session is None:
            raise SessionExpiredError("this session has expired")
        return session.id

    def view(self) -> SessionView:
        """``server.session`` (made on first use)."""
        session = self.slot.session
        if session is None:
            raise SessionExpiredError("this session has expired")
        current = self._view
        if current is None or current[0] is not session:
            current = self._view = (session, SessionView(self.slot.manager, session))
        return current[1]

    def reset(self) -> None:
        """``server.reset_session()``: this call and the connection move to a fresh session."""
        self.slot.reset()
        self._view = None

    def changed(self) -> bool:
        """Whether this call assigned, changed or deleted anything in the session."""
        if self._view is None:
            return False
        changed, deleted = self._view[1].changes()
        return bool(changed or deleted)

    def save_blocking(self) -> None:
        if self._view is not None:
            self.slot.manager.save_blocking(*self._view)

    async def save(self) -> None:
        if self._view is not None:
            await self.slot.manager.save(*self._view)


def cookie_token(headers: Mapping[bytes, bytes]) -> str | None:
    """The session token of a request's ``tether-session`` cookie, if it carries exactly
    one: a second one (set by a sibling subdomain to fix a session on this app) voids both."""
    raw = headers.get(b"cookie")
    if not raw:
        return None
    found = [
        value
        for key, sep, value in (p.strip().partition("=") for p in raw.decode("latin-1").split(";"))
        if sep and key == COOKIE and value
    ]
    return found[0] if len(found) == 1 else None
