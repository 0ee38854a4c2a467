"""decode_values: strict about every objects entry; builds only registered classes."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys

import pytest

from tether.codec import BlobMedia, Limits, PortableRegistry, decode_values, media_ids
from tether.errors import InsecureJelly, SerializationError

LIMITS = Limits()
REGISTRY = PortableRegistry()
CANARY = "TETHER_CODEC_CANARY_IMPORTED"


@REGISTRY.decorator("dec.Point")
class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


@REGISTRY.decorator("dec.Picky")
class Picky:
    def __deserialize__(self, data: object, global_data: object) -> None:
        self.value = data["needed"]  # type: ignore[index]


@REGISTRY.decorator("dec.Failed")
class Failed(Exception):
    pass


def message_with(*objects: object, **fields: object) -> dict[str, object]:
    return {
        "type": "CALL",
        "id": "c1",
        "command": "f",
        "args": [None, {"a": None}],
        "kwargs": {"k": None},
        "objects": list(objects),
        **fields,
    }


# -- the allow-list --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ValueType", "ClassType"])
@pytest.mark.parametrize(
    "name",
    ["tests.codec.canary_module.Evil", "canary_module.Evil", "os.system", "builtins.eval", 5],
    ids=["module path", "bare module", "os.system", "builtins.eval", "not a str"],
)
def test_an_unknown_type_name_is_insecure_jelly(kind: str, name: object) -> None:
    message = message_with({"path": ["args", 0], "type": [kind], "typeName": name})
    with pytest.raises(InsecureJelly, match=r"is registered here \(at msg\['args'\]\[0\]\)"):
        decode_values(message, ("args", "kwargs"), REGISTRY, LIMITS)
    assert issubclass(InsecureJelly, SerializationError)


@pytest.mark.parametrize("kind", ["ValueType", "ClassType"])
@pytest.mark.parametrize(
    "name", ["tests.codec.canary_module.Evil", "canary_module.Evil"], ids=["full", "bare"]
)
def test_a_named_module_is_never_imported(
    kind: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CANARY, raising=False)
    monkeypatch.delitem(sys.modules, "tests.codec.canary_module", raising=False)
    monkeypatch.delitem(sys.modules, "canary_module", raising=False)
    before = set(sys.modules)
    message = message_with({"path": ["args", 0], "type": [kind], "typeName": name}, args=[{}])
    with pytest.raises(InsecureJelly):
        decode_values(message, ("args",), REGISTRY, LIMITS)
    assert set(sys.modules) == before  # nothing at all was imported
    assert "tests.codec.canary_module" not in sys.modules
    assert "canary_module" not in sys.modules
    assert CANARY not in os.environ


def test_the_canary_would_be_importable() -> None:
    # The canary test means something only if a naive decoder could have imported it.
    assert importlib.util.find_spec("tests.codec.canary_module") is not None


def test_registered_class_type_decodes_to_the_class() -> None:
    message = message_with(
        {"path": ["kwargs", "k"], "type": ["ClassType"], "typeName": "dec.Point"}
    )
    decode_values(message, ("args", "kwargs"), REGISTRY, LIMITS)
    assert message["kwargs"] == {"k": Point}


# -- malformed entries -----------------------------------------------------------------

LONG = {"type": ["Long"], "value": "5"}

MALFORMED: dict[str, dict[str, object]] = {
    "objects not a list": message_with(objects={"path": ["args", 0]}),
    "objects a string": message_with(objects="[]"),
    "entry not a dict": message_with(["args", 0]),
    "entry is null": message_with(None),
    "path missing": message_with({"type": ["Long"], "value": "5"}),
    "path not a list": message_with({**LONG, "path": "args"}),
    "path a dict": message_with({**LONG, "path": {"args": 0}}),
    "path empty": message_with({**LONG, "path": []}),
    "path too long": message_with({**LONG, "path": ["args", *([0] * 200)]}),
    "path to id": message_with({**LONG, "path": ["id"]}),
    "path to command": message_with({**LONG, "path": ["command"]}),
    "path to type": message_with({**LONG, "path": ["type"]}),
    "path into objects": message_with({**LONG, "path": ["objects", 0, "value"]}),
    "path to a missing top key": message_with({**LONG, "path": ["response"]}),
    "path starts with an int": message_with({**LONG, "path": [0]}),
    "path index past the end": message_with({**LONG, "path": ["args", 2]}),
    "path negative index": message_with({**LONG, "path": ["args", -1]}),
    "path bool index": message_with({**LONG, "path": ["args", True]}),
    "path str index into list": message_with({**LONG, "path": ["args", "0"]}),
    "path int key into dict": message_with({**LONG, "path": ["args", 1, 0]}),
    "path missing dict key": message_with({**LONG, "path": ["kwargs", "nope"]}),
    "path through null": message_with({**LONG, "path": ["args", 0, "x"]}),
    "path through a str": message_with({**LONG, "path": ["command", 0]}),
    "type missing": message_with({"path": ["args", 0], "value": "5"}),
    "type not a list": message_with({"path": ["args", 0], "type": "Long", "value": "5"}),
    "type holds a list": message_with({"path": ["args", 0], "type": [["Long"]], "value": "5"}),
    "type holds a dict": message_with({"path": ["args", 0], "type": [{}], "value": "5"}),
    "type empty": message_with({"path": ["args", 0], "type": [], "value": "5"}),
    "unknown object type": message_with({"path": ["args", 0], "type": ["Pickle"], "data": "x"}),
    "Capability without a decoder": message_with(
        {"path": ["args", 0], "type": ["Capability"], "scope": [], "mac": ""}
    ),
    "LiveObject": message_with({"path": ["args", 0], "type": ["LiveObject"], "backend": "x"}),
    "Long missing": message_with({"path": ["args", 0], "type": ["Long"]}),
    "Long int": message_with({"path": ["args", 0], "type": ["Long"], "value": 5}),
    "Long empty": message_with({"path": ["args", 0], "type": ["Long"], "value": ""}),
    "Long minus": message_with({"path": ["args", 0], "type": ["Long"], "value": "-"}),
    "Long double minus": message_with({"path": ["args", 0], "type": ["Long"], "value": "--5"}),
    "Long plus": message_with({"path": ["args", 0], "type": ["Long"], "value": "+5"}),
    "Long letters": message_with({"path": ["args", 0], "type": ["Long"], "value": "12a"}),
    "Long float": message_with({"path": ["args", 0], "type": ["Long"], "value": "1.5"}),
    "Long space": message_with({"path": ["args", 0], "type": ["Long"], "value": " 5"}),
    "Long underscore": message_with({"path": ["args", 0], "type": ["Long"], "value": "1_000"}),
    "Long non-ascii digits": message_with({"path": ["args", 0], "type": ["Long"], "value": "١٢"}),
    "Long superscript": message_with({"path": ["args", 0], "type": ["Long"], "value": "²"}),
    "Float missing": message_with({"path": ["args", 0], "type": ["Float"]}),
    "Float number": message_with({"path": ["args", 0], "type": ["Float"], "value": 1.5}),
    "Float inf": message_with({"path": ["args", 0], "type": ["Float"], "value": "inf"}),
    "Float list": message_with({"path": ["args", 0], "type": ["Float"], "value": ["NaN"]}),
    "Date missing": message_with({"path": ["args", 0], "type": ["Date"]}),
    "Date int": message_with({"path": ["args", 0], "type": ["Date"], "value": 20240229}),
    "Date impossible": message_with({"path": ["args", 0], "type": ["Date"], "value": "2024-02-30"}),
    "Date words": message_with({"path": ["args", 0], "type": ["Date"], "value": "today"}),
    "Date too long": message_with(
        {"path": ["args", 0], "type": ["Date"], "value": "2024-01-01" + " " * 60}
    ),
    "DateTime missing": message_with({"path": ["args", 0], "type": ["DateTime"]}),
    "DateTime words": message_with({"path": ["args", 0], "type": ["DateTime"], "value": "now"}),
    "DateTime hour 25": message_with(
        {"path": ["args", 0], "type": ["DateTime"], "value": "2024-01-02 25:00:00"}
    ),
    "DateTime bad offset": message_with(
        {"path": ["args", 0], "type": ["DateTime"], "value": "2024-01-02 03:00:00+9999"}
    ),
    "DateTime too long": message_with(
        {"path": ["args", 0], "type": ["DateTime"], "value": "2024-01-02 03:00:00" + "0" * 60}
    ),
    "DateTime number": message_with({"path": ["args", 0], "type": ["DateTime"], "value": 1.5e9}),
    "DataMedia never arrived": message_with(
        {"path": ["args", 0], "type": ["DataMedia"], "id": "9", "mime-type": "a/b", "name": None}
    ),
    "DataMedia without id": message_with({"path": ["args", 0], "type": ["DataMedia"]}),
    "DataMedia int id": message_with({"path": ["args", 0], "type": ["DataMedia"], "id": 0}),
    "vt_global entry after a body entry": message_with(
        {**LONG, "path": ["args", 0]},
        {**LONG, "path": ["vt_global", "x"]},
        vt_global={"x": None},
    ),
    "vt_global entry pointing nowhere": message_with(
        {**LONG, "path": ["vt_global", "y"]}, vt_global={"x": None}
    ),
    "vt_global entry without vt_global": message_with({**LONG, "path": ["vt_global", "x"]}),
    "vt_global an int": message_with({**LONG, "path": ["args", 0]}, vt_global=5),
    "vt_global a str": message_with({**LONG, "path": ["args", 0]}, vt_global="{}"),
    "vt_global odd list": message_with({**LONG, "path": ["args", 0]}, vt_global=[":GLOBAL"]),
    "vt_global list with a list key": message_with(
        {**LONG, "path": ["args", 0]}, vt_global=[["k"], {}]
    ),
    "vt_global list with a dict key": message_with(
        {**LONG, "path": ["args", 0]}, vt_global=[{}, {}]
    ),
    "vt_global replaced by an entry": message_with(
        {**LONG, "path": ["vt_global"]}, vt_global={"x": None}
    ),
    "default class from a list": message_with(
        {"path": ["args", 1, "a"], "type": ["ValueType"], "typeName": "dec.Point"},
        args=[None, {"a": [1, 2]}],
    ),
    "default class from null": message_with(
        {"path": ["args", 0], "type": ["ValueType"], "typeName": "dec.Point"}
    ),
    "__deserialize__ raises": message_with(
        {"path": ["args", 1], "type": ["ValueType"], "typeName": "dec.Picky"}
    ),
    "exception from a list": message_with(
        {"path": ["args", 1, "a"], "type": ["ValueType"], "typeName": "dec.Failed"},
        args=[None, {"a": ["x"]}],
    ),
    "exception args not a list": message_with(
        {"path": ["args", 1], "type": ["ValueType"], "typeName": "dec.Failed"},
        args=[None, {"args": "x"}],
    ),
}


@pytest.mark.parametrize("message", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_entries_are_serialization_errors(message: dict[str, object]) -> None:
    media = {"0": BlobMedia("a/b", b"")}
    with pytest.raises(SerializationError):
        decode_values(copy.deepcopy(message), ("args", "kwargs"), REGISTRY, LIMITS, media)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (message_with({**LONG, "path": ["id"]}), r"outside the values: msg\['id'\]"),
        (message_with({**LONG, "path": ["args", 7]}), r"points nowhere: msg\['args'\]\[7\]"),
        (message_with({**LONG, "path": []}), r"bad path: \[\]"),
        (message_with({**LONG, "path": "x" * 100}), r"bad path: 'x{76}\.\.\.$"),
        (
            message_with({"path": ["args", 0], "type": ["Pickle"]}),
            r"unknown object type \['Pickle'\] at msg\['args'\]\[0\]",
        ),
        (
            message_with({"path": ["args", 0], "type": ["Long"], "value": "9" * 99 + "x"}),
            r"bad Long value '9{76}\.\.\. at msg\['args'\]\[0\]",
        ),
        (
            message_with({"path": ["args", 1], "type": ["ValueType"], "typeName": "dec.Picky"}),
            r"cannot build 'dec.Picky' at msg\['args'\]\[1\]: KeyError",
        ),
        (
            message_with({"path": ["args", 0], "type": ["ValueType"], "typeName": "dec.Point"}),
            r"cannot build 'dec.Point' at msg\['args'\]\[0\]: expected a dict",
        ),
        (
            message_with({"path": ["args", 0], "type": ["DataMedia"], "id": "9"}),
            r"media '9' did not arrive \(at msg\['args'\]\[0\]\)",
        ),
    ],
    ids=[
        "outside",
        "nowhere",
        "empty path",
        "long bad path is shortened",
        "unknown type",
        "long bad Long is shortened",
        "hook error",
        "not a dict",
        "media",
    ],
)
def test_malformed_entries_say_what_and_where(message: dict[str, object], expected: str) -> None:
    with pytest.raises(SerializationError, match=expected):
        decode_values(message, ("args", "kwargs"), REGISTRY, Limits(max_int_digits=1000))


def test_media_without_a_media_table() -> None:
    message = message_with({"path": ["args", 0], "type": ["DataMedia"], "id": "0"})
    with pytest.raises(SerializationError, match="did not arrive"):
        decode_values(message, ("args",), REGISTRY, LIMITS, None)


def test_paths_longer_than_max_depth_are_refused() -> None:
    limits = Limits(max_depth=3)
    ok = message_with({**LONG, "path": ["args", 1, "a"]})
    decode_values(ok, ("args",), REGISTRY, limits)
    assert ok["args"] == [None, {"a": 5}]
    nested = message_with({**LONG, "path": ["args", 0, 0, 0]}, args=[[[[None]]]])
    with pytest.raises(SerializationError, match="bad path"):
        decode_values(nested, ("args",), REGISTRY, limits)


def test_a_message_without_objects_is_left_alone() -> None:
    message: dict[str, object] = {"args": [1, {"a": None}], "vt_global": {"x": 1}}
    global_data = decode_values(message, ("args",), REGISTRY, LIMITS)
    assert message == {"args": [1, {"a": None}], "vt_global": {"x": 1}}
    assert global_data is not None
    assert bool(global_data)


def test_a_whole_value_may_be_replaced() -> None:
    message: dict[str, object] = {
        "id": "x",
        "response": None,
        "objects": [{"path": ["response"], "type": ["Long"], "value": "4294967296"}],
    }
    decode_values(message, ("response",), REGISTRY, LIMITS)
    assert message["response"] == 2**32


def test_media_entry_fields() -> None:
    arrived = {
        "a": BlobMedia("application/octet-stream", b"A"),
        "b": BlobMedia("application/octet-stream", b"B", "keep.bin"),
        "c": BlobMedia("application/octet-stream", b"C"),
    }
    message = message_with(
        {"path": ["args", 0], "type": ["DataMedia"], "id": "a", "mime-type": "text/x", "name": "n"},
        {"path": ["args", 1], "type": ["DataMedia"], "id": "b", "mime-type": 5, "name": 7},
        {"path": ["kwargs", "k"], "type": ["DataMedia"], "id": "c", "bytes": True},
    )
    decode_values(message, ("args", "kwargs"), REGISTRY, LIMITS, arrived)
    first, second = message["args"]  # type: ignore[misc]
    assert first == BlobMedia("text/x", b"A", "n")
    # Fields of the wrong type are ignored rather than stored.
    assert second == BlobMedia("application/octet-stream", b"B", "keep.bin")
    assert message["kwargs"] == {"k": b"C"}


# -- media_ids -------------------------------------------------------------------------


def test_media_ids() -> None:
    objects = [
        "junk",
        {"type": "DataMedia", "id": "no"},
        {"type": [], "id": "no"},
        {"type": ["Long"], "id": "no"},
        {"type": ["DataMedia"], "id": "m1", "path": ["args", 0]},
        {"type": ["DataMedia", "Extra"], "id": "m2"},
    ]
    assert media_ids(objects) == ["m1", "m2"]
    assert media_ids(None) == []
    assert media_ids({"type": ["DataMedia"], "id": "x"}) == []


@pytest.mark.parametrize("media_id", [None, 0, ["a"]], ids=["missing", "int", "list"])
def test_media_ids_need_string_ids(media_id: object) -> None:
    entry: dict[str, object] = {"type": ["DataMedia"]}
    if media_id is not None:
        entry["id"] = media_id
    with pytest.raises(SerializationError, match="no string id"):
        media_ids([entry])
