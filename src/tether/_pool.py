"""Worker threads for sync functions, lighter than ``run_in_executor``.

A call is queued on a ``SimpleQueue``; a worker runs it in the call's context and hands
the outcome back to the event loop with one ``call_soon_threadsafe`` (or, when the caller
asks, calls ``done`` itself, so that a thread-safe transport answers without waking the
loop). Workers are started on demand up to ``max_workers``; a call waits only when all
of them are busy.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["CallPool", "Done", "Job", "answer", "call_in", "on_loop"]

Done = Callable[[object, BaseException | None], None]
Job = tuple[
    contextvars.Context,
    Callable[..., object],
    tuple[object, ...] | list[object],
    dict[str, object],
    Done,
]
"""A sync call to run on the thread that has it: context, function, arguments, ``done``."""
_Job = tuple[
    contextvars.Context, Callable[..., object], tuple[object, ...], dict[str, object], Done, bool
]

log = logging.getLogger("tether")


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called on ``loop``'s own thread, while it runs."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call_in(
    context: contextvars.Context,
    fn: Callable[..., object],
    args: tuple[object, ...] | list[object],
    kwargs: dict[str, object],
) -> tuple[object, BaseException | None]:
    """``fn(*args, **kwargs)`` in ``context``: its result, or what it raised."""
    try:
        return context.run(fn, *args, **kwargs), None
    except BaseException as exc:
        return None, exc


def answer(done: Done, result: object, error: BaseException | None) -> None:
    """Calls ``done``, logging what it raises (it must not end the thread)."""
    try:
        done(result, error)
    except Exception:
        log.exception("answering a call failed")


class CallPool:
    """Runs sync functions on up to ``max_workers`` threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._loop = loop
        self._max = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(
        self,
        context: contextvars.Context,
        fn: Callable[..., object],
        args: tuple[object, ...] | list[object],
        kwargs: dict[str, object],
        done: Done,
        *,
        in_thread: bool = False,
    ) -> None:
        """Runs ``fn(*args, **kwargs)`` in ``context``; ``done(result, error)`` runs on the loop.

        With ``in_thread``, ``done`` runs on the worker thread, right after ``fn``.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._queue.put((context, fn, tuple(args), kwargs, done, in_thread))

    def _work(self) -> None:
        get = self._queue.get
        call_soon = self._loop.call_soon_threadsafe
        while True:
            job = get()
            if job is None:
                return
            context, fn, args, kwargs, done, in_thread = job
            result, error = call_in(context, fn, args, kwargs)
            if in_thread:
                answer(done, result, error)
            else:
                try:
                    call_soon(done, result, error)
                except RuntimeError:  # the loop is closed: nobody is waiting
                    return
            del result, error
            del job, context, fn, args, kwargs, done
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Stops the workers once their current calls end (does not wait for them)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
