"""The TCP port's reading threads (tether.transports.threaded), against a real server.

A connection's own thread runs its sync calls; a call that blocks hands reading to the
event loop at once, and reading comes back to the thread once it is free. Calls that
block, pile up, call back their own peer or outlive their connection all still finish.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import TIMEOUT, wait_until
from tether import testing
from tether.client import AsyncClient, Client
from tether.functions import FunctionRegistry
from tether.protocol.framing import PREAMBLE, FrameReader, pack_frame

KEY = "threads-test-key"
APP = "tests.apps.threads"


@pytest.fixture(scope="module")
def served() -> Iterator[testing.ServerURL]:
    with testing.serve(APP, uplink_key=KEY, tcp_port=0) as url:
        yield url


def _in_thread(fn: object, *args: object) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = fn(*args)  # type: ignore[operator]
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _past_handshake(client: Client) -> Client:
    """After the first call: the handshake the loop answered is behind us, so the next
    calls find the connection's thread reading (the first may still go to the loop)."""
    client.call("threads.where")
    return client


def _reads_on_its_thread_again(client: Client) -> str:
    """The loop gives reading back with the next bytes it reads: a call or two at most."""
    for _ in range(5):
        name = str(client.call("threads.where"))
        if name.startswith("tether-tcp-"):
            return name
    pytest.fail("reading never came back to the connection's thread")


def test_sync_calls_run_on_the_connection_s_own_thread(served: testing.ServerURL) -> None:
    with Client(served.tcp) as tcp, Client(served.tcp) as other, Client(served) as ws:
        _past_handshake(tcp)
        names = {tcp.call("threads.where") for _ in range(20)}
        assert len(names) == 1
        (name,) = names
        assert str(name).startswith("tether-tcp-")
        assert str(other.call("threads.where")) not in ("", name)  # one thread each
        assert str(ws.call("threads.where")).startswith("tether-call-")  # the pool


def test_a_blocked_call_hands_reading_to_the_loop_and_gets_it_back(
    served: testing.ServerURL,
) -> None:
    with Client(served.tcp) as client, Client(served.tcp) as observer:
        _past_handshake(client)
        thread, result = _in_thread(client.call, "threads.block", "handover")
        wait_until(lambda: observer.call("threads.started", "handover"), "the blocking call")
        # The connection's thread is blocked: the loop reads, the pool runs.
        assert str(client.call("threads.where")).startswith("tether-call-")
        assert str(client.call("threads.release", "handover")).startswith("tether-call-")
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert str(result["value"]).startswith("tether-tcp-")  # it ran on the reading thread
        _reads_on_its_thread_again(client)


def test_a_call_waiting_on_a_later_call_of_its_connection_finishes(
    served: testing.ServerURL,
) -> None:
    # RPyC's and Pyro's one thread per connection would deadlock here: the release is
    # behind the blocked call on the same connection.
    with Client(served.tcp) as client:
        thread, result = _in_thread(client.call, "threads.block", "same-connection")
        wait_until(lambda: client.call("threads.started", "same-connection"), "the call")
        client.call("threads.release", "same-connection")
        thread.join(TIMEOUT)
        assert str(result.get("value")).startswith("tether-")
        _reads_on_its_thread_again(client)


async def test_a_call_back_to_its_own_peer_is_answered(served: testing.ServerURL) -> None:
    functions = FunctionRegistry()

    def client_echo(value: object) -> object:
        return value

    functions.register(client_echo, "threads.client_echo")
    async with asyncio.timeout(TIMEOUT):
        peer = await AsyncClient(served.tcp, KEY, register=True, functions=functions).connect()
        try:
            for n in range(3):  # the answer arrives on the connection whose thread waits
                value, name = await peer.call("threads.ask_back", {"n": n})  # type: ignore[misc]
                assert value == {"n": n}
                assert str(name).startswith("tether-")
        finally:
            await peer.close()


async def test_calls_sent_together_all_finish(served: testing.ServerURL) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(served.tcp) as client:
        for _ in range(5):
            names = await asyncio.gather(*(client.call("threads.where") for _ in range(50)))
            assert all(str(name).startswith("tether-") for name in names)


