"""Portable classes across the wire: hooks, nesting, class objects, exceptions, global data."""

from __future__ import annotations

import orjson
import pytest

from tether.codec import GlobalData, Limits, PortableRegistry, decode_values, encode_values
from tether.errors import SerializationError

LIMITS = Limits()
REGISTRY = PortableRegistry()


@REGISTRY.decorator("p.Point")
class Point:
    init_calls = 0

    def __init__(self, x: int, y: int) -> None:
        type(self).init_calls += 1
        self.x, self.y = x, y


@REGISTRY.decorator("p.Celsius")
class Celsius:
    init_calls = 0

    def __init__(self, degrees: float) -> None:
        type(self).init_calls += 1
        self.degrees = degrees

    def __serialize__(self, global_data: GlobalData) -> object:
        return [self.degrees, "C"]

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        assert isinstance(data, list)
        self.degrees = data[0]
        self.unit = data[1]


@REGISTRY.decorator("p.Built")
class Built:
    calls: list[tuple[object, GlobalData]] = []  # noqa: RUF012

    def __init__(self, value: object) -> None:
        self.value = value

    def __serialize__(self, global_data: GlobalData) -> object:
        return {"v": self.value}

    @staticmethod
    def __new_deserialized__(data: object, global_data: GlobalData) -> Built:
        Built.calls.append((data, global_data))
        return Built(("built", data["v"]))  # type: ignore[index]


@REGISTRY.decorator("p.Line")
class Line:
    def __init__(self, start: Point, end: Point) -> None:
        self.start, self.end = start, end


@REGISTRY.decorator("p.Refused")
class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code
        self.detail = {"when": 2**40}


@REGISTRY.decorator("p.Tagged")
class Tagged:
    """Two instances share one global_data: each appends its name, then reads the list."""

    seen: list[tuple[int, bool, object]] = []  # noqa: RUF012

    def __init__(self, name: str) -> None:
        self.name = name

    def __serialize__(self, global_data: GlobalData) -> object:
        names = global_data.setdefault("names", [])
        names.append(self.name)  # type: ignore[attr-defined]
        return self.name

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        self.name = data
        Tagged.seen.append((id(global_data), bool(global_data), list(global_data["names"])))  # type: ignore[call-overload]


@REGISTRY.decorator("p.Inside")
class Inside:
    """Stored inside global data: its global_data is falsey and refuses reads and writes."""

    seen: list[bool] = []  # noqa: RUF012

    def __serialize__(self, global_data: GlobalData) -> object:
        Inside.check(global_data)
        return {}

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        Inside.check(global_data)

    @staticmethod
    def check(global_data: GlobalData) -> None:
        Inside.seen.append(bool(global_data))
        with pytest.raises(RuntimeError):
            global_data["x"]
        with pytest.raises(RuntimeError):
            global_data["x"] = 1


@REGISTRY.decorator("p.Keeper")
class Keeper:
    """Puts an Inside object and a big int into global data."""

    def __serialize__(self, global_data: GlobalData) -> object:
        global_data["inside"] = Inside()
        global_data["big"] = 2**40
        return None

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        self.inside = global_data["inside"]
        self.big = global_data["big"]


@REGISTRY.decorator("p.Reader")
class Reader:
    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        self.global_data = global_data
        self.seen = global_data.get("seen")


