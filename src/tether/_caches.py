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
from tether.protocol import CacheMessage, Connection
from tether.protocol.caches import Observer, Stopped

__all__ = [
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


class Outbox:
    """``observer.call_remote``'s messages for one connection holder (the server's Peer,
    the client), sent by whichever thread holds its lock next, never by waiting for it:
    a hook that runs while one connection writes (a worker thread answering a call) may
    call ``call_remote`` on another connection's observer, and two threads doing that
    crosswise must not wait for each other's lock. A thread that queued a message and
    later writes on the same connection sends the queue first (:meth:`send_locked`), so
    its own order holds.

    Args:
        guard: the holder's lock over its connection.
        connection, pending: the holder's current connection and its futures by call id.
        flush_locked: sends what the connection queued, from any thread, under the lock.
        loop: the holder's event loop (None when it is not running).
        dead: why nothing can be sent now, or None.
        after: called on the loop after queued messages went out (owed notices).
    """

    def __init__(
        self,
        guard: threading.RLock,
        connection: Callable[[], Connection],
        pending: Callable[[], dict[str, Any]],
        flush_locked: Callable[[], None],
        loop: Callable[[], asyncio.AbstractEventLoop | None],
        dead: Callable[[], str | None],
        after: Callable[[], None],
    ) -> None:
        self.queue: collections.deque[Queued] = collections.deque()
        self._guard = guard
        self._connection = connection
        self._pending = pending
        self._flush_locked = flush_locked
        self._loop = loop
        self._dead = dead
        self._after = after

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
            connection, dead = self._connection(), self._dead()
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
                self._flush_locked()
        finally:
            self._guard.release()
        deliver(failures)
        if self._connection().caches.stopped:  # not on this thread: it may hold user locks
            self.call_soon(self._after)
        return future

    def send_locked(self) -> list[tuple[RemoteFuture, BaseException]]:
        """Under the lock: queues every message on the connection; returns the failures,
        to be delivered once the lock is released."""
        failures: list[tuple[RemoteFuture, BaseException]] = []
        queue = self.queue
        if not queue:
            return failures
        connection, pending = self._connection(), self._pending()
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
            dead = self._dead()
            failures = [] if dead is not None else self.send_locked()
            if dead is None:
                self._flush_locked()
        if dead is not None:
            self.fail_all(DeadReferenceError(dead))
        deliver(failures)
        self._after()

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Runs ``callback`` on the loop soon (from any thread); without a running loop,
        what is queued fails."""
        loop = self._loop()
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
