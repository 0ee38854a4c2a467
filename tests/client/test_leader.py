"""A sync client's TCP connection read by its blocked callers (tether.client.leader).

Against a real server: many threads on one connection, coroutines' calls beside them,
pushes and the server's own calls arriving while a caller reads or while nobody does,
timeouts, a server that goes away, and one that breaks the protocol mid-read.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import tests.apps.capabilities
import tests.apps.threads
from tests.conftest import TIMEOUT, wait_until
from tether import server, testing
from tether.client import Client
from tether.client.leader import CallerReading
from tether.client.waiter import Waiter
from tether.errors import AppOfflineError
from tether.errors import TimeoutError as CallTimeoutError
from tether.functions import FunctionRegistry
from tether.protocol import Connection, Hello, Role
from tether.protocol.framing import PREAMBLE, FrameReader, pack_frame
from tether.transports.threaded import IDLE_POLL_S

KEY = "leader-test-key"
SERVED_TOO = (tests.apps.capabilities, tests.apps.threads)  # their functions, beside echo's


@pytest.fixture(scope="module")
def served() -> Iterator[testing.ServerURL]:
    with testing.serve("tests.apps.echo", uplink_key=KEY, tcp_port=0) as url:
        yield url


@pytest.fixture(params=["tcp", "ws"])
def url(request: pytest.FixtureRequest, served: testing.ServerURL) -> str:
    """The server's TCP port, or its WebSocket (plain ws://: callers read it too)."""
    return served.tcp if request.param == "tcp" else str(served)


def _reading(client: Client) -> str:
    reading = client.aio._reading
    assert reading is not None, "callers do not read this connection"
    return reading._who.name


def test_a_caller_reads_its_own_answer(url: str, served: testing.ServerURL) -> None:
    with Client(url) as client:
        reading = client.aio._reading
        assert reading is not None
        readers: list[str] = []
        receive = reading._receive

        def recorded(frame: str | bytes) -> Callable[[], None] | None:
            readers.append(threading.current_thread().name)
            return receive(frame)

        reading._receive = recorded
        for n in range(20):
            assert client.call("echo", n) == n
            assert _reading(client) == "NOBODY"  # no one reads between calls: no loop
        assert readers == ["MainThread"] * 20  # each answer read by its own caller
    with Client(served, caller_reads=False) as loop_read:  # the loop reads
        assert loop_read.aio._reading is None
        assert loop_read.call("echo", 1) == 1


def test_threads_sharing_a_connection_each_get_their_answers(url: str) -> None:
    results: dict[int, list[object]] = {}

    def run(me: int) -> None:
        results[me] = [client.call("echo", [me, n]) for n in range(100)]

    async def coroutines() -> list[object]:  # a coroutine's calls: the loop reads those
        return list(await asyncio.gather(*(client.acall("echo", n) for n in range(50))))

    with Client(url) as client:
        threads = [threading.Thread(target=run, args=(me,)) for me in range(8)]
        for thread in threads:
            thread.start()
        assert asyncio.run(coroutines()) == list(range(50))
        for thread in threads:
            thread.join(TIMEOUT)
        assert all(not thread.is_alive() for thread in threads)
        assert results == {me: [[me, n] for n in range(100)] for me in range(8)}
        wait_until(lambda: _reading(client) == "NOBODY", "reading to come back to callers")


def test_pushes_arrive_while_nobody_reads_and_while_a_caller_does(
    url: str, served: testing.ServerURL
) -> None:
    with Client(url) as client, Client(served) as other:
        cap = client.call("cap_mint", ["leader", 1])
        got: list[object] = []
        cap.set_update_handler(got.append)  # type: ignore[attr-defined]
        client.subscribe(cap)  # type: ignore[arg-type]
        other.call("cap_publish", ["leader", 1], "while idle")  # the overseer sees it
        wait_until(lambda: got == ["while idle"], "the first push")
        # A push sent while this thread reads, waiting for its own (blocked) call:
        other.call("cap_publish_later", ["leader", 1], "while reading", 0.05)
        key = f"push {url}"  # a key per test run: a released one stays released
        thread = threading.Thread(target=other.call, args=("threads.release", key))
        timer = threading.Timer(0.3, thread.start)
        timer.start()
        assert str(client.call("threads.block", key)).startswith("tether-")
        timer.join(TIMEOUT)
        thread.join(TIMEOUT)
        wait_until(lambda: got == ["while idle", "while reading"], "the second push")
        assert client.call("echo", "after") == "after"


