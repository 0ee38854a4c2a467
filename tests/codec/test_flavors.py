"""PB flavours in the codec: Copyables cross as copies built only from the receiver's
allow-list, Cacheables need a connection, and an in-process copy keeps Cacheables."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tether.codec import Limits, PortableRegistry, copy_values, decode_values, encode_values
from tether.codec.copy import SameObjects
from tether.codec.decoder import entry_kind
from tether.codec.flavors import (
    Cacheable,
    Copyable,
    RemoteCache,
    RemoteCopy,
    Unjellyable,
    Unjellyables,
    fill,
    link_mirror,
    new_blank,
    unlink_mirror,
)
from tether.errors import InsecureJelly, SerializationError

LIMITS = Limits()
REGISTRY = PortableRegistry()
CANARY = "TETHER_CODEC_CANARY_IMPORTED"
HERE = __name__  # the module part of the default wire names


@REGISTRY.decorator("flavors.Video")
class Video:
    def __init__(self, title: str) -> None:
        self.title = title


class Point(Copyable):
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class RemotePoint(RemoteCopy):
    def __init__(self) -> None:
        raise AssertionError("a copy is built without __init__")


class Snake(Copyable):
    """Overrides the snake_case hook: only ``shown`` crosses, as a list."""

    def __init__(self, shown: str, hidden: str) -> None:
        self.shown, self.hidden = shown, hidden

    def get_state_to_copy(self) -> object:
        return [self.shown]


class RemoteSnake(RemoteCopy):
    def set_copyable_state(self, state: object) -> None:
        assert type(state) is list
        [self.shown] = state
        self.filled_by = "set_copyable_state"


class Camel(Copyable):
    """Overrides Twisted's camelCase hook."""

    def __init__(self, shown: str, hidden: str) -> None:
        self.shown, self.hidden = shown, hidden

    def getStateToCopy(self) -> object:
        return {"shown": self.shown}


class RemoteCamel(RemoteCopy):
    def setCopyableState(self, state: object) -> None:
        assert type(state) is dict
        self.__dict__.update(state)
        self.filled_by = "setCopyableState"


class Album(Copyable):
    def __init__(self, title: str, videos: list[Video], cover: Point, when: dt.date) -> None:
        self.title, self.videos, self.cover, self.when = title, videos, cover, when


class RemoteAlbum(RemoteCopy):
    pass


class Plain:
    """Allowed although it is no RemoteCopy: it gets the default state setter."""


class Pond(Cacheable):
    def __init__(self) -> None:
        self.ducks = ["ann"]
        self.asked = 0

    def get_state_to_cache_and_observe_for(self, perspective: object, observer: object) -> object:
        self.asked += 1
        return {"ducks": self.ducks}


class PondMirror(RemoteCache):
    pass


class Holder(Copyable):
    def __init__(self, held: object) -> None:
        self.held = held


class Copied(RemoteCopy):
    pass


@REGISTRY.decorator("mod.A")
class A(Copyable):
    pass


class SubA(A):
    pass


def allowed_list(pairs: dict[str, type]) -> Unjellyables:
    """An allow-list of its own (the process-wide one stays untouched)."""
    allowed = Unjellyables()
    for name, cls in pairs.items():
        allowed.allow(name, cls)
    return allowed


def over_the_wire(values: dict[str, object]) -> dict[str, object]:
    """The message a peer would receive: encoded, then through JSON."""
    encoded = encode_values(values, REGISTRY, LIMITS)
    message: dict[str, object] = orjson.loads(
        orjson.dumps({**encoded.values, "objects": encoded.objects})
    )
    return message


def receive(message: dict[str, object], allowed: Unjellyables | None) -> dict[str, object]:
    decode_values(message, ("args", "kwargs"), REGISTRY, LIMITS, unjellyables=allowed)
    return message


def send(values: dict[str, object], allowed: Unjellyables | None) -> dict[str, object]:
    return receive(over_the_wire(values), allowed)


def copy_entry(name: object, state: object = None) -> dict[str, object]:
    return {
        "args": [{"x": 1} if state is None else state],
        "objects": [{"path": ["args", 0], "type": ["Copy"], "typeName": name}],
    }


# -- round trips -----------------------------------------------------------------------


