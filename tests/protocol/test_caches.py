"""Cacheables between two sans-I/O Connections: the owner's exports, the receiver's
mirrors, CACHE_MESSAGE, DECACHE and UNCACHE, and every way a peer can break them."""

from __future__ import annotations

import gc
import threading
from typing import Any

import orjson
import pytest

from tether.codec import BlobMedia, GlobalData, Limits, PortableRegistry
from tether.codec.capability import Capability
from tether.codec.capability_wire import CapabilitySession, HolderWire, Signer, SigningWire
from tether.codec.encoder import Encoder
from tether.codec.flavors import Cacheable, Copyable, RemoteCache, Unjellyables
from tether.errors import (
    DeadReferenceError,
    InsecureJelly,
    NoServerFunctionError,
    RemoteProtocolError,
    SerializationError,
)
from tether.protocol import (
    PROTOCOL_VERSION,
    Authenticated,
    CacheMessage,
    Call,
    Connection,
    Event,
    Failure,
    Hello,
    Push,
    Rejected,
    Response,
    Role,
    State,
)
from tether.protocol.caches import Observer

REGISTRY = PortableRegistry()
PERSPECTIVE = object()
"""What the owner's runtime would set as ``caches.perspective``."""
SIGNER = Signer(b"x" * 32)


@REGISTRY.decorator("caches.Pond")
class Pond(Cacheable):
    def __init__(self, *ducks: str, extra: dict[str, object] | None = None) -> None:
        self.ducks = list(ducks)
        self.extra = extra or {}
        self.observers: list[tuple[object, Observer]] = []

    def get_state_to_cache_and_observe_for(self, perspective: object, observer: object) -> object:
        assert isinstance(observer, Observer)
        self.observers.append((perspective, observer))
        return {"ducks": list(self.ducks), **self.extra}

    @property
    def observer(self) -> Observer:
        [(_, observer)] = self.observers
        return observer


class PondMirror(RemoteCache):
    ducks: list[str]

    def observe_add(self, duck: str) -> int:
        self.ducks.append(duck)
        return len(self.ducks)


@REGISTRY.decorator("caches.Trap")
class Trap:
    """A callable portable object: as an instance attribute named ``observe_*`` it must
    still be out of reach of a CACHE_MESSAGE."""

    def __call__(self) -> str:
        raise AssertionError("an instance attribute was called")


class Stranger(Copyable):
    """Nobody allows it: a message holding it fails with InsecureJelly."""


