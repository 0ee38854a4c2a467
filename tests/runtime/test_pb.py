"""tether.pb over a real server: copies, mirrors, releases, limits, broken peers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import re
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from tests.apps import pb as app
from tests.conftest import TIMEOUT, eventually, serve_both_ways, wait_until
from tether import pb, server, testing
from tether.client import AsyncClient, Client
from tether.codec import Limits
from tether.codec import flavors as flavors_module
from tether.context import Perspective
from tether.errors import DeadReferenceError, InsecureJelly, SerializationError

KEY = "pb-uplink-key"
T = TypeVar("T")

served, url = serve_both_ways("tests.apps.pb", uplink_key=KEY)


async def new_tally(client: AsyncClient, items: list[object] | None = None) -> app.Tally:
    name = await client.call("pb_new_tally", items)
    assert isinstance(name, str)
    return app.TALLIES[name]


async def fetch(client: AsyncClient, tally: app.Tally) -> app.RemoteTally:
    mirror = await client.call("pb_get", tally.name)
    assert type(mirror) is app.RemoteTally
    return mirror


def given_to(tally: app.Tally, client: AsyncClient | Client) -> tuple[Perspective, pb.Observer]:
    """What ``tally.get_state_to_cache_and_observe_for`` was given for ``client``'s
    connection (the only one for it)."""
    found = [(p, o) for p, o in tally.given if p.session_id == client.session_id]
    assert len(found) == 1, tally.given
    return found[0]


def stopped_for(tally: app.Tally, client: AsyncClient | Client) -> list[tuple[Perspective, Any]]:
    return [(p, o) for p, o in tally.stopped if p.session_id == client.session_id]


def tables(observer: pb.Observer) -> Any:
    """The server side's Cacheable tables of the observer's connection."""
    return observer.link.connection.caches  # type: ignore[attr-defined]


# -- copies ------------------------------------------------------------------------------


async def test_a_copyable_arrives_as_the_allowed_remote_copy_both_ways(url: str) -> None:
    before = app.RemotePoint.init_calls
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        # client -> server: the function gets a RemotePoint built without __init__
        assert await client.call("pb_take_point", app.Point(1, 2)) == [
            "RemotePoint",
            {"x": 1, "y": 2},
            before,
        ]
        # server -> client
        point = await client.call("pb_make_point", 3, 4)
        assert type(point) is app.RemotePoint
        assert vars(point) == {"x": 3, "y": 4}
        # a factory may hand out an existing object
        assert await client.call("pb_color_identity", app.Color("red"), app.Color("red")) == [
            "red",
            True,
            True,
        ]
    assert app.RemotePoint.init_calls == before


@pytest.mark.parametrize(
    ("function", "make", "name"),
    [
        pytest.param("pb_echo", app.Smuggled, "tests.apps.canary.Evil", id="argument-canary"),
        pytest.param("pb_echo", app.Unlisted, "tests.apps.pb.Unlisted", id="argument-unlisted"),
        pytest.param("pb_make_smuggled", None, "tests.apps.canary.Evil", id="return-value"),
    ],
)
async def test_a_name_off_the_allow_list_fails_that_call_only(
    url: str, function: str, make: Callable[[], object] | None, name: str
) -> None:
    args = [] if make is None else [make()]
    built = app.Unlisted.built
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        with pytest.raises(InsecureJelly, match=f"class '{name}' is not allowed here"):
            await client.call(function, *args)
        assert await client.call("pb_echo", "next") == "next"  # the connection serves on
    assert app.Unlisted.built == built  # never built on the receiving side
    assert "tests.apps.canary" not in sys.modules  # nothing imported by its name


# -- caches: one mirror, kept up to date -------------------------------------------------


async def test_one_mirror_per_connection_and_its_state_sent_once(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client, [1, "two"])
        mirror = await fetch(client, tally)
        assert mirror.items == [1, "two"]
        assert mirror.name == tally.name
        assert await fetch(client, tally) is mirror
        first, second = await client.call("pb_get_twice", tally.name)
        assert first is mirror
        assert second is mirror
        assert await client.call("pb_aget", tally.name) is mirror
        assert len(tally.given) == 1  # the state went once
        (_, observer) = given_to(tally, client)
        assert tables(observer).exports[observer.cache_id].count == 5
    assert app.RemoteTally.init_calls == 0


async def test_updates_reach_each_mirror_through_its_own_observer_only(url: str) -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        AsyncClient(url) as alice,
        AsyncClient(url) as bob,
        AsyncClient(url) as carol,
    ):
        seen_by_carol: list[object] = []
        receive = carol.connection.receive_frame

        def spy(frame: Any) -> None:
            seen_by_carol.append(frame)
            receive(frame)

        carol.connection.receive_frame = spy  # type: ignore[method-assign]
        tally = await new_tally(carol, ["start"])
        at_alice, at_bob = await fetch(alice, tally), await fetch(bob, tally)
        (p_alice, o_alice), (p_bob, o_bob) = given_to(tally, alice), given_to(tally, bob)
        assert p_alice is not p_bob
        assert o_alice != o_bob
        assert tables(o_alice) is not tables(o_bob)

        # carol changes it: both mirrors follow
        assert await carol.call("pb_add", tally.name, "x") == 2
        await eventually(lambda: at_alice.items == at_bob.items == ["start", "x"], "updates")

        # one observer: only its connection's mirror hears it
        assert await bob.call("pb_add_for", tally.name, alice.session_id, "only-alice") == 1
        assert at_alice.items == ["start", "x", "only-alice"]
        assert await alice.call("pb_add_for", tally.name, bob.session_id, "only-bob") == 1
        assert at_bob.items == ["start", "x", "only-bob"]  # in order: nothing came before
        assert at_alice.items == ["start", "x", "only-alice"]

        assert carol.connection.caches.imports == {}
        assert not [f for f in seen_by_carol if "CACHE_MESSAGE" in str(f)]
        assert len(tally.given) == 2


@pytest.mark.parametrize(
    ("function", "answer"),
    [
        pytest.param("pb_add", 2, id="sync-no-wait"),
        pytest.param("pb_add_and_wait", [2], id="sync-result"),
        pytest.param("pb_aadd_and_wait", [2], id="async-await"),
    ],
)
async def test_the_callers_mirror_is_updated_when_its_call_returns(
    url: str, function: str, answer: object
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client, ["a"])
        mirror = await fetch(client, tally)
        assert await client.call(function, tally.name, "b") == answer  # observe_add's len
        assert mirror.items == ["a", "b"]


@pytest.mark.parametrize("function", ["pb_tell_and_wait", "pb_atell_and_wait"])
async def test_an_async_observe_method_is_awaited_before_its_answer(
    url: str, function: str
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client, [0])
        mirror = await fetch(client, tally)
        assert await client.call(function, tally.name, "add_later", "z") == [[True, ["async", 2]]]
        assert mirror.items == [0, "z"]


@pytest.mark.parametrize(
    ("method", "args", "outcome"),
    [
        pytest.param("fail", ["bad"], ["RemoteError", "ValueError: bad"], id="raises"),
        pytest.param(
            "nope",
            [],
            ["NoServerFunctionError", "RemoteTally has no method 'observe_nope'"],
            id="no-such-method",
        ),
        pytest.param(
            "not_an_observer",
            [],
            ["NoServerFunctionError", "RemoteTally has no method 'observe_not_an_observer'"],
            id="not-observe-prefixed",
        ),
    ],
)
async def test_a_failing_or_missing_observe_method_fails_that_future_only(
    url: str, method: str, args: list[object], outcome: list[object]
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client, [])
        mirror = await fetch(client, tally)
        assert await client.call("pb_tell_and_wait", tally.name, method, *args) == [
            [False, *outcome]
        ]
        assert await client.call("pb_add_and_wait", tally.name, 1) == [1]
        assert mirror.items == [1]


async def test_updates_on_one_connection_apply_in_order(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client)
        mirror = await fetch(client, tally)
        assert await client.call("pb_add_many", tally.name, 200) == 200
        assert mirror.items == list(range(200))


async def test_sync_and_async_observe_methods_apply_in_the_order_sent(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client)
        mirror = await fetch(client, tally)
        assert await client.call("pb_add_mixed", tally.name, 200) == 200
        await eventually(lambda: len(mirror.items) == 200, "200 updates")
        assert mirror.items == list(range(200))


def test_hooks_calling_remote_crosswise_do_not_deadlock(url: str) -> None:
    # Two workers each write an answer (holding their connection) whose hook calls
    # call_remote on the other's connection: neither may wait for the other's lock.
    first_room, second_room = f"r1-{os.getpid()}-{time.monotonic_ns()}", f"r2-{time.monotonic_ns()}"
    with Client(url) as first, Client(url) as second:
        held = [first.call("pb_room", first_room), second.call("pb_room", second_room)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            crossed = [
                pool.submit(first.call, "pb_room", second_room),
                pool.submit(second.call, "pb_room", first_room),
            ]
            mirrors = [future.result(timeout=TIMEOUT) for future in crossed]
        assert [type(m) for m in mirrors] == [app.RemoteRoom, app.RemoteRoom]
        for room in (app.ROOMS[first_room], app.ROOMS[second_room]):
            assert [told.result(timeout=TIMEOUT) for told in room.told] == [None]
        assert [mirror.joined for mirror in held] == [[first_room], [second_room]]


def test_a_sync_client_mirrors_updates_and_releases(url: str) -> None:
    with Client(url) as client:
        name = client.call("pb_new_tally", ["s"])
        assert isinstance(name, str)
        tally = app.TALLIES[name]
        mirror = client.call("pb_get", name)
        assert type(mirror) is app.RemoteTally
        assert client.call("pb_get", name) is mirror
        assert client.call("pb_add_many", name, 50) == 51
        assert mirror.items == ["s", *range(50)]
        assert client.call("pb_atell_and_wait", name, "add_later", "t") == [[True, ["async", 52]]]
        perspective, observer = given_to(tally, client)
        del mirror
        gc.collect()
        wait_until(lambda: stopped_for(tally, client), "stopped_observing")
        [(stopped_perspective, stopped_observer)] = stopped_for(tally, client)
        assert stopped_perspective is perspective
        assert stopped_observer == observer
        wait_until(lambda: not client.aio.connection.caches.imports, "UNCACHE")


async def test_a_cacheable_inside_an_update_is_mirrored_too(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        outer, inner = await new_tally(client, []), await new_tally(client, ["in"])
        at_outer, at_inner = await fetch(client, outer), await fetch(client, inner)
        # the inner mirror goes back as the inner tally, and comes in the update as itself
        assert await client.call("pb_add", outer.name, at_inner) == 1
        assert at_outer.items == [at_inner]
        assert at_outer.items[0] is at_inner
        assert len(inner.given) == 1


async def test_call_remote_from_many_threads_keeps_each_threads_order(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client)
        mirror = await fetch(client, tally)
        (_, observer) = given_to(tally, client)

        def sender(n: int) -> list[object]:
            futures = [observer.call_remote("add", [n, i]) for i in range(100)]
            return [future.result(TIMEOUT) for future in futures]

        def send_from_threads() -> list[list[object]]:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                return list(pool.map(sender, range(4)))

        answers = await asyncio.to_thread(send_from_threads)
        assert sorted(a for some in answers for a in some) == list(range(1, 401))
        for n in range(4):
            assert [i for m, i in mirror.items if m == n] == list(range(100))


async def test_call_remote_with_an_unsendable_argument_fails_its_future(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client)
        mirror = await fetch(client, tally)
        (_, observer) = given_to(tally, client)
        future = observer.call_remote("add", object())  # does not raise
        with pytest.raises(
            SerializationError,
            match=re.escape(
                "observe_add: cannot serialize <class 'object'> object at msg['args'][0]"
            ),
        ):
            await future
        assert await observer.call_remote("add", "fine") == 1
        assert mirror.items == ["fine"]


@pytest.mark.parametrize("function", ["pb_bad_state", "pb_abad_state", "pb_broken_tally"])
async def test_a_failing_state_hook_fails_that_call_only(url: str, function: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, call_timeout=1) as client:
        with pytest.raises((SerializationError, server.RemoteError), match="no state for you"):
            await client.call(function)
        assert await client.call("pb_echo", "next") == "next"


async def test_an_observe_answer_that_cannot_be_sent_fails_that_message_only(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, reconnect=False) as client:
        tally = await new_tally(client)
        mirror = await fetch(client, tally)
        [[ok, *_]] = await client.call("pb_tell_and_wait", tally.name, "bad_answer")
        assert ok is False
        assert await client.call("pb_add", tally.name, 1) == 1
        assert mirror.items == [1]


# -- a mirror sent back ------------------------------------------------------------------


async def test_a_mirror_sent_back_is_the_original_cacheable(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client, AsyncClient(url) as other:
        tally = await new_tally(client, [])
        mirror = await fetch(client, tally)
        assert await client.call("pb_is_original", tally.name, mirror) is True
        assert await client.call("pb_is_original", tally.name, [mirror]) is False  # a list
        # another connection cannot send it: nothing is sent, that connection serves on
        with pytest.raises(SerializationError, match="goes back only to its owner"):
            await other.call("pb_is_original", tally.name, mirror)
        assert await other.call("pb_echo", 1) == 1
        (_, observer) = given_to(tally, client)
        assert tables(observer).exports[observer.cache_id].count == 1  # CacheRef: no count


# -- release -----------------------------------------------------------------------------


async def test_dropping_the_mirror_stops_observing_once(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client, [1])
        mirror = await fetch(client, tally)
        perspective, observer = given_to(tally, client)
        del mirror
        gc.collect()
        await eventually(lambda: stopped_for(tally, client), "stopped_observing")
        await eventually(lambda: not client.connection.caches.imports, "UNCACHE")
        assert await client.call("pb_echo", "round trip") == "round trip"
        [(stopped_perspective, stopped_observer)] = stopped_for(tally, client)
        assert stopped_perspective is perspective
        assert stopped_observer == observer
        assert not tables(observer).exports
        assert tally.observers == []
        with pytest.raises(DeadReferenceError):
            await observer.call_remote("add", 2)
        again = await fetch(client, tally)  # a new mirror, a new observer
        assert again.items == [1]
        assert len(tally.given) == 2
        assert tally.given[1][0] is perspective
        assert tally.given[1][1].cache_id != observer.cache_id  # ids are never reused


async def test_close_stops_observing_while_the_mirror_is_still_held(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client, ["kept"])
        mirror = await fetch(client, tally)
        perspective, observer = given_to(tally, client)
        mirror.close()
        mirror.close()  # once is enough; again does nothing
        await eventually(lambda: stopped_for(tally, client), "stopped_observing")
        await eventually(lambda: not client.connection.caches.imports, "UNCACHE")
        [(stopped_perspective, stopped_observer)] = stopped_for(tally, client)
        assert stopped_perspective is perspective
        assert stopped_observer == observer
        assert await client.call("pb_add", tally.name, "later") == 2
        assert mirror.items == ["kept"]  # its last state, no more updates
        fresh = await fetch(client, tally)
        assert fresh is not mirror
        assert fresh.items == ["kept", "later"]
        assert await client.call("pb_add", tally.name, "again") == 3
        assert fresh.items == ["kept", "later", "again"]
        assert mirror.items == ["kept"]
        del mirror
        gc.collect()
        assert await client.call("pb_echo", 1) == 1
        assert len(stopped_for(tally, client)) == 1  # the closed one releases nothing more


async def test_every_reference_received_is_released_at_once(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client)
        mirror = await fetch(client, tally)
        assert await client.call("pb_get_twice", tally.name) == [mirror, mirror]
        (_, observer) = given_to(tally, client)
        export = tables(observer).exports[observer.cache_id]
        assert export.count == 3
        decaches: list[object] = []
        send = client.connection.caches._send

        def spy(message: dict[str, object]) -> None:
            decaches.append(message)
            send(message)

        client.connection.caches._send = spy
        del mirror
        gc.collect()
        await eventually(lambda: stopped_for(tally, client), "stopped_observing")
        assert decaches == [{"type": "DECACHE", "cache": observer.cache_id, "count": 3}]
        assert len(stopped_for(tally, client)) == 1


async def test_a_reference_in_flight_keeps_the_export_alive(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        tally = await new_tally(client, ["s"])
        mirror = await fetch(client, tally)
        (_, observer) = given_to(tally, client)
        export = tables(observer).exports[observer.cache_id]
        gate = f"gate-{tally.name}"
        app.GATES[gate] = threading.Event()
        call = asyncio.ensure_future(client.call("pb_get_when_open", tally.name, gate))
        await eventually(lambda: client.connection._pending_out, "the call sent")
        app.GATES[gate].set()
        # Block this loop (the client's) until the server has written its reference: the
        # answer is then in flight, unread, while the client drops its mirror.
        wait_until(lambda: export.count == 2, "the second reference written")
        del mirror
        gc.collect()
        mirror = await call
        assert mirror.items == ["s"]
        assert await client.call("pb_add", tally.name, "t") == 2
        assert mirror.items == ["s", "t"]  # still observed: the export lived on
        assert stopped_for(tally, client) == []
        assert tables(observer).exports[observer.cache_id] is export
        del mirror, call  # the task holds its result too
        gc.collect()
        await eventually(lambda: stopped_for(tally, client), "stopped_observing")
        await eventually(lambda: not client.connection.caches.imports, "UNCACHE")
        assert not tables(observer).exports
        assert len(stopped_for(tally, client)) == 1


# -- disconnect --------------------------------------------------------------------------


async def test_a_disconnect_stops_observing_every_cacheable_once(url: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        client = await AsyncClient(url).connect()
        tallies = [await new_tally(client) for _ in range(3)]
        try:
            mirrors = [await fetch(client, t) for t in tallies]
            mirrors.append(await fetch(client, tallies[0]))  # twice: still one export
            given = [given_to(t, client) for t in tallies]
            peer_tables = tables(given[0][1])
            assert len(peer_tables.exports) == 3
        finally:
            await client.close()
        for tally, (perspective, observer) in zip(tallies, given, strict=True):
            await eventually(lambda t=tally: stopped_for(t, client), "stopped_observing")
            [(stopped_perspective, stopped_observer)] = stopped_for(tally, client)
            assert stopped_perspective is perspective
            assert stopped_observer == observer
            future = observer.call_remote("add", "late")  # does not raise
            with pytest.raises(DeadReferenceError):
                await future
        assert not peer_tables.exports
        assert not peer_tables.imports
        assert client.connection.caches.imports == {}
        assert mirrors[0].items == []  # a stale mirror: its last state
        del mirrors
        gc.collect()
        assert all(len(stopped_for(t, client)) == 1 for t in tallies)


async def test_an_update_waiting_on_a_client_that_leaves_fails_dead(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as waiter:
        leaving = await AsyncClient(url).connect()
        tally = await new_tally(waiter)
        try:
            mirror = await fetch(leaving, tally)
            gate = f"hold-{tally.name}"
            app.GATES[gate] = threading.Event()
            call = asyncio.ensure_future(waiter.call("pb_atell_and_wait", tally.name, "hold", gate))
            await eventually(lambda: getattr(mirror, "holding", False), "observe_hold running")
        finally:
            await leaving.close()
        try:
            [[ok, error_type, _]] = await call
        finally:
            app.GATES[gate].set()
        assert (ok, error_type) == (False, "DeadReferenceError")
        await eventually(lambda: not mirror.holding, "observe_hold done")


# -- the per-connection cap --------------------------------------------------------------


@pytest.fixture(scope="module")
def capped() -> Iterator[testing.ServerURL]:
    with testing.serve("tests.apps.pb", tcp_port=0, limits=Limits(max_cacheables=3)) as url:
        yield url


@pytest.fixture(params=["ws", "tcp"])
def capped_url(request: pytest.FixtureRequest, capped: testing.ServerURL) -> str:
    return capped if request.param == "ws" else str(capped.tcp)


async def test_more_cacheables_than_max_cacheables_fail_that_call(capped_url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(capped_url) as client:
        tallies = [await new_tally(client) for _ in range(5)]
        mirrors = [await fetch(client, t) for t in tallies[:3]]
        assert await fetch(client, tallies[0]) is mirrors[0]  # known ones still go
        with pytest.raises(SerializationError, match=r"mirrors 3 Cacheables .*max_cacheables"):
            await client.call("pb_get", tallies[3].name)
        assert await client.call("pb_echo", "on") == "on"
        assert tallies[3].given == tallies[3].stopped == []  # it never got so far
        # releasing one lets the next through
        mirrors.pop().close()
        await eventually(lambda: stopped_for(tallies[2], client), "stopped_observing")
        mirrors.append(await fetch(client, tallies[3]))  # held: it counts
        with pytest.raises(SerializationError, match="max_cacheables"):
            await client.call("pb_get", tallies[4].name)

    async with asyncio.timeout(TIMEOUT), AsyncClient(capped_url) as client:
        # one message with too many: those handed out before it failed are stopped
        with pytest.raises(SerializationError, match="max_cacheables"):
            await client.call("pb_get_many", [t.name for t in tallies[:4]])
        for tally in tallies[:3]:
            await eventually(lambda t=tally: stopped_for(t, client), "stopped_observing")
            assert len(stopped_for(tally, client)) == 1
        assert tallies[3].given[-1][0].session_id != client.session_id
        assert client.connection.caches.imports == {}
        assert len(await client.call("pb_get_many", [t.name for t in tallies[:3]])) == 3


async def test_a_client_sending_past_the_servers_cap_fails_that_call_only(
    capped_url: str,
) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(capped_url, reconnect=False) as client:
        mine = [app.Tally(f"own-{i}") for i in range(4)]
        for i, tally in enumerate(mine[:3]):
            assert await client.call("pb_hold", f"capped-{i}", tally) == "RemoteTally"
        try:
            with pytest.raises(SerializationError, match="max_cacheables"):
                await client.call("pb_hold", "capped-3", mine[3])
            assert await client.call("pb_echo", "still here") == "still here"
        finally:
            for i in range(4):
                with contextlib.suppress(Exception):
                    await client.call("pb_drop", f"capped-{i}")


# -- no leaks ----------------------------------------------------------------------------


def live_objects(*types: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) in types)


def _reading_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tether-tcp-")]


def footprint() -> tuple[int, int]:
    """Objects the collector tracks, and this process's resident memory (bytes; 0 where
    /proc is missing)."""
    gc.collect()
    statm = Path("/proc/self/statm")
    rss = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") if statm.exists() else 0
    return sum(not _coverage_s(o) for o in gc.get_objects()), rss


def _coverage_s(value: object) -> bool:
    """A method of coverage.py's tracers: it keeps two for every thread ever started
    (each TCP connection's reading thread, here) until it stops measuring."""
    if type(value) is not types.MethodType and type(value) is not types.BuiltinMethodType:
        return False
    return type(value.__self__).__module__.startswith("coverage")


async def test_a_thousand_fetch_and_drop_cycles_leave_nothing(url: str) -> None:
    async with asyncio.timeout(TIMEOUT * 2), AsyncClient(url) as client:
        first = await client.call("pb_lean")
        assert type(first) is app.RemoteLean
        [observer] = [o for o in app.LEAN.live if o.perspective.session_id == client.session_id]
        peer_tables = tables(observer)
        del first, observer
        await eventually(lambda: not peer_tables.exports, "the first DECACHE")
        for _ in range(50):  # warm up: first-use allocations are not leaks
            await client.call("pb_lean")
        await eventually(lambda: not peer_tables.exports, "the warm-up DECACHEs")
        await eventually(lambda: not client.connection.caches.imports, "the warm-up UNCACHEs")
        objects, rss = footprint()
        observers = live_objects(pb.Observer)
        linked = len(flavors_module._releases)  # mirrors alive elsewhere in this process
        finalizers = len(weakref.finalize._registry)  # type: ignore[attr-defined]
        for i in range(1000):
            mirror = await client.call("pb_lean")
            if i % 2:
                mirror.close()
            del mirror  # half collected, half closed then collected
        await eventually(lambda: not peer_tables.exports, "the last DECACHE")
        await eventually(lambda: not client.connection.caches.imports, "the last UNCACHE")
        assert not peer_tables.imports
        assert not client.connection.caches.exports
        assert not peer_tables.released
        assert not client.connection.caches.released
        assert len(flavors_module._releases) == linked
        assert len(weakref.finalize._registry) == finalizers  # type: ignore[attr-defined]
        assert live_objects(app.RemoteLean) == 0
        assert live_objects(pb.Observer) == observers
        assert [o for o in app.LEAN.live if o.perspective.session_id == client.session_id] == []
        objects_after, rss_after = footprint()
        assert objects_after - objects < 500  # < 1 per cycle: noise, not a leak
        assert rss_after - rss < 20 * 2**20


async def test_two_hundred_connections_fetch_and_leave_without_a_trace(url: str) -> None:
    from tether.runtime.peer import Peer

    async def cycle() -> weakref.ref[Any]:
        async with AsyncClient(url, keepalive_interval=None) as client:
            mirror = await client.call("pb_lean")
            assert type(mirror) is app.RemoteLean
            [observer] = [o for o in app.LEAN.live if o.perspective.session_id == client.session_id]
            return weakref.ref(observer.link)

    async with asyncio.timeout(TIMEOUT * 2):
        for _ in range(20):  # warm up: first-use allocations are not leaks
            await cycle()
        await eventually(lambda: not app.LEAN.live, "the warm-up peers closed")
        peers_before = live_objects(Peer)
        observers = live_objects(pb.Observer)
        linked = len(flavors_module._releases)
        objects, rss = footprint()
        stopped_before = app.LEAN.stopped
        peers = [await cycle() for _ in range(200)]
        await eventually(lambda: app.LEAN.stopped == stopped_before + 200, "200 disconnects")
        await eventually(lambda: all(ref() is None or ref().closed for ref in peers), "peers")
        # a TCP connection's reading thread ends just after it: count once they have
        await eventually(lambda: not _reading_threads(), "the reading threads to end")
        assert not app.LEAN.live
        assert live_objects(Peer) <= peers_before + 1  # the server may hold the last one
        assert sum(ref() is not None for ref in peers) <= 1
        assert live_objects(pb.Observer) == observers
        assert len(flavors_module._releases) == linked
        objects_after, rss_after = footprint()
        assert objects_after - objects < 1_000  # < 5 per connection: noise, not a leak
        assert rss_after - rss < 20 * 2**20


# -- the perspective ---------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
async def test_the_perspective_is_the_connection(url: str, trusted: bool) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, KEY if trusted else None) as client:
        one, two = await new_tally(client), await new_tally(client)
        await fetch(client, one)
        await fetch(client, two)
        perspective, _ = given_to(one, client)
        assert type(perspective) is pb.Perspective
        assert perspective.client.type == "uplink"
        assert perspective.client.ip == "127.0.0.1"
        assert perspective.is_trusted is trusted
        assert perspective.session_id == client.session_id
        assert perspective.session_id is not None
        assert given_to(two, client)[0] is perspective  # one per connection