def test_a_copy_crosses_with_its_dict_by_default() -> None:
    allowed = allowed_list({f"{HERE}.Point": RemotePoint})
    message = over_the_wire({"args": [Point(1, 2)]})
    assert message == {
        "args": [{"x": 1, "y": 2}],
        "objects": [{"path": ["args", 0], "type": ["Copy"], "typeName": f"{HERE}.Point"}],
    }
    [copy] = receive(message, allowed)["args"]  # type: ignore[misc]
    assert type(copy) is RemotePoint
    assert copy.__dict__ == {"x": 1, "y": 2}


def test_the_default_state_is_a_copy_of_the_dict() -> None:
    point = Point(1, 2)
    state = point.getStateToCopy()
    assert state == {"x": 1, "y": 2}
    assert state is not point.__dict__


def test_snake_case_hooks_are_used_through_the_camel_case_names() -> None:
    allowed = allowed_list({f"{HERE}.Snake": RemoteSnake})
    message = over_the_wire({"args": [Snake("seen", "secret")]})
    assert message["args"] == [["seen"]]
    [copy] = receive(message, allowed)["args"]  # type: ignore[misc]
    assert type(copy) is RemoteSnake
    assert copy.__dict__ == {"shown": "seen", "filled_by": "set_copyable_state"}


def test_camel_case_hooks_can_be_overridden() -> None:
    allowed = allowed_list({f"{HERE}.Camel": RemoteCamel})
    message = over_the_wire({"args": [Camel("seen", "secret")]})
    assert message["args"] == [{"shown": "seen"}]
    [copy] = receive(message, allowed)["args"]  # type: ignore[misc]
    assert type(copy) is RemoteCamel
    assert copy.__dict__ == {"shown": "seen", "filled_by": "setCopyableState"}


def test_a_copy_is_built_without_init() -> None:
    allowed = allowed_list({f"{HERE}.Point": RemotePoint})
    with pytest.raises(AssertionError, match="without __init__"):
        RemotePoint()  # the __init__ would fail: the copy below never runs it
    [copy] = send({"args": [Point(3, 4)]}, allowed)["args"]  # type: ignore[misc]
    assert (copy.x, copy.y) == (3, 4)


def test_a_state_holds_portable_objects_nested_copies_and_special_values() -> None:
    allowed = allowed_list({f"{HERE}.Album": RemoteAlbum, f"{HERE}.Point": RemotePoint})
    album = Album("hits", [Video("a"), Video("b")], Point(5, 6), dt.date(2024, 2, 29))
    received = send({"args": [], "kwargs": {"album": album}}, allowed)
    copy: Any = received["kwargs"]["album"]  # type: ignore[index]
    assert type(copy) is RemoteAlbum
    assert copy.title == "hits"
    assert [type(v) for v in copy.videos] == [Video, Video]
    assert [v.title for v in copy.videos] == ["a", "b"]
    assert type(copy.cover) is RemotePoint
    assert (copy.cover.x, copy.cover.y) == (5, 6)
    assert copy.when == dt.date(2024, 2, 29)


def test_a_plain_class_on_the_allow_list_gets_the_default_setter() -> None:
    allowed = allowed_list({f"{HERE}.Point": Plain})
    [copy] = send({"args": [Point(7, 8)]}, allowed)["args"]  # type: ignore[misc]
    assert type(copy) is Plain
    assert copy.__dict__ == {"x": 7, "y": 8}


def test_fill_uses_set_copyable_state_when_there_is_one() -> None:
    snake = RemoteSnake.__new__(RemoteSnake)
    assert fill(snake, ["x"]) is snake
    assert snake.__dict__ == {"shown": "x", "filled_by": "set_copyable_state"}
    plain = Plain()
    assert fill(plain, {"a": 1}) is plain
    assert plain.__dict__ == {"a": 1}


# -- the allow-list decides ------------------------------------------------------------


class Recording(type):
    """Records every instantiation of its classes."""

    touched: list[str] = []  # noqa: RUF012 - shared by design

    def __call__(cls, *args: object, **kwargs: object) -> Any:
        Recording.touched.append(f"{cls.__name__}()")
        return super().__call__(*args, **kwargs)


class Tripwire(Copyable, metaclass=Recording):
    def __new__(cls, *args: object) -> Tripwire:
        Recording.touched.append(f"{cls.__name__}.__new__")
        return super().__new__(cls)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def setCopyableState(self, state: object) -> None:
        Recording.touched.append("setCopyableState")


