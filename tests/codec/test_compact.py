"""Compact runs: consecutive portable objects of one class in a list share one entry."""

from __future__ import annotations

import copy
import math

import orjson
import pytest

from tether.codec import GlobalData, Limits, PortableRegistry, decode_values, encode_values
from tether.errors import InsecureJelly, SerializationError

LIMITS = Limits()
REGISTRY = PortableRegistry()


@REGISTRY.decorator("run.Point")
class Point:
    init_calls = 0

    def __init__(self, x: int, y: int) -> None:
        type(self).init_calls += 1
        self.x, self.y = x, y


@REGISTRY.decorator("run.Pair")
class Pair:
    def __init__(self, a: object) -> None:
        self.a = a

    def __serialize__(self, global_data: GlobalData) -> object:
        return [self.a]

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        self.a = data[0]  # type: ignore[index]
        self.truthy = bool(global_data)


@REGISTRY.decorator("run.Oops")
class Oops(Exception):
    pass


def send(values: dict[str, object], limits: Limits = LIMITS) -> dict[str, object]:
    encoded = encode_values(values, REGISTRY, limits, compact=True)
    message: dict[str, object] = {**encoded.values, "objects": encoded.objects}
    if encoded.vt_global is not None:
        message["vt_global"] = encoded.vt_global
    return orjson.loads(orjson.dumps(message))


def receive(message: dict[str, object], limits: Limits = LIMITS) -> dict[str, object]:
    decode_values(message, ("args", "kwargs", "response"), REGISTRY, limits)
    return message


def test_a_run_of_one_class_is_one_entry() -> None:
    points = [Point(i, -i) for i in range(5)]
    calls = Point.init_calls
    message = send({"args": [points]})
    assert message["objects"] == [
        {
            "path": ["args", 0],
            "type": ["ValueType"],
            "typeName": "run.Point",
            "items": [0, 1, 2, 3, 4],
        }
    ]
    back = receive(message)["args"][0]  # type: ignore[index]
    assert [(type(p), p.x, p.y) for p in back] == [(Point, i, -i) for i in range(5)]
    assert Point.init_calls == calls


def test_runs_break_on_other_classes_and_entries() -> None:
    a, b = Point(1, 1), Point(2, 2)
    values = [a, "plain", b, 2**40, a, Pair(1), Pair(2), Point(3, 3), Pair(2**40), Pair(4)]
    message = send({"args": values})
    assert [(entry["path"], entry.get("items")) for entry in message["objects"]] == [  # type: ignore[attr-defined]
        (["args"], [0, 2]),  # a plain value in between does not break a run
        (["args", 3], None),
        (["args"], [4]),
        (["args"], [5, 6]),
        (["args"], [7]),
        (["args", 8, 0], None),  # an object with inner entries gets its own entry
        (["args", 8], None),
        (["args"], [9]),
    ]
    back = receive(message)["args"]
    assert back[1] == "plain"  # type: ignore[index]
    assert back[3] == 2**40  # type: ignore[index]
    assert [type(item).__name__ for item in back] == [  # type: ignore[attr-defined]
        "Point",
        "str",
        "Point",
        "int",
        "Point",
        "Pair",
        "Pair",
        "Point",
        "Pair",
        "Pair",
    ]
    assert [item.a for item in back[5:7]] == [1, 2]  # type: ignore[index]
    assert back[8].a == 2**40  # type: ignore[index]
    assert back[9].truthy  # type: ignore[index]


def test_runs_in_tuples_and_of_exceptions() -> None:
    message = send({"kwargs": {"t": (Oops("x"), Oops("y"))}})
    assert message["objects"] == [
        {"path": ["kwargs", "t"], "type": ["ValueType"], "typeName": "run.Oops", "items": [0, 1]}
    ]
    back = receive(message)["kwargs"]["t"]  # type: ignore[index]
    assert [(type(e), e.args) for e in back] == [(Oops, ("x",)), (Oops, ("y",))]


def test_without_compact_every_object_has_its_own_entry() -> None:
    encoded = encode_values({"args": [Point(1, 2), Point(3, 4)]}, REGISTRY, LIMITS)
    assert [entry["path"] for entry in encoded.objects] == [["args", 0], ["args", 1]]
    assert all("items" not in entry for entry in encoded.objects)


def test_max_objects_counts_every_object_of_a_run() -> None:
    limits = Limits(max_objects=3)
    message = send({"args": [Point(0, 0)] * 3}, limits)
    receive(message, limits)
    with pytest.raises(SerializationError, match=r"4 objects.*max_objects"):
        send({"args": [Point(0, 0)] * 4}, limits)
    big = send({"args": [Point(0, 0)] * 4})
    with pytest.raises(SerializationError, match=r"4 or more objects.*max_objects"):
        receive(big, limits)


