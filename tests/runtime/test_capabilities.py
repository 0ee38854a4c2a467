"""Capabilities against a real server: forgery refused, updates routed, live pushes."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys

import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.apps.capabilities import Holder
from tests.client.test_uplink import start_worker
from tests.conftest import ROOT, TIMEOUT, serve_both_ways, stop
from tether import server, testing
from tether.client import AsyncClient, Client
from tether.protocol import Push
from tether.runtime.updates import hub

KEY = "cap-uplink-key"
ANY = server.Capability.ANY


served, url = serve_both_ways("tests.apps.capabilities", uplink_key=KEY)


class Recorder:
    """An update handler that remembers what it got."""

    def __init__(self) -> None:
        self.updates: list[object] = []
        self.event = asyncio.Event()

    def __call__(self, update: object) -> None:
        self.updates.append(update)
        self.event.set()

    async def next(self) -> object:
        await asyncio.wait_for(self.event.wait(), TIMEOUT)
        self.event.clear()
        return self.updates[-1]


async def minted(client: AsyncClient, scope: list[object]) -> server.Capability:
    cap = await client.call("cap_mint", scope)
    assert isinstance(cap, server.Capability)
    return cap


# -- the token --------------------------------------------------------------------------


async def test_a_signed_capability_round_trips_and_unwraps(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["video", 7])
        assert cap.scope == ["video", 7]
        assert cap.is_valid
        assert await client.call("cap_check", cap, ["video", "*"]) == ["video", 7]
        assert await client.call("cap_check", cap, ["video", "*", "page", "*"]) == [
            "video",
            7,
            None,
            None,
        ]
        back = await client.call("cap_echo", cap)
        assert back == cap
        assert back is not cap


async def test_a_client_may_narrow_and_the_server_folds_narrow_into_scope(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["doc", 17])
        page = cap.narrow(["page", 3])
        assert cap.scope == ["doc", 17]
        assert await client.call("cap_scope", page) == ["doc", 17, "page", 3]
        assert await client.call("cap_check", page, ["doc", "*", "page", "*"]) == [
            "doc",
            17,
            "page",
            3,
        ]
        with pytest.raises(server.PermissionDenied, match="too narrow"):
            await client.call("cap_check", page, ["doc", "*"])
        # what comes back is signed for the full scope: narrowing again still verifies
        back = await client.call("cap_echo", page)
        assert back.scope == ["doc", 17, "page", 3]
        assert await client.call("cap_scope", back.narrow(["line", 9])) == [
            "doc",
            17,
            "page",
            3,
            "line",
            9,
        ]


async def test_unwrap_errors_show_required_and_got(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["video", 7])
        with pytest.raises(server.PermissionDenied) as info:
            await client.call("cap_check", cap, ["audio", "*"])
        assert "required ['audio', Capability.ANY]; got ['video', 7]" in str(info.value)
        with pytest.raises(server.PermissionDenied, match="not a valid Capability: found str"):
            await client.call("cap_check", "video", ["video"])


def raw_cap(cap: server.Capability, **fields: object) -> dict[str, object]:
    entry: dict[str, object] = {"type": ["Capability"], "scope": cap._scope, "mac": cap._mac}
    entry.update(fields)
    return entry


async def call_with_entry(
    url: str, entry: dict[str, object], command: str = "cap_scope"
) -> dict[str, object]:
    """Sends a CALL whose argument is the given raw objects entry; returns the reply."""
    async with ws_connect(url.replace("http://", "ws://") + "/_/ws") as ws:
        await ws.send(orjson.dumps({"key": None, "v": 8}).decode())
        orjson.loads(await ws.recv())
        await ws.send(
            orjson.dumps(
                {
                    "type": "CALL",
                    "id": "c1",
                    "command": command,
                    "args": [None],
                    "kwargs": {},
                    "objects": [{**entry, "path": ["args", 0]}],
                }
            ).decode()
        )
        reply: dict[str, object] = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        # the connection survives: a next call is served
        await ws.send(
            orjson.dumps({"type": "CALL", "id": "c2", "command": "cap_echo", "args": [1]}).decode()
        )
        assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["response"] == 1
        return reply


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"mac": None}, id="unsigned"),
        pytest.param({"scope": ["doc", 18]}, id="tampered scope"),
        pytest.param({"scope": ["doc"]}, id="widened"),
        pytest.param({"mac": "1." + "0" * 64}, id="forged mac"),
        pytest.param({"mac": "2." + "0" * 64}, id="future generation"),
        pytest.param({"mac": 5}, id="mac not a string"),
        pytest.param({"scope": []}, id="empty scope"),
        pytest.param({"scope": "doc"}, id="scope not a list"),
        pytest.param({"narrow": "page"}, id="narrow not a list"),
    ],
)
async def test_forged_capabilities_are_refused_before_the_function_runs(
    served: testing.ServerURL, change: dict[str, object]
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(served) as client:
        cap = await minted(client, ["doc", 17])
    reply = await call_with_entry(served, raw_cap(cap, **change))
    error = reply["error"]
    assert isinstance(error, dict)
    assert error["type"] == "anvil.server.PermissionDenied" or error["type"].endswith(
        "PermissionDenied"
    )
    assert "secret" not in str(error["message"]).lower()


async def test_a_capability_signed_for_another_connection_is_refused(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as alice, AsyncClient(url) as mallory:
        cap = await minted(alice, ["account", 1])
        assert await alice.call("cap_scope", cap) == ["account", 1]
        with pytest.raises(server.PermissionDenied, match="does not verify"):
            await mallory.call("cap_scope", cap)


async def test_an_untrusted_client_cannot_mint_and_a_trusted_one_can(
    served: testing.ServerURL,
) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with AsyncClient(served) as untrusted:
            with pytest.raises(server.PermissionDenied, match="only trusted code may mint"):
                await untrusted.call("cap_scope", server.Capability(["admin"]))
        async with AsyncClient(served, KEY) as trusted:
            assert await trusted.call("cap_scope", server.Capability(["admin"])) == ["admin"]
            cap = await minted(trusted, ["x", 1])  # a trusted peer's signature verifies too
            assert await trusted.call("cap_scope", cap.narrow([2])) == ["x", 1, 2]


async def test_reserved_scopes_are_refused_even_from_trusted_peers(
    served: testing.ServerURL,
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(served, KEY) as trusted:
        cap = server.Capability(["ok"])
        cap._scope = ["_", "internal"]  # what a hand-written peer could send
        with pytest.raises(server.PermissionDenied, match="reserved"):
            await trusted.call("cap_scope", cap)


def test_the_capability_constructor_refuses_bad_scopes() -> None:
    with pytest.raises(ValueError, match="empty scope"):
        server.Capability([])
    with pytest.raises(ValueError, match="reserved"):
        server.Capability(["_", 1])
    with pytest.raises(ValueError, match="JSON"):
        server.Capability([object()])


# -- revocation -------------------------------------------------------------------------


async def test_invalidate_client_objects_revokes_what_was_signed_for_that_client(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client, AsyncClient(url) as other:
        cap = await minted(client, ["doc", 1])
        theirs = await minted(other, ["doc", 1])
        assert await client.call("cap_valid", cap) is True
        await client.call("cap_revoke")
        # it still verifies (it was ours) but arrives invalid, and using it is refused
        assert await client.call("cap_valid", cap) is False
        with pytest.raises(server.PermissionDenied, match="invalidated"):
            await client.call("cap_check", cap, ["doc", "*"])
        with pytest.raises(server.PermissionDenied, match="invalidated"):
            await client.call("cap_update", cap, {"x": 1})
        # sending it back does not launder it: it comes back invalid
        assert await client.call("cap_valid", await client.call("cap_echo", cap)) is False
        # capabilities signed since are valid; other clients are unaffected
        fresh = await minted(client, ["doc", 1])
        assert await client.call("cap_valid", fresh) is True
        assert await other.call("cap_valid", theirs) is True


async def test_a_client_can_invalidate_its_own_capabilities(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["doc", 2])
        await client.invalidate_client_objects()
        assert not cap.is_valid
        assert await client.call("cap_valid", cap) is False
        fresh = await minted(client, ["doc", 2])
        await client.call("anvil.private.invalidate_client_objects")  # anvil-uplink's name
        assert await client.call("cap_valid", fresh) is False
        fresh = await minted(client, ["doc", 2])
        assert fresh.is_valid
        assert await client.call("cap_valid", fresh) is True


# -- updates in replies -----------------------------------------------------------------


async def test_updates_come_back_merged_and_the_handler_runs_once(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["job", 1])
        seen = Recorder()
        cap.set_update_handler(seen)
        await client.call("cap_update", cap, {"progress": 10}, {"done": True})
        assert seen.updates == [{"progress": 10, "done": True}]
        await client.call("cap_update", cap, 1, 2, "last")
        assert seen.updates[-1] == "last"
        assert len(seen.updates) == 2
        await client.call("cap_echo", cap)  # nothing sent: the handler does not run
        assert len(seen.updates) == 2


async def test_updates_reach_capabilities_inside_portable_objects_and_kwargs(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["holder", 1])
        seen = Recorder()
        cap.set_update_handler(seen)
        await client.call("cap_update_holder", Holder(cap), {"a": 1})
        await client.call("cap_update", cap=cap)  # no update sent
        await client.call("cap_aupdate", update={"b": 2}, cap=cap)
        assert seen.updates == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("function", ["cap_nested", "cap_anested"])
async def test_updates_flow_back_through_nested_calls(url: str, function: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["deep", 1])
        seen = Recorder()
        cap.set_update_handler(seen)
        await client.call(function, cap, {"depth": "innermost"})
        assert seen.updates == [{"depth": "innermost"}]


async def test_a_narrowed_copy_does_not_update_the_broader_capability(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["tree", 1])
        seen = Recorder()
        cap.set_update_handler(seen)
        await client.call("cap_nested_narrowed", cap, {"x": 1})
        assert seen.updates == []


async def test_only_callers_that_passed_the_capability_get_its_updates(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client, AsyncClient(url) as other:
        mine = await minted(client, ["shared", 1])
        theirs = await minted(other, ["shared", 1])
        got_mine, got_theirs = Recorder(), Recorder()
        mine.set_update_handler(got_mine)
        theirs.set_update_handler(got_theirs)
        await client.call("cap_update", mine, {"v": 1})
        await other.call("cap_echo", theirs)
        await other.call("cap_publish", ["shared", 1], {"v": 2})  # not subscribed: no push
        assert got_mine.updates == [{"v": 1}]
        assert got_theirs.updates == []


async def test_a_failed_call_sends_no_updates(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["fail", 1])
        seen = Recorder()
        cap.set_update_handler(seen)
        with pytest.raises(server.RemoteError, match="failed after sending"):
            await client.call("cap_fail_after_update", cap)
        assert seen.updates == []


async def test_get_update_decides_what_goes_back(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["getter", 1])
        seen = Recorder()
        cap.set_update_handler(seen)
        await client.call("cap_getter", cap)
        assert seen.updates == [{"from": "get_update"}]


async def test_an_unsendable_update_fails_the_call_clearly(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["bad", 1])
        with pytest.raises(server.SerializationError, match="capUpdates"):
            await client.call("cap_unsendable_update", cap)


async def test_a_handler_that_raises_does_not_break_the_call(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["raise", 1])

        def broken(update: object) -> None:
            raise RuntimeError("handler bug")

        cap.set_update_handler(broken)
        assert await client.call("cap_update", cap, {"a": 1}) is None
        assert "handler bug" in caplog.text


def test_the_sync_client_applies_updates_before_call_returns(url: str) -> None:
    with Client(url) as client:
        cap = client.call("cap_mint", ["sync", 1])
        got: list[object] = []
        cap.set_update_handler(got.append)
        client.call("cap_update", cap, {"n": 1})
        assert got == [{"n": 1}]


async def test_updates_cross_a_trusted_peer_in_the_middle(served: testing.ServerURL) -> None:
    worker = await asyncio.to_thread(start_worker, served, KEY)
    try:
        async with asyncio.timeout(TIMEOUT), AsyncClient(served) as client:
            cap = await minted(client, ["peer", 1])
            seen = Recorder()
            cap.set_update_handler(seen)
            # client -> server function -> the worker's function, which sends the update
            await client.call("cap_via_peer", cap, {"from": "worker"})
            assert seen.updates == [{"from": "worker"}]
            # client -> the worker's function directly
            assert await client.call("peer_cap_update", cap, {"direct": 1}) == ["peer", 1]
            # client -> worker -> back into the server, which sends the update
            await client.call("peer_cap_forward", cap, {"round": "trip"})
            assert seen.updates[1:] == [{"direct": 1}, {"round": "trip"}]
    finally:
        stop(worker)


# -- live pushes --------------------------------------------------------------------------


async def test_a_subscriber_gets_updates_sent_anywhere_in_the_server(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as watcher, AsyncClient(url) as actor:
        cap = await minted(watcher, ["live", 1])
        seen = Recorder()
        cap.set_update_handler(seen)
        await watcher.subscribe(cap)
        # another client's call
        their = await minted(actor, ["live", 1])
        await actor.call("cap_update", their, {"by": "actor"})
        assert await seen.next() == {"by": "actor"}
        # server code with no capability passed in at all, then a timer thread
        await actor.call("cap_publish", ["live", 1], {"by": "server"})
        assert await seen.next() == {"by": "server"}
        await actor.call("cap_publish_later", ["live", 1], {"by": "timer"}, 0.05)
        assert await seen.next() == {"by": "timer"}
        # another scope: nothing
        await actor.call("cap_publish", ["live", 2], {"by": "elsewhere"})
        await actor.call("cap_publish", ["live", 1], "marker")
        assert await seen.next() == "marker"
        assert {"by": "elsewhere"} not in seen.updates


async def test_unsubscribe_collect_and_close_end_a_subscription(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as actor:
        async with AsyncClient(url) as watcher:
            cap = await minted(watcher, ["sub", 1])
            await watcher.subscribe(cap)
            assert hub.subscribers(cap._key) == 1
            await watcher.unsubscribe(cap)
            await watcher.call("cap_echo", None)  # the unsubscribe has been handled
            assert hub.subscribers(cap._key) == 0

            collected = await minted(watcher, ["sub", 2])
            await watcher.subscribe(collected)
            key = collected._key
            assert hub.subscribers(key) == 1
            del collected
            gc.collect()
            for _ in range(100):  # bounded: the unsubscribe goes out on the next loop turn
                await asyncio.sleep(0.01)
                await watcher.call("cap_echo", None)
                if hub.subscribers(key) == 0:
                    break
            assert hub.subscribers(key) == 0

            last = await minted(watcher, ["sub", 3])
            await watcher.subscribe(last)
            assert hub.subscribers(last._key) == 1
        await actor.call("cap_echo", None)
        for _ in range(100):
            if hub.subscribers(last._key) == 0:
                break
            await asyncio.sleep(0.01)
        assert hub.subscribers(last._key) == 0
        await actor.call("cap_publish", ["sub", 3], {"after": "close"})  # nobody to push to


async def test_a_subscription_needs_a_valid_capability(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(server.PermissionDenied, match="only trusted code may mint"):
            await client.subscribe(server.Capability(["mine"]))
        cap = await minted(client, ["rev", 1])
        await client.call("cap_revoke")
        with pytest.raises(server.PermissionDenied, match="invalidated"):
            await client.subscribe(cap)
        with pytest.raises(TypeError):
            await client.subscribe("not a capability")  # type: ignore[arg-type]


async def test_invalidation_ends_subscriptions(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["inv", 1])
        await client.subscribe(cap)
        assert hub.subscribers(cap._key) == 1
        await client.call("cap_revoke")
        assert hub.subscribers(cap._key) == 0


def test_subscribe_through_the_facade(url: str) -> None:
    server.connect(url)
    try:
        cap = server.call("cap_mint", ["facade", 1])
        got: list[object] = []
        cap.set_update_handler(got.append)
        cap.subscribe()
        with Client(url) as other:
            other.call("cap_publish", ["facade", 1], {"pushed": True})
            other.call("cap_echo", None)
        for _ in range(200):  # bounded wait for the push
            if got:
                break
            server.call("cap_echo", None)
        assert got == [{"pushed": True}]
        cap.unsubscribe()
        assert hub.subscribers(cap._key) == 0
    finally:
        server.disconnect()
    with pytest.raises(server.AppOfflineError, match=r"server\.connect"):
        cap.subscribe()


async def test_plain_uplink_clients_never_receive_push(served: testing.ServerURL) -> None:
    """The /_/uplink route speaks Anvil's protocol: it may not subscribe, so no PUSH."""
    uplink = served.replace("http://", "ws://") + "/_/uplink"
    async with asyncio.timeout(TIMEOUT), AsyncClient(uplink) as client:
        cap = await minted(client, ["anvil", 1])
        with pytest.raises(server.PermissionDenied, match="Tether client"):
            await client.subscribe(cap)
        assert hub.subscribers(cap._key) == 0


