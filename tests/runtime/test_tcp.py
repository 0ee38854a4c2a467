"""The TCP port for ``tether://`` clients, byte by byte: framing, refusals, limits, shutdown.

The calls themselves (values, objects, errors, nesting, slow functions) run over both
transports in test_server.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import ROOT, TIMEOUT, free_port, stop, wait_for_port
from tests.runtime.test_server import MALFORMED, call_frame
from tether import server, testing
from tether.client import AsyncClient, Client
from tether.codec import Limits
from tether.protocol.framing import PREAMBLE, FrameReader, pack_frame

KEY = "tcp-test-key"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with testing.serve("tests.apps.echo", uplink_key=KEY, tcp_port=0) as served:
        yield str(served.tcp)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("tether://").split(":")
    return host, int(port)


async def raw_session(url: str, *frames: str | bytes, hello: bool = True) -> list[object]:
    """Sends the preamble, the key and ``frames``; returns the replies and "open"/"closed"."""
    reader, writer = await asyncio.open_connection(*address(url))
    frames_in = FrameReader(1 << 24)
    received: list[object] = []
    try:
        writer.write(PREAMBLE)
        if hello:
            writer.write(pack_frame(orjson.dumps({"key": None, "v": 8}).decode()))
        for frame in frames:
            writer.write(frame if isinstance(frame, bytearray) else pack_frame(frame))
        await writer.drain()
        try:
            async with asyncio.timeout(1):
                while data := await reader.read(65536):
                    received += [orjson.loads(f) for f in frames_in.feed(data)]
            received.append("closed")
        except TimeoutError:
            received.append("open")
        except ConnectionResetError:
            received.append("closed")
    finally:
        writer.close()
    return received


async def test_a_session_byte_by_byte(url: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        received = await raw_session(url, call_frame(["hi"], []))
    assert received[0]["auth"] == "OK"  # type: ignore[index]
    assert received[1] == {"id": "c1", "response": "hi", "objects": []}
    assert received[-1] == "open"


@pytest.mark.parametrize("frame", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_frame_closes_only_that_connection(url: str, frame: str | bytes) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as bystander:
        received = await raw_session(url, frame)
        assert received[-1] == "closed"
        assert await bystander.call("echo", "unaffected") == "unaffected"
        async with AsyncClient(url) as fresh:
            assert await fresh.call("echo", "fresh") == "fresh"


@pytest.mark.parametrize(
    "start",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00", b"TETHER/9\n"],
    ids=["http request", "tls hello", "future version"],
)
async def test_anything_but_a_tether_stream_is_dropped(url: str, start: bytes) -> None:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(*address(url))
        writer.write(start)
        assert await reader.read() == b""  # closed without a word
        writer.close()
        async with AsyncClient(url) as fresh:
            assert await fresh.call("echo", 1) == 1


async def test_an_oversized_frame_is_refused_from_its_header() -> None:
    with testing.serve("tests.apps.echo", limits=Limits(max_frame_bytes=4096), tcp_port=0) as s:
        tcp = str(s.tcp)
        async with asyncio.timeout(TIMEOUT):
            # Announces 1 GiB and sends 4 bytes of it: refused before any payload is read.
            header = bytearray((1 << 30).to_bytes(4, "big") + b"xxxx")
            assert (await raw_session(tcp, header))[-1] == "closed"
            async with AsyncClient(tcp) as client:
                with pytest.raises(server.SerializationError, match="frame limit of 4096"):
                    await client.call("echo", "x" * 5000)  # refused before sending
                assert await client.call("echo", "x" * 1000) == "x" * 1000


async def test_wrong_key_and_untrusted_register_are_refused(url: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(server.PermissionDenied, match="Incorrect uplink key"):
            await AsyncClient(url, "wrong").connect()
        received = await raw_session(url, orjson.dumps({"type": "REGISTER", "name": "x"}).decode())
        assert "untrusted" in received[1]["error"]  # type: ignore[index]
        assert received[-1] == "closed"


async def test_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    with testing.serve(handshake_timeout=0.2, tcp_port=0) as served:
        async with asyncio.timeout(TIMEOUT):
            received = await raw_session(str(served.tcp), hello=False)
    assert received == ["closed"]


async def test_a_trusted_tcp_client_serves_functions_to_websocket_callers() -> None:
    from tether.functions import FunctionRegistry

    functions = FunctionRegistry()

    def tcp_triple(x: int) -> int:
        return 3 * x

    functions.register(tcp_triple)
    with testing.serve("tests.apps.echo", uplink_key=KEY, tcp_port=0) as served:
        async with asyncio.timeout(TIMEOUT):
            peer = await AsyncClient(served.tcp, KEY, register=True, functions=functions).connect()
            try:
                await peer.call("echo", "sync point")
                async with AsyncClient(served) as caller:
                    assert await caller.call("tcp_triple", 14) == 42
            finally:
                await peer.close()
            async with AsyncClient(served) as caller:
                with pytest.raises(server.NoServerFunctionError):
                    await caller.call("tcp_triple", 1)


def test_tether_serve_opens_the_tcp_port() -> None:
    port, tcp_port = free_port(), free_port()
    command = [sys.executable, "-m", "tether", "serve", "tests.apps.echo"]
    command += ["--port", str(port), "--tcp-port", str(tcp_port)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(tcp_port, process)
        with Client(f"tether://127.0.0.1:{tcp_port}") as client:
            assert client.call("echo", "over tcp") == "over tcp"
    finally:
        out, _ = stop(process)
    assert f"tether://127.0.0.1:{tcp_port}" in out


def test_a_port_in_use_fails_the_start_with_a_clear_error() -> None:
    import socket

    from tether.runtime.app import create_app
    from tether.runtime.serving import serve_in_thread

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        app = create_app(tcp_port=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="did not start"), serve_in_thread(app):
            pass


def test_bad_tcp_urls_are_refused() -> None:
    from tether.transports.tcp import tcp_address

    assert tcp_address("tether://127.0.0.1:5") == ("127.0.0.1", 5)
    for bad in ("tether://127.0.0.1", "tcp://127.0.0.1:5", "tether://:5"):
        with pytest.raises(ValueError, match="tether://HOST:PORT"):
            tcp_address(bad)


async def test_stopping_the_server_ends_tcp_clients_with_app_offline() -> None:
    async with asyncio.timeout(TIMEOUT):
        with testing.serve("tests.apps.echo", tcp_port=0) as served:
            client = await AsyncClient(served.tcp, reconnect=False).connect()
            assert await client.call("echo", 1) == 1
        await client.wait_closed()
        with pytest.raises(server.AppOfflineError, match="not connected"):
            await client.call("echo", 2)
        await client.close()


async def test_both_sides_sending_a_lot_at_once_never_wait_on_each_other(url: str) -> None:
    """Many large calls in flight: both sides have a backlog; the client keeps reading."""
    blob = b"\x01" * (1 << 20)
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        results = await asyncio.gather(*[client.call("echo", blob) for _ in range(24)])
        assert all(r == blob for r in results)