def test_a_name_not_allowed_is_insecure_jelly_and_the_class_is_never_touched() -> None:
    allowed = allowed_list({"flavors.Other": RemotePoint, f"{HERE}.Point": Tripwire})
    message = over_the_wire({"args": [], "kwargs": {"t": Tripwire(1)}})
    Recording.touched.clear()
    with pytest.raises(
        InsecureJelly,
        match=rf"class '{HERE}.Tripwire' is not allowed here \(at msg\['kwargs'\]\['t'\]\):"
        " the receiver allows it with tether.pb.set_unjellyable_for_class",
    ):
        receive(message, allowed)
    assert Recording.touched == []


@pytest.mark.parametrize(
    "name", ["tests.codec.canary_module.Evil", "canary_module.Evil"], ids=["full", "bare"]
)
def test_a_copy_name_never_imports_a_module(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CANARY, raising=False)
    monkeypatch.delitem(sys.modules, "tests.codec.canary_module", raising=False)
    monkeypatch.delitem(sys.modules, "canary_module", raising=False)
    before = set(sys.modules)
    with pytest.raises(InsecureJelly):
        receive(copy_entry(name), allowed_list({f"{HERE}.Point": RemotePoint}))
    assert set(sys.modules) == before
    assert CANARY not in os.environ


@pytest.mark.parametrize(
    "name",
    ["mod.B", "mod", "mod.A.Sub", "mod.a", "mod.A ", "mod.SubA", f"{HERE}.SubA", f"{HERE}.A"],
    ids=[
        "sibling",
        "module",
        "nested name",
        "case",
        "trailing space",
        "sub",
        "sub qualname",
        "qualname",
    ],
)
def test_allowing_one_name_allows_nothing_else(name: str) -> None:
    allowed = allowed_list({"mod.A": RemotePoint})
    with pytest.raises(InsecureJelly, match="is not allowed here"):
        receive(copy_entry(name), allowed)
    [copy] = receive(copy_entry("mod.A"), allowed)["args"]  # type: ignore[misc]
    assert type(copy) is RemotePoint


def test_a_subclass_crosses_under_its_own_name() -> None:
    allowed = allowed_list({"mod.A": RemotePoint})
    assert type(send({"args": [A()]}, allowed)["args"][0]) is RemotePoint  # type: ignore[index]
    message = over_the_wire({"args": [SubA()]})
    assert message["objects"] == [
        {"path": ["args", 0], "type": ["Copy"], "typeName": f"{HERE}.SubA"}
    ]
    with pytest.raises(InsecureJelly, match=rf"'{HERE}.SubA' is not allowed"):
        receive(message, allowed)


def test_a_copy_entry_naming_a_portable_class_is_insecure_jelly() -> None:
    assert "flavors.Video" in REGISTRY.by_name
    with pytest.raises(InsecureJelly, match=r"'flavors\.Video' is not allowed here"):
        receive(copy_entry("flavors.Video", {"title": "x"}), allowed_list({}))


def test_a_value_type_entry_naming_an_allowed_copy_is_insecure_jelly() -> None:
    allowed = allowed_list({"flavors.Point": RemotePoint})
    message: dict[str, object] = {
        "args": [{"x": 1}],
        "objects": [{"path": ["args", 0], "type": ["ValueType"], "typeName": "flavors.Point"}],
    }
    with pytest.raises(InsecureJelly, match=r"no portable class named 'flavors\.Point'"):
        receive(message, allowed)


def test_without_an_allow_list_no_copy_is_built() -> None:
    message = over_the_wire({"args": [Point(1, 2)]})
    with pytest.raises(InsecureJelly, match=r"no class may be copied in here \(at msg\['args'\]"):
        receive(message, None)


@pytest.mark.parametrize(
    ("name", "shown"),
    [(5, "5"), (None, "None"), (["mod.A"], "['mod.A']"), ("x" * 100, "'" + "x" * 76 + "...")],
    ids=["int", "none", "list", "long"],
)
def test_odd_wire_names_are_insecure_jelly(name: object, shown: str) -> None:
    allowed = allowed_list({"mod.A": RemotePoint})
    with pytest.raises(InsecureJelly) as raised:
        receive(copy_entry(name), allowed)
    assert str(raised.value).startswith(f"class {shown} is not allowed here")


