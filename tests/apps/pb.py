"""A test app for tether.pb: Copyables, Cacheables and the server functions that send them.

The server and the test clients run in one process, so one allow-list serves both sides:
every class that may arrive is registered here, at import.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

from tether import pb, server

WAIT = 30.0  # seconds a server function waits on a client (a hang fails, never a pass)


# -- copies ------------------------------------------------------------------------------


class Point(pb.Copyable):
    """Sent by copy; arrives as a RemotePoint."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class RemotePoint(pb.RemoteCopy):
    """What a Point arrives as: never through ``__init__``."""

    init_calls = 0

    def __init__(self) -> None:
        type(self).init_calls += 1


@server.portable_class("tests.apps.canary.Evil")
class Smuggled(pb.Copyable):
    """Crosses under the canary's wire name, which no receiver allows."""

    def __init__(self) -> None:
        self.payload = "boom"


class Unlisted(pb.Copyable):
    """Crosses under its own wire name (``tests.apps.pb.Unlisted``), never allowed."""

    built = 0

    def __new__(cls) -> Unlisted:
        cls.built += 1
        return super().__new__(cls)

    def __init__(self) -> None:
        self.payload = "nope"


class Color(pb.Copyable):
    """Arrives through a factory that interns colours by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def getStateToCopy(self) -> object:  # Twisted's spelling
        return self.name


class InternedColor:
    interned: dict[str, InternedColor] = {}  # noqa: RUF012 - shared on purpose

    def __init__(self, name: str) -> None:
        self.name = name


def intern_color(state: object) -> InternedColor:
    assert isinstance(state, str)
    found = InternedColor.interned.get(state)
    if found is None:
        found = InternedColor.interned[state] = InternedColor(state)
    return found


class Frog(pb.Copyable):
    """Twisted's camelCase names on both ends (getStateToCopy / setCopyableState)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def getStateToCopy(self) -> object:
        return [self.name, "ribbit"]


class RemoteFrog(pb.RemoteCopy):
    def setCopyableState(self, state: Any) -> None:
        self.name, self.sound = state


class BadState(pb.Copyable):
    """Its hook fails: sending it must fail that one message, nothing more."""

    def get_state_to_copy(self) -> object:
        raise ValueError("no state for you")


pb.set_unjellyable_for_class(Point, RemotePoint)
pb.set_unjellyable_factory_for_class(Color, intern_color)
pb.setUnjellyableForClass(Frog, RemoteFrog)
pb.setUnjellyableFactoryForClass("tests.apps.pb.NeverSent", intern_color)


# -- caches ------------------------------------------------------------------------------


class Tally(pb.Cacheable):
    """A list mirrored on each connection it goes over; records whom it was given to."""

    def __init__(self, name: str, items: list[object] | None = None) -> None:
        self.name = name
        self.items: list[object] = list(items or [])
        self.lock = threading.Lock()
        self.observers: list[pb.Observer] = []
        self.given: list[tuple[pb.Perspective, pb.Observer]] = []
        self.stopped: list[tuple[pb.Perspective, pb.Observer]] = []

    def get_state_to_cache_and_observe_for(self, perspective: object, observer: object) -> object:
        assert isinstance(perspective, pb.Perspective)
        assert isinstance(observer, pb.Observer)
        with self.lock:
            self.observers.append(observer)
            self.given.append((perspective, observer))
        return {"name": self.name, "items": list(self.items)}

    def stopped_observing(self, perspective: object, observer: object) -> None:
        assert isinstance(perspective, pb.Perspective)
        assert isinstance(observer, pb.Observer)
        with self.lock:
            self.observers.remove(observer)
            self.stopped.append((perspective, observer))

    def tell(self, method: str, *args: object) -> list[pb.RemoteFuture]:
        with self.lock:
            observers = list(self.observers)
        return [observer.call_remote(method, *args) for observer in observers]

    def add(self, item: object) -> list[pb.RemoteFuture]:
        self.items.append(item)
        return self.tell("add", item)


