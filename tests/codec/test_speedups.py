"""The codec's C speedups do exactly what their Python versions do (both always tested)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import TIMEOUT
from tether.codec import (
    Limits,
    PortableRegistry,
    decode_values,
    decoder,
    encode_values,
    encoder,
)
from tether.codec import _speedups as c  # imported directly: a build without it fails here
from tether.errors import SerializationError


class Item:
    def __init__(self, **attrs: object) -> None:
        self.__dict__.update(attrs)


class SubItem(Item):
    pass


class Slotted:
    __slots__ = ("x",)


INT_LIMIT = encoder.INT_LIMIT
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([INT_LIMIT, INT_LIMIT + 1, -INT_LIMIT, -INT_LIMIT - 1, 2**63, -(2**63) - 1]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.lists(scalars, max_size=3).map(tuple),
    st.lists(st.lists(scalars, max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
    st.builds(bytes),
)
attrs = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), values, max_size=4)


def both_flat(seq: Any, cls: type) -> tuple[object, object]:
    return c.flat_dicts(seq, cls, INT_LIMIT), encoder._flat_run_py(seq, cls)


@given(st.lists(attrs, min_size=1, max_size=6))
def test_flat_dicts_agrees_with_the_python_version(rows: list[dict[str, object]]) -> None:
    items = [Item(**row) for row in rows]
    c, py = both_flat(items, Item)
    if py is None:
        assert c is None
    else:
        assert c is not None
        assert all(a is b for a, b in zip(c, py, strict=True))  # the objects' own dicts


@pytest.mark.parametrize(
    ("seq", "expected_flat"),
    [
        ([Item(a=1), Item(a="x", b=None, c=True)], True),
        ((Item(a=1.5), Item(a=[1, "x", None, False])), True),  # a tuple of objects too
        ([Item(a=(1, 2))], True),
        ([Item(a=[1.5, -0.0, 2])], True),  # finite floats in a list
        ([Item(a=1), SubItem(a=1)], False),  # exactly one class
        ([Item(a=1), 1], False),
        ([Item(a=math.nan)], False),
        ([Item(a=math.inf)], False),
        ([Item(a=[math.inf])], False),
        ([Item(a=INT_LIMIT + 1)], False),
        ([Item(a=[2**70])], False),
        ([Item(a=[[1]])], False),  # lists of lists are not flat
        ([Item(a={"k": 1})], False),
        ([Item(a=b"x")], False),
    ],
    ids=[
        "plain",
        "tuple-of-objects",
        "tuple-attr",
        "floats-in-list",
        "subclass",
        "not-an-object",
        "nan",
        "inf",
        "inf-in-list",
        "big-int",
        "huge-int-in-list",
        "nested-list",
        "dict-attr",
        "bytes",
    ],
)
def test_flat_dicts_cases(seq: Any, expected_flat: bool) -> None:
    c, py = both_flat(seq, Item)
    assert (c is not None) is expected_flat
    assert (py is not None) is expected_flat


def test_flat_dicts_refuses_a_non_str_attribute_name_and_objects_without_a_dict() -> None:
    odd = Item(a=1)
    odd.__dict__[1] = "x"
    assert both_flat([odd], Item) == (None, None)
    slotted = Slotted()
    slotted.x = 1
    assert both_flat([slotted, slotted], Slotted) == (None, None)


def test_flat_dicts_takes_only_lists_and_tuples() -> None:
    assert c.flat_dicts(iter([Item(a=1)]), Item, INT_LIMIT) is None
    with pytest.raises(TypeError):
        c.flat_dicts([], "not a class", INT_LIMIT)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.flat_dicts([], Item, "not an int")  # type: ignore[arg-type]


def test_build_dicts_agrees_with_the_python_version() -> None:
    for build in (c.build_dicts, decoder._build_dicts_py):
        node: list[object] = [{"a": 1}, {"b": [2]}, "stop", {"c": 3}]
        assert build(node, Item, 0) == 2
        assert [type(x) for x in node] == [Item, Item, str, dict]
        assert vars(node[1]) == {"b": [2]}
        assert build(node, Item, 3) == 4
        assert type(node[3]) is Item
        assert build(node, Item, 4) == 4


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int


def test_build_dicts_skips_a_classes_own_setattr_like_the_c_version() -> None:
    for build in (c.build_dicts, decoder._build_dicts_py):
        node: list[object] = [{"a": 1}, {"a": 2}]
        assert build(node, Frozen, 0) == 2
        assert node == [Frozen(1), Frozen(2)]


def test_build_dicts_errors() -> None:
    with pytest.raises(TypeError):
        c.build_dicts((), Item, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.build_dicts([], Item, "0")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.build_dicts([{}], type(len), 0)  # builtin_function_or_method has no tp_new
    with pytest.raises(AttributeError):
        c.build_dicts([{}], Slotted, 0)  # no __dict__ to set

    class Refuses:
        def __new__(cls) -> Refuses:
            raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        c.build_dicts([{}], Refuses, 0)


def test_build_dicts_survives_a_new_that_changes_the_list() -> None:
    node: list[object] = [{"a": 1}, {"a": 2}, {"a": 3}]

    class Shrinks:
        def __new__(cls) -> Shrinks:
            node.clear()
            return super().__new__(cls)

    assert c.build_dicts(node, Shrinks, 0) == 0
    assert node == []


def roundtrip() -> list[object]:
    registry = PortableRegistry()
    registry.register(Item, "t.Item")
    items = [Item(id=i, name=f"n{i}", tags=["a", "b"]) for i in range(50)]
    limits = Limits()
    encoded = encode_values({"args": [items], "kwargs": {}}, registry, limits, compact=True)
    [entry] = encoded.objects
    assert entry["items"] == list(range(50))  # one entry for the whole list
    message: dict[str, object] = {
        "args": [[dict(d) for d in encoded.values["args"][0]]],  # type: ignore[index]
        "kwargs": {},
        "objects": encoded.objects,
    }
    decode_values(message, ("args", "kwargs"), registry, limits)
    out = message["args"][0]  # type: ignore[index]
    assert [vars(x) for x in out] == [vars(x) for x in items]
    return out  # type: ignore[no-any-return]


def test_the_python_versions_run_when_the_speedups_are_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoder, "_C_FLAT", c.flat_dicts)  # the C versions, whatever the env
    monkeypatch.setattr(decoder, "_build_dicts", c.build_dicts)
    roundtrip()
    monkeypatch.setattr(encoder, "_C_FLAT", None)
    monkeypatch.setattr(decoder, "_build_dicts", decoder._build_dicts_py)
    roundtrip()


def test_a_run_whose_new_fails_names_the_class_and_path() -> None:
    class Refuses:
        def __new__(cls) -> Refuses:
            raise ValueError("refused")

    registry = PortableRegistry()
    registry.register(Refuses, "t.Refuses")
    message: dict[str, object] = {
        "args": [[{"a": 1}, {"a": 2}]],
        "objects": [
            {"path": ["args", 0], "type": ["ValueType"], "typeName": "t.Refuses", "items": [0, 1]}
        ],
    }
    with pytest.raises(SerializationError, match=r"'t.Refuses' in the run at msg\['args'\]\[0\]"):
        decode_values(message, ("args",), registry, Limits())


def test_tether_pure_python_turns_them_off() -> None:
    code = (
        "from tether.codec import _accel, encoder, decoder;"
        "assert _accel.flat_dicts is None and _accel.build_dicts is None;"
        "assert encoder._C_FLAT is None and decoder._build_dicts is decoder._build_dicts_py;"
        "print('pure')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TETHER_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"


def test_a_run_with_an_item_that_is_not_a_dict_fails_at_that_item() -> None:
    registry = PortableRegistry()
    registry.register(Item, "t.Item")
    message: dict[str, object] = {
        "args": [[{"a": 1}, ["not", "a", "dict"], {"a": 3}]],
        "objects": [
            {"path": ["args", 0], "type": ["ValueType"], "typeName": "t.Item", "items": [0, 1, 2]}
        ],
    }
    with pytest.raises(SerializationError, match=r"msg\['args'\]\[0\]\[1\].*dict of attributes"):
        decode_values(message, ("args",), registry, Limits())


def test_a_run_near_the_depth_limit_takes_the_object_by_object_walk() -> None:
    registry = PortableRegistry()
    registry.register(Item, "t.Item")
    items = [Item(a=1), Item(a=2)]
    nested: object = items
    for _ in range(4):
        nested = [nested]
    encoded = encode_values({"v": nested}, registry, Limits(max_depth=8), compact=True)
    assert encoded.objects[0]["items"] == [0, 1]  # still one run, written item by item
    with pytest.raises(SerializationError, match="nesting deeper"):
        encode_values({"v": [nested]}, registry, Limits(max_depth=7), compact=True)
