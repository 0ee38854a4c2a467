"""Cacheables between the protocol and whoever holds a connection.

The server's ``Peer`` and the client's ``AsyncClient`` both own Cacheables and mirror
them; this is what they share: the future ``observer.call_remote`` returns, running an
``observe_*`` method on the loop, and the ``stopped_observing`` calls owed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

from tether._pool import on_loop
from tether.errors import DeadReferenceError, SerializationError
from tether.protocol import CacheMessage, Connection, State
from tether.protocol.caches import Observer, Stopped

__all__ = [
    "CacheHolder",
    "CacheMessages",
    "Outbox",
    "RemoteFuture",
    "answer_locked",
    "deliver",
    "notify_stopped",
]

log = logging.getLogger("tether")

Answer = Callable[[str, object, BaseException | None], None]


class RemoteFuture(concurrent.futures.Future[Any]):
    """What ``observer.call_remote`` returns: the outcome of the ``observe_*`` method on
    the far side. Wait with ``.result(timeout)`` on any thread but the loop's, or
    ``await`` it in a coroutine; a failure (``DeadReferenceError`` among them) is
    delivered here, never raised where ``call_remote`` was called."""

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()


class CacheMessages:
    """Runs the ``observe_*`` methods of one connection's mirrors on its loop, strictly in
    the order their messages arrived: an ``async def`` one is awaited before the next
    message runs (and before its own answer is sent)."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._queue: collections.deque[CacheMessage] = collections.deque()
        self._waiting = False  # an async observe_* method is running

    def run(self, message: CacheMessage) -> None:
        self._queue.append(message)
        if not self._waiting:
            self._drain()

    def _drain(self) -> None:
        queue, answer = self._queue, self._answer
        while queue:
            message = queue.popleft()
            try:
                result = message.method(message.target, *message.args, **message.kwargs)
            except Exception as exc:
                log.info("%s raised %s: %s", _name(message), type(exc).__name__, exc)
                answer(message.id, None, exc)
                continue
            if not inspect.isawaitable(result):
                answer(message.id, result, None)
                continue
            self._waiting = True
            task = asyncio.ensure_future(result)
            task.add_done_callback(functools.partial(self._awaited, message))
            return

    def _awaited(self, message: CacheMessage, task: asyncio.Future[object]) -> None:
        self._waiting = False
        error = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if error is not None:
            log.info("%s raised %s: %s", _name(message), type(error).__name__, error)
        self._answer(message.id, None if error else task.result(), error)
        self._drain()


Queued = tuple[Observer, str, tuple[object, ...], dict[str, object], RemoteFuture]