class RemoteTally(pb.RemoteCache):
    """The mirror: ``observe_*`` methods keep it up to date."""

    init_calls = 0

    def __init__(self) -> None:
        type(self).init_calls += 1

    def observe_add(self, item: object) -> int:
        self.items.append(item)
        return len(self.items)

    async def observe_add_later(self, item: object) -> list[object]:
        await asyncio.sleep(0)  # really suspends: the answer waits for the rest
        self.items.append(item)
        return ["async", len(self.items)]

    async def observe_add_first(self, item: object) -> int:
        self.items.append(item)  # before its first await: in order with the others
        await asyncio.sleep(0)
        return len(self.items)

    async def observe_hold(self, gate: str) -> str:
        """Answers once the test opens ``gate`` (bounded)."""
        self.holding = True
        try:
            await asyncio.to_thread(GATES[gate].wait, WAIT)
        finally:
            self.holding = False
        return "held"

    def observe_fail(self, message: str) -> None:
        raise ValueError(message)

    def observe_items(self) -> list[object]:
        return list(self.items)

    def observe_bad_answer(self) -> BadState:
        return BadState()

    def not_an_observer(self) -> str:
        return "never reachable"


pb.set_unjellyable_for_class(Tally, RemoteTally)


class BrokenTally(Tally):
    """Its state hook fails after it was handed an observer."""

    def get_state_to_cache_and_observe_for(self, perspective: object, observer: object) -> object:
        super().get_state_to_cache_and_observe_for(perspective, observer)
        raise ValueError("no state for you")


pb.set_unjellyable_for_class(BrokenTally, RemoteTally)


class Lean(pb.Cacheable):
    """A Cacheable that keeps only counts (the leak tests make thousands of mirrors)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: list[pb.Observer] = []  # a list, as Twisted's: observers of one
        self.given = 0  # object on one connection are all equal (==)
        self.stopped = 0

    def get_state_to_cache_and_observe_for(self, perspective: object, observer: object) -> object:
        assert isinstance(observer, pb.Observer)
        with self.lock:
            self.live.append(observer)
            self.given += 1
        return {"n": 1}

    def stopped_observing(self, perspective: object, observer: object) -> None:
        assert isinstance(observer, pb.Observer)
        with self.lock:
            self.live.remove(observer)
            self.stopped += 1


class RemoteLean(pb.RemoteCache):
    pass


pb.set_unjellyable_for_class(Lean, RemoteLean)


class CamelPond(pb.Cacheable):
    """Twisted's duck pond, every hook in camelCase."""

    def __init__(self, ducks: list[str]) -> None:
        self.ducks = ducks
        self.observers: list[pb.Observer] = []
        self.stopped: list[tuple[object, pb.Observer]] = []

    def getStateToCacheAndObserveFor(self, perspective: object, observer: Any) -> object:
        self.observers.append(observer)
        return {"ducks": list(self.ducks), "extra": "camel"}

    def stoppedObserving(self, perspective: object, observer: Any) -> None:
        self.observers.remove(observer)
        self.stopped.append((perspective, observer))

    def addDuck(self, duck: str) -> list[pb.RemoteFuture]:
        self.ducks.append(duck)
        return [o.callRemote("addDuck", duck) for o in self.observers]


class CamelMirror(pb.RemoteCache):
    def setCopyableState(self, state: Any) -> None:
        self.ducks = state["ducks"]
        self.camel_state = True

    def observe_addDuck(self, duck: str) -> None:
        self.ducks.append(duck)


pb.setUnjellyableForClass(CamelPond, CamelMirror)


# -- what the server keeps ---------------------------------------------------------------

