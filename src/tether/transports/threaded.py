"""Reading a server's TCP connection on a thread of its own, without ever waiting on a call.

On a connection the event loop reads, every sync call costs two thread wake-ups: the
loop wakes for the CALL and wakes a pool worker to run it. A thread per connection that
reads the CALL and runs it itself, as RPyC's and Pyro's servers do, wakes once. Their
catch is that a call that blocks stops its connection: the calls behind it, and the
answers to the calls the function itself makes to that peer, wait until it returns.
Here nothing waits on a running call:

* while a call runs on the reading thread, the :class:`Overseer` (one thread and one
  ``epoll`` per listener) watches that connection's socket. The moment more bytes
  arrive, reading goes to the event loop, which reads and dispatches as it does on any
  connection (sync calls to the pool);
* once the thread is free again, the loop gives reading back with the next bytes it
  reads;
* only the last whole frame of a read may run on the thread: frames behind it are
  never held up;
* what the thread may not run (see :class:`Handler`) it hands to the loop, in order.

The cost on the fast path is two ``epoll_ctl`` system calls per call, not a wake-up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from tether._pool import Job, answer, call_in

__all__ = [
    "IDLE_POLL_S",
    "READ_SIZE",
    "Handler",
    "Handoff",
    "Later",
    "Overseer",
    "ThreadReader",
    "Watched",
]

log = logging.getLogger("tether")

READ_SIZE = 256 * 1024
"""Bytes asked of the socket per read."""

IDLE_POLL_S = 3600.0
"""A reading thread with nothing to read wakes this often (a closed connection wakes it
at once: the loop shuts the socket down)."""

_WAIT = select.EPOLLIN | select.EPOLLONESHOT


Later = Callable[[], None]
"""What a reading thread hands to the loop, to run there in order."""


class Handoff:
    """Work a reading thread handed to the loop and the loop has not finished yet.

    While any is pending, the thread hands on every later frame too, undecoded (it may
    depend on what the loop does first: a hello, a reply, an ``observe_*``), so the
    connection's order holds. ``guard`` is the lock of the connection's state.
    """

    def __init__(self, guard: threading.RLock) -> None:
        self._guard = guard
        self.pending = 0

    def later(self, fn: Callable[..., object], *args: object) -> Later:
        """With ``guard`` held: ``fn(*args)`` for the loop; pending until it returns."""
        self.pending += 1
        return functools.partial(self._run, fn, args)

    def _run(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            fn(*args)
        finally:
            with self._guard:
                self.pending -= 1


class Handler(Protocol):
    """What a :class:`ThreadReader` reads for: the server's side of one stream."""

    def frames_in_thread(self, data: bytes) -> Job | None:
        """Acts on bytes read by the thread: hands what it cannot run to the loop and
        returns the one call to run now, if any. Raises to stop reading (the handler has
        already told the loop why)."""

    def backlog_full(self) -> bool:
        """True while the peer is not reading its answers: stop taking calls."""

    def give_to_loop(self) -> None:
        """Thread-safe: the loop must read this connection from now on."""

    def ended_in_thread(self) -> None:
        """Thread-safe: the peer closed the connection (end of stream, or an error)."""


class Watched(Protocol):
    """What the overseer reports to: who reads one socket."""

    fd: int

    def readable_while_busy(self) -> None:
        """Called on the overseer's thread: the socket has bytes and nobody reads them."""


class Overseer:
    """Watches the sockets of connections whose reading thread is running a call (or,
    in a client, that no caller is reading)."""

    def __init__(self, name: str = "tether-overseer") -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Watched] = {}
        self._wake_read, self._wake_write = os.pipe()
        self._epoll.register(self._wake_read, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, reader: Watched) -> None:
        self._readers[reader.fd] = reader

    def forget(self, reader: Watched) -> None:
        if self._readers.get(reader.fd) is reader:
            del self._readers[reader.fd]

    def arm(self, fd: int) -> bool:
        """Reports ``fd`` once when it has bytes to read (at once if it has some now).

        False when it cannot (the overseer stopped): the caller hands reading over itself.
        """
        try:
            try:
                self._epoll.register(fd, _WAIT)
            except FileExistsError:  # reported once already (one-shot): arm it again
                self._epoll.modify(fd, _WAIT)
        except (OSError, ValueError):
            return False
        return True

    def disarm(self, fd: int) -> None:
        try:  # not contextlib.suppress: this runs twice a call
            self._epoll.unregister(fd)
        except (OSError, ValueError):  # stopped, or the fd is gone
            return

    def _run(self) -> None:
        poll = self._epoll.poll
        while True:
            for fd, _ in poll():
                if fd == self._wake_read:
                    return
                reader = self._readers.get(fd)
                if reader is not None:
                    try:
                        reader.readable_while_busy()
                    except Exception:  # one connection's trouble must not stop the watch
                        log.exception("handing a connection to the event loop failed")

    def stop(self) -> None:
        """Stops watching; the readers still running go on without hand-over."""
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        self._thread.join(5)
        self._epoll.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