class CacheHolder:
    """What the server's ``Peer`` and the client's ``AsyncClient`` share as holders of
    one connection's Cacheables: observers send through :meth:`observe`; the mirrors'
    ``observe_*`` methods run in order on the loop and are answered on the connection
    they came from; releases and ``stopped_observing`` notices go out from the loop.

    A subclass has ``_guard``, ``connection`` and ``_pending``, says how to flush from
    any thread and which loop it runs on, calls :meth:`_start_caches` once and
    :meth:`_hold` for each new connection.
    """

    _guard: threading.RLock
    connection: Connection
    _pending: dict[str, Any]
    _flush_from_any_thread_locked: Callable[[], None]
    """Sends what the connection queued, from any thread, under the lock."""
    _event_loop: Callable[[], asyncio.AbstractEventLoop | None]
    """The loop this holder runs on (None when it is not running)."""

    def _dead(self) -> str | None:
        """Why nothing can be sent now, or None (a closed connection refuses by itself)."""
        return None

    def _start_caches(self) -> None:
        self._outbox = Outbox(self)

    def _hold(self, connection: Connection) -> None:
        """Wires a new connection's Cacheable tables to this holder."""
        connection.caches.link = self
        connection.caches.on_release = functools.partial(self._mirror_released, connection)
        # observe_* methods of this connection's mirrors, answered on this connection only
        self._observed = CacheMessages(functools.partial(self._answer_cache_message, connection))

    def observe(
        self, observer: Observer, method: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> RemoteFuture:
        """``observer.call_remote`` (see :class:`Outbox`)."""
        return self._outbox.observe(observer, method, args, kwargs)

    def _answer_cache_message(
        self, connection: Connection, message_id: str, result: object, error: BaseException | None
    ) -> None:
        with self._guard:
            if connection is not self.connection or connection.state is not State.OPEN:
                return
            failures = self._outbox.send_locked()  # call_remote's queue first: see Outbox
            answer_locked(connection, message_id, result, error)
            self._flush_from_any_thread_locked()
        deliver(failures)
        self._notify_stopped()

    def _mirror_released(self, connection: Connection) -> None:
        """A mirror was collected or closed (any thread, maybe inside garbage
        collection): send its DECACHE from the loop."""
        loop = self._event_loop()
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: moot
                loop.call_soon_threadsafe(self._flush_released, connection)

    def _flush_released(self, connection: Connection) -> None:
        with self._guard:
            if connection is self.connection and connection.state is State.OPEN:
                connection.caches.flush_released()
                self._flush_from_any_thread_locked()

    def _notify_stopped(self) -> None:
        """Makes the ``stopped_observing`` calls owed, outside the lock."""
        if self.connection.caches.stopped:
            with self._guard:
                stopped = self.connection.caches.take_stopped()
            notify_stopped(stopped)


class Outbox:
    """``observer.call_remote``'s messages for one connection holder (the server's Peer,
    the client), sent by whichever thread holds its lock next, never by waiting for it:
    a hook that runs while one connection writes (a worker thread answering a call) may
    call ``call_remote`` on another connection's observer, and two threads doing that
    crosswise must not wait for each other's lock. A thread that queued a message and
    later writes on the same connection sends the queue first (:meth:`send_locked`), so
    its own order holds.

    """

    def __init__(self, holder: CacheHolder) -> None:
        self.queue: collections.deque[Queued] = collections.deque()
        self._holder = holder
        self._guard = holder._guard

    def observe(
        self, observer: Observer, method: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> RemoteFuture:
        """``observer.call_remote``, from any thread: queued in order at once (before the
        answer of a call that made it), sent by whoever holds the connection next."""
        future = RemoteFuture()
        item = (observer, method, args, kwargs, future)
        if not self._guard.acquire(blocking=False):  # another thread writes there
            self.queue.append(item)
            self.call_soon(self.send_queued)
            return future
        failures: list[tuple[RemoteFuture, BaseException]] = []
        try:
            connection, dead = self._holder.connection, self._holder._dead()
            if dead is not None:
                failures = [(future, DeadReferenceError(dead))]
            elif connection.writing:  # from a hook of this connection's own message
                try:
                    connection.send_cache_message(observer, method, args, kwargs)
                except Exception as exc:  # it refuses: the future says why
                    failures = [(future, exc)]
            else:
                self.queue.append(item)
                failures = self.send_locked()
                self._holder._flush_from_any_thread_locked()
        finally:
            self._guard.release()
        deliver(failures)
        if self._holder.connection.caches.stopped:  # not here: this thread may hold user locks
            self.call_soon(self._holder._notify_stopped)
        return future

    def send_locked(self) -> list[tuple[RemoteFuture, BaseException]]:
        """Under the lock: queues every message on the connection; returns the failures,
        to be delivered once the lock is released."""
        failures: list[tuple[RemoteFuture, BaseException]] = []
        queue = self.queue
        if not queue:
            return failures
        connection, pending = self._holder.connection, self._holder._pending
        while queue:
            observer, method, args, kwargs, future = queue.popleft()
            try:
                call_id = connection.send_cache_message(observer, method, args, kwargs)
            except Exception as exc:  # gone, or unsendable: the future says so
                failures.append((future, exc))
            else:
                pending[call_id] = future
        return failures

    def send_queued(self) -> None:
        """On the loop: sends what :meth:`observe` queued while another thread wrote."""
        with self._guard:
            dead = self._holder._dead()
            failures = [] if dead is not None else self.send_locked()
            if dead is None:
                self._holder._flush_from_any_thread_locked()
        if dead is not None:
            self.fail_all(DeadReferenceError(dead))
        deliver(failures)
        self._holder._notify_stopped()

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Runs ``callback`` on the loop soon (from any thread); without a running loop,
        what is queued fails."""
        loop = self._holder._event_loop()
        if loop is not None and not loop.is_closed():
            if on_loop(loop):
                loop.call_soon(callback)
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)
                return
        self.fail_all(DeadReferenceError("the connection's event loop is not running"))

    def fail_all(self, error: BaseException) -> None:
        """The connection is gone: every queued message fails."""
        failures = []
        while self.queue:
            failures.append((self.queue.popleft()[-1], error))
        deliver(failures)


def answer_locked(
    connection: Connection, message_id: str, result: object, error: BaseException | None
) -> None:
    """Under the connection's lock: answers a CACHE_MESSAGE with what its ``observe_*``
    method returned, or its error (also when the result cannot be sent)."""
    if error is None:
        try:
            connection.send_response(message_id, result)
            return
        except SerializationError as exc:
            error = exc
    connection.send_error(message_id, error)


def deliver(failures: list[tuple[RemoteFuture, BaseException]]) -> None:
    for future, error in failures:
        if not future.done():
            future.set_exception(error)


def notify_stopped(stopped: list[Stopped]) -> None:
    """Calls each ``stopped_observing`` owed (once each; an error is logged)."""
    for cacheable, perspective, observer in stopped:
        try:
            cacheable.stoppedObserving(perspective, observer)
        except Exception:
            log.exception("%s.stopped_observing raised", type(cacheable).__name__)


def _name(message: CacheMessage) -> str:
    return f"{type(message.target).__name__}.{getattr(message.method, '__name__', '?')}"