TALLIES: dict[str, Tally] = {}
PONDS: dict[str, CamelPond] = {}
LEAN = Lean()
HELD: dict[str, object] = {}
"""Objects a client sent (mirrors of its Cacheables, among them), kept by name."""
GATES: dict[str, threading.Event] = {}
_names = itertools.count(1)


def new_tally(items: list[object] | None = None) -> Tally:
    tally = Tally(f"tally-{next(_names)}", items)
    TALLIES[tally.name] = tally
    return tally


def new_pond(ducks: list[str]) -> CamelPond:
    pond = CamelPond(ducks)
    PONDS[f"pond-{next(_names)}"] = pond
    return pond


# -- server functions: copies ------------------------------------------------------------


@server.callable
def pb_take_point(point: object) -> list[object]:
    return [type(point).__qualname__, dict(vars(point)), RemotePoint.init_calls]


@server.callable
def pb_make_point(x: int, y: int) -> Point:
    return Point(x, y)


@server.callable
def pb_make_smuggled() -> Smuggled:
    return Smuggled()


@server.callable
def pb_bad_state() -> BadState:
    return BadState()


@server.callable
async def pb_abad_state() -> BadState:
    return BadState()


BROKEN = BrokenTally("broken")


@server.callable
def pb_broken_tally() -> BrokenTally:
    return BROKEN


@server.callable
def pb_echo(value: object) -> object:
    return value


@server.callable
def pb_type_of(value: object) -> str:
    return type(value).__qualname__


@server.callable
def pb_color_identity(a: object, b: object) -> list[object]:
    assert isinstance(a, InternedColor)
    return [a.name, a is b, a is InternedColor.interned[a.name]]


@server.callable
def pb_frog(frog: object) -> list[object]:
    assert isinstance(frog, RemoteFrog)
    return [type(frog).__qualname__, frog.name, frog.sound]


# -- server functions: caches ------------------------------------------------------------


@server.callable
def pb_new_tally(items: list[object] | None = None) -> str:
    return new_tally(items).name


@server.callable
def pb_get(name: str) -> Tally:
    return TALLIES[name]


@server.callable
async def pb_aget(name: str) -> Tally:
    return TALLIES[name]


@server.callable
def pb_get_many(names: list[str]) -> list[Tally]:
    return [TALLIES[name] for name in names]


@server.callable
def pb_get_twice(name: str) -> list[Tally]:
    return [TALLIES[name], TALLIES[name]]


@server.callable
def pb_get_when_open(name: str, gate: str) -> Tally:
    """Sends the tally once the test opens ``gate``."""
    if not GATES[gate].wait(WAIT):
        raise TimeoutError(f"gate {gate!r} never opened")
    return TALLIES[name]


@server.callable
def pb_add(name: str, item: object) -> int:
    """Tells every mirror, without waiting for them."""
    TALLIES[name].add(item)
    return len(TALLIES[name].items)


@server.callable
def pb_add_many(name: str, count: int) -> int:
    tally = TALLIES[name]
    for i in range(count):
        tally.add(i)
    return len(tally.items)


@server.callable
def pb_add_mixed(name: str, count: int) -> int:
    """Updates through a sync and an async observe method in turn, without waiting."""
    tally = TALLIES[name]
    for i in range(count):
        tally.items.append(i)
        tally.tell("add_first" if i % 2 else "add", i)
    return len(tally.items)


@server.callable
def pb_add_and_wait(name: str, item: object) -> list[object]:
    """A sync function: blocks on each mirror's answer."""
    return [future.result(WAIT) for future in TALLIES[name].add(item)]


@server.callable
async def pb_aadd_and_wait(name: str, item: object) -> list[object]:
    """An async function: awaits each mirror's answer."""
    return [await future for future in TALLIES[name].add(item)]


@server.callable
def pb_tell_and_wait(name: str, method: str, *args: object) -> list[object]:
    """Runs ``observe_<method>`` on every mirror; each outcome as [ok, value]."""
    outcomes: list[object] = []
    for future in TALLIES[name].tell(method, *args):
        try:
            outcomes.append([True, future.result(WAIT)])
        except Exception as exc:
            outcomes.append([False, type(exc).__name__, str(exc)])
    return outcomes