# -- Twisted's spelling ------------------------------------------------------------------


async def test_camel_case_names_work_end_to_end(url: str) -> None:
    async with asyncio.timeout(TIMEOUT), AsyncClient(url) as client:
        frog = await client.call("pb_frog", app.Frog("kermit"))
        assert frog == ["RemoteFrog", "kermit", "ribbit"]  # getStateToCopy, setCopyableState
        mirror = await client.call("pb_new_pond", ["one duck"])
        assert type(mirror) is app.CamelMirror
        assert mirror.camel_state is True  # setCopyableState ran, not the default
        assert mirror.ducks == ["one duck"]
        # the mirror goes back as the pond; addDuck tells it with callRemote
        assert await client.call("pb_pond_add", mirror, "two duck") == 1
        assert mirror.ducks == ["one duck", "two duck"]
        [(pond, observer)] = [
            (p, o)
            for p in app.PONDS.values()
            for o in p.observers
            if o.perspective.session_id == client.session_id
        ]
        assert pond.ducks == ["one duck", "two duck"]
        del mirror
        gc.collect()
        await eventually(lambda: pond.stopped, "stoppedObserving")
        [(perspective, stopped_observer)] = pond.stopped
        assert isinstance(perspective, pb.Perspective)
        assert perspective.session_id == client.session_id
        assert stopped_observer == observer
        with pytest.raises(DeadReferenceError):
            await observer.callRemote("addDuck", "late")


