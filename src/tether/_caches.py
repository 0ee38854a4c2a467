"""Cacheables between the protocol and whoever holds a connection.

The server's ``Peer`` and the client's ``AsyncClient`` both own Cacheables and mirror
them; this is what they share: the future ``observer.call_remote`` returns, running an
``observe_*`` method on the loop, and the ``stopped_observing`` calls owed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import inspect
import logging
from collections.abc import Callable, Generator
from typing import Any

from tether.protocol import CacheMessage
from tether.protocol.caches import Stopped

__all__ = ["CacheMessages", "RemoteFuture", "notify_stopped"]

log = logging.getLogger("tether")

Answer = Callable[[str, object, BaseException | None], None]


class RemoteFuture(concurrent.futures.Future[Any]):
    """What ``observer.call_remote`` returns: the outcome of the ``observe_*`` method on
    the far side. Wait with ``.result(timeout)`` on any thread but the loop's, or
    ``await`` it in a coroutine; a failure (``DeadReferenceError`` among them) is
    delivered here, never raised where ``call_remote`` was called."""

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()


def failed(error: BaseException) -> RemoteFuture:
    future = RemoteFuture()
    future.set_exception(error)
    return future


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


def notify_stopped(stopped: list[Stopped]) -> None:
    """Calls each ``stopped_observing`` owed (once each; an error is logged)."""
    for cacheable, perspective, observer in stopped:
        try:
            cacheable.stoppedObserving(perspective, observer)
        except Exception:
            log.exception("%s.stopped_observing raised", type(cacheable).__name__)


def _name(message: CacheMessage) -> str:
    return f"{type(message.target).__name__}.{getattr(message.method, '__name__', '?')}"