def run(**fields: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "path": ["args"],
        "type": ["ValueType"],
        "typeName": "run.Point",
        "items": [0],
    }
    entry.update(fields)
    return {"args": [{"x": 1, "y": 2}, None, [1]], "kwargs": {}, "objects": [entry]}


BAD_RUNS = {
    "items not a list": run(items=0),
    "items a dict": run(items={"0": 0}),
    "items empty": run(items=[]),
    "index a str": run(items=["0"]),
    "index a bool": run(items=[True]),
    "index negative": run(items=[-1]),
    "index past the end": run(items=[3]),
    "path to a dict": run(path=["kwargs"]),
    "path to a str": run(path=["args", 0, "x"]),
    "path nowhere": run(path=["args", 9]),
    "path outside the values": run(path=["objects"]),
    "unknown class": run(typeName="run.Nope"),
    "no class name": run(typeName=None),
    "default class from null": run(items=[1]),
    "default class from a list": run(items=[2]),
    "hook class from a dict": run(typeName="run.Pair"),
    "run of Longs": run(type=["Long"], value="5"),
    "run of ClassTypes": run(type=["ClassType"]),
}


@pytest.mark.parametrize("message", BAD_RUNS.values(), ids=list(BAD_RUNS))
def test_bad_runs_are_serialization_errors(message: dict[str, object]) -> None:
    with pytest.raises(SerializationError):
        receive(copy.deepcopy(message))


def test_an_unknown_class_in_a_run_is_insecure_jelly() -> None:
    with pytest.raises(InsecureJelly, match=r"'run.Nope' is registered here \(at msg\['args'\]\)"):
        receive(run(typeName="run.Nope"))


def test_a_failing_item_in_a_run_names_its_index() -> None:
    with pytest.raises(SerializationError, match=r"cannot build 'run.Point' at msg\['args'\]\[1\]"):
        receive(run(items=[0, 1]))


@REGISTRY.decorator("run.Rec")
class Rec:
    def __init__(self, **attrs: object) -> None:
        self.__dict__.update(attrs)


FLAT = {"s": "x", "n": None, "b": True, "i": 5, "f": 1.5, "l": [1, "a", None, True, 2.5, -7]}


def test_flat_default_objects_go_out_as_their_dict() -> None:
    items = [Rec(**FLAT, t=(1, 2)), Rec(**FLAT), Rec()]
    message = send({"args": [items]})
    assert message["objects"] == [
        {"path": ["args", 0], "type": ["ValueType"], "typeName": "run.Rec", "items": [0, 1, 2]}
    ]
    assert message["args"] == [[{**FLAT, "t": [1, 2]}, FLAT, {}]]
    back = receive(message)["args"][0]  # type: ignore[index]
    assert [vars(item) for item in back] == [{**FLAT, "t": [1, 2]}, FLAT, {}]
    assert all(type(item) is Rec for item in back)


@pytest.mark.parametrize(
    ("attrs", "own_entry"),
    [
        ({"big": 2**40}, True),
        ({"inf": math.inf}, True),
        ({"l": [2**40]}, True),
        ({"l": ["x", math.nan]}, True),
        ({"l": [[1]]}, False),
        ({"d": {"a": 1}}, False),
        ({"c": 1 + 0j}, None),
    ],
    ids=["long", "inf", "long in list", "nan in list", "nested list", "dict", "complex"],
)
def test_other_default_objects_take_the_general_path(
    attrs: dict[str, object], own_entry: bool | None
) -> None:
    values = {"args": [Rec(a=1), Rec(**attrs)]}
    if own_entry is None:
        with pytest.raises(SerializationError, match=r"at msg\['args'\]\[1\]\['c'\]"):
            send(values)
        return
    message = send(values)
    runs = [
        entry.get("items") for entry in message["objects"] if entry.get("typeName") == "run.Rec"
    ]  # type: ignore[attr-defined]
    assert runs == ([[0], None] if own_entry else [[0, 1]])
    [first, second] = receive(message)["args"]  # type: ignore[misc]
    assert vars(first) == {"a": 1}
    assert type(second) is Rec
    for key, value in attrs.items():
        got = getattr(second, key)
        assert got == value or (key == "l" and math.isnan(got[1]))


def test_a_non_str_attribute_name_is_refused() -> None:
    item = Rec()
    item.__dict__[1] = "x"
    with pytest.raises(SerializationError, match=r"int key 1 at msg\['args'\]\[0\]"):
        send({"args": [item]})


def test_runs_near_the_depth_limit_take_the_general_path() -> None:
    limits = Limits(max_depth=3)
    message = send({"args": [Rec(a=1), Rec(a=2)]}, limits)
    assert message["objects"] == [
        {"path": ["args"], "type": ["ValueType"], "typeName": "run.Rec", "items": [0, 1]}
    ]
    assert [vars(item) for item in receive(message, limits)["args"]] == [{"a": 1}, {"a": 2}]  # type: ignore[attr-defined]