# -- a broken peer -----------------------------------------------------------------------


def frame(message: dict[str, object]) -> str:
    return orjson.dumps(message).decode()


async def read_until_closed(sock: Any) -> list[dict[str, Any]]:
    """What the server sends until it closes (bounded by the caller's timeout)."""
    replies: list[dict[str, Any]] = []
    with contextlib.suppress(websockets.ConnectionClosedError):
        async for message in sock:
            replies.append(orjson.loads(message))
    return replies


def cached_call(kind: str) -> str:
    return frame(
        {
            "type": "CALL",
            "id": "c1",
            "command": "pb_echo",
            "args": [None],
            "kwargs": {},
            "objects": [{"path": ["args", 0], "type": [kind], "cache": 41}],
        }
    )


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(frame({"type": "DECACHE", "cache": 41, "count": 1}), id="decache"),
        pytest.param(frame({"type": "UNCACHE", "cache": 41}), id="uncache"),
        pytest.param(
            frame(
                {
                    "type": "CACHE_MESSAGE",
                    "id": "m1",
                    "cache": 41,
                    "method": "add",
                    "args": [1],
                    "kwargs": {},
                }
            ),
            id="cache-message",
        ),
        pytest.param(cached_call("Cached"), id="cached-reference"),
        pytest.param(cached_call("CacheRef"), id="mirror-sent-back"),
        pytest.param(frame({"type": "DECACHE", "cache": "1", "count": 1}), id="decache-str-id"),
    ],
)
async def test_an_id_never_given_closes_that_connection_only(
    served: testing.ServerURL, bad: str
) -> None:
    ws_url = served.replace("http://", "ws://") + "/_/ws"
    async with asyncio.timeout(TIMEOUT), AsyncClient(served) as bystander:
        tally = await new_tally(bystander, ["b"])
        at_bystander = await fetch(bystander, tally)
        async with ws_connect(ws_url) as sock:
            await sock.send(frame({"key": None, "v": 8}))
            assert orjson.loads(await sock.recv())["auth"] == "OK"
            await sock.send(bad)
            replies = await read_until_closed(sock)
            assert not [r for r in replies if "response" in r], replies
            assert sock.close_code == 1002
            assert "never given" in (sock.close_reason or "")
        async with AsyncClient(served) as fresh:  # served at once
            assert await fresh.call("pb_echo", "fresh") == "fresh"
        assert await bystander.call("pb_add", tally.name, "still") == 2
        assert at_bystander.items == ["b", "still"]


