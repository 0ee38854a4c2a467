"""A one-shot result for a thread blocked on a call."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures

__all__ = ["AnyFuture", "Waiter"]


class Waiter:
    """A one-shot result for a thread blocked on a call: C-level locks, no Condition.

    The first outcome wins (an answer racing a timeout or a lost connection); later ones
    are ignored. A waiting thread may also be woken without an outcome, to read the
    connection itself (:meth:`promote`, see :mod:`tether.client.leader`).
    """

    __slots__ = (
        "_abandoned",
        "_done",
        "_error",
        "_lock",
        "_mutex",
        "_value",
        "_woken",
        "promoted",
    )

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()  # held until the thread may go on
        self._lock.acquire()
        self._mutex = _thread.allocate_lock()
        self._value: object = None
        self._error: BaseException | None = None
        self._done = False
        self._woken = False
        self._abandoned = False
        self.promoted = False
        """Woken to read the connection (the caller that did is done with it)."""

    def done(self) -> bool:
        return self._done

    def set_result(self, value: object) -> None:
        with self._mutex:
            if not self._done:
                self._value = value
                self._done = True
                self._wake()

    def set_exception(self, error: BaseException) -> None:
        with self._mutex:
            if not self._done:
                self._error = error
                self._done = True
                self._wake()

    def promote(self) -> bool:
        """Wakes the thread to read the connection; False if it has its outcome already,
        or stopped waiting."""
        with self._mutex:
            if self._done or self._abandoned:
                return False
            self.promoted = True
            self._wake()
            return True

    def abandon(self) -> bool:
        """The waiting thread gives up (interrupted): True, unless it was promoted first
        (False: it must hand reading on itself)."""
        with self._mutex:
            if self.promoted:
                return False
            self._abandoned = True
            return True

    def rearm(self) -> bool:
        """A promoted (or leading) thread goes back to waiting: True if it must, False if
        the outcome came meanwhile. Only the waiting thread calls this."""
        with self._mutex:
            if self._done:
                return False
            self._woken = False
            self.promoted = False
            return True

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            self._lock.release()

    def wait(self) -> None:
        """Blocks until there is an outcome or the thread was promoted."""
        self._lock.acquire()

    def outcome(self) -> object:
        """The result, or raises the error (once :meth:`done`)."""
        if self._error is not None:
            raise self._error
        return self._value

    def result(self) -> object:
        self.wait()
        return self.outcome()


AnyFuture = asyncio.Future[object] | concurrent.futures.Future[object] | Waiter
"""What a call's result goes to: a loop's future, a thread's, or a blocked thread."""