@REGISTRY.decorator("caches.Tagged")
class Tagged:
    """Puts a value into the message's global data."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __serialize__(self, global_data: GlobalData) -> object:
        global_data["tagged"] = self.value
        return None

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        self.value = global_data["tagged"]


class FakeLink:
    def __init__(self) -> None:
        self.calls: list[tuple[Observer, str, tuple[object, ...], dict[str, object]]] = []

    def observe(
        self, observer: Observer, method: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        self.calls.append((observer, method, args, kwargs))
        return "a future"


# -- helpers ---------------------------------------------------------------------------


def relay(source: Connection, target: Connection) -> list[Event]:
    for frame in source.frames_to_send():
        target.receive_frame(frame)
    return target.events_received()


def open_pair(
    *,
    mirror_class: type = PondMirror,
    client_limits: Limits | None = None,
    server_limits: Limits | None = None,
    capabilities: bool = False,
) -> tuple[Connection, Connection]:
    """A client that mirrors ``caches.Pond`` as ``mirror_class`` and a server that owns
    Ponds, each with an allow-list of its own."""
    client_allowed = Unjellyables()
    client_allowed.allow("caches.Pond", mirror_class)
    client = Connection(
        Role.CLIENT,
        registry=REGISTRY,
        limits=client_limits,
        unjellyables=client_allowed,
        capabilities=HolderWire() if capabilities else None,
    )
    server = Connection(
        Role.SERVER,
        registry=REGISTRY,
        limits=server_limits,
        unjellyables=Unjellyables(),
        capabilities=SigningWire(SIGNER, CapabilitySession(b"s" * 16)) if capabilities else None,
    )
    client.send_hello("secret")
    assert relay(client, server) == [Hello("secret", PROTOCOL_VERSION)]
    server.accept("client", {})
    assert relay(server, client) == [Authenticated("client", {})]
    server.caches.perspective = PERSPECTIVE
    return client, server


def show(server: Connection, client: Connection, *values: object) -> list[Any]:
    """The server calls the client with ``values``; returns the args the client got."""
    server.send_call("show", list(values), {})
    [call] = relay(server, client)
    assert isinstance(call, Call)
    return call.args


def loads(frame: object) -> dict[str, Any]:
    assert isinstance(frame, str)
    message: dict[str, Any] = orjson.loads(frame)
    return message


def text(message: object) -> str:
    return orjson.dumps(message).decode()


def flushed(client: Connection) -> list[dict[str, Any]]:
    """Collects garbage, flushes the released mirrors, returns the frames it queued."""
    gc.collect()
    client.caches.flush_released()
    return [loads(frame) for frame in client.frames_to_send()]


def decache(cache_id: int, count: int) -> dict[str, object]:
    return {"type": "DECACHE", "cache": cache_id, "count": count}


def uncache(cache_id: int) -> dict[str, object]:
    return {"type": "UNCACHE", "cache": cache_id}


def released_by_owner(server: Connection, client: Connection, pond: Pond, cache_id: int) -> None:
    """The owner, having read the last DECACHE, owes one stopped_observing and sends
    UNCACHE; after it both tables are empty."""
    assert server.caches.take_stopped() == [(pond, PERSPECTIVE, pond.observers[-1][1])]
    assert server.caches.take_stopped() == []
    assert [loads(frame) for frame in server.frames_to_send()] == [uncache(cache_id)]
    client.receive_frame(text(uncache(cache_id)))
    assert server.caches.exports == {}
    assert client.caches.imports == {}


def call_frame(objects: list[object], args: list[object] | None = None) -> str:
    return text(
        {
            "type": "CALL",
            "id": "server-forged",
            "command": "f",
            "args": [{"ducks": []}] if args is None else args,
            "kwargs": {},
            "objects": objects,
        }
    )


# -- sending ---------------------------------------------------------------------------


def test_the_first_reference_carries_the_state_and_later_ones_only_the_id() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    server.send_call("show", [pond], {})
    [frame] = server.frames_to_send()
    first = loads(frame)
    assert first["args"] == [{"ducks": ["ann"]}]
    assert first["objects"] == [
        {"path": ["args", 0], "type": ["Cache"], "typeName": "caches.Pond", "cache": 1}
    ]
    client.receive_frame(frame)
    [call] = client.events_received()
    assert isinstance(call, Call)
    [mirror] = call.args
    assert type(mirror) is PondMirror
    assert mirror.ducks == ["ann"]

    server.send_call("show", [{"again": pond}], {})
    [frame] = server.frames_to_send()
    later = loads(frame)
    assert later["args"] == [{"again": None}]
    assert later["objects"] == [{"path": ["args", 0, "again"], "type": ["Cached"], "cache": 1}]
    client.receive_frame(frame)
    [call] = client.events_received()
    assert isinstance(call, Call)
    assert call.args[0]["again"] is mirror
    assert len(pond.observers) == 1  # the state was asked for once on this connection
    assert pond.observers[0][0] is PERSPECTIVE
    assert server.caches.exports[1].count == 2


def test_two_references_in_one_message_are_one_mirror() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    first, second = show(server, client, pond, pond)
    assert first is second
    assert type(first) is PondMirror
    assert server.caches.exports[1].count == 2
    assert client.caches.imports[1].received == 2


def test_every_reference_is_the_same_mirror_while_it_lives() -> None:
    client, server = open_pair()
    pond, other = Pond("ann"), Pond("bob")
    mirrors = [show(server, client, pond)[0] for _ in range(3)]
    [nested] = show(server, client, [{"deep": [pond]}])
    [mirror_of_other] = show(server, client, other)
    assert all(mirror is mirrors[0] for mirror in [*mirrors, nested[0]["deep"][0]])
    assert mirror_of_other is not mirrors[0]
    assert mirror_of_other.ducks == ["bob"]
    assert server.caches.exports[1].count == 4
    assert server.caches.exports[2].count == 1


def test_observers_get_the_connections_link() -> None:
    client, server = open_pair()
    link = FakeLink()
    server.caches.link = link
    pond = Pond()
    show(server, client, pond)
    assert pond.observer.link is link
    assert pond.observer.cacheable is pond
    assert pond.observer.perspective is PERSPECTIVE
    assert pond.observer.call_remote("add", "bea") == "a future"
    assert link.calls == [(pond.observer, "add", ("bea",), {})]


# -- CACHE_MESSAGE ---------------------------------------------------------------------


def test_a_cache_message_reaches_the_mirrors_observe_method() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    call_id = server.send_cache_message(pond.observer, "add", ("bea",), {})
    [frame] = server.frames_to_send()
    assert loads(frame) == {
        "type": "CACHE_MESSAGE",
        "id": call_id,
        "cache": 1,
        "method": "add",
        "args": ["bea"],
        "kwargs": {},
        "objects": [],
    }
    assert server.pending_calls == 2  # the show call and this one
    client.receive_frame(frame)
    [event] = client.events_received()
    assert event == CacheMessage(call_id, mirror, PondMirror.observe_add, ["bea"], {})
    assert isinstance(event, CacheMessage)
    result = event.method(event.target, *event.args, **event.kwargs)
    assert mirror.ducks == ["ann", "bea"]
    client.send_response(event.id, result)
    assert relay(client, server) == [Response(call_id, 2)]
    assert server.pending_calls == 1


def test_capabilities_sent_in_a_cache_message_come_back_with_its_answer() -> None:
    client, server = open_pair(capabilities=True)
    pond = Pond("ann")
    show(server, client, pond)
    cap = Capability(["pond", 1])
    call_id = server.send_cache_message(pond.observer, "add", [cap], {})
    [event] = relay(server, client)
    assert isinstance(event, CacheMessage)
    assert type(event.args[0]) is Capability
    client.send_response(event.id, None)
    [response] = relay(client, server)
    assert response == Response(call_id, None)
    assert isinstance(response, Response)
    assert response.capabilities == [cap]


def test_a_cache_message_to_a_missing_method_is_answered_with_an_error() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    show(server, client, pond)
    call_id = server.send_cache_message(pond.observer, "fly", [], {"high": True})
    assert relay(server, client) == []  # no event: the connection answered itself
    [failure] = relay(client, server)
    assert isinstance(failure, Failure)
    assert failure.id == call_id
    assert type(failure.error) is NoServerFunctionError
    assert str(failure.error) == "PondMirror has no method 'observe_fly'"


def test_an_observe_attribute_in_the_state_is_out_of_reach() -> None:
    client, server = open_pair()
    pond = Pond("ann", extra={"observe_hack": Trap()})
    [mirror] = show(server, client, pond)
    assert callable(mirror.observe_hack)  # an instance attribute, from the owner's state
    server.send_cache_message(pond.observer, "hack", [], {})
    assert relay(server, client) == []
    [failure] = relay(client, server)
    assert isinstance(failure, Failure)
    assert type(failure.error) is NoServerFunctionError


@pytest.mark.parametrize(
    "method", ["", "not a name", "a-b", "x" * 129, 5], ids=["empty", "space", "dash", "long", "int"]
)
def test_a_cache_message_needs_a_method_name(method: Any) -> None:
    client, server = open_pair()
    pond = Pond()
    show(server, client, pond)
    pending = server.pending_calls
    with pytest.raises(SerializationError, match="observe method name must be an identifier"):
        server.send_cache_message(pond.observer, method, [], {})
    assert server.frames_to_send() == []
    assert server.pending_calls == pending


def test_a_cache_message_with_unsendable_args_queues_nothing() -> None:
    client, server = open_pair()
    pond = Pond()
    show(server, client, pond)
    pending = server.pending_calls
    with pytest.raises(
        SerializationError, match=r"cannot serialize arguments to observe_add: cannot serialize"
    ):
        server.send_cache_message(pond.observer, "add", [object()], {})
    assert server.frames_to_send() == []
    assert server.pending_calls == pending


def test_a_cache_message_to_a_released_mirror_is_a_dead_reference() -> None:
    client, server = open_pair()
    pond = Pond()
    args = show(server, client, pond)
    old = pond.observer
    del args
    assert flushed(client) == [decache(1, 1)]
    server.receive_frame(text(decache(1, 1)))
    relay(server, client)  # UNCACHE
    with pytest.raises(DeadReferenceError, match=r"^the mirror of Pond is gone$"):
        server.send_cache_message(old, "add", ["x"], {})
    show(server, client, pond)  # a new export, a new observer: the old one stays dead
    new = pond.observers[-1][1]
    assert new == old
    with pytest.raises(DeadReferenceError):
        server.send_cache_message(old, "add", ["x"], {})
    assert server.frames_to_send() == []
    server.send_cache_message(new, "add", ["x"], {})
    assert len(server.frames_to_send()) == 1


def test_a_cache_message_on_a_closed_connection_is_a_dead_reference() -> None:
    client, server = open_pair()
    pond = Pond()
    show(server, client, pond)
    server.receive_close()
    with pytest.raises(DeadReferenceError, match=r"is gone \(its connection closed\)"):
        server.send_cache_message(pond.observer, "add", ["x"], {})
    assert server.frames_to_send() == []


def test_call_remote_inside_a_state_hook_is_refused() -> None:
    client, server = open_pair()
    refused: list[BaseException] = []

    class Chatty(Pond):
        def get_state_to_cache_and_observe_for(
            self, perspective: object, observer: object
        ) -> object:
            state = super().get_state_to_cache_and_observe_for(perspective, observer)
            try:
                server.send_cache_message(self.observer, "add", ["early"], {})
            except Exception as exc:
                refused.append(exc)
            return state

    client.unjellyables.allow(REGISTRY.copy_name(Chatty), PondMirror)
    chatty = Chatty("ann")
    [mirror] = show(server, client, chatty)
    [error] = refused
    assert type(error) is RuntimeError
    assert "while this connection writes a message" in str(error)
    assert mirror.ducks == ["ann"]
    server.send_cache_message(chatty.observer, "add", ["late"], {})  # afterwards it works
    [event] = relay(server, client)
    assert isinstance(event, CacheMessage)
    assert event.target is mirror


# -- releasing -------------------------------------------------------------------------


def test_a_collected_mirror_is_released_and_the_owner_stops_observing() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    released: list[int] = []
    client.caches.on_release = lambda: released.append(1)
    args = show(server, client, pond, pond)
    original = pond.observer
    assert client.frames_to_send() == []
    del args
    gc.collect()
    assert released == [1]  # the runtime is told, and flushes when it can
    assert client.frames_to_send() == []
    assert flushed(client) == [decache(1, 2)]
    server.receive_frame(text(decache(1, 2)))
    [(cacheable, perspective, observer)] = server.caches.take_stopped()
    assert cacheable is pond
    assert perspective is PERSPECTIVE
    assert observer == original
    assert server.caches.take_stopped() == []
    [frame] = server.frames_to_send()
    assert loads(frame) == uncache(1)
    client.receive_frame(frame)
    assert server.caches.exports == {}
    assert client.caches.imports == {}
    assert flushed(client) == []
    # Sent again, it is a new export: a new id, and its state again.
    server.send_call("show", [pond], {})
    [frame] = server.frames_to_send()
    assert loads(frame)["objects"][0]["type"] == ["Cache"]
    assert loads(frame)["objects"][0]["cache"] == 2
    assert len(pond.observers) == 2


def test_closing_a_mirror_releases_it_and_keeps_its_last_state() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    mirror.close()
    assert flushed(client) == [decache(1, 1)]
    server.receive_frame(text(decache(1, 1)))
    released_by_owner(server, client, pond, 1)
    assert type(mirror) is PondMirror
    assert mirror.ducks == ["ann"]
    mirror.close()  # a second close does nothing
    del mirror
    assert flushed(client) == []


def test_a_closed_mirror_gets_no_rebound_update() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    mirror.close()
    assert flushed(client) == [decache(1, 1)]
    # A message sent before the owner read the DECACHE runs on the kept state instead.
    call_id = server.send_cache_message(pond.observer, "add", ["bea"], {})
    [event] = relay(server, client)
    assert isinstance(event, CacheMessage)
    assert event.target is not mirror
    assert type(event.target) is PondMirror
    event.target.__dict__["ducks"] = ["ann", "bea"]  # an update that rebinds the attribute
    client.send_response(event.id, 2)
    server.receive_frame(text(decache(1, 1)))
    assert relay(client, server) == [Response(call_id, 2)]
    released_by_owner(server, client, pond, 1)
    assert mirror.ducks == ["ann"]


def test_a_closed_mirror_gets_no_in_place_update() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    mirror.close()
    assert flushed(client) == [decache(1, 1)]
    server.send_cache_message(pond.observer, "add", ["bea"], {})
    [event] = relay(server, client)
    assert isinstance(event, CacheMessage)
    assert event.method(event.target, *event.args) == 2  # ducks.append, on the kept state
    assert mirror.ducks == ["ann"]


def test_a_closed_mirror_cannot_be_sent_back() -> None:
    client, server = open_pair()
    pond = Pond()
    [mirror] = show(server, client, pond)
    mirror.close()
    with pytest.raises(SerializationError, match="goes back only to its owner"):
        client.send_call("back", [mirror], {})
    assert client.frames_to_send() == []
    assert client.pending_calls == 0


def test_a_reference_in_flight_when_the_mirror_is_released_builds_a_new_one() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    args = show(server, client, pond)
    server.send_call("show", [pond], {})
    in_flight = server.frames_to_send()
    del args
    assert flushed(client) == [decache(1, 1)]
    for frame in in_flight:
        client.receive_frame(frame)
    [call] = client.events_received()
    assert isinstance(call, Call)
    assert type(call.args[0]) is PondMirror
    assert call.args[0].ducks == ["ann"]  # the kept state
    server.receive_frame(text(decache(1, 1)))
    assert server.caches.exports[1].count == 1
    assert server.caches.take_stopped() == []
    assert server.frames_to_send() == []  # no UNCACHE: a reference is still out
    del call
    assert flushed(client) == [decache(1, 1)]
    server.receive_frame(text(decache(1, 1)))
    released_by_owner(server, client, pond, 1)


def test_a_cache_message_after_the_release_updates_the_kept_state() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    args = show(server, client, pond)
    del args
    assert flushed(client) == [decache(1, 1)]
    call_id = server.send_cache_message(pond.observer, "add", ["bea"], {})
    server.send_call("show", [pond], {})
    message_frame, call_frame_ = server.frames_to_send()
    client.receive_frame(message_frame)
    [event] = client.events_received()
    assert isinstance(event, CacheMessage)
    assert type(event.target) is PondMirror
    client.send_response(event.id, event.method(event.target, *event.args))
    del event
    client.receive_frame(call_frame_)
    [call] = client.events_received()
    assert isinstance(call, Call)
    assert call.args[0].ducks == ["ann", "bea"]
    server.receive_frame(text(decache(1, 1)))
    assert relay(client, server) == [Response(call_id, 2)]
    assert server.caches.exports[1].count == 1


def test_a_mirror_closed_and_rebuilt_before_the_flush_is_released_once() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    mirror.close()
    [again] = show(server, client, pond)  # before the runtime flushed the close
    assert again is not mirror
    assert flushed(client) == []  # the live mirror holds both references
    del again
    assert flushed(client) == [decache(1, 2)]
    server.receive_frame(text(decache(1, 2)))
    released_by_owner(server, client, pond, 1)


def test_an_uncache_before_the_flush_leaves_nothing_to_release() -> None:
    client, server = open_pair()
    pond = Pond()
    args = show(server, client, pond)
    del args
    gc.collect()
    client.receive_frame(text(uncache(1)))  # a broken owner: no DECACHE was read
    assert flushed(client) == []
    assert client.caches.imports == {}


def test_an_uncache_while_the_mirror_lives_leaves_it_stale() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    client.receive_frame(text(uncache(1)))  # a broken owner: the mirror stays, unlinked
    assert client.caches.imports == {}
    mirror.close()
    assert flushed(client) == []
    assert mirror.ducks == ["ann"]
    del mirror
    assert flushed(client) == []


# -- the mirror goes back --------------------------------------------------------------


def test_a_mirror_sent_back_to_its_owner_is_the_original() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    client.send_call("back", [mirror, {"again": mirror}], {})
    [frame] = client.frames_to_send()
    assert loads(frame)["objects"] == [
        {"path": ["args", 0], "type": ["CacheRef"], "cache": 1},
        {"path": ["args", 1, "again"], "type": ["CacheRef"], "cache": 1},
    ]
    server.receive_frame(frame)
    [call] = server.events_received()
    assert isinstance(call, Call)
    assert call.args[0] is pond
    assert call.args[1]["again"] is pond
    assert server.caches.exports[1].count == 1  # going back releases nothing


def test_a_mirror_cannot_cross_another_connection() -> None:
    client, server = open_pair()
    other_client, _ = open_pair()
    [mirror] = show(server, client, Pond())
    for value in (mirror, PondMirror.__new__(PondMirror)):
        with pytest.raises(
            SerializationError,
            match=r"cannot send PondMirror mirror at msg\['args'\]\[0\]: a RemoteCache goes"
            " back only to its owner, over the connection it came from",
        ):
            other_client.send_call("f", [value], {})
    assert other_client.frames_to_send() == []
    assert other_client.pending_calls == 0


# -- limits ----------------------------------------------------------------------------


def test_the_owner_exports_at_most_max_cacheables() -> None:
    client, server = open_pair(server_limits=Limits(max_cacheables=2))
    first, second, third = Pond("a"), Pond("b"), Pond("c")
    show(server, client, first, second)
    with pytest.raises(
        SerializationError,
        match=r"cannot send Pond at msg\['args'\]\[1\]: this connection already mirrors 2"
        r" Cacheables \(limit max_cacheables\)",
    ):
        server.send_call("show", [first, third], {})
    assert server.frames_to_send() == []
    assert third.observers == []
    assert server.caches.exports[1].count == 1  # the Cached reference was taken back
    assert server.caches.take_stopped() == []  # the third was refused before its hook ran
    show(server, client, first, second)  # the ones out can still be sent
    released = sorted(flushed(client), key=lambda frame: frame["cache"])
    assert released == [decache(1, 2), decache(2, 2)]  # those mirrors were dropped
    for frame in released:
        server.receive_frame(text(frame))
    assert len(server.caches.take_stopped()) == 2
    [mirror] = show(server, client, third)  # released, there is room again
    assert mirror.ducks == ["c"]


def test_a_peer_over_max_cacheables_breaks_the_protocol() -> None:
    client, server = open_pair(client_limits=Limits(max_cacheables=2))
    show(server, client, Pond("a"), Pond("b"))
    server.send_call("show", [Pond("c")], {})
    with pytest.raises(RemoteProtocolError, match=r"the peer sent more than 2 Cacheables"):
        relay(server, client)


# -- failed messages -------------------------------------------------------------------


def test_a_failed_encode_takes_back_what_it_wrote() -> None:
    client, server = open_pair()
    old, new = Pond("old"), Pond("new")
    show(server, client, old)
    pending = server.pending_calls
    with pytest.raises(SerializationError, match=r"cannot serialize .* at msg\['args'\]\[3\]"):
        server.send_call("show", [old, new, new, object()], {})
    assert server.frames_to_send() == []
    assert server.pending_calls == pending
    assert list(server.caches.exports) == [1]
    assert server.caches.exports[1].count == 1
    assert server.caches.take_stopped() == [(new, PERSPECTIVE, new.observer)]
    assert server.caches.take_stopped() == []
    [mirror] = show(server, client, new)  # it goes out again, with its state
    assert mirror.ducks == ["new"]
    assert len(new.observers) == 2


def test_a_cacheable_holding_itself_is_a_circular_reference() -> None:
    _, server = open_pair()
    pond = Pond("ann")
    pond.extra = {"me": pond}
    with pytest.raises(
        SerializationError,
        match=r"circular reference at msg\['args'\]\[0\]\['me'\]: the state of Pond contains"
        " the object itself",
    ):
        server.send_call("show", [pond], {})
    assert server.frames_to_send() == []
    assert server.caches.exports == {}
    assert server.caches.take_stopped() == [(pond, PERSPECTIVE, pond.observer)]


def test_a_failed_decode_after_the_cache_entry_releases_the_mirror() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    call_id = server.send_call("show", [pond, Stranger()], {})
    [rejected] = relay(server, client)
    assert isinstance(rejected, Rejected)
    assert isinstance(rejected.error, InsecureJelly)
    del rejected
    [error_reply, *rest] = client.frames_to_send()
    assert loads(error_reply)["id"] == call_id
    assert rest == []
    assert flushed(client) == [decache(1, 1)]
    server.receive_frame(text(decache(1, 1)))
    released_by_owner(server, client, pond, 1)


def test_a_failed_decode_before_the_cache_entry_releases_it_at_once() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    server.send_call("show", [Stranger(), pond], {})
    [rejected] = relay(server, client)
    assert isinstance(rejected, Rejected)
    assert isinstance(rejected.error, InsecureJelly)
    assert [loads(frame).get("type") for frame in client.frames_to_send()] == ["DECACHE", None]
    assert client.caches.imports[1].state is None  # never built
    # The owner sent another reference before it read that DECACHE.
    second = server.send_call("show", [pond], {})
    third = server.send_cache_message(pond.observer, "add", ["bea"], {})
    [rejected] = relay(server, client)
    assert isinstance(rejected, Rejected)
    assert type(rejected.error) is SerializationError
    assert str(rejected.error) == (
        "cannot receive arguments of 'show': cache id 1 at msg['args'][0] has no state here:"
        " the message that carried it failed"
    )
    frames = [loads(frame) for frame in client.frames_to_send()]
    assert frames[0] == decache(1, 1)
    assert [frame["id"] for frame in frames[1:]] == [second, third]
    assert frames[2]["error"]["type"] == "anvil.server.DeadReferenceError"
    server.receive_frame(text(decache(1, 1)))
    assert server.caches.exports[1].count == 1  # the second reference is still out
    assert server.caches.take_stopped() == []
    server.receive_frame(text(decache(1, 1)))
    released_by_owner(server, client, pond, 1)


def test_a_cache_entry_without_an_int_id_fails_that_call_only() -> None:
    client, server = open_pair()
    bad = {"path": ["args", 0], "type": ["Cache"], "typeName": "caches.Pond", "cache": "1"}
    client.receive_frame(call_frame([bad]))
    [rejected] = client.events_received()
    assert isinstance(rejected, Rejected)
    assert "cache entry without an int id at msg['args'][0]" in str(rejected.error)
    [reply] = client.frames_to_send()  # an error reply, and no DECACHE
    assert loads(reply)["id"] == "server-forged"
    assert client.state is State.OPEN
    [mirror] = show(server, client, Pond("ann"))
    assert mirror.ducks == ["ann"]


@pytest.mark.parametrize(
    ("mirror_class", "why"),
    [
        (type("Slotted", (), {"__slots__": ("ducks",)}), "AttributeError"),
        (type("NoWeakref", (), {"__slots__": ("__dict__",)}), "TypeError: cannot create weak"),
    ],
    ids=["no __dict__", "no __weakref__"],
)
def test_a_class_that_cannot_be_a_mirror_fails_that_call(mirror_class: type, why: str) -> None:
    client, server = open_pair(mirror_class=mirror_class)
    pond = Pond("ann")
    server.send_call("show", [pond], {})
    [rejected] = relay(server, client)
    assert isinstance(rejected, Rejected)
    assert type(rejected.error) is SerializationError
    assert f"cannot build 'caches.Pond' at msg['args'][0]: {why}" in str(rejected.error)
    assert [loads(frame).get("type") for frame in client.frames_to_send()] == ["DECACHE", None]
    assert client.caches.imports[1].state is None


def test_a_cache_entry_for_a_name_allowed_through_a_factory_fails() -> None:
    client, server = open_pair()
    client.unjellyables.allow_factory("caches.Pond", lambda state: state)
    server.send_call("show", [Pond("ann")], {})
    [rejected] = relay(server, client)
    assert isinstance(rejected, Rejected)
    assert str(rejected.error) == (
        "cannot receive arguments of 'show': cannot build 'caches.Pond' at msg['args'][0]:"
        " SerializationError: 'caches.Pond' is allowed through a factory, not a class"
    )
    assert [loads(frame).get("type") for frame in client.frames_to_send()] == ["DECACHE", None]


def test_a_failed_answer_releases_its_references() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    call_id = client.send_call("get", [], {})
    relay(client, server)
    server.send_response(call_id, [Stranger(), pond])
    [failure] = relay(server, client)
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, InsecureJelly)
    assert [loads(frame) for frame in client.frames_to_send()] == [decache(1, 1)]


def test_a_late_answer_to_an_abandoned_call_releases_its_references() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    call_id = client.send_call("get", [], {})
    relay(client, server)
    client.abandon(call_id)
    server.send_response(call_id, {"pond": pond, "again": pond})
    assert relay(server, client) == []
    assert [loads(frame) for frame in client.frames_to_send()] == [decache(1, 2)]
    server.receive_frame(text(decache(1, 2)))
    released_by_owner(server, client, pond, 1)


def test_a_late_answer_with_media_releases_its_references_when_it_is_read() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    call_id = client.send_call("get", [], {})
    relay(client, server)
    client.abandon(call_id)
    server.send_response(call_id, [pond, BlobMedia("a/b", b"bytes")])
    frames = server.frames_to_send()
    assert len(frames) == 3  # the answer, a CHUNK_HEADER and the chunk
    for frame in frames[:-1]:
        client.receive_frame(frame)
    assert client.frames_to_send() == []  # nothing is released before the whole answer
    client.receive_frame(frames[-1])
    assert client.events_received() == []
    assert [loads(frame) for frame in client.frames_to_send()] == [decache(1, 1)]


def test_a_message_with_a_bad_media_entry_releases_its_references() -> None:
    client, _ = open_pair()
    cache = {"path": ["args", 0], "type": ["Cache"], "typeName": "caches.Pond", "cache": 7}
    bad_media = {"path": ["args", 1], "type": ["DataMedia"], "id": 5}
    client.receive_frame(call_frame([cache, bad_media], args=[{"ducks": []}, None]))
    [rejected] = client.events_received()
    assert isinstance(rejected, Rejected)
    assert "DataMedia entry has no string id" in str(rejected.error)
    assert [loads(frame).get("type") for frame in client.frames_to_send()] == ["DECACHE", None]


def test_failed_messages_without_cache_entries_release_nothing() -> None:
    client, server = open_pair()
    [mirror] = show(server, client, Pond("ann"))
    for objects in (
        5,
        [5],
        [{"path": ["args", 0], "type": "Long"}],
        [{"path": ["args", 0], "type": ["Long"], "value": "x"}],
        [{"path": ["args", 0], "type": ["Cached"], "cache": "1"}],
    ):
        client.receive_frame(call_frame(objects))  # type: ignore[arg-type]
        [rejected] = client.events_received()
        assert isinstance(rejected, Rejected)
        assert [loads(frame).get("type") for frame in client.frames_to_send()] == [None]
    assert client.caches.imports[1].received == 1
    assert mirror.ducks == ["ann"]


def test_a_failed_message_merges_its_release_with_a_pending_close() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    mirror.close()
    server.send_call("show", [Stranger(), pond], {})  # the Cached entry is never reached
    [rejected] = relay(server, client)
    assert isinstance(rejected, Rejected)
    frames = [loads(frame) for frame in client.frames_to_send()]
    assert frames[0] == decache(1, 2)  # the closed mirror's reference and this one
    assert flushed(client) == []  # the close was released with it
    server.receive_frame(text(decache(1, 2)))
    released_by_owner(server, client, pond, 1)


# -- forged frames ---------------------------------------------------------------------

CACHE_MESSAGE = {"type": "CACHE_MESSAGE", "id": "server-m", "cache": 1, "method": "add"}
BAD_FOR_THE_OWNER: dict[str, tuple[dict[str, object], str]] = {
    "DECACHE of an unknown id": (decache(2, 1), "DECACHE of cache id 2 never given"),
    "DECACHE of a str id": ({**decache(1, 1), "cache": "1"}, "DECACHE of cache id '1' never"),
    "DECACHE without an id": ({"type": "DECACHE", "count": 1}, "DECACHE of cache id None"),
    "DECACHE count 0": (decache(1, 0), "with count 0: 1 references are out"),
    "DECACHE count negative": (decache(1, -1), "with count -1"),
    "DECACHE count too large": (decache(1, 2), "with count 2: 1 references are out"),
    "DECACHE count a str": ({**decache(1, 1), "count": "1"}, "with count '1'"),
    "DECACHE count a float": ({**decache(1, 1), "count": 1.0}, "with count 1.0"),
    "DECACHE count a bool": ({**decache(1, 1), "count": True}, "with count True"),
    "DECACHE without a count": ({"type": "DECACHE", "cache": 1}, "with count None"),
    "CacheRef never exported": (
        {
            "type": "CALL",
            "id": "c1",
            "command": "f",
            "args": [None],
            "kwargs": {},
            "objects": [{"path": ["args", 0], "type": ["CacheRef"], "cache": 2}],
        },
        "cache id 2 sent back was never given",
    ),
}
BAD_FOR_THE_RECEIVER: dict[str, tuple[dict[str, object], str]] = {
    "UNCACHE of an unknown id": (uncache(2), "UNCACHE of cache id 2 never given"),
    "UNCACHE of a str id": (uncache("1"), "UNCACHE of cache id '1' never given"),  # type: ignore[arg-type]
    "CACHE_MESSAGE to an unknown id": (
        {**CACHE_MESSAGE, "cache": 2},
        "CACHE_MESSAGE to cache id 2, never given",
    ),
    "CACHE_MESSAGE to a str id": (
        {**CACHE_MESSAGE, "cache": "1"},
        "CACHE_MESSAGE to cache id '1', never given",
    ),
    "CACHE_MESSAGE without a method": (
        {k: v for k, v in CACHE_MESSAGE.items() if k != "method"},
        "CACHE_MESSAGE needs a method name",
    ),
    "CACHE_MESSAGE with a bad method": ({**CACHE_MESSAGE, "method": "a b"}, "needs a method"),
    "CACHE_MESSAGE with a long method": ({**CACHE_MESSAGE, "method": "a" * 129}, "needs a method"),
    "CACHE_MESSAGE with an int method": ({**CACHE_MESSAGE, "method": 5}, "needs a method"),
    "CACHE_MESSAGE without an id": (
        {k: v for k, v in CACHE_MESSAGE.items() if k != "id"},
        "CACHE_MESSAGE needs a string id",
    ),
    "CACHE_MESSAGE with an empty id": ({**CACHE_MESSAGE, "id": ""}, "needs a string id"),
    "CACHE_MESSAGE with a long id": ({**CACHE_MESSAGE, "id": "i" * 129}, "needs a string id"),
    "CACHE_MESSAGE with an int id": ({**CACHE_MESSAGE, "id": 5}, "needs a string id"),
    "CACHE_MESSAGE with args not a list": (
        {**CACHE_MESSAGE, "args": {"a": 1}},
        "CALL args must be a list",
    ),
    "Cached never given": (
        loads(call_frame([{"path": ["args", 0], "type": ["Cached"], "cache": 2}])),
        "cache id 2 was never given to this connection",
    ),
    "Cache given twice": (
        loads(call_frame([{"path": ["args", 0], "type": ["Cache"], "cache": 1}])),
        "cache id 1 given twice",
    ),
    "Cache given twice in one message": (
        loads(
            call_frame(
                [
                    {"path": ["args", 0], "type": ["Cache"], "typeName": "caches.Pond", "cache": 3},
                    {"path": ["args", 1], "type": ["Cache"], "typeName": "caches.Pond", "cache": 3},
                ],
                args=[{"ducks": []}, {"ducks": []}],
            )
        ),
        "cache id 3 given twice",
    ),
}


@pytest.mark.parametrize(
    ("frame", "error"), BAD_FOR_THE_OWNER.values(), ids=list(BAD_FOR_THE_OWNER)
)
def test_a_forged_frame_to_the_owner_breaks_the_protocol(
    frame: dict[str, object], error: str
) -> None:
    client, server = open_pair()
    show(server, client, Pond())
    with pytest.raises(RemoteProtocolError, match=error.replace("(", r"\(")):
        server.receive_frame(text(frame))
    assert server.caches.exports[1].count == 1


@pytest.mark.parametrize(
    ("frame", "error"), BAD_FOR_THE_RECEIVER.values(), ids=list(BAD_FOR_THE_RECEIVER)
)
def test_a_forged_frame_to_the_receiver_breaks_the_protocol(
    frame: dict[str, object], error: str
) -> None:
    client, server = open_pair()
    [mirror] = show(server, client, Pond("ann"))
    with pytest.raises(RemoteProtocolError, match=error):
        client.receive_frame(text(frame))
    assert client.caches.imports[1].live() is mirror


@pytest.mark.parametrize(
    "frame",
    [decache(1, 1), uncache(1), CACHE_MESSAGE],
    ids=["DECACHE", "UNCACHE", "CACHE_MESSAGE"],
)
def test_cache_frames_before_authentication_break_the_protocol(frame: dict[str, object]) -> None:
    server = Connection(Role.SERVER, registry=REGISTRY, unjellyables=Unjellyables())
    with pytest.raises(RemoteProtocolError, match="before authentication"):
        server.receive_frame(text(frame))


def test_a_cache_message_to_a_mirror_never_built_is_a_dead_reference() -> None:
    client, server = open_pair()
    pond = Pond()
    server.send_call("show", [Stranger(), pond], {})
    relay(server, client)
    client.frames_to_send()
    server.send_cache_message(pond.observer, "add", ["x"], {})
    assert relay(server, client) == []
    [failure] = relay(client, server)
    assert isinstance(failure, Failure)
    assert type(failure.error) is DeadReferenceError
    assert str(failure.error) == "that mirror could not be built here"


# -- the end of a connection -----------------------------------------------------------


def test_closing_owes_every_stopped_observing_once_and_unlinks_mirrors() -> None:
    client, server = open_pair()
    first, second = Pond("a"), Pond("b")
    kept, dropped = show(server, client, first, second)
    show(server, client, first)
    server.receive_close()
    assert server.caches.take_stopped() == [
        (first, PERSPECTIVE, first.observer),
        (second, PERSPECTIVE, second.observer),
    ]
    assert server.caches.take_stopped() == []
    assert server.caches.exports == {}
    client.receive_close()
    assert client.caches.imports == {}
    kept.close()
    del dropped
    assert flushed(client) == []
    assert kept.ducks == ["a"]
    with pytest.raises(SerializationError, match="goes back only to its owner"):
        client.caches.write(kept, Encoder(REGISTRY, Limits()), 0)


def test_a_release_racing_with_the_close_sends_nothing() -> None:
    # A mirror dropped on another thread while the connection closes: its finalizer was
    # already under way when close() detached the others (peek() gives that callback).
    client, server = open_pair()
    woken: list[int] = []
    client.caches.on_release = lambda: woken.append(1)
    [mirror] = show(server, client, Pond("ann"))
    finalizer = client.caches.imports[1].finalizer
    assert finalizer is not None
    peeked = finalizer.peek()
    assert peeked is not None
    _, collected, args, _ = peeked
    client.receive_close()
    collected(*args)
    assert woken == []
    assert flushed(client) == []
    mirror.close()
    assert flushed(client) == []
    assert mirror.ducks == ["ann"]


# -- pushes ----------------------------------------------------------------------------


def test_a_pushed_cacheable_is_written_for_each_connection() -> None:
    first_client, first_server = open_pair()
    second_client, second_server = open_pair()
    pond = Pond("ann")
    show(second_server, second_client, Pond("other"))  # the ids of the two differ
    shared: dict[bool, Any] = {}
    first_server.send_push("k", {"pond": pond}, shared)
    assert shared == {}  # its frame holds this connection's ids: not shared
    second_server.send_push("k", {"pond": pond}, shared)
    [first] = relay(first_server, first_client)
    [second] = relay(second_server, second_client)
    assert isinstance(first, Push)
    assert isinstance(second, Push)
    assert first.update["pond"].ducks == ["ann"]  # type: ignore[index]
    assert second.update["pond"].ducks == ["ann"]  # type: ignore[index]
    assert list(second_server.caches.exports) == [1, 2]
    plain: dict[bool, Any] = {}
    first_server.send_push("k", {"plain": 1}, plain)
    assert list(plain) == [False]  # a frame with nothing of the connection's own is shared


def test_a_push_failure_releases_the_cacheables_it_wrote() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    with pytest.raises(SerializationError, match="an update with Media cannot be pushed"):
        server.send_push("k", {"pond": pond, "media": BlobMedia("a/b", b"x")})
    assert server.frames_to_send() == []
    assert server.caches.take_stopped() == [(pond, PERSPECTIVE, pond.observer)]
    assert server.caches.exports == {}
    server.send_push("k", {"pond": pond})
    [push] = relay(server, client)
    assert isinstance(push, Push)
    assert push.update["pond"].ducks == ["ann"]  # type: ignore[index]


def test_a_pushed_mirror_is_never_shared_between_connections() -> None:
    # The server mirrors a Cacheable of each of two clients, both under cache id 1.
    first_client, first_server = open_pair()
    second_client, second_server = open_pair()
    for client in (first_client, second_client):
        client.caches.perspective = PERSPECTIVE
    for server in (first_server, second_server):
        server.unjellyables.allow("caches.Pond", PondMirror)
    first_pond, second_pond = Pond("first"), Pond("second")
    [first_mirror] = show(first_client, first_server, first_pond)
    show(second_client, second_server, second_pond)
    shared: dict[bool, Any] = {}
    first_server.send_push("k", first_mirror, shared)
    [push] = relay(first_server, first_client)
    assert isinstance(push, Push)
    assert push.update is first_pond
    # The second connection never got this mirror: its push must not claim otherwise.
    with pytest.raises(SerializationError, match="goes back only to its owner"):
        second_server.send_push("k", first_mirror, shared)


def test_a_cacheable_in_global_data_and_in_the_values_is_refused_by_the_sender() -> None:
    # global data is read first: its reference would come before the state it needs
    client, server = open_pair()
    pond = Pond("ann")
    with pytest.raises(SerializationError, match="in global_data and also elsewhere"):
        server.send_call("show", [pond, Tagged(pond)], {})
    assert server.frames_to_send() == []
    assert server.caches.exports == {}
    assert server.caches.take_stopped() == [(pond, PERSPECTIVE, pond.observer)]
    [mirror] = show(server, client, pond)  # the connection is fine
    assert type(mirror) is PondMirror


def test_a_cacheable_only_in_global_data_arrives() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    [tagged] = show(server, client, Tagged(pond))
    assert type(tagged.value) is PondMirror
    assert tagged.value.ducks == ["ann"]


def test_caches_refused_for_a_dialect_without_them() -> None:
    client, server = open_pair()
    [mirror] = show(server, client, Pond())
    server.caches.enabled = False
    client.caches.enabled = False
    with pytest.raises(SerializationError, match="Anvil's uplink dialect, which has no Cacheables"):
        server.send_call("show", [Pond()], {})
    with pytest.raises(SerializationError, match="Anvil's uplink dialect"):
        client.send_call("back", [mirror], {})
    assert server.caches.take_stopped() == []
    assert list(server.caches.exports) == [1]


def test_a_cacheable_from_a_peer_of_the_uplink_dialect_fails_that_call() -> None:
    client, server = open_pair()
    server.caches.enabled = False  # the server's end of an /_/uplink connection
    server.unjellyables.allow("caches.Pond", PondMirror)
    client.caches.perspective = PERSPECTIVE
    client.send_call("take", [Pond("ann")], {})
    [rejected] = relay(client, server)
    assert isinstance(rejected, Rejected)
    assert "uplink dialect" in str(rejected.error)
    gc.collect()
    server.caches.flush_released()
    frames = server.frames_to_send()
    assert len(frames) == 1  # the error reply, and no DECACHE
    assert server.caches.imports == {}


# -- Observer --------------------------------------------------------------------------


def test_observers_are_equal_for_one_object_link_and_perspective() -> None:
    link, pond = FakeLink(), Pond()
    observer = Observer(link, 1, pond, PERSPECTIVE)
    same = Observer(link, 7, pond, PERSPECTIVE)
    assert observer == same
    assert hash(observer) == hash(same)
    assert observer != Observer(FakeLink(), 1, pond, PERSPECTIVE)
    assert observer != Observer(link, 1, Pond(), PERSPECTIVE)
    assert observer != Observer(link, 1, pond, object())
    assert observer.__eq__("observer") is NotImplemented
    assert observer != "observer"
    assert repr(observer) == "<Observer of Pond as cache 1>"


def test_call_remote_and_its_camel_case_alias_send_through_the_link() -> None:
    link, pond = FakeLink(), Pond()
    observer = Observer(link, 1, pond, PERSPECTIVE)
    assert observer.callRemote("add", "bea", loud=True) == "a future"
    assert observer.call_remote("add", "cid") == "a future"
    assert link.calls == [
        (observer, "add", ("bea",), {"loud": True}),
        (observer, "add", ("cid",), {}),
    ]


def test_call_remote_without_a_link_is_a_runtime_error() -> None:
    observer = Observer(None, 1, Pond(), PERSPECTIVE)
    with pytest.raises(RuntimeError, match="this observer's connection has no runtime"):
        observer.call_remote("add", "bea")


class LockedPondMirror(PondMirror):
    """A mirror holding something that cannot be deep-copied."""

    def set_copyable_state(self, state: object) -> None:
        super().set_copyable_state(state)
        self.lock = threading.Lock()


def test_a_closed_mirror_that_cannot_be_deep_copied_keeps_a_shallow_copy() -> None:
    client, server = open_pair()
    client.unjellyables.allow("caches.Pond", LockedPondMirror)
    pond = Pond("ann")
    [mirror] = show(server, client, pond)
    kept = client.caches.imports[1].state
    mirror.close()
    assert mirror.__dict__ is not kept
    assert mirror.ducks is kept["ducks"]  # only the top level could be copied
    assert flushed(client) == [decache(1, 1)]


class Refuses(Copyable):
    def get_state_to_copy(self) -> object:
        raise ValueError("not now")


def test_a_hook_that_raises_while_a_message_is_written_fails_that_message() -> None:
    client, server = open_pair()
    pond = Pond("ann")
    with pytest.raises(SerializationError, match="ValueError while writing it: not now"):
        server.send_call("show", [pond, Refuses()], {})
    assert server.frames_to_send() == []
    assert server.caches.take_stopped() == [(pond, PERSPECTIVE, pond.observer)]
    assert not server.writing
    [mirror] = show(server, client, pond)  # the connection is fine
    assert type(mirror) is PondMirror