async def test_a_bad_decache_count_closes_the_connection_and_stops_observing(
    served: testing.ServerURL,
) -> None:
    ws_url = served.replace("http://", "ws://") + "/_/ws"
    async with asyncio.timeout(TIMEOUT), AsyncClient(served) as helper:
        tally = await new_tally(helper)
    async with asyncio.timeout(TIMEOUT), ws_connect(ws_url) as sock:
        await sock.send(frame({"key": None, "v": 8}))
        assert orjson.loads(await sock.recv())["auth"] == "OK"
        await sock.send(
            frame({"type": "CALL", "id": "c1", "command": "pb_get", "args": [tally.name]})
        )
        reply = orjson.loads(await sock.recv())
        [entry] = reply["objects"]
        assert entry["type"] == ["Cache"]
        assert entry["typeName"] == "tests.apps.pb.Tally"
        assert reply["response"] == {"name": tally.name, "items": []}
        assert len(tally.given) == 1
        await sock.send(frame({"type": "DECACHE", "cache": entry["cache"], "count": 2}))
        assert await read_until_closed(sock) == []
        assert sock.close_code == 1002
        assert "count 2" in (sock.close_reason or "")
    await eventually(lambda: tally.stopped, "stopped_observing")
    assert len(tally.stopped) == 1
    assert tally.stopped[0][0] is tally.given[0][0]