def test_the_server_calls_back_while_its_caller_reads(url: str) -> None:
    functions = FunctionRegistry()

    def leader_triple(x: int) -> int:
        return 3 * x

    functions.register(leader_triple)
    with Client(url, KEY, register=True, functions=functions) as client:
        for n in range(5):  # the server's CALL arrives while this thread reads
            assert client.call("call_peer", "leader_triple", n) == 3 * n
        assert client.call("echo", "still reading") == "still reading"


def test_a_call_timeout_while_a_caller_reads(url: str, served: testing.ServerURL) -> None:
    key = f"timeout {url}"  # a key per test run: a released one stays released
    with Client(url, call_timeout=0.3) as client, Client(served) as other:
        with pytest.raises(CallTimeoutError, match=r"within 0\.3 s"):
            client.call("threads.block", key)
        other.call("threads.release", key)
        assert client.call("echo", "on time") == "on time"
        # the late answer to the call given up on may come while nobody reads: the loop
        # reads it, then gives reading back
        wait_until(lambda: _reading(client) == "NOBODY", "reading to come back to callers")


def test_losing_the_server_fails_the_reader_and_the_others() -> None:
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            client.call("threads.block", "lost")
        except BaseException as exc:
            errors.append(exc)

    with testing.serve("tests.apps.echo", tcp_port=0) as url:
        client = Client(url.tcp, reconnect=False)
        threads = [threading.Thread(target=blocked) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: client.call("threads.started", "lost"), "the blocked calls")
        # While stopping, the server waits for running calls: let them end (unanswered).
        threading.Timer(0.3, tests.apps.threads.release, ["lost"]).start()
    try:  # the server stopped
        for thread in threads:
            thread.join(TIMEOUT)
        assert len(errors) == 3
        assert all(isinstance(error, AppOfflineError) for error in errors)
    finally:
        client.close()


def test_a_server_that_breaks_the_protocol_mid_read() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def fake_server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            reader = FrameReader(1 << 20, preamble=True)
            protocol = Connection(Role.SERVER)
            frames: list[str | bytes] = []
            while not frames:
                frames = reader.feed(conn.recv(65536))
            protocol.receive_frame(frames[0])
            (hello,) = protocol.events_received()
            assert isinstance(hello, Hello)
            protocol.accept("client", {"id": "fake"})
            conn.sendall(b"".join(pack_frame(f) for f in protocol.frames_to_send()))
            while not reader.feed(conn.recv(65536)):  # the first CALL
                pass
            conn.sendall(pack_frame("{not json"))  # breaks the protocol
            conn.recv(65536)  # until the client hangs up

    thread = threading.Thread(target=fake_server)
    thread.start()
    try:
        with (
            Client(f"tether://127.0.0.1:{port}", reconnect=False) as client,
            pytest.raises(AppOfflineError, match="broke the protocol"),
        ):
            client.call("anything")
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert PREAMBLE  # the fake server checked it through FrameReader(preamble=True)


def test_a_waiter_keeps_its_first_outcome() -> None:
    waiter = Waiter()
    waiter.set_result(1)
    waiter.set_result(2)
    waiter.set_exception(RuntimeError("late"))
    assert waiter.result() == 1
    assert not waiter.promote()  # it has its answer: nothing to read for
    assert not waiter.rearm()


def test_a_promoted_waiter_may_wait_again() -> None:
    waiter = Waiter()
    assert waiter.promote()
    waiter.wait()  # woken to read
    assert waiter.promoted
    assert waiter.rearm()  # the loop reads after all: wait for the answer
    threading.Timer(0.05, waiter.set_exception, [server.AppOfflineError("gone")]).start()
    waiter.wait()
    assert not waiter.promoted
    with pytest.raises(server.AppOfflineError):
        waiter.outcome()


# -- CallerReading on a socket pair, one step at a time --------------------------------