# -- the factory form ------------------------------------------------------------------


def test_a_factory_may_return_an_existing_object() -> None:
    existing = {"k1": object(), "k2": object()}
    allowed = Unjellyables()
    allowed.allow_factory("flavors.Ref", lambda state: existing[state["key"]])  # type: ignore[index]
    message: dict[str, object] = {
        "args": [{"key": "k2"}, {"key": "k1"}],
        "objects": [
            {"path": ["args", 0], "type": ["Copy"], "typeName": "flavors.Ref"},
            {"path": ["args", 1], "type": ["Copy"], "typeName": "flavors.Ref"},
        ],
    }
    assert receive(message, allowed)["args"] == [existing["k2"], existing["k1"]]
    assert message["args"][0] is existing["k2"]  # type: ignore[index]


def test_a_failing_factory_is_a_serialization_error_naming_the_path() -> None:
    allowed = Unjellyables()
    allowed.allow_factory("flavors.Ref", lambda state: {}[str(state)])
    with pytest.raises(SerializationError) as raised:
        receive(copy_entry("flavors.Ref"), allowed)
    assert str(raised.value) == (
        "cannot build 'flavors.Ref' at msg['args'][0]: KeyError: \"{'x': 1}\""
    )
    assert type(raised.value) is SerializationError
    assert type(raised.value.__cause__) is KeyError


def test_a_factory_entry_has_no_class_to_build_a_mirror_from() -> None:
    with pytest.raises(SerializationError, match=r"'flavors\.Ref' is allowed through a factory"):
        new_blank(Unjellyable("flavors.Ref", None, lambda state: state))
    blank = new_blank(Unjellyable("flavors.Point", RemotePoint, None))
    assert type(blank) is RemotePoint
    assert blank.__dict__ == {}


# -- wire names ------------------------------------------------------------------------


def test_portable_class_names_a_copyable_and_keeps_it_out_of_the_registry() -> None:
    registry = PortableRegistry()

    class Named(Copyable):
        pass

    class Mirrored(Cacheable):
        pass

    class Unnamed(Copyable):
        pass

    assert registry.decorator("flavors.Named")(Named) is Named
    assert registry.decorator(Mirrored) is Mirrored
    assert registry.copy_name(Named) == "flavors.Named"
    assert registry.copy_name(Mirrored) == f"{HERE}.{Mirrored.__qualname__}"
    assert registry.copy_name(Unnamed) == f"{HERE}.{Unnamed.__qualname__}"
    assert registry.copy_names == {Named: "flavors.Named", Mirrored: registry.copy_name(Mirrored)}
    assert registry.by_class == {}
    assert registry.by_name == {}
    encoded = encode_values({"args": [Named()]}, registry, LIMITS)
    assert encoded.objects == [{"path": ["args", 0], "type": ["Copy"], "typeName": "flavors.Named"}]


def test_registering_a_copyable_returns_its_entry() -> None:
    registry = PortableRegistry()

    class Named(Copyable):
        pass

    entry = registry.register(Named, "flavors.Named")
    assert (entry.name, entry.cls) == ("flavors.Named", Named)
    assert not entry.serialize
    assert not entry.deserialize
    assert not entry.new_deserialized
    assert not entry.is_exception


# -- what cannot be sent ---------------------------------------------------------------


def test_a_cycle_through_a_copyable_is_a_circular_reference() -> None:
    point = Point(1, 2)
    point.me = point  # type: ignore[attr-defined]
    with pytest.raises(
        SerializationError,
        match=r"circular reference at msg\['args'\]\[0\]\['me'\]: it contains the value at"
        r" msg\['args'\]\[0\]$",
    ):
        encode_values({"args": [point]}, REGISTRY, LIMITS)


def test_a_cycle_between_two_copyables_is_a_circular_reference() -> None:
    first, second = Holder(None), Holder(None)
    first.held, second.held = second, first
    with pytest.raises(SerializationError, match="circular reference"):
        encode_values({"args": [[first]]}, REGISTRY, LIMITS)


