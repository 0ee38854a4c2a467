"""A sync client's connection read by the threads blocked in calls (leader/follower).

Read by the event loop, a blocking call costs the client two wake-ups: the loop wakes for
the answer, then wakes the caller. Over ``tether://`` and plain ``ws://`` (a
:class:`~tether.transports.tcp.FramedStream`) the caller reads its answer itself, as an
RPyC client does, so it wakes once; the loop is not involved:

* the first caller to wait becomes the *leader*: it reads the connection, hands each answer
  to the caller that waits for it, and everything else (the server's calls to this
  process, pushes, mirrors' updates, answers to coroutines) to the loop, in order;
* the others are *followers*: they wait, and are woken by their answer or to lead in turn
  when the leader has its own;
* while no caller waits, the :class:`~tether.transports.threaded.Overseer` watches the
  socket: bytes arriving then are read by the loop, which gives reading back once nothing
  it waits for (a coroutine's call) is left.

The :class:`~tether.client.sync.Client` turns this on (``caller_reads``); an
:class:`~tether.client.aio.AsyncClient` on its own is read by its loop.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.client.waiter import Waiter
from tether.errors import AppOfflineError, RemoteProtocolError
from tether.transports.threaded import IDLE_POLL_S, READ_SIZE, Overseer

if TYPE_CHECKING:
    from tether.transports.tcp import FramedStream

__all__ = ["CallerReading"]

Receive = Callable[[str | bytes], Callable[[], None] | None]
"""Acts on one frame read by a caller: returns what the loop must do, if anything."""

DEADLINE_SLACK_S = 0.05
"""A leader whose call has a deadline wakes this long after it, to see the timeout."""


class _Read(enum.Enum):
    READ = "read frames, all handled"
    HANDED = "handed the loop something to do"
    ENDED = "the connection ended"


class _Who(enum.Enum):
    LOOP = "the loop reads"
    CALLER = "a caller reads"
    NOBODY = "nobody reads: the overseer watches"
    CLOSED = "the connection ended"


class CallerReading:
    """Who reads one TCP connection of a sync client: a caller, the loop, or nobody yet.

    Args:
        stream: the connection; the loop reads it until :meth:`loop_read_done`.
        receive: handles a frame read by a caller (any thread; see ``Receive``).
        overseer: watches the socket while nobody reads.
        pending_on_loop: True while the loop waits for an answer (a coroutine's call):
            the loop keeps reading then.
        broken: reports, on the loop, a server that broke the protocol.
    """

    def __init__(
        self,
        stream: FramedStream,
        receive: Receive,
        overseer: Overseer,
        pending_on_loop: Callable[[], bool],
        broken: Callable[[RemoteProtocolError], None],
    ) -> None:
        self._stream = stream
        self._receive = receive
        self._overseer = overseer
        self._pending_on_loop = pending_on_loop
        self._broken = broken
        self._sock = socket.socket(fileno=os.dup(stream.fileno()))
        self._sock.settimeout(IDLE_POLL_S)  # the file stays non-blocking; reads poll first
        self.fd = self._sock.fileno()
        self._timed = False  # the socket's timeout is a call's deadline, not IDLE_POLL_S
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self._lock = threading.Lock()
        self._who = _Who.LOOP
        self._followers: collections.deque[Waiter] = collections.deque()
        overseer.add(self)

    # -- callers ------------------------------------------------------------------------

    def enter(self, waiter: Waiter) -> bool:
        """Before a call is sent: True if this thread reads (nobody did), else it follows.

        Taken before sending, so the answer cannot arrive while nobody reads.
        """
        with self._lock:
            if self._who is _Who.NOBODY:
                self._overseer.disarm(self.fd)
                self._who = _Who.CALLER
                return True
            self._followers.append(waiter)
            return False

    def wait(self, waiter: Waiter, deadline: float | None, lead: bool) -> object:
        """Blocks until ``waiter`` (the call sent after :meth:`enter`) has its outcome;
        returns it or raises.

        Interrupted (``KeyboardInterrupt`` in the reading thread, say), it first hands
        reading on, so the other callers and the loop are never left without a reader.
        The call's own error is raised once reading is settled, outside that path: it is
        an outcome, not an interruption.
        """
        reading = lead
        try:
            while True:
                if not reading:
                    waiter.wait()
                    if not waiter.promoted:
                        break
                    reading = True
                done = self._lead(waiter, deadline)
                reading = False  # it handed reading on (done), or the loop reads now
                if done:
                    break
        except BaseException:
            self.leave(waiter, reading)
            raise
        return waiter.outcome()

    def leave(self, waiter: Waiter, reading: bool) -> None:
        """A caller gives up (interrupted): hands reading on if it had it (or was just
        promoted), else is never promoted."""
        if reading or not waiter.abandon():
            self._hand_over()

    def _lead(self, waiter: Waiter, deadline: float | None) -> bool:
        """Reads until ``waiter`` has its outcome (True), or until this thread handed the
        loop something to do: the loop then reads, in order, and this thread waits (False)."""
        while not waiter.done():
            read = self._read_once(waiter, deadline)
            if read is _Read.ENDED:
                self._stop_leading()
                return True
            if read is _Read.HANDED:
                with self._lock:
                    if self._who is _Who.CALLER:
                        self._who = _Who.LOOP
                        self._stream.loop.call_soon_threadsafe(self._stream.read_on_loop)
                    self._close_if_ended()
                    if not waiter.rearm():
                        return True  # the loop gave it its answer already
                    self._followers.append(waiter)
                    return False
        waiter.promoted = False  # done leading: it must never hand reading on again
        self._hand_over()
        return True

    def _read_once(self, waiter: Waiter, deadline: float | None) -> _Read:
        if deadline is not None:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.0) + DEADLINE_SLACK_S)
            self._timed = True
        elif self._timed:  # the last reader had a deadline: back to waiting for bytes
            self._sock.settimeout(IDLE_POLL_S)
            self._timed = False
        try:
            size = self._sock.recv_into(self._buffer)
        except TimeoutError:
            return _Read.READ  # the loop's timer fails the call at its deadline
        except OSError:
            size = 0
        if not size:
            self._ended(waiter, "closed by the other side")
            return _Read.ENDED
        handed = False
        try:
            for frame in self._stream.reader.feed(bytes(self._view[:size])):
                later = self._receive(frame)
                if later is not None:
                    self._stream.loop.call_soon_threadsafe(later)
                    handed = True
        except RemoteProtocolError as exc:
            self._stream.loop.call_soon_threadsafe(self._broken, exc)
            self._ended(waiter, f"the server broke the protocol: {exc}")
            return _Read.ENDED
        return _Read.HANDED if handed else _Read.READ

    def _ended(self, waiter: Waiter, reason: str) -> None:
        """The connection ended under a caller: it fails now; the loop closes the rest."""
        with self._lock:
            self._who = _Who.CLOSED
        self._stream.loop.call_soon_threadsafe(self._stream.abort)
        waiter.set_exception(AppOfflineError(f"the connection to the server was lost: {reason}"))

    def _hand_over(self) -> None:
        """The leader has its answer: the next waiting caller reads, else the overseer."""
        with self._lock:
            if self._who is not _Who.CALLER:
                self._close_if_ended()
                return
            while self._followers:
                if self._followers.popleft().promote():
                    return  # it leads now
            self._watch_locked()

    def _stop_leading(self) -> None:
        with self._lock:
            self._close_if_ended()

    def _watch_locked(self) -> None:
        if self._overseer.arm(self.fd):
            self._who = _Who.NOBODY
        else:  # the client is closing: let the loop read what is left
            self._who = _Who.LOOP
            self._stream.loop.call_soon_threadsafe(self._stream.read_on_loop)

    # -- the overseer -------------------------------------------------------------------

    def readable_while_busy(self) -> None:
        with self._lock:
            if self._who is not _Who.NOBODY:
                return  # a caller took it first
            self._who = _Who.LOOP
        self._stream.loop.call_soon_threadsafe(self._stream.read_on_loop)

    # -- the loop -----------------------------------------------------------------------

    def loop_read_done(self) -> None:
        """Loop, after it read: gives reading to a waiting caller, else to the overseer,
        unless the loop itself still waits for an answer."""
        if self._pending_on_loop():
            return
        with self._lock:
            if self._who is not _Who.LOOP:
                return
            self._stream.pause_reading()
            while self._followers:
                if self._followers.popleft().promote():
                    self._who = _Who.CALLER
                    return
            self._watch_locked()

    def loop_close(self) -> None:
        """Loop: the connection ended; callers fail through the client's pending calls."""
        with self._lock:
            reading = self._who is _Who.CALLER
            self._who = _Who.CLOSED
            self._overseer.forget(self)
            self._overseer.disarm(self.fd)
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            if not reading:  # else the leader closes it when it stops reading
                self._sock.close()

    def _close_if_ended(self) -> None:
        if self._who is _Who.CLOSED:
            self._sock.close()
