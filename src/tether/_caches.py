"""Cacheables between the protocol and whoever holds a connection.

The server's ``Peer`` and the client's ``AsyncClient`` both own Cacheables and mirror
them; this is what they share: the future ``observer.call_remote`` returns, running an
``observe_*`` method on the loop, and the ``stopped_observing`` calls owed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections.abc import Callable, Generator
from typing import Any

from tether.protocol import CacheMessage
from tether.protocol.caches import Stopped

__all__ = ["RemoteFuture", "notify_stopped", "run_cache_message"]

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


def run_cache_message(message: CacheMessage, answer: Answer) -> None:
    """Runs the mirror's ``observe_*`` method (on the loop, in the order messages
    arrived), then answers: at once, or when an awaitable it returned is done."""
    try:
        result = message.method(message.target, *message.args, **message.kwargs)
    except Exception as exc:
        log.info("%s raised %s: %s", _name(message), type(exc).__name__, exc)
        answer(message.id, None, exc)
        return
    if not inspect.isawaitable(result):
        answer(message.id, result, None)
        return

    def done(task: asyncio.Future[object]) -> None:
        error = task.exception() if not task.cancelled() else asyncio.CancelledError()
        answer(message.id, None if error else task.result(), error)

    asyncio.ensure_future(result).add_done_callback(done)


def notify_stopped(stopped: list[Stopped]) -> None:
    """Calls each ``stopped_observing`` owed (once each; an error is logged)."""
    for cacheable, perspective, observer in stopped:
        try:
            cacheable.stoppedObserving(perspective, observer)
        except Exception:
            log.exception("%s.stopped_observing raised", type(cacheable).__name__)


def _name(message: CacheMessage) -> str:
    return f"{type(message.target).__name__}.{getattr(message.method, '__name__', '?')}"