@pytest.mark.parametrize(
    "value",
    [Pond(), PondMirror.__new__(PondMirror)],
    ids=["Cacheable", "RemoteCache"],
)
def test_a_cacheable_or_mirror_needs_a_connection(value: object) -> None:
    with pytest.raises(
        SerializationError,
        match=rf"cannot send {type(value).__name__} object at msg\['args'\]\[1\]:"
        " Cacheables and their mirrors cross only a Tether connection",
    ):
        encode_values({"args": [1, value]}, REGISTRY, LIMITS)


def test_a_remote_copy_that_is_not_copyable_cannot_be_sent() -> None:
    copy = RemotePoint.__new__(RemotePoint)
    copy.x = 1
    with pytest.raises(SerializationError, match=r"cannot serialize .*RemotePoint.* object at"):
        encode_values({"args": [copy]}, REGISTRY, LIMITS)


@pytest.mark.parametrize("local_class", [RemotePoint, Plain], ids=["RemoteCopy", "plain class"])
def test_the_default_setter_needs_a_dict(local_class: type) -> None:
    allowed = allowed_list({f"{HERE}.Snake": local_class})
    message = over_the_wire({"args": [1, {"s": Snake("a", "b")}]})
    with pytest.raises(
        SerializationError,
        match=rf"cannot build '{HERE}.Snake' at msg\['args'\]\[1\]\['s'\]: {local_class.__name__}"
        r" needs a dict of attributes as its state, got list \(define set_copyable_state",
    ):
        receive(message, allowed)


class Fussy(RemoteCopy):
    def set_copyable_state(self, state: object) -> None:
        raise ValueError("no ducks here")


class Picky(RemoteCopy):
    def setCopyableState(self, state: object) -> None:
        raise SerializationError("not that state")


@pytest.mark.parametrize(
    ("local_class", "why"),
    [(Fussy, "ValueError: no ducks here"), (Picky, "not that state")],
    ids=["any exception", "SerializationError"],
)
def test_an_error_in_the_setter_names_the_class_and_path(local_class: type, why: str) -> None:
    allowed = allowed_list({f"{HERE}.Point": local_class})
    message = over_the_wire({"args": [], "kwargs": {"p": Point(1, 2)}})
    with pytest.raises(SerializationError) as raised:
        receive(message, allowed)
    assert str(raised.value) == f"cannot build '{HERE}.Point' at msg['kwargs']['p']: {why}"
    assert type(raised.value) is SerializationError
    assert raised.value.__cause__ is not None


# -- copies inside one process ---------------------------------------------------------


def test_copy_values_copies_copyables_and_keeps_cacheables_and_mirrors() -> None:
    allowed = allowed_list({f"{HERE}.Point": RemotePoint, f"{HERE}.Holder": Copied})
    pond, mirror, point = Pond(), PondMirror.__new__(PondMirror), Point(1, 2)
    original: dict[str, object] = {
        "args": [point, pond, mirror],
        "kwargs": {"holder": Holder([pond, mirror])},
    }
    copied: Any = copy_values(original, REGISTRY, LIMITS, allowed=allowed)
    copy, same_pond, same_mirror = copied["args"]
    assert type(copy) is RemotePoint
    assert (copy.x, copy.y) == (1, 2)
    assert same_pond is pond
    assert same_mirror is mirror
    holder = copied["kwargs"]["holder"]
    assert type(holder) is Copied
    assert holder.held[0] is pond
    assert holder.held[1] is mirror
    assert pond.asked == 0  # no state is asked for: the object itself arrives


def test_copy_values_refuses_a_copyable_not_allowed() -> None:
    with pytest.raises(InsecureJelly, match=rf"'{HERE}.Point' is not allowed"):
        copy_values({"args": [Point(1, 2)]}, REGISTRY, LIMITS, allowed=Unjellyables())


@pytest.mark.parametrize(
    ("kind", "entry"),
    [
        ("Cache", {"cache": 0}),
        ("Cached", {"cache": 0}),
        ("CacheRef", {}),
        ("CacheRef", {"cache": "0"}),
        ("CacheRef", {"cache": True}),
        ("CacheRef", {"cache": 1}),
        ("CacheRef", {"cache": -1}),
    ],
    ids=["Cache", "Cached", "no id", "str id", "bool id", "past the end", "negative"],
)
def test_a_bad_cache_entry_in_a_copy(kind: str, entry: dict[str, object]) -> None:
    same = SameObjects()
    pond = Pond()
    tree = encode_values({"args": [pond]}, REGISTRY, LIMITS, caches=same)
    assert tree.objects == [{"path": ["args", 0], "type": ["CacheRef"], "cache": 0}]
    assert same.read("CacheRef", {"cache": 0}, None, ["args", 0]) is pond
    with pytest.raises(SerializationError, match=r"bad cache entry at msg\['args'\]\[0\]"):
        same.read(kind, entry, None, ["args", 0])