@server.callable
async def pb_atell_and_wait(name: str, method: str, *args: object) -> list[object]:
    outcomes: list[object] = []
    for future in TALLIES[name].tell(method, *args):
        try:
            outcomes.append([True, await future])
        except Exception as exc:
            outcomes.append([False, type(exc).__name__, str(exc)])
    return outcomes


@server.callable
def pb_add_for(name: str, session_id: str, item: object) -> int:
    """Tells only the mirror of the connection with that session."""
    tally = TALLIES[name]
    tally.items.append(item)
    told = 0
    with tally.lock:
        observers = list(tally.observers)
    for observer in observers:
        perspective = observer.perspective
        assert isinstance(perspective, pb.Perspective)
        if perspective.session_id == session_id:
            observer.call_remote("add", item)
            told += 1
    return told


@server.callable
def pb_is_original(name: str, value: object) -> bool:
    return value is TALLIES[name]


@server.callable
def pb_lean() -> Lean:
    return LEAN


@server.callable
def pb_new_pond(ducks: list[str]) -> CamelPond:
    return new_pond(ducks)


@server.callable
def pb_pond_add(pond: object, duck: str) -> int:
    """``pond`` is the client's mirror sent back: here, the pond itself."""
    assert isinstance(pond, CamelPond)
    for future in pond.addDuck(duck):
        future.result(WAIT)
    return len(pond.observers)


# -- server functions: a client's own Cacheables ------------------------------------------


@server.callable
def pb_hold(key: str, value: object) -> str:
    """Keeps what a client sent (a mirror of its Cacheable: the server observes it)."""
    HELD[key] = value
    return type(value).__qualname__


@server.callable
def pb_held_items(key: str) -> list[object]:
    held = HELD[key]
    assert isinstance(held, RemoteTally)
    return list(held.items)


@server.callable
def pb_give_back(key: str) -> object:
    return HELD[key]


@server.callable
def pb_drop(key: str) -> None:
    HELD.pop(key, None)


@server.callable
def pb_wait_for_items(key: str, count: int) -> list[object]:
    """Waits (bounded) until the held mirror has ``count`` items."""
    held = HELD[key]
    assert isinstance(held, RemoteTally)
    deadline = time.monotonic() + WAIT
    while len(held.items) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"mirror has {held.items!r}")
        time.sleep(0.01)
    return list(held.items)


# -- rooms: a hook that tells the other observers (Twisted's usual pattern) --------------


class Room(pb.Cacheable):
    """Its state hook tells the room's other observers who joined, after a pause: two
    workers answering crosswise each call_remote on the other's connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.observers: list[pb.Observer] = []
        self.lock = threading.Lock()
        self.told: list[object] = []

    def get_state_to_cache_and_observe_for(
        self, perspective: object, observer: pb.Observer
    ) -> dict[str, object]:
        time.sleep(0.2)  # the other worker gets into its own hook meanwhile
        with self.lock:
            others = list(self.observers)
            self.observers.append(observer)
        for other in others:
            self.told.append(other.call_remote("joined", self.name))
        return {"name": self.name}

    def stopped_observing(self, perspective: object, observer: pb.Observer) -> None:
        with self.lock:
            self.observers.remove(observer)


class RemoteRoom(pb.RemoteCache):
    joined: list[str]

    def set_copyable_state(self, state: object) -> None:
        super().set_copyable_state(state)
        self.joined = []

    def observe_joined(self, name: str) -> None:
        self.joined.append(name)


pb.set_unjellyable_for_class(Room, RemoteRoom)
ROOMS: dict[str, Room] = {}


@server.callable
def pb_room(name: str) -> Room:
    return ROOMS.setdefault(name, Room(name))
