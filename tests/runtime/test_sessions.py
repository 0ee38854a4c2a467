"""Sessions, call context, users and timeouts, against a real server (both transports)."""

from __future__ import annotations

import asyncio
import builtins
import re
import threading
from pathlib import Path

import orjson
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

import tests.apps.sessions as app
from tests.conftest import TIMEOUT, serve_both_ways
from tether import server, testing
from tether.client import AsyncClient, Client
from tether.codec import BlobMedia
from tether.protocol import session_id

UPLINK_KEY = "sessions-uplink-key"


served, url = serve_both_ways("tests.apps.sessions", uplink_key=UPLINK_KEY)


# -- server.session -------------------------------------------------------------------


async def test_a_session_lasts_across_calls_and_each_client_has_its_own(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as one, AsyncClient(url) as two:
        sid = await one.call("session_set", "colour", "blue")
        assert sid == one.session_id
        assert one.session_token is not None
        assert sid not in one.session_token
        assert await one.call("session_get", "colour") == "blue"
        assert await two.call("session_get", "colour") is None
        assert two.session_id != one.session_id
        await one.call("session_delete", "colour")
        assert await one.call("session_keys") == []


async def test_the_session_holds_portable_objects_and_changes_made_in_place(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        await client.call("session_add_to_cart", "apple")
        cart = await client.call("session_add_to_cart", "pear")
        assert isinstance(cart, app.Cart)
        assert cart.items == ["apple", "pear"]
        assert await client.call("session_append", "seen", 1) == [1]
        assert await client.call("session_append", "seen", 2) == [1, 2]
        await client.call("session_set_async", "from", "async")
        assert await client.call("session_get", "from") == "async"


async def test_media_and_unserializable_values_are_refused_and_nothing_is_kept(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(server.SerializationError, match="cannot store Media"):
            await client.call("session_set", "file", BlobMedia("text/plain", b"hi"))
        with pytest.raises(server.SerializationError, match=r"'weird' in server\.session"):
            await client.call("session_set_unsendable")
        assert await client.call("session_keys") == []


async def test_changes_are_saved_even_when_the_function_raises(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(server.RemoteError, match="failed after setting"):
            await client.call("session_set_then_fail", "attempted", True)
        assert await client.call("session_get", "attempted") is True


async def test_concurrent_calls_changing_different_keys_both_persist(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        await client.call("reset_held")
        await asyncio.gather(
            client.call("session_set_together", "a", 1),
            client.call("session_set_together", "b", 2),
        )
        assert await client.call("session_keys") == ["a", "b"]


async def test_for_one_key_the_call_that_finishes_last_wins(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        await client.call("reset_held")
        held = asyncio.ensure_future(client.call("session_set_and_hold", "k", "first"))
        assert await client.call("wait_held_started")
        await client.call("session_set", "k", "second")  # finishes first
        assert await client.call("session_get", "k") == "second"
        await client.call("release_held")
        await held
        assert await client.call("session_get", "k") == "first"


async def test_nested_calls_share_the_callers_session_and_client(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        assert await client.call("nested_session_get", "x") == "set by the outer call"
        both = await client.call("nested_context_of")
        assert isinstance(both, dict)
        outer, nested = both["outer"], both["nested"]
        assert nested["caller"] == "server_module"
        assert nested["trusted"] is True
        assert nested["session"] == outer["session"] == client.session_id
        assert (nested["client"], nested["ip"]) == (outer["client"], outer["ip"])


async def test_reset_session_in_server_code_moves_the_client_to_a_fresh_session(
    url: str,
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        old = await client.call("session_set", "kept", "no")
        new = await client.call("reset_and_set", "fresh", "yes")
        assert new != old
        assert client.session_id == new  # the new token arrived before the answer
        assert await client.call("session_keys") == ["fresh"]


async def test_a_client_can_reset_its_session(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        old = await client.call("session_set", "a", 1)
        await client.reset_session()
        assert client.session_id != old
        assert await client.call("session_keys") == []


# -- expiry ---------------------------------------------------------------------------


async def test_an_idle_session_expires_until_the_client_resets_it() -> None:
    async with asyncio.timeout(TIMEOUT):
        with testing.serve(session_timeout=0.3) as url:
            async with AsyncClient(url) as client:
                old = await client.call("session_set", "a", 1)
                assert await client.call("session_get", "a") == 1  # use keeps it alive
                await asyncio.sleep(0.5)
                for _ in range(2):
                    with pytest.raises(server.SessionExpiredError, match="reset_session"):
                        await client.call("session_get", "a")
                await client.reset_session()
                assert await client.call("session_keys") == []
                assert client.session_id != old
                token = client.session_token
            await asyncio.sleep(0.5)
            returning = AsyncClient(url)  # comes back with the token of an expired session
            returning.session_token = token
            async with returning:
                with pytest.raises(server.SessionExpiredError):
                    await returning.call("session_keys")
            unknown = AsyncClient(url)  # or of a session the server never made
            unknown.session_token = "not-a-token-the-server-made"
            async with unknown:
                with pytest.raises(server.SessionExpiredError):
                    await unknown.call("session_keys")
                await unknown.reset_session()
                assert await unknown.call("session_keys") == []


# -- call context ---------------------------------------------------------------------


async def test_the_context_of_a_python_client(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        info = await client.call("context_of")
    assert info == {
        "type": "server_module",
        "client": "uplink",
        "ip": "127.0.0.1",
        "location": None,
        "caller": "client_uplink",
        "trusted": False,
        "task": None,
        "session": client.session_id,
    }
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, UPLINK_KEY) as trusted:
        info = await trusted.call("context_of")
    assert isinstance(info, dict)
    assert (info["client"], info["caller"], info["trusted"]) == ("uplink", "uplink", True)


async def raw_call(
    url: str, command: str, headers: dict[str, str] | None = None, cookie: str | None = None
) -> tuple[object, websockets.Headers]:
    """One call over a raw WebSocket with the given headers; returns (result, response headers)."""
    extra = dict(headers or {})
    if cookie is not None:
        extra["Cookie"] = cookie
    ws = url.replace("http://", "ws://") + "/_/ws"
    async with ws_connect(ws, additional_headers=extra) as sock:
        await sock.send(orjson.dumps({"key": None, "v": 8}).decode())
        auth = orjson.loads(await sock.recv())
        assert auth["auth"] == "OK"
        call = {"type": "CALL", "id": "c1", "command": command, "args": [], "kwargs": {}}
        await sock.send(orjson.dumps(call).decode())
        reply = orjson.loads(await sock.recv())
        assert sock.response is not None
        return reply.get("response", reply.get("error")), sock.response.headers


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    async with asyncio.timeout(TIMEOUT):
        with testing.serve() as url:
            info, _ = await raw_call(url, "context_of", forwarded)
            assert isinstance(info, dict)
            assert info["ip"] == "127.0.0.1"
        with testing.serve(trusted_proxies=["127.0.0.1"]) as url:
            info, _ = await raw_call(url, "context_of", forwarded)
            assert isinstance(info, dict)
            assert info["ip"] == "203.0.113.9"


def cookie_of(headers: websockets.Headers | dict[str, str]) -> str:
    value = headers.get("set-cookie") or headers.get("Set-Cookie")
    assert value is not None, "no Set-Cookie"
    return str(value)


async def test_a_browser_gets_a_session_cookie_that_its_tabs_and_pages_share() -> None:
    async with asyncio.timeout(TIMEOUT):
        with testing.serve() as url:
            origin = {"Origin": url}
            info, headers = await raw_call(url, "context_of", origin)
            set_cookie = cookie_of(headers)
            assert set_cookie.startswith("tether-session=")
            assert "HttpOnly" in set_cookie
            assert "SameSite=Lax" in set_cookie
            assert "Secure" not in set_cookie  # plain http
            assert isinstance(info, dict)
            assert (info["client"], info["caller"], info["trusted"]) == (
                "browser",
                "browser",
                False,
            )
            cookie = set_cookie.split(";")[0]
            again, headers = await raw_call(url, "context_of", origin, cookie=cookie)
            assert isinstance(again, dict)
            assert again["session"] == info["session"]
            assert "set-cookie" not in headers  # it already has one

            # A page (any HTTP request) without the cookie gets one; with it, keeps it.
            reader, writer = await asyncio.open_connection(*url[7:].split(":"))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = (await reader.read()).decode("latin-1")
            writer.close()
            found = re.search(r"^set-cookie: (tether-session=([^;]+));", response, re.I | re.M)
            assert found is not None, response
            page_cookie, token = found.groups()
            from_page, _ = await raw_call(url, "context_of", origin, cookie=page_cookie)
            assert isinstance(from_page, dict)
            assert from_page["session"] == session_id(token)
            assert from_page["session"] != info["session"]


async def test_the_cookie_is_secure_behind_an_https_proxy() -> None:
    headers = {"Origin": "https://app.example", "X-Forwarded-Proto": "https"}
    async with asyncio.timeout(TIMEOUT):
        with testing.serve(
            trusted_proxies=["127.0.0.1"], allowed_origins=["https://app.example"]
        ) as url:
            _, response = await raw_call(url, "context_of", headers)
            assert "; Secure" in cookie_of(response)


# -- users ----------------------------------------------------------------------------


async def test_require_user_reads_the_session_user(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(server.PermissionDenied, match="requires a logged-in user"):
            await client.call("whoami")
        await client.call("login", "bob")
        assert await client.call("whoami") == "bob"
        with pytest.raises(server.PermissionDenied, match="this user may not call"):
            await client.call("admin_only")
        await client.call("login", "admin")
        assert await client.call("admin_only") == "welcome, admin"
        await client.call("logout")
        with pytest.raises(server.PermissionDenied):
            await client.call("whoami")


async def test_a_user_resolver_replaces_the_session_user(url: str) -> None:
    server.set_user_resolver(lambda: "admin" if server.session.get("vip") else None)
    try:
        async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
            await client.call("login", "bob")  # the resolver ignores "user"
            with pytest.raises(server.PermissionDenied):
                await client.call("admin_only")
            await client.call("session_set", "vip", True)
            assert await client.call("admin_only") == "welcome, admin"
    finally:
        server.set_user_resolver(None)


# -- timeouts -------------------------------------------------------------------------


async def test_a_client_wide_call_timeout(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, call_timeout=0.2) as client:
        with pytest.raises(server.TimeoutError, match=r"no answer within 0\.2 s") as caught:
            await client.call("sleep_for", 1)
        assert isinstance(caught.value, builtins.TimeoutError)
        assert await client.call("session_get", "missing", "still usable") == "still usable"
        with server.call_timeout(5):
            assert await client.call("sleep_for", 0.3) == "slept"


def test_the_call_timeout_context_manager_in_a_sync_client(served: testing.ServerURL) -> None:
    with Client(served) as client:
        with server.call_timeout(0.2), pytest.raises(server.TimeoutError):
            client.call("sleep_for", 1)
        assert client.call("sleep_for", 0) == "slept"
    with pytest.raises(ValueError, match="positive"), server.call_timeout(0):
        pass


def test_the_facade_connect_takes_a_call_timeout(served: testing.ServerURL) -> None:
    server.connect(served, call_timeout=0.2, register=False)
    try:
        with pytest.raises(server.TimeoutError):
            server.call("sleep_for", 1)
        with server.call_timeout(5):
            assert server.call("sleep_for", 0.3) == "slept"
        sid = server.call("session_set", "who", "facade")
        assert server.get_session_id() == sid
        server.reset_session()
        assert server.get_session_id() != sid
    finally:
        server.disconnect()


# -- connections that survive a blip --------------------------------------------------


def sqlite_app(path: Path) -> object:
    from tether.runtime.app import create_app

    return create_app(store=f"sqlite:///{path}", session_timeout=600)


async def test_a_python_client_reconnects_and_keeps_its_session(tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tether.runtime.app import TetherApp
    from tether.runtime.serving import serve_in_thread

    port = free_port()
    db = tmp_path / "sessions.db"
    async with asyncio.timeout(TIMEOUT):
        first = sqlite_app(db)
        assert isinstance(first, TetherApp)
        with serve_in_thread(first, port=port) as url:
            client = await AsyncClient(url, reconnect_delay=0.05).connect()
            sid = await client.call("session_set", "basket", ["tea"])
            await client.call("reset_held")
            in_flight = asyncio.ensure_future(client.call("session_set_and_hold", "x", 1))
            assert await client.call("wait_held_started")
            threading.Timer(0.3, app.release_held).start()  # ends while the server stops
        # The server stopped mid-call: the call fails clearly, and calls made now too.
        with pytest.raises(server.AppOfflineError, match="connection to the server was lost"):
            await in_flight
        assert not client.connected
        with pytest.raises(server.AppOfflineError, match="not connected"):
            await client.call("session_get", "basket")
        second = sqlite_app(db)
        assert isinstance(second, TetherApp)
        with serve_in_thread(second, port=port):
            assert await client.wait_online(TIMEOUT)
            assert client.session_id == sid
            assert await client.call("session_get", "basket") == ["tea"]
            # The stopping server waited for the call, which saved its session change.
            assert await client.call("session_get", "x") == 1
        await client.close()


def test_is_app_online_follows_the_connection(tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tether.runtime.serving import serve_in_thread

    port = free_port()
    try:
        with serve_in_thread(sqlite_app(tmp_path / "s.db"), port=port) as url:  # type: ignore[arg-type]
            server.connect(url, register=False, reconnect_delay=0.05)
            assert server.is_app_online()
            server.call("session_set", "kept", True)
        client = _facade_client()
        assert not server.is_app_online()
        with pytest.raises(server.AppOfflineError):
            server.call("session_keys")
        with serve_in_thread(sqlite_app(tmp_path / "s.db"), port=port):  # type: ignore[arg-type]
            assert client.wait_online(TIMEOUT)
            assert server.is_app_online()
            assert server.call("session_keys") == ["kept"]
    finally:
        server.disconnect()


def _facade_client() -> Client:
    from tether import _current

    assert _current.client is not None
    client = _current.client.client
    assert isinstance(client, Client)
    return client


def test_killing_the_server_mid_call_then_restarting_it_keeps_the_session(
    tmp_path: Path,
) -> None:
    """``tether serve`` with the SQLite store, killed with SIGKILL during a call."""
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port, stop, wait_for_port

    port = free_port()
    store = f"sqlite:///{tmp_path / 'kill.db'}"
    command = [sys.executable, "-m", "tether", "serve", "tests.apps.sessions"]
    command += ["--port", str(port), "--store", store, "--log-level", "warning"]

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_for_port(port, process)
        return process

    process = start()
    try:
        with Client(f"http://127.0.0.1:{port}", reconnect_delay=0.05) as client:
            sid = client.call("session_set", "order", {"id": 7, "items": ["tea"]})
            held = client.aio.call_threadsafe("sleep_for", (10,), {})
            process.kill()  # SIGKILL: no shutdown, no goodbye
            stop(process)  # reaps it and closes its pipes
            with pytest.raises(server.AppOfflineError, match="connection to the server was lost"):
                held.result(TIMEOUT)
            with pytest.raises(server.AppOfflineError):
                client.call("session_keys")
            process = start()
            assert client.wait_online(TIMEOUT)
            assert client.session_id == sid
            assert client.call("session_get", "order") == {"id": 7, "items": ["tea"]}
    finally:
        stop(process)


# -- what the review found ------------------------------------------------------------


class Blackhole:
    """A TCP relay that can go silent (drop everything, close nothing): a dead network."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.silent = False
        self.server: asyncio.AbstractServer | None = None
        self.address = ""
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Blackhole:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.address = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if not self.silent:
                    sink.write(data)

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_a_silently_dead_connection_fails_calls_and_reconnects(
    served: testing.ServerURL,
) -> None:
    port = int(served.rsplit(":", 1)[1])
    async with asyncio.timeout(TIMEOUT), Blackhole(port) as relay:
        client = AsyncClient(
            relay.address, keepalive_interval=0.2, keepalive_timeout=0.3, reconnect_delay=0.05
        )
        async with client:
            sid = await client.call("session_set", "before", "the blackout")
            relay.silent = True
            with pytest.raises(server.AppOfflineError, match="connection to the server was lost"):
                await client.call("sleep_for", 0)
            relay.silent = False
            assert await client.wait_online(TIMEOUT)
            assert client.session_id == sid
            assert await client.call("session_get", "before") == "the blackout"


async def test_answered_calls_leave_no_timer_behind(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, call_timeout=600) as client:
        for _ in range(5):
            await client.call("session_keys")
        assert client.deadlines._timers == {}


async def test_setting_a_key_back_to_its_old_value_is_written_too(url: str) -> None:
    """The call that finishes last wins, even when it sets the value it began with."""
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        await client.call("reset_held")
        await client.call("session_set", "k", "original")
        held = asyncio.ensure_future(client.call("session_set_and_hold", "k", "original"))
        assert await client.call("wait_held_started")
        await client.call("session_set", "k", "changed")
        await client.call("release_held")
        await held
        assert await client.call("session_get", "k") == "original"


async def test_a_session_in_use_is_never_purged_and_only_its_first_use_is_stored(
    tmp_path: Path,
) -> None:
    from tether.runtime.app import create_app
    from tether.runtime.serving import serve_in_thread
    from tether.runtime.stores import SqliteStore

    db = tmp_path / "purge.db"
    asgi = create_app(store=f"sqlite:///{db}", session_timeout=0.4)
    async with asyncio.timeout(TIMEOUT):
        with serve_in_thread(asgi) as url:
            for _ in range(3):  # crawlers: no call, nothing stored
                reader, writer = await asyncio.open_connection(*url[7:].split(":"))
                writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                await reader.read()
                writer.close()
            async with AsyncClient(url) as client:
                sid = await client.call("session_set", "user", "ann")
                for _ in range(8):  # used all along, past the timeout and a purge
                    await asyncio.sleep(0.1)
                    assert await client.call("session_get", "user") == "ann"
                await asyncio.sleep(0.35)
                await client.call("session_get", "user")
                assert asgi.dispatcher.sessions.stored_timeout > 0.4
    store = SqliteStore(db)
    await store.open()
    try:
        record = await store.load_session(sid)
        assert record is not None
        assert "user" in record.data
        assert await store.purge_sessions(0) == 0
        assert await store.purge_sessions(float("inf")) == 1  # the crawlers left no rows
    finally:
        await store.close()


async def test_a_browser_with_an_expired_cookie_gets_a_fresh_session_and_cookie() -> None:
    async with asyncio.timeout(TIMEOUT):
        with testing.serve(session_timeout=0.3) as url:
            origin = {"Origin": url}
            first, headers = await raw_call(url, "context_of", origin)
            cookie = cookie_of(headers).split(";")[0]
            await asyncio.sleep(0.5)
            again, headers = await raw_call(url, "context_of", origin, cookie=cookie)
            assert isinstance(first, dict)
            assert isinstance(again, dict)
            assert again["session"] != first["session"]
            assert cookie_of(headers).startswith("tether-session=")
            # Two session cookies (one tossed by a sibling subdomain): neither is used.
            fresh_cookie = cookie_of(headers).split(";")[0]
            tossed = f"{fresh_cookie}; tether-session=attacker-token"
            third, headers = await raw_call(url, "context_of", origin, cookie=tossed)
            assert isinstance(third, dict)
            assert third["session"] not in (again["session"], session_id("attacker-token"))
            assert "set-cookie" in headers


async def test_an_anvil_uplink_connection_starts_afresh_when_its_session_expires() -> None:
    """Anvil's client keeps no token and cannot reset: no SessionExpiredError for it."""
    async with asyncio.timeout(TIMEOUT):
        with testing.serve(session_timeout=0.3) as url:
            ws = url.replace("http://", "ws://") + "/_/uplink"
            async with ws_connect(ws) as sock:
                await sock.send(orjson.dumps({"key": None, "v": 8}).decode())
                auth = orjson.loads(await sock.recv())
                assert "session" not in auth

                async def call(command: str, *args: object) -> object:
                    frame = {"type": "CALL", "id": command, "command": command}
                    await sock.send(orjson.dumps({**frame, "args": args, "kwargs": {}}).decode())
                    reply = orjson.loads(await sock.recv())
                    return reply.get("response", reply.get("error"))

                first = await call("session_set", "a", 1)
                assert await call("session_get", "a") == 1
                await asyncio.sleep(0.5)
                assert await call("session_get", "a") is None
                assert await call("session_set", "b", 2) != first