def test_a_cache_entry_without_a_cache_reader_is_unknown() -> None:
    message: dict[str, object] = {
        "args": [None],
        "objects": [{"path": ["args", 0], "type": ["CacheRef"], "cache": 0}],
    }
    with pytest.raises(SerializationError, match=r"unknown object type \['CacheRef'\]"):
        receive(message, Unjellyables())


def test_entry_kind_names_the_first_known_kind() -> None:
    assert entry_kind(["Fancy", "Cached", "Cache"]) == "Cached"
    assert entry_kind([1, "Copy"]) == "Copy"
    assert entry_kind(["Fancy", None]) is None


# -- the allow-list itself -------------------------------------------------------------


@pytest.mark.parametrize(
    "local_class", [Plain(), "RemotePoint", len], ids=["instance", "str", "function"]
)
def test_allow_needs_a_class(local_class: object) -> None:
    with pytest.raises(TypeError, match="set_unjellyable_for_class needs a class"):
        Unjellyables().allow("flavors.Point", local_class)  # type: ignore[arg-type]


def test_allow_factory_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="set_unjellyable_factory_for_class needs a callable"):
        Unjellyables().allow_factory("flavors.Point", "not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", 5, None], ids=["empty", "int", "none"])
@pytest.mark.parametrize(
    "register",
    [
        lambda allowed, name: allowed.allow(name, RemotePoint),
        lambda allowed, name: allowed.allow_factory(name, dict),
    ],
    ids=["allow", "allow_factory"],
)
def test_a_wire_name_must_be_a_non_empty_str(
    register: Callable[[Unjellyables, object], None], name: object
) -> None:
    allowed = Unjellyables()
    with pytest.raises(ValueError, match="a wire name must be a non-empty str"):
        register(allowed, name)
    assert allowed.by_name == {}


def test_forget_takes_a_name_off_the_list() -> None:
    allowed = allowed_list({"mod.A": RemotePoint, "mod.B": Plain})
    allowed.forget("mod.A")
    allowed.forget("never.there")  # nothing happens
    with pytest.raises(InsecureJelly):
        allowed.find("mod.A", ["args", 0])
    assert allowed.find("mod.B", ["args", 0]).local_class is Plain


def test_allowing_a_name_again_replaces_it() -> None:
    allowed = allowed_list({"mod.A": RemotePoint})
    allowed.allow_factory("mod.A", lambda state: ("made", state))
    assert receive(copy_entry("mod.A"), allowed)["args"] == [("made", {"x": 1})]
    allowed.allow("mod.A", Plain)
    assert type(receive(copy_entry("mod.A"), allowed)["args"][0]) is Plain  # type: ignore[index]


# -- the flavour classes ---------------------------------------------------------------


def test_cacheable_camel_case_names_delegate_to_snake_case() -> None:
    class Quiet(Cacheable):
        def __init__(self) -> None:
            self.ducks = ["ann"]
            self.stopped: list[tuple[object, object]] = []

        def stopped_observing(self, perspective: object, observer: object) -> None:
            self.stopped.append((perspective, observer))

    quiet = Quiet()
    state = quiet.getStateToCacheAndObserveFor("perspective", "observer")
    assert state == {"ducks": ["ann"], "stopped": []}
    assert state is not quiet.__dict__
    quiet.stoppedObserving("perspective", "observer")
    assert quiet.stopped == [("perspective", "observer")]
    Cacheable().stoppedObserving(None, None)  # the default does nothing


def test_remote_cache_close_runs_its_linked_release_once_linked() -> None:
    mirror = PondMirror.__new__(PondMirror)
    mirror.close()  # not linked to any connection: nothing happens
    released: list[object] = []
    link_mirror(mirror, released.append)
    mirror.close()
    assert released == [mirror]
    assert unlink_mirror(id(mirror)) == released.append
    assert unlink_mirror(id(mirror)) is None
    mirror.close()
    assert released == [mirror]
