"""A one-shot result for a thread blocked on a call."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures

__all__ = ["AnyFuture", "Waiter"]


class Waiter:
    """A one-shot result for a thread blocked on a call: a C-level lock, no Condition."""

    __slots__ = ("_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._value: object = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return not self._lock.locked()

    def set_result(self, value: object) -> None:
        self._value = value
        self._lock.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._lock.release()

    def result(self) -> object:
        self._lock.acquire()
        if self._error is not None:
            raise self._error
        return self._value


AnyFuture = asyncio.Future[object] | concurrent.futures.Future[object] | Waiter
"""What a call's result goes to: a loop's future, a thread's, or a blocked thread."""
