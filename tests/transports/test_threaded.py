"""ThreadReader and Overseer on a real socket pair, with a recording handler for the loop.

The integration tests (tests/runtime/test_tcp_threads.py) run them under a real server;
here each hand-over is driven one step at a time.
"""

from __future__ import annotations

import contextvars
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import TIMEOUT, wait_until
from tether._pool import Job
from tether.transports import threaded
from tether.transports.threaded import Overseer, ThreadReader


class Handler:
    """Records what the reading thread asks of the loop; ``jobs`` says what to run."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.jobs: list[Callable[[], object]] = []
        self.answers: list[tuple[object, BaseException | None]] = []
        self.loop_reads = threading.Event()
        self.ended = threading.Event()
        self.full = False
        self.fail: BaseException | None = None

    def frames_in_thread(self, data: bytes) -> Job | None:
        if self.fail is not None:
            raise self.fail
        self.reads.append(data)
        if not self.jobs:
            return None
        fn = self.jobs.pop(0)
        return contextvars.copy_context(), fn, (), {}, self._answer

    def _answer(self, result: object, error: BaseException | None) -> None:
        self.answers.append((result, error))

    def backlog_full(self) -> bool:
        if isinstance(self.full, BaseException):
            raise self.full
        return self.full

    def give_to_loop(self) -> None:
        self.loop_reads.set()

    def ended_in_thread(self) -> None:
        self.ended.set()


@pytest.fixture
def overseer() -> Iterator[Overseer]:
    watcher = Overseer()
    yield watcher
    watcher.stop()


def start(
    sock: socket.socket, handler: Handler, overseer: Overseer
) -> tuple[ThreadReader, threading.Event]:
    exited = threading.Event()
    reader = ThreadReader(
        sock.fileno(), handler, overseer, "test-reader", contextvars.copy_context().run, exited.set
    )
    return reader, exited


def handed_over(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> tuple[Handler, threading.Event, ThreadReader, threading.Event]:
    """A reader whose thread runs a call that blocks until ``release``; more bytes came,
    so the loop reads now."""
    handler = Handler()
    release = threading.Event()
    handler.jobs.append(lambda: release.wait(TIMEOUT))
    reader, exited = start(pair[0], handler, overseer)
    pair[1].sendall(b"blocking call")
    wait_until(lambda: handler.reads, "the call")
    assert not reader.loop_take_back()  # not parked: the thread runs its call
    pair[1].sendall(b"next")
    assert handler.loop_reads.wait(TIMEOUT)  # the overseer saw it: the loop reads now
    return handler, release, reader, exited


def test_a_read_runs_its_call_on_the_thread_and_answers(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    handler = Handler()
    handler.jobs.append(lambda: threading.current_thread().name)
    reader, exited = start(pair[0], handler, overseer)
    pair[1].sendall(b"call")
    wait_until(lambda: handler.answers, "the answer")
    assert handler.answers == [("test-reader", None)]
    assert reader.thread_reads
    reader.readable_while_busy()  # a late report, after the call ended: ignored
    pair[1].sendall(b"more")  # read by the thread, not the loop
    wait_until(lambda: len(handler.reads) == 2, "the second read")
    assert not handler.loop_reads.is_set()
    pair[1].close()  # the end of the stream
    assert handler.ended.wait(TIMEOUT)
    assert exited.wait(TIMEOUT)


def test_bytes_arriving_while_a_call_runs_go_to_the_loop_until_it_gives_them_back(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    handler, release, reader, exited = handed_over(pair, overseer)
    assert not reader.thread_reads
    pair[0].recv(100)  # what the loop would read
    release.set()
    wait_until(lambda: handler.answers, "the blocked call's answer")
    assert handler.answers == [(True, None)]
    wait_until(reader.loop_take_back, "the thread to park")  # the loop gives it back
    assert reader.thread_reads
    pair[1].sendall(b"after")
    wait_until(lambda: handler.reads[-1:] == [b"after"], "the thread to read again")
    reader.loop_close()
    assert exited.wait(TIMEOUT)
    assert not handler.ended.is_set()  # the loop closed it: nothing to report


def test_a_connection_closed_during_a_handed_over_call_ends_the_thread_after_it(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    handler, release, reader, exited = handed_over(pair, overseer)
    reader.loop_close()
    assert not exited.is_set()  # the call still runs
    release.set()
    assert exited.wait(TIMEOUT)
    assert handler.answers == [(True, None)]  # and was answered (into a closed stream)


def test_a_peer_that_does_not_read_its_answers_stops_the_thread_reading(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    handler = Handler()
    handler.full = True
    reader, exited = start(pair[0], handler, overseer)
    assert handler.loop_reads.wait(TIMEOUT)  # parked: the loop holds reading (paused)
    pair[1].sendall(b"waits")
    handler.full = False
    wait_until(reader.loop_take_back, "the thread to park")
    wait_until(lambda: handler.reads == [b"waits"], "the thread to read again")
    reader.loop_close()
    assert exited.wait(TIMEOUT)


def test_closing_wakes_a_parked_thread(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    handler = Handler()
    handler.full = True
    reader, exited = start(pair[0], handler, overseer)
    assert handler.loop_reads.wait(TIMEOUT)
    reader.loop_close()
    reader.loop_close()  # once is enough
    assert exited.wait(TIMEOUT)
    assert not reader.loop_take_back()


def test_a_reset_connection_ends_the_thread(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.setblocking(False)
    handler = Handler()
    try:
        reader, exited = start(accepted, handler, overseer)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST: recv raises ConnectionResetError
        assert handler.ended.wait(TIMEOUT)
        assert exited.wait(TIMEOUT)
        assert not reader.thread_reads or not handler.reads
    finally:
        accepted.close()
        listener.close()


def test_a_handler_that_stops_the_connection_ends_the_thread(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    handler = Handler()
    handler.fail = ConnectionAbortedError("protocol error")
    _, exited = start(pair[0], handler, overseer)
    pair[1].sendall(b"bad")
    assert exited.wait(TIMEOUT)
    assert not handler.ended.is_set()
    assert not handler.loop_reads.is_set()  # the handler told the loop itself


def test_a_failing_thread_leaves_its_connection_to_the_loop(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Handler()
    handler.full = RuntimeError("a bug")  # type: ignore[assignment]
    reader, exited = start(pair[0], handler, overseer)
    assert exited.wait(TIMEOUT)
    assert handler.loop_reads.is_set()
    assert not reader.thread_reads
    assert "reading thread failed" in caplog.text


def test_an_idle_thread_polls_again(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threaded, "IDLE_POLL_S", 0.01)
    handler = Handler()
    reader, exited = start(pair[0], handler, overseer)
    threading.Event().wait(0.1)  # several idle timeouts
    pair[1].sendall(b"still there")
    wait_until(lambda: handler.reads == [b"still there"], "the read")
    reader.loop_close()
    assert exited.wait(TIMEOUT)


def test_without_an_overseer_a_call_first_hands_reading_to_the_loop(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    overseer = Overseer()
    handler = Handler()
    seen: list[bool] = []
    handler.jobs.append(lambda: seen.append(handler.loop_reads.is_set()))
    reader, exited = start(pair[0], handler, overseer)
    overseer.stop()  # a server stopping while a connection still runs calls
    pair[1].sendall(b"call")
    wait_until(lambda: handler.answers, "the answer")
    assert seen == [True]  # the loop read before the call ran
    wait_until(reader.loop_take_back, "the thread to park")
    reader.loop_close()
    assert exited.wait(TIMEOUT)


def test_the_overseer_ignores_sockets_it_forgot(
    pair: tuple[socket.socket, socket.socket], overseer: Overseer
) -> None:
    handler = Handler()
    reader, exited = start(pair[0], handler, overseer)
    overseer.forget(reader)
    overseer.forget(reader)  # twice is harmless
    other, peer = socket.socketpair()
    try:
        assert overseer.arm(other.fileno())
        peer.sendall(b"x")  # reported, but no reader has that socket
        threading.Event().wait(0.05)
        overseer.disarm(other.fileno())
        overseer.disarm(other.fileno())  # twice is harmless
    finally:
        other.close()
        peer.close()
    reader.loop_close()
    assert exited.wait(TIMEOUT)


def test_a_failing_report_does_not_stop_the_overseer(
    overseer: Overseer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def __init__(self, fd: int) -> None:
            self.fd = fd
            self.reports = 0

        def readable_while_busy(self) -> None:
            self.reports += 1
            raise RuntimeError("the loop is closed")

    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    try:
        first, second = Broken(a.fileno()), Broken(b.fileno())
        overseer.add(first)
        overseer.add(second)
        assert overseer.arm(a.fileno())
        a_peer.sendall(b"x")
        wait_until(lambda: first.reports, "the first report")
        assert overseer.arm(b.fileno())
        b_peer.sendall(b"y")
        wait_until(lambda: second.reports, "the second report, after the first failed")
        assert "handing a connection to the event loop failed" in caplog.text
    finally:
        for sock in (a, a_peer, b, b_peer):
            sock.close()


def test_a_reader_whose_thread_cannot_start_leaves_nothing_behind(
    pair: tuple[socket.socket, socket.socket],
    overseer: Overseer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start"):
        start(pair[0], Handler(), overseer)
    assert overseer._readers == {}
