"""The client's own paths, in-process: serving the server's calls, closing, losing the server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import TIMEOUT
from tether import server, testing
from tether.client import AsyncClient, Client
from tether.functions import FunctionRegistry
from tether.transports.websocket import WebSocket
from tether.transports.wsstream import WsStream

KEY = "client-test-key"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with testing.serve("tests.apps.echo", uplink_key=KEY) as url:
        yield url


def offered() -> FunctionRegistry:
    functions = FunctionRegistry()

    def peer_double(x: int) -> int:
        return 2 * x

    async def peer_async(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    def peer_fails() -> None:
        raise ValueError("bad value from the peer")

    def peer_unsendable() -> object:
        return object()

    def peer_nested(x: object) -> object:
        return ["nested", server.call("echo", x)]

    async def peer_anested(x: object) -> object:
        return ["anested", await server.acall("echo", x)]

    for fn in (peer_double, peer_async, peer_fails, peer_unsendable, peer_nested, peer_anested):
        functions.register(fn)
    return functions


async def test_a_trusted_client_serves_the_servers_calls(url: str) -> None:
    functions = offered()
    async with asyncio.timeout(TIMEOUT):
        peer = await AsyncClient(url, KEY, register=True, functions=functions).connect()
        try:
            assert peer.trusted
            async with AsyncClient(url) as caller:
                await peer.call("echo", "sync point")  # REGISTERs are processed before this
                assert await caller.call("peer_double", 21) == 42
                assert await caller.call("peer_async", 1) == 2
                with pytest.raises(server.RemoteError, match="bad value from the peer") as error:
                    await caller.call("peer_fails")
                assert error.value.type_name == "ValueError"
                with pytest.raises(server.SerializationError):
                    await caller.call("peer_unsendable")
                assert await caller.call("peer_nested", 5) == ["nested", 5]
                assert await caller.call("peer_anested", 6) == ["anested", 6]

                def peer_late() -> str:
                    return "late"

                functions.register(peer_late)  # offered at once, after connecting
                await peer.call("echo", "sync point")
                assert await caller.call("peer_late") == "late"
        finally:
            await peer.close()
        async with AsyncClient(url) as caller:
            with pytest.raises(server.NoServerFunctionError):
                await caller.call("peer_double", 1)


async def test_calls_waiting_when_the_client_closes_fail_clearly(url: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        client = await AsyncClient(url).connect()
        pending = asyncio.ensure_future(client.call("wait_for_release"))
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(server.AppOfflineError):
            await pending
        with pytest.raises(server.AppOfflineError, match="not connected"):
            await client.call("echo", 1)
        async with AsyncClient(url) as other:
            await other.call("release")


async def test_losing_the_server_fails_waiting_calls() -> None:
    async with asyncio.timeout(TIMEOUT):
        with testing.serve() as url:
            client = await AsyncClient(url, reconnect=False).connect()
            pending = asyncio.ensure_future(client.call("wait_for_release"))
            await asyncio.sleep(0.1)
        with pytest.raises(server.AppOfflineError, match="connection to the server lost"):
            await pending
        assert not client.connected
        await client.wait_closed()
        await client.close()
        from tests.apps.echo import release

        release()


def test_sync_client_twin(url: str) -> None:
    with Client(url) as client:
        assert client.connected
        assert not client.trusted
        assert asyncio.run(client.acall("echo", "from another loop")) == "from another loop"
        client.wait_closed(timeout=0.05)  # still open: returns after the timeout
        assert client.connected


async def test_unreachable_server_is_app_offline() -> None:
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(server.AppOfflineError, match="cannot connect"):
            await AsyncClient("ws://127.0.0.1:9/_/ws", open_timeout=2).connect()
    with pytest.raises(ValueError, match="not a server URL"):
        AsyncClient("ftp://example")


def test_closing_a_client_that_never_connected_leaves_no_unretrieved_error() -> None:
    script = """
import asyncio
from tether.client import AsyncClient
from tether.errors import AppOfflineError

async def main():
    client = AsyncClient("ws://127.0.0.1:9/_/ws", open_timeout=2, reconnect=False)
    try:
        await client.connect()
    except AppOfflineError as exc:
        print(exc)
    await client.close()  # fails what waited on the connection: nothing did

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert "cannot connect" in done.stdout
    assert "never retrieved" not in done.stderr


def test_a_blocking_call_from_the_clients_own_loop_is_refused_only_while_it_runs(
    url: str,
) -> None:
    client = Client(url)
    refused: concurrent.futures.Future[BaseException] = concurrent.futures.Future()

    def from_the_loop() -> None:
        try:
            client.call("echo", 1)
        except BaseException as exc:
            refused.set_result(exc)

    client._loop.call_soon_threadsafe(from_the_loop)
    assert isinstance(refused.result(TIMEOUT), RuntimeError)
    assert "would deadlock" in str(refused.result())
    loop_thread = client._thread.ident
    client.close()

    # Linux reuses a dead thread's ident: a thread that gets the loop thread's is not it.
    def call_after_close(ident: list[int], outcome: list[BaseException]) -> None:
        ident.append(threading.get_ident())
        try:
            client.call("echo", 2)
        except BaseException as exc:
            outcome.append(exc)

    for _ in range(20):
        ident: list[int] = []
        outcome: list[BaseException] = []
        thread = threading.Thread(target=call_after_close, args=(ident, outcome))
        thread.start()
        thread.join(TIMEOUT)
        assert isinstance(outcome[0], server.AppOfflineError)
        assert "the client was closed" in str(outcome[0])
        if ident[0] == loop_thread:
            break


async def test_which_websocket_each_client_gets(url: str) -> None:
    """A sync client's callers read plain ws:// themselves; AsyncClient's loop reads it."""
    async with AsyncClient(url) as aio:
        assert type(aio._ws) is WebSocket
        assert aio._reading is None
    sync = await asyncio.to_thread(Client, url)
    try:
        assert type(sync.aio._ws) is WsStream
        assert sync.aio._reading is not None
    finally:
        await asyncio.to_thread(sync.close)
