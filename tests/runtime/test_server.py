"""A real server on 127.0.0.1 and real clients: calls, values, errors, limits, security."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import sys

import orjson
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from tests.apps.echo import Counted, Item, Refused
from tests.conftest import TIMEOUT, serve_both_ways
from tether import server, testing
from tether.client import AsyncClient, Client
from tether.codec import BlobMedia, Limits

UPLINK_KEY = "test-uplink-key"


served, url = serve_both_ways("tests.apps.echo", uplink_key=UPLINK_KEY)


@pytest.fixture
def http_url(served: testing.ServerURL) -> str:
    """For the tests of the WebSocket route itself (raw frames, Origin)."""
    return served


def ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/_/ws"


async def test_echo_over_a_real_socket(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        assert await client.call("echo", "hi") == "hi"
        assert await client.call("aecho", [1, 2]) == [1, 2]
        assert await client.call("renamed.echo", {"a": None}) == {"a": None}
        assert await client.call("echo", 1, k="v") == [[1], {"k": "v"}]


def test_sync_client_and_facade(url: str) -> None:
    with Client(url) as client:
        assert client.call("echo", "sync") == "sync"
    server.connect(url)
    try:
        assert server.is_app_online()
        assert server.call("echo", 5) == 5
    finally:
        server.disconnect()
    # This process is itself serving: with no connection, calls run here (server code).
    assert server.is_app_online()
    assert server.call("echo", [1]) == [1]


def test_the_app_origin_outside_a_call(url: str) -> None:
    # Server code outside a call has no request to read it from, and no --origin here.
    with pytest.raises(RuntimeError, match="start the server with --origin URL"):
        server.get_app_origin()
    server.connect(url)  # a client process: the server it connected to
    try:
        if url.startswith("tether://"):  # a raw TCP port has no HTTP origin
            with pytest.raises(RuntimeError, match="--origin"):
                server.get_app_origin()
        else:
            assert server.get_app_origin() == url
            assert server.get_api_origin() == url + "/_/api"
    finally:
        server.disconnect()


VALUES = {
    "none": None,
    "bools": [True, False],
    "int32 edges": [2_147_483_647, -2_147_483_647, -2_147_483_648, 2_147_483_648],
    "huge int": 10**300,
    "negative huge int": -(2**200),
    "floats": [0.5, -1e300, float("inf"), float("-inf")],
    "unicode": "héllo ✓ \u0000",
    "nested": {"a": [{"b": [1, {"c": "d"}]}]},
    "date": dt.date(2024, 2, 29),
    "utc datetime": dt.datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC),
    "offset datetime": dt.datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
    ),
    "empty bytes": b"",
    "64 KiB bytes": bytes(range(256)) * 256,
    "1 MiB bytes": b"\xff" * (1 << 20),
}


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
async def test_every_value_type_round_trips(url: str, value: object) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        assert await client.call("echo", value) == value


async def test_nan_tuple_media_and_naive_datetime(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        assert math.isnan(await client.call("echo", float("nan")))  # type: ignore[arg-type]
        assert await client.call("echo", (1, (2, 3))) == [1, [2, 3]]
        media = BlobMedia("text/plain", b"x" * 70_000, name="a.txt")
        back = await client.call("echo", media)
        assert isinstance(back, BlobMedia)
        assert (back.content_type, back.name, back.get_bytes()) == (
            "text/plain",
            "a.txt",
            media.get_bytes(),
        )
        naive = dt.datetime(2024, 5, 1, 10, 0)
        back_dt = await client.call("echo", naive)
        assert isinstance(back_dt, dt.datetime)
        assert back_dt.tzinfo is not None
        assert back_dt == naive.astimezone()


async def test_portable_objects_cross_as_real_objects(url: str) -> None:
    items = [Item(i, f"item-{i}", ["a", "b"]) for i in range(100)]
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        back = await client.call("echo", items)
        assert back == items
        assert all(type(item) is Item and item.init_calls == 1 for item in back)  # type: ignore[union-attr]
        counted = await client.call("echo", [Counted("x"), Counted("y"), {"z": Counted("z")}])
        assert [c.seen for c in counted[:2]] == [3, 3]  # type: ignore[index]
        assert await client.call("item_class") is Item
        assert await client.call("echo", Item) is Item


async def test_errors_arrive_as_their_classes(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(Refused) as refused:
            await client.call("refuse", 7)
        assert refused.value.code == 7
        assert refused.value.args == ("refused",)
        with pytest.raises(server.PermissionDenied, match="not you"):
            await client.call("deny")
        with pytest.raises(server.RemoteError) as remote:
            await client.call("divide", 1, 0)
        assert remote.value.type_name == "ZeroDivisionError"
        assert "division by zero" in str(remote.value)
        assert remote.value.trace is None  # no traceback without --dev
        with pytest.raises(server.NoServerFunctionError, match="no server function named 'ecoh'"):
            await client.call("ecoh", 1)
        with pytest.raises(server.SerializationError, match="return value"):
            await client.call("unsendable")
        with pytest.raises(server.PermissionDenied, match="requires a logged-in user"):
            await client.call("members_only")
        assert await client.call("echo", "still usable") == "still usable"


async def test_dev_mode_sends_traces() -> None:
    with testing.serve(dev=True) as url:
        async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
            with pytest.raises(server.RemoteError) as remote:
                await client.call("divide", 1, 0)
    assert remote.value.trace
    assert any("echo.py" in str(frame[0]) for frame in remote.value.trace)  # type: ignore[index]


async def test_unsendable_argument_fails_before_sending(url: str) -> None:
    class Local:
        pass

    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(server.SerializationError, match=r"msg\['args'\]\[0\]\['tags'\]\[1\]"):
            await client.call("echo", {"tags": [1, Local()]})
        loop: list[object] = [1]
        loop.append(loop)
        with pytest.raises(server.SerializationError, match="circular reference"):
            await client.call("echo", loop)
        with pytest.raises(server.SerializationError, match="keys must be strings"):
            await client.call("echo", {1: "x"})


async def test_nested_call_has_copy_semantics(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        result = await client.call("nested_copy", Item(1, "a", ["t"]))
        assert result["original"].tags == ["t"]  # type: ignore[index]
        assert result["returned"].tags == ["t", "mutated"]  # type: ignore[index]
        assert result["same"] is False  # type: ignore[index]
        assert await client.call("anested", {"k": 1}) == {"k": 1}
        with pytest.raises(server.RemoteError, match="would block the event loop"):
            await client.call("blocking_in_loop")


async def test_call_context(url: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with AsyncClient(url) as client:
            info = await client.call("context_info")
        assert info == {
            "type": "server_module",
            "client": "uplink",
            "caller": "client_uplink",
            "trusted": False,
            "nested": {"caller": "server_module", "trusted": True},
        }
        async with AsyncClient(url, UPLINK_KEY) as trusted:
            assert trusted.trusted
            info = await trusted.call("context_info")
        assert (info["caller"], info["trusted"]) == ("uplink", True)  # type: ignore[index]


async def test_slow_sync_function_blocks_no_one(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as a, AsyncClient(url) as b:
        slow = asyncio.ensure_future(a.call("wait_for_release"))
        for _ in range(3):
            assert await b.call("echo", "fast") == "fast"
            assert await a.call("echo", "same connection") == "same connection"
        assert not slow.done()
        await b.call("release")
        assert await slow == "released"


async def test_wrong_key_is_refused(url: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(server.PermissionDenied, match="Incorrect uplink key"):
            await AsyncClient(url, "wrong").connect()


async def test_keepalive_echo_is_answered(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        assert await client.call("anvil.private.echo", "keep-alive") == "keep-alive"


# -- strict by construction -----------------------------------------------------------


async def raw_session(url: str, *frames: str | bytes, origin: str | None = None) -> list[object]:
    """Sends the key, then ``frames``; returns what came back until the server closed."""
    received: list[object] = []
    headers = {"Origin": origin} if origin else None
    async with ws_connect(ws(url), additional_headers=headers) as sock:
        await sock.send(orjson.dumps({"key": None, "v": 8}).decode())
        received.append(orjson.loads(await sock.recv()))
        for frame in frames:
            await sock.send(frame)
        try:
            async with asyncio.timeout(1):
                async for reply in sock:
                    received.append(orjson.loads(reply))
        except TimeoutError:
            received.append("open")
        except websockets.ConnectionClosed:
            pass
        if sock.close_code is not None:
            received.append(sock.close_code)
    return received


def call_frame(args: list[object], objects: list[object], command: str = "echo") -> str:
    return orjson.dumps(
        {
            "type": "CALL",
            "id": "c1",
            "command": command,
            "args": args,
            "kwargs": {},
            "objects": objects,
        }
    ).decode()


async def test_unknown_type_name_is_refused_and_nothing_is_imported(http_url: str) -> None:
    evil = [{"path": ["args", 0], "type": ["ValueType"], "typeName": "tests.apps.canary.Evil"}]
    async with asyncio.timeout(TIMEOUT):
        received = await raw_session(http_url, call_frame([{}], evil))
    reply = received[1]
    assert reply["error"]["type"] == "anvil.server.InsecureJelly"  # type: ignore[index]
    assert "tests.apps.canary.Evil" in reply["error"]["message"]  # type: ignore[index]
    assert received[-1] == "open"  # that call failed; the connection lives on
    assert "tests.apps.canary" not in sys.modules
    async with AsyncClient(http_url) as client:
        assert await client.call("imported", "tests.apps.canary") is False


MALFORMED = {
    "not json": "{nope",
    "not an object": "[1, 2]",
    "unknown message type": '{"type": "EXPLODE"}',
    "chunk for unknown request": orjson.dumps(
        {
            "type": "CHUNK_HEADER",
            "requestId": "x",
            "mediaId": "0",
            "chunkIndex": 0,
            "lastChunk": True,
        }
    ).decode(),
    "binary without header": b"\x00\x01",
    "pickle payload": b"cos\nsystem\n(S'id'\ntR.",
    "answer to unknown call": '{"id": "nobody", "response": 1}',
}


@pytest.mark.parametrize("frame", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_frame_closes_only_that_connection(
    http_url: str, frame: str | bytes
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(http_url) as bystander:
        received = await raw_session(http_url, frame)
        assert received[-1] == 1002
        assert await bystander.call("echo", "unaffected") == "unaffected"
        async with AsyncClient(http_url) as fresh:
            assert await fresh.call("echo", "fresh") == "fresh"


async def test_limits_fail_the_call_with_a_clear_error() -> None:
    limits = Limits(max_frame_bytes=4096, max_depth=20, max_objects=50, max_int_digits=50)
    with testing.serve(limits=limits) as url:
        async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
            with pytest.raises(server.SerializationError, match="frame limit of 4096"):
                await client.call("echo", "x" * 5000)  # the client adopted the server's limit
            received = await raw_session(
                url,
                call_frame(
                    [[None] * 60],
                    [{"path": ["args", 0, i], "type": ["Long"], "value": "1"} for i in range(60)],
                ),
            )
            assert "over the limit of 50" in received[1]["error"]["message"]  # type: ignore[index]
            received = await raw_session(
                url,
                call_frame([None], [{"path": ["args", 0], "type": ["Long"], "value": "9" * 60}]),
            )
            assert "max_int_digits" in received[1]["error"]["message"]  # type: ignore[index]
            deep: object = "bottom"
            for _ in range(30):
                deep = [deep]
            with pytest.raises(server.SerializationError, match="nesting deeper than 20"):
                await client.call("echo", deep)
            assert await client.call("echo", "ok") == "ok"
        async with asyncio.timeout(TIMEOUT):
            received = await raw_session(url, "[" + " " * 9000 + "]")
        assert received[-1] == 1009  # over the frame limit: closed by the server


async def test_browser_origin_is_checked(http_url: str) -> None:
    host = http_url.removeprefix("http://")
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await raw_session(http_url, origin="https://evil.example")
        assert refused.value.response.status_code == 403
        for evil in (f"http://{host}.evil.example", "null", f"https://evil-{host}"):
            with pytest.raises(websockets.InvalidStatus):
                await raw_session(http_url, origin=evil)
        same = await raw_session(http_url, origin=f"http://{host}")
        assert same[0]["auth"] == "OK"  # type: ignore[index]


async def test_allowed_origins_option() -> None:
    with testing.serve(allowed_origins=["https://app.example"]) as url:
        async with asyncio.timeout(TIMEOUT):
            allowed = await raw_session(url, origin="https://app.example")
            assert allowed[0]["auth"] == "OK"  # type: ignore[index]
            with pytest.raises(websockets.InvalidStatus):
                await raw_session(url, origin="https://other.example")


async def test_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    with testing.serve(handshake_timeout=0.2) as url:
        async with asyncio.timeout(TIMEOUT), ws_connect(ws(url)) as sock:
            with pytest.raises(websockets.ConnectionClosed):
                await sock.recv()
            assert sock.close_code == 1008


async def test_untrusted_register_is_refused(http_url: str) -> None:
    async with asyncio.timeout(TIMEOUT), ws_connect(ws(http_url)) as sock:
        await sock.send(orjson.dumps({"key": None, "v": 8}).decode())
        await sock.send(orjson.dumps({"type": "REGISTER", "name": "echo"}).decode())
        replies = []
        with contextlib.suppress(websockets.ConnectionClosedError):
            async for frame in sock:
                replies.append(orjson.loads(frame))
    assert replies[0]["auth"] == "OK"
    assert "untrusted" in replies[1]["error"]
    assert sock.close_code == 1008
    async with AsyncClient(http_url) as client:
        assert await client.call("echo", "still mine") == "still mine"


async def test_untrusted_client_cannot_register_functions(url: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(server.PermissionDenied, match="uplink key"):
            await AsyncClient(url, register=True).connect()


def test_concurrent_sync_callers_share_one_connection(url: str) -> None:
    """Threads call at once (media included: chunk runs must stay whole) and all get theirs."""
    import concurrent.futures

    blob = bytes(range(256)) * 400  # 100 KiB: two chunks each way

    def caller(n: int) -> None:
        for i in range(15):
            value: object = [n, i, blob] if i % 5 == 0 else [n, i]
            assert client.call("echo", value) == value

    with Client(url) as client, concurrent.futures.ThreadPoolExecutor(6) as pool:
        for future in [pool.submit(caller, n) for n in range(6)]:
            future.result(TIMEOUT)