def test_a_client_that_does_not_read_its_answers_gets_no_new_calls_taken(
    served: testing.ServerURL,
) -> None:
    """Its thread stops reading over the high-water mark; all is answered once it reads."""
    host, port = served.tcp.removeprefix("tether://").split(":")
    calls, size = 400, 100_000  # 40 MB of answers: far more than the kernel buffers
    hello = orjson.dumps({"key": None, "v": 8}).decode()
    with Client(served) as ws, socket.create_connection((host, int(port))) as sock:
        before = int(ws.call("threads.big_calls"))  # type: ignore[call-overload]
        sock.sendall(PREAMBLE + pack_frame(hello))
        for n in range(calls):  # one at a time: each read holds one call
            sock.sendall(pack_frame(_call(f"c{n}", "threads.big", size)))
            threading.Event().wait(0.002)
        taken = wait_until(lambda: _settled(ws, before), "the server to stop taking calls")
        assert taken < calls  # it stopped: answers wait, no more calls run
        reader = FrameReader(1 << 24)
        answers: list[object] = []
        sock.settimeout(TIMEOUT)
        while len(answers) < calls + 1:  # the hello's reply, then every answer
            answers += [orjson.loads(f) for f in reader.feed(sock.recv(1 << 20))]
        assert all(len(a["response"]) == size for a in answers[1:])  # type: ignore[index]
        assert int(ws.call("threads.big_calls")) - before == calls  # type: ignore[call-overload]


def _call(call_id: str, command: str, *args: object) -> str:
    call = {"type": "CALL", "id": call_id, "command": command, "args": args, "kwargs": {}}
    return orjson.dumps(call).decode()


def _settled(ws: Client, before: int) -> int | None:
    """How many calls the server took, once that stopped growing for 0.3 s."""
    first = int(ws.call("threads.big_calls"))  # type: ignore[call-overload]
    threading.Event().wait(0.3)
    second = int(ws.call("threads.big_calls"))  # type: ignore[call-overload]
    return second - before if second == first and second > before else None


def test_tcp_threads_bounds_the_threads() -> None:
    with testing.serve(APP, tcp_port=0, tcp_threads=1) as url:
        with Client(url.tcp) as first:
            assert str(_past_handshake(first).call("threads.where")).startswith("tether-tcp-")
            with Client(url.tcp) as second:  # over the limit: the loop reads it
                assert str(second.call("threads.where")).startswith("tether-call-")
                assert first.call("threads.alive") == second.call("threads.alive")
        # the first connection's thread ended with it: a new connection gets one
        wait_until(lambda: not _alive(url), "the reading thread to end")
        with Client(url.tcp) as third:
            assert str(_past_handshake(third).call("threads.where")).startswith("tether-tcp-")


def test_no_reading_threads_with_tcp_threads_0() -> None:
    with testing.serve(APP, tcp_port=0, tcp_threads=0) as url, Client(url.tcp) as client:
        assert str(client.call("threads.where")).startswith("tether-call-")
        assert client.call("threads.alive") == []


def test_a_connection_that_leaves_mid_call_ends_its_thread() -> None:
    with testing.serve(APP, tcp_port=0) as url:
        client = Client(url.tcp)
        thread, result = _in_thread(client.call, "threads.block", "leaving")
        wait_until(lambda: _started(url, "leaving"), "the blocking call")
        client.close()
        thread.join(TIMEOUT)
        assert "error" in result  # the caller learns its connection went away
        assert _alive(url)  # still running the call ...
        with Client(url) as ws:
            ws.call("threads.release", "leaving")
        wait_until(lambda: not _alive(url), "the reading thread to end")  # ... then gone


def test_stopping_the_server_ends_every_reading_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    with testing.serve(APP, tcp_port=0) as url:
        clients = [Client(url.tcp) for _ in range(3)]
        for client in clients:
            client.call("threads.where")
    try:
        wait_until(lambda: not _ours(before), "the reading threads and the overseer to end")
    finally:
        for client in clients:
            client.close()


def _alive(url: testing.ServerURL) -> list[str]:
    with Client(url) as ws:  # the WebSocket: no reading thread of its own
        return list(ws.call("threads.alive"))  # type: ignore[call-overload]


def _started(url: testing.ServerURL, key: str) -> bool:
    with Client(url) as ws:
        return bool(ws.call("threads.started", key))


def _ours(before: set[int | None]) -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith(("tether-tcp", "tether-overseer"))
    ]


def test_a_connection_without_a_reading_thread_is_read_by_the_loop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tether.runtime import tcp

    def no_thread(*args: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(tcp, "ThreadReader", no_thread)
    with testing.serve(APP, tcp_port=0) as url, Client(url.tcp) as client:
        assert str(client.call("threads.where")).startswith("tether-call-")
        assert "no reading thread" in caplog.text
        assert client.call("threads.alive") == []