def over_the_wire(values: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """Returns the wire message and the decoded values."""
    encoded = encode_values(values, REGISTRY, LIMITS)
    message: dict[str, object] = {**encoded.values, "objects": encoded.objects}
    if encoded.vt_global is not None:
        message["vt_global"] = encoded.vt_global
    wire = orjson.loads(orjson.dumps(message))
    received = orjson.loads(orjson.dumps(message))
    decode_values(received, tuple(values), REGISTRY, LIMITS)
    return wire, {key: received[key] for key in values}


def test_default_dict_path_and_no_init_on_the_receiver() -> None:
    point = Point(1, 2)
    calls = Point.init_calls
    wire, back = over_the_wire({"args": [point]})
    assert wire["args"] == [{"x": 1, "y": 2}]
    assert wire["objects"] == [{"path": ["args", 0], "type": ["ValueType"], "typeName": "p.Point"}]
    [copy] = back["args"]  # type: ignore[misc]
    assert type(copy) is Point
    assert copy is not point
    assert (copy.x, copy.y) == (1, 2)
    assert Point.init_calls == calls  # built with cls.__new__, __init__ not called


def test_serialize_and_deserialize_hooks() -> None:
    item = Celsius(21.5)
    calls = Celsius.init_calls
    wire, back = over_the_wire({"kwargs": {"t": item}})
    assert wire["kwargs"] == {"t": [21.5, "C"]}
    copy = back["kwargs"]["t"]  # type: ignore[index]
    assert type(copy) is Celsius
    assert (copy.degrees, copy.unit) == (21.5, "C")
    assert Celsius.init_calls == calls


def test_new_deserialized_builds_the_object_itself() -> None:
    Built.calls.clear()
    wire, back = over_the_wire({"response": Built(3)})
    assert wire["response"] == {"v": 3}
    assert isinstance(back["response"], Built)
    assert back["response"].value == ("built", 3)
    [(data, global_data)] = Built.calls
    assert data == {"v": 3}
    assert isinstance(global_data, GlobalData)
    assert global_data  # a usable global data is truthy, even when empty
    assert len(global_data) == 0


def test_nested_portable_objects_inner_before_outer() -> None:
    line = Line(Point(0, 0), Point(3, 4))
    wire, back = over_the_wire({"args": [line]})
    assert wire["args"] == [{"start": {"x": 0, "y": 0}, "end": {"x": 3, "y": 4}}]
    assert [(entry["path"], entry["typeName"]) for entry in wire["objects"]] == [  # type: ignore[attr-defined]
        (["args", 0, "start"], "p.Point"),
        (["args", 0, "end"], "p.Point"),
        (["args", 0], "p.Line"),
    ]
    [copy] = back["args"]  # type: ignore[misc]
    assert type(copy) is Line
    assert type(copy.start) is Point
    assert (copy.end.x, copy.end.y) == (3, 4)


def test_the_class_object_itself_is_a_class_type() -> None:
    wire, back = over_the_wire({"args": [Point, [Line]]})
    assert wire["objects"] == [
        {"path": ["args", 0], "type": ["ClassType"], "typeName": "p.Point"},
        {"path": ["args", 1, 0], "type": ["ClassType"], "typeName": "p.Line"},
    ]
    assert back["args"] == [Point, [Line]]


def test_portable_exceptions_keep_args_and_attributes() -> None:
    error = Refused("no way", 7)
    wire, back = over_the_wire({"error": error})
    assert wire["error"] == {
        "args": ["no way", 7],
        "attrs": {"code": 7, "detail": {"when": None}},
    }
    copy = back["error"]
    assert type(copy) is Refused
    assert copy.args == ("no way", 7)
    assert copy.code == 7
    assert copy.detail == {"when": 2**40}
    with pytest.raises(Refused, match="no way"):
        raise copy


def test_exception_attrs_may_be_missing_or_odd() -> None:
    for attrs in ({}, None, "odd"):
        message: dict[str, object] = {
            "error": {"args": ["m"], "attrs": attrs},
            "objects": [{"path": ["error"], "type": ["ValueType"], "typeName": "p.Refused"}],
        }
        decode_values(message, ("error",), REGISTRY, LIMITS)
        error = message["error"]
        assert type(error) is Refused
        assert error.args == ("m",)
        assert not hasattr(error, "code")


def test_one_global_data_per_message() -> None:
    Tagged.seen.clear()
    wire, back = over_the_wire({"args": [Tagged("a"), {"b": Tagged("b")}]})
    assert wire["vt_global"] == {"names": ["a", "b"]}
    assert wire["args"] == ["a", {"b": "b"}]
    [(first_id, first_truthy, first_names), (second_id, _, second_names)] = Tagged.seen
    assert first_id == second_id  # the same object for both
    assert first_truthy
    assert first_names == second_names == ["a", "b"]
    assert [item.name for item in (back["args"][0], back["args"][1]["b"])] == ["a", "b"]  # type: ignore[index]


def test_without_global_data_there_is_no_vt_global() -> None:
    encoded = encode_values({"args": [Point(1, 2)]}, REGISTRY, LIMITS)
    assert encoded.vt_global is None


def test_objects_inside_global_data_get_a_disabled_global_data() -> None:
    Inside.seen.clear()
    wire, back = over_the_wire({"args": [Keeper()]})
    assert wire["vt_global"] == {"inside": {}, "big": None}
    assert wire["objects"] == [  # vt_global entries first
        {"path": ["vt_global", "inside"], "type": ["ValueType"], "typeName": "p.Inside"},
        {"path": ["vt_global", "big"], "type": ["Long"], "value": str(2**40)},
        {"path": ["args", 0], "type": ["ValueType"], "typeName": "p.Keeper"},
    ]
    [keeper] = back["args"]  # type: ignore[misc]
    assert isinstance(keeper.inside, Inside)
    assert keeper.big == 2**40
    assert Inside.seen == [False, False]  # once when sent, once when received


def test_writing_to_a_disabled_global_data_while_sending_fails() -> None:
    registry = PortableRegistry()

    @registry.decorator
    class Greedy:
        def __serialize__(self, global_data: GlobalData) -> object:
            global_data["more"] = 1
            return None

    @registry.decorator
    class Holder:
        def __serialize__(self, global_data: GlobalData) -> object:
            global_data["held"] = Greedy()
            return None

    with pytest.raises(RuntimeError, match="not available"):
        encode_values({"args": [Holder()]}, registry, LIMITS)


@pytest.mark.parametrize(
    ("vt_global", "seen"),
    [
        (["ex.A", {"count": 2}, ":GLOBAL", {"seen": 2}], 2),
        ([":GLOBAL", {"seen": "first"}, "ex.A", {}], "first"),
        (["ex.A", {"count": 2}], None),
        ([":GLOBAL", "not a dict"], None),
        ([], None),
        ({"seen": 3}, 3),
        (None, None),
    ],
    ids=["list form", "GLOBAL first", "no GLOBAL", "GLOBAL not a dict", "empty", "dict", "none"],
)
def test_anvil_forms_of_vt_global(vt_global: object, seen: object) -> None:
    message: dict[str, object] = {
        "args": [{}],
        "objects": [{"path": ["args", 0], "type": ["ValueType"], "typeName": "p.Reader"}],
    }
    if vt_global is not None:
        message["vt_global"] = vt_global
    global_data = decode_values(message, ("args",), REGISTRY, LIMITS)
    [reader] = message["args"]  # type: ignore[misc]
    assert reader.seen == seen
    assert reader.global_data is global_data
    assert global_data


def test_vt_global_entries_in_a_message_without_body_entries() -> None:
    message: dict[str, object] = {
        "args": [1],
        "vt_global": {"when": None},
        "objects": [{"path": ["vt_global", "when"], "type": ["Date"], "value": "2024-01-01"}],
    }
    global_data = decode_values(message, ("args",), REGISTRY, LIMITS)
    assert str(global_data["when"]) == "2024-01-01"


def test_a_failing_serialize_hook_propagates() -> None:
    registry = PortableRegistry()

    @registry.decorator
    class Broken:
        def __serialize__(self, global_data: GlobalData) -> object:
            return {1: "non-str key"}

    with pytest.raises(SerializationError, match=r"int key 1 at msg\['args'\]\[0\]"):
        encode_values({"args": [Broken()]}, registry, LIMITS)


def test_an_unregistered_subclass_of_a_portable_class_is_refused() -> None:
    class SubPoint(Point):
        pass

    with pytest.raises(SerializationError, match=r"SubPoint'> object at msg\['args'\]\[0\]"):
        encode_values({"args": [SubPoint(1, 2)]}, REGISTRY, LIMITS)