# -- the example --------------------------------------------------------------------------


def test_the_videos_example_runs_as_a_user_runs_it(tether_serve: object, tmp_path: object) -> None:
    _, port = tether_serve("examples/videos", "--data-dir", str(tmp_path))  # type: ignore[operator]
    result = subprocess.run(
        [sys.executable, "examples/videos/client.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "TETHER_URL": f"ws://127.0.0.1:{port}/_/ws"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Charlie Bit My Finger",
        "© 2000 Anvil Records",
        "Now in 4K",
        "forged capability refused: cannot receive arguments of 'get_video_description':"
        " unsigned capability at msg['args'][0]: only trusted code may mint capabilities",
    ]


async def test_private_names_are_the_connections_own(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(server.NoServerFunctionError):
            await client.call("tether.private.nothing")
        with pytest.raises(server.SerializationError, match="scope key"):
            await client.call("tether.private.unsubscribe", 5)
        with pytest.raises(server.PermissionDenied, match="one Capability"):
            await client.call("tether.private.subscribe", "x")
        await client.call("tether.private.unsubscribe", '["never", 1]')  # not subscribed: fine


async def test_two_objects_with_one_scope_share_a_subscription(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        first = await minted(client, ["twin", 1])
        second = await minted(client, ["twin", 1])
        a, b = Recorder(), Recorder()
        first.set_update_handler(a)
        second.set_update_handler(b)
        await client.subscribe(first)
        await client.subscribe(second)
        await client.call("cap_publish", ["twin", 1], {"n": 1})
        assert await a.next() == {"n": 1}
        assert await b.next() == {"n": 1}
        await client.unsubscribe(first)
        await client.unsubscribe(first)  # twice is harmless
        assert hub.subscribers(first._key) == 1
        await client.call("cap_publish", ["twin", 1], {"n": 2})
        assert await b.next() == {"n": 2}
        assert a.updates == [{"n": 1}]
        await client.unsubscribe(second)
        await client.call("cap_echo", None)
        assert hub.subscribers(first._key) == 0


async def test_a_get_update_that_raises_fails_the_call(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["getter", 2])
        with pytest.raises(server.RemoteError, match="get_update failed"):
            await client.call("cap_bad_getter", cap)


async def test_a_server_side_handler_that_raises_fails_the_nested_call(
    served: testing.ServerURL,
) -> None:
    """In server code the handler runs inside ``server.call``: its error is that call's."""
    worker = await asyncio.to_thread(start_worker, served, KEY)
    try:
        async with asyncio.timeout(TIMEOUT), AsyncClient(served) as client:
            cap = await minted(client, ["peer", 2])
            with pytest.raises(server.RemoteError, match="server-side handler bug"):
                await client.call("cap_via_peer_with_broken_handler", cap, {"a": 1})
    finally:
        stop(worker)


async def test_a_push_handler_that_raises_is_logged(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        cap = await minted(client, ["push-raise", 1])
        quiet = await minted(client, ["push-raise", 1])  # no handler: skipped
        seen = Recorder()

        def broken(update: object) -> None:
            seen(update)
            raise RuntimeError("push handler bug")

        cap.set_update_handler(broken)
        await client.subscribe(cap)
        await client.subscribe(quiet)
        await client.call("cap_publish", ["push-raise", 1], {"x": 1})
        assert await seen.next() == {"x": 1}
        assert "push handler bug" in caplog.text
        # an update the client cannot read is logged, not applied
        client._apply_push(Push(cap._key, None, server.SerializationError("unreadable")))
        assert "could not read a live update" in caplog.text
        assert seen.updates == [{"x": 1}]


def test_the_facade_invalidates_through_the_connection(url: str) -> None:
    server.connect(url)
    try:
        cap = server.call("cap_mint", ["facade", 2])
        server.invalidate_client_objects()
        assert not cap.is_valid
        assert server.call("cap_valid", cap) is False
    finally:
        server.disconnect()


async def test_subscriptions_per_connection_are_bounded(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether.runtime.updates.MAX_SUBSCRIPTIONS", 2)
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        caps = [await minted(client, ["quota", i]) for i in range(3)]
        await client.subscribe(caps[0])
        await client.subscribe(caps[1])
        await client.subscribe(caps[1])  # again: still two scopes
        with pytest.raises(server.QuotaExceededError, match="at most 2 scopes"):
            await client.subscribe(caps[2])
        await client.unsubscribe(caps[0])
        await client.subscribe(caps[2])
        assert hub.subscribers(caps[2]._key) == 1