class _Loop:
    """Runs what is handed to the loop at once, and records it."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: object) -> None:
        self.calls.append(getattr(fn, "__name__", fn))
        fn(*args)


class _Stream:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader(1 << 20)
        self.loop = _Loop()
        self.events: list[str] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_on_loop(self) -> None:
        self.events.append("read on loop")

    def pause_reading(self) -> None:
        self.events.append("pause")

    def abort(self) -> None:
        self.events.append("abort")


class _Overseer:
    """Never reports (a real one could hand reading to the fake loop, which reads nothing)."""

    def __init__(self, can_watch: bool = True) -> None:
        self.can_watch = can_watch

    def add(self, reader: object) -> None:
        pass

    def forget(self, reader: object) -> None:
        pass

    def arm(self, fd: int) -> bool:
        return self.can_watch

    def disarm(self, fd: int) -> None:
        pass

    def stop(self) -> None:
        pass


def _reading_on(
    sock: socket.socket,
    receive: Callable[[str | bytes], Callable[[], None] | None],
    overseer: _Overseer | None = None,
) -> tuple[CallerReading, _Stream, _Overseer]:
    stream = _Stream(sock)
    overseer = overseer or _Overseer()
    reading = CallerReading(stream, receive, overseer, lambda: False, lambda exc: None)  # type: ignore[arg-type]
    reading.loop_read_done()  # after the handshake: nobody reads, the overseer watches
    return reading, stream, overseer


def test_a_frame_for_the_loop_that_settles_the_leader_first(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    waiter = Waiter()

    def receive(frame: str | bytes) -> Callable[[], None] | None:
        return lambda: waiter.set_result(frame)  # the loop answers it before we wait

    reading, stream, overseer = _reading_on(pair[0], receive)
    reading.loop_read_done()  # the loop does not read: nothing to give
    try:
        pair[1].sendall(pack_frame("answer"))
        assert reading.wait(waiter, None, reading.enter(waiter)) == "answer"
        assert stream.events[-1] == "read on loop"  # the loop reads from then on
        reading.readable_while_busy()  # a late report: the loop already reads
        assert reading._who.name == "LOOP"
    finally:
        reading.loop_close()
        overseer.stop()


def test_a_connection_closed_while_a_caller_reads(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    waiter = Waiter()

    def receive(frame: str | bytes) -> Callable[[], None] | None:
        reading.loop_close()  # the loop saw the end meanwhile
        waiter.set_result(frame)
        return None

    reading, _, overseer = _reading_on(pair[0], receive)
    try:
        pair[1].sendall(pack_frame("mine"))
        assert reading.wait(waiter, None, reading.enter(waiter)) == "mine"
        assert reading._sock.fileno() == -1  # the leader closed the socket it read
    finally:
        overseer.stop()


def test_a_connection_closed_while_a_caller_hands_a_frame_to_the_loop(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    waiter = Waiter()

    def receive(frame: str | bytes) -> Callable[[], None] | None:
        reading.loop_close()
        return lambda: waiter.set_exception(AppOfflineError("lost"))

    reading, _, overseer = _reading_on(pair[0], receive)
    try:
        pair[1].sendall(pack_frame("for the loop"))
        with pytest.raises(AppOfflineError):
            reading.wait(waiter, None, reading.enter(waiter))
        assert reading._sock.fileno() == -1
    finally:
        overseer.stop()


def test_a_caller_without_an_overseer_hands_reading_to_the_loop(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    waiter = Waiter()

    def receive(frame: str | bytes) -> Callable[[], None] | None:
        waiter.set_result(frame)
        return None

    reading, stream, _ = _reading_on(pair[0], receive, _Overseer(can_watch=False))
    reading._who = reading._who.NOBODY  # as if the overseer stopped after watching
    pair[1].sendall(pack_frame("last"))
    assert reading.wait(waiter, None, reading.enter(waiter)) == "last"
    assert reading._who.name == "LOOP"
    assert stream.events[-1] == "read on loop"
    reading.loop_close()


def test_a_reset_connection_fails_the_leader() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    client.setblocking(False)
    reading, stream, overseer = _reading_on(client, lambda frame: None)
    waiter = Waiter()
    try:
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # RST
        with pytest.raises(AppOfflineError, match="closed by the other side"):
            reading.wait(waiter, None, reading.enter(waiter))
        assert "abort" in stream.events
    finally:
        overseer.stop()
        client.close()
        listener.close()


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt in the reading thread."""