class ThreadReader:
    """The reading thread of one connection; the loop reads it while the thread cannot.

    ``fileno`` is the connection's socket, duplicated here (closed when the thread ends).
    ``on_exit`` runs on the thread when it ends. Methods named ``loop_*`` run on the loop.
    """

    def __init__(
        self,
        fileno: int,
        handler: Handler,
        overseer: Overseer,
        name: str,
        run: Callable[..., object],
        on_exit: Callable[[], None],
    ) -> None:
        self._sock = socket.socket(fileno=os.dup(fileno))
        self._sock.settimeout(IDLE_POLL_S)  # the file stays non-blocking; reads poll first
        self.fd = self._sock.fileno()
        self._buffer = bytearray(READ_SIZE)  # one buffer, not an allocation per read
        self._view = memoryview(self._buffer)
        self._handler = handler
        self._overseer = overseer
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._baton = threading.Lock()  # held while parked: released to read again
        self._baton.acquire()
        self.thread_reads = True
        """False while the loop reads (the thread runs a call, or is parked)."""
        self._busy = False  # running a call, its socket watched by the overseer
        self._parked = False
        self._closed = False
        overseer.add(self)
        self._thread = threading.Thread(target=run, args=(self._read_forever,), name=name)
        self._thread.daemon = True
        try:
            self._thread.start()
        except BaseException:  # no thread: nothing of this reader may stay behind
            overseer.forget(self)
            self._sock.close()
            raise

    # -- the thread ---------------------------------------------------------------------

    def _read_forever(self) -> None:
        try:
            while self._read_once():
                pass
        except Exception:  # a bug: say so and let the loop read
            log.exception("reading thread failed; the event loop reads this connection")
            with self._lock:
                self.thread_reads = False
            self._handler.give_to_loop()
        finally:
            with self._lock:
                self._closed = True
                self._overseer.forget(self)
                self._sock.close()
            self._on_exit()

    def _read_once(self) -> bool:
        if self._handler.backlog_full():  # the peer does not read its answers
            return self._park(give_to_loop=True)
        try:
            size = self._sock.recv_into(self._buffer)
        except TimeoutError:
            return not self._closed
        except OSError:
            size = 0
        if not size:
            if not self._closed:
                self._handler.ended_in_thread()
            return False
        try:
            job = self._handler.frames_in_thread(bytes(self._view[:size]))
        except Exception:  # the handler stopped this connection
            return False
        if job is None:
            return True
        context, fn, args, kwargs, done = job
        del job
        with self._lock:  # the call runs even if the connection just closed: it was taken
            self._busy = True
            watched = self._overseer.arm(self.fd)
            if not watched:
                self.thread_reads = False
        if not watched:
            self._handler.give_to_loop()
        result, error = call_in(context, fn, args, kwargs)
        with self._lock:  # before the answer: the peer's next call must find us reading
            self._overseer.disarm(self.fd)
            self._busy = False
            reads = self.thread_reads
        answer(done, result, error)
        del context, fn, args, kwargs, done, result, error
        if reads:
            return not self._closed
        return self._park(give_to_loop=False)

    def _park(self, *, give_to_loop: bool) -> bool:
        """Waits until the loop gives reading back; False: the connection closed."""
        with self._lock:
            if self._closed:
                return False
            self._parked = True
            if give_to_loop:
                self.thread_reads = False
        if give_to_loop:
            self._handler.give_to_loop()
        self._baton.acquire()
        return not self._closed

    # -- the overseer -------------------------------------------------------------------

    def readable_while_busy(self) -> None:
        with self._lock:
            if not self._busy or not self.thread_reads or self._closed:
                return  # the call ended first: the thread reads it itself
            self.thread_reads = False
        self._handler.give_to_loop()

    # -- the loop -----------------------------------------------------------------------

    def loop_take_back(self) -> bool:
        """Loop, after it read: True (the thread reads from now on) if it is parked."""
        with self._lock:
            if not self._parked or self._closed:
                return False
            self._parked = False
            self.thread_reads = True
        self._baton.release()
        return True

    def loop_close(self) -> None:
        """Loop: the connection ended; the thread stops (after its call, if it runs one)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            if self._parked:
                self._parked = False
                self._baton.release()