async def test_an_off_list_name_in_a_raw_frame_fails_that_call_only(
    served: testing.ServerURL,
) -> None:
    ws_url = served.replace("http://", "ws://") + "/_/ws"
    evil = {"path": ["args", 0], "type": ["Copy"], "typeName": "tests.apps.canary.Evil"}
    async with asyncio.timeout(TIMEOUT), ws_connect(ws_url) as sock:
        await sock.send(frame({"key": None, "v": 8}))
        assert orjson.loads(await sock.recv())["auth"] == "OK"
        await sock.send(
            frame(
                {
                    "type": "CALL",
                    "id": "c1",
                    "command": "pb_type_of",
                    "args": [{}],
                    "kwargs": {},
                    "objects": [evil],
                }
            )
        )
        reply = orjson.loads(await sock.recv())
        assert "tests.apps.canary.Evil" in reply["error"]["message"]
        assert reply["error"]["type"].endswith("InsecureJelly")
        await sock.send(frame({"type": "CALL", "id": "c2", "command": "pb_echo", "args": [7]}))
        assert orjson.loads(await sock.recv())["response"] == 7
    assert "tests.apps.canary" not in sys.modules


# -- the client owns: the server mirrors -------------------------------------------------


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
async def test_a_clients_cacheable_is_mirrored_on_the_server(url: str, trusted: bool) -> None:
    key = f"client-owned-{id(object())}"
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, KEY if trusted else None) as client:
        tally = app.Tally("mine", [1])
        assert await client.call("pb_hold", key, tally) == "RemoteTally"
        [(perspective, observer)] = tally.given
        assert perspective.client.type == "server"
        assert perspective.is_trusted is True
        assert perspective.session_id == client.session_id
        assert await client.call("pb_held_items", key) == [1]
        # the client updates the server's mirror, and waits for what observe_add returned
        [future] = tally.add(2)
        assert isinstance(future, pb.RemoteFuture)
        assert await future == 2
        assert await client.call("pb_held_items", key) == [1, 2]
        [future] = tally.tell("add_later", 3)
        assert await future == ["async", 3]
        # from another thread, waiting with .result()
        assert await asyncio.to_thread(lambda: tally.add(4)[0].result(TIMEOUT)) == 4
        assert await client.call("pb_wait_for_items", key, 4) == [1, 2, 3, 4]
        # sent back, the mirror is the original; sent again, the same mirror
        assert await client.call("pb_give_back", key) is tally
        assert await client.call("pb_hold", key + "-again", tally) == "RemoteTally"
        assert len(tally.given) == 1
        # the server drops both references: the client stops observing, once
        await client.call("pb_drop", key)
        await client.call("pb_drop", key + "-again")
        await eventually(lambda: tally.stopped, "stopped_observing on the client")
        [(stopped_perspective, stopped_observer)] = tally.stopped
        assert stopped_perspective is perspective
        assert stopped_observer == observer
        assert not client.connection.caches.exports
        with pytest.raises(DeadReferenceError):
            await observer.call_remote("add", 5)
        # held at disconnect: stopped once too
        other = app.Tally("other")
        assert await client.call("pb_hold", key, other) == "RemoteTally"
        # nor can the server send it over another connection
        async with AsyncClient(url) as stranger:
            with pytest.raises(SerializationError, match="goes back only to its owner"):
                await stranger.call("pb_give_back", key)
    assert len(other.stopped) == 1
    assert other.stopped[0][0] is other.given[0][0]
    future = other.given[0][1].call_remote("add", 1)  # does not raise
    with pytest.raises(DeadReferenceError):
        await future
    app.HELD.pop(key, None)


async def test_a_server_mirrors_unsendable_answer_fails_that_message_only(url: str) -> None:
    key = f"bad-answer-{id(object())}"
    async with asyncio.timeout(TIMEOUT), AsyncClient(url, reconnect=False) as client:
        tally = app.Tally("mine")
        assert await client.call("pb_hold", key, tally) == "RemoteTally"
        try:
            [future] = tally.tell("bad_answer")
            with pytest.raises((SerializationError, server.RemoteError)):
                await future
            assert await client.call("pb_echo", "still here") == "still here"
        finally:
            app.HELD.pop(key, None)