def test_an_interrupted_reader_hands_reading_to_the_next_caller(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    follower = Waiter()

    def receive(frame: str | bytes) -> Callable[[], None] | None:
        if frame == "interrupt":
            raise _Interrupt
        follower.set_result(frame)
        return None

    reading, _, _ = _reading_on(pair[0], receive)
    leader = Waiter()
    assert reading.enter(leader)
    assert not reading.enter(follower)
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(reading.wait(follower, None, False)))
    thread.start()
    pair[1].sendall(pack_frame("interrupt"))
    with pytest.raises(_Interrupt):
        reading.wait(leader, None, True)
    pair[1].sendall(pack_frame("the follower's answer"))  # read by the follower, promoted
    thread.join(TIMEOUT)
    assert outcome == ["the follower's answer"]
    assert reading._who.name == "NOBODY"
    reading.loop_close()


def test_a_promoted_reader_whose_call_failed_leaves_the_next_reader_alone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A remote error is the call's outcome, not an interruption: the thread that read it
    hands reading on once, and never again from under the reader it woke."""
    first, failing, last = Waiter(), Waiter(), Waiter()

    def receive(frame: str | bytes) -> Callable[[], None] | None:
        if frame == "first":
            first.set_result("first")
        elif frame == "failing":
            failing.set_exception(ValueError("raised by the server function"))
        else:
            last.set_result(frame)
        return None

    reading, _, _ = _reading_on(pair[0], receive)
    assert reading.enter(first)
    assert not reading.enter(failing)
    assert not reading.enter(last)
    errors: list[BaseException] = []
    answers: list[object] = []

    def wait_failing() -> None:
        try:
            reading.wait(failing, None, False)
        except ValueError as exc:
            errors.append(exc)

    failing_thread = threading.Thread(target=wait_failing)
    last_thread = threading.Thread(target=lambda: answers.append(reading.wait(last, None, False)))
    failing_thread.start()
    last_thread.start()
    pair[1].sendall(pack_frame("first"))
    assert reading.wait(first, None, True) == "first"  # then the failing caller reads
    pair[1].sendall(pack_frame("failing"))  # it reads its error and wakes the last one
    failing_thread.join(TIMEOUT)
    assert [str(e) for e in errors] == ["raised by the server function"]
    assert reading._who.name == "CALLER"  # the last caller reads now: nobody took it back
    newcomer = Waiter()
    assert not reading.enter(newcomer)  # so a new caller follows instead of reading too
    assert newcomer.abandon()  # (and gives up: nobody waits on it here)
    pair[1].sendall(pack_frame("last"))
    last_thread.join(TIMEOUT)
    assert answers == ["last"]
    reading.loop_close()


def test_an_interrupted_follower_is_never_promoted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reading, _, _ = _reading_on(pair[0], lambda frame: None)
    leader, follower = Waiter(), Waiter()
    assert reading.enter(leader)
    assert not reading.enter(follower)
    assert follower.abandon()  # what wait() does when interrupted while following
    leader.set_result("done")
    assert reading.wait(leader, None, True) == "done"
    assert reading._who.name == "NOBODY"  # the abandoned follower was skipped
    promoted = Waiter()
    assert promoted.promote()
    assert not promoted.abandon()  # promoted first: it must hand reading on itself
    reading.loop_close()


def test_a_reader_after_one_with_a_deadline_waits_without_one(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    waiters: list[Waiter] = []

    def receive(frame: str | bytes) -> Callable[[], None] | None:
        waiters.pop(0).set_result(frame)
        return None

    reading, _, _ = _reading_on(pair[0], receive)
    for deadline in (time.monotonic() + TIMEOUT, None):
        waiter = Waiter()
        waiters.append(waiter)
        pair[1].sendall(pack_frame("answer"))
        assert reading.wait(waiter, deadline, reading.enter(waiter)) == "answer"
    assert reading._sock.gettimeout() == IDLE_POLL_S
    reading.loop_close()


def test_a_caller_interrupted_while_sending_leaves_reading_to_others(
    served: testing.ServerURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(served.tcp) as client:
        client.call("echo", "warm")

        def interrupted(*args: object) -> None:
            raise _Interrupt

        monkeypatch.setattr(client.aio, "start_call", interrupted)
        with pytest.raises(_Interrupt):
            client.call("echo", "never sent")
        monkeypatch.undo()
        assert _reading(client) == "NOBODY"  # it had taken reading: it gave it back
        assert client.call("echo", "after") == "after"
