"""Capabilities: the token model, unwrap patterns, updates, MACs and the three wire forms."""

from __future__ import annotations

import copy
import json
import pickle

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tether._current
from tether.codec.capability import (
    ANY,
    MAX_SCOPE_BYTES,
    Capability,
    apply_updates,
    collect_updates,
    scope_key,
    set_publisher,
    unwrap_capability,
)
from tether.codec.capability_wire import (
    CapabilitySession,
    CapabilityWire,
    HolderWire,
    LocalWire,
    Signer,
    SigningWire,
)
from tether.errors import AppOfflineError, PermissionDenied, SerializationError

SIGNER = Signer(b"x" * 32)
SESSION = CapabilitySession(b"s" * 16)
# A scope of this many "x" after "a" is exactly MAX_SCOPE_BYTES of canonical JSON.
LONGEST = MAX_SCOPE_BYTES - len('["a",""]')

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
scopes = st.lists(json_values, min_size=1, max_size=5).filter(lambda scope: scope[0] != "_")
narrowings = st.lists(json_values, max_size=3)


def nested(levels: int) -> object:
    """``"x"`` inside ``levels`` lists."""
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


def wire_trip(entry: dict[str, object]) -> dict[str, object]:
    """An objects entry as the peer reads it (orjson both ways, like a Connection)."""
    read: dict[str, object] = orjson.loads(orjson.dumps(entry))
    return read


def signed_entry(scope: list[object], session: CapabilitySession = SESSION) -> dict[str, object]:
    entry = SigningWire(SIGNER, session).encode([], Capability(scope), None)
    assert entry is not None
    return wire_trip(entry)


def server_reads(
    entry: dict[str, object], *, trusted: bool = False, session: CapabilitySession = SESSION
) -> Capability:
    return SigningWire(SIGNER, session, trusted=trusted).decode([], entry, "args[0]")


def held(scope: list[object]) -> Capability:
    """A capability as a client holds it: signed by the server, read by a HolderWire."""
    return HolderWire().decode([], signed_entry(scope), "response")


def holder_sends(cap: Capability) -> dict[str, object]:
    entry = HolderWire().encode([], cap, None)
    assert entry is not None
    return wire_trip(entry)


# -- constructing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ([], "empty scope"),
        ((), "empty scope"),
        (["_"], "reserved"),
        (["_", "secret"], "reserved"),
        ("video", "must be a list, got str"),
        ({"video": 1}, "must be a list, got dict"),
        (None, "must be a list, got NoneType"),
        (["a", {1, 2}], "set is not a JSON value"),
        (["a", b"bytes"], "bytes is not a JSON value"),
        (["a", object()], "object is not a JSON value"),
        (["a", 2**53 + 1], "outside ±2\\*\\*53"),
        (["a", -(2**53) - 1], "outside ±2\\*\\*53"),
        (["a", float("nan")], "nan is not a JSON number"),
        (["a", float("inf")], "inf is not a JSON number"),
        (["a", float("-inf")], "-inf is not a JSON number"),
        (["a", {1: "x"}], "dict key 1 is not a string"),
        (["a", {"k": [{None: 1}]}], "dict key None is not a string"),
        ([nested(33)], "nested more than 32 levels deep"),
        (["a", "x" * (LONGEST + 1)], "limited to 16384 bytes"),
        (["a", Capability(["b"])], "Capability is not a JSON value"),
    ],
    ids=[
        "empty list",
        "empty tuple",
        "underscore",
        "underscore first",
        "str",
        "dict",
        "None",
        "set",
        "bytes",
        "object",
        "int too big",
        "int too small",
        "nan",
        "inf",
        "-inf",
        "int dict key",
        "nested None key",
        "too deep",
        "too long",
        "capability",
    ],
)
def test_bad_scopes_are_refused(scope: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Capability(scope)  # type: ignore[arg-type]


def test_the_limits_themselves_are_allowed() -> None:
    assert Capability(["a", 2**53, -(2**53)]).scope == ["a", 2**53, -(2**53)]
    assert Capability([nested(32)]).scope == [nested(32)]
    assert len(Capability(["a", "x" * LONGEST]).scope[1]) == LONGEST  # type: ignore[arg-type]
    assert Capability(["a", "_"]).scope == ["a", "_"]  # "_" is reserved only first
    assert Capability([["_"]]).scope == [["_"]]


def test_the_size_limit_counts_utf8_bytes() -> None:
    # 9000 characters, 18000 bytes of UTF-8: over the "16384 bytes of JSON".
    with pytest.raises(ValueError, match="limited to 16384 bytes"):
        Capability(["é" * 9000])


def test_a_string_that_is_not_unicode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"surrogate|Unicode|UTF-8|JSON"):
        Capability(["video", "\ud800"])


def test_scopes_are_normalised_to_json_lists_and_sorted_dicts() -> None:
    cap = Capability(("video", (1, 2), {"b": (3,), "a": None}, True, 1.5))
    assert cap.scope == ["video", [1, 2], {"a": None, "b": [3]}, True, 1.5]
    [_, inner, mapping, *_] = cap.scope
    assert type(inner) is list
    assert list(mapping) == ["a", "b"]  # type: ignore[call-overload]
    assert type(mapping["b"]) is list  # type: ignore[index]


def test_the_scope_is_a_copy_and_the_argument_is_not_kept() -> None:
    given_scope: list[object] = ["video", {"id": 1}]
    cap = Capability(given_scope)
    given_scope.append("changed")
    given_scope[1]["id"] = 2  # type: ignore[index]
    assert cap.scope == ["video", {"id": 1}]
    scope = cap.scope
    scope.append("more")
    assert cap.scope == ["video", {"id": 1}]
    assert cap.scope is not cap.scope


# -- narrowing, equality, repr, pickling -----------------------------------------------


def test_narrow_makes_a_new_capability_and_leaves_the_original() -> None:
    original = held(["video", 7])
    narrower = original.narrow(["frame", (1, 2)])
    assert narrower is not original
    assert narrower.scope == ["video", 7, "frame", [1, 2]]
    assert original.scope == ["video", 7]
    assert narrower._mac == original._mac is not None
    assert narrower._scope == ["video", 7]  # the signed part
    assert narrower._narrow == ["frame", [1, 2]]
    assert narrower.is_valid
    again = narrower.narrow(["x"])
    assert again.scope == ["video", 7, "frame", [1, 2], "x"]
    assert again._narrow == ["frame", [1, 2], "x"]
    assert narrower.scope == ["video", 7, "frame", [1, 2]]


def test_narrow_with_nothing_is_an_equal_copy() -> None:
    cap = Capability(["a"])
    same = cap.narrow([])
    assert same == cap
    assert same is not cap


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("frame", "narrowing must be a list, got str"),
        ([float("nan")], "not a JSON number"),
        ([{2: 3}], "dict key 2 is not a string"),
        ([nested(33)], "nested more than 32"),
        (["x" * MAX_SCOPE_BYTES], "narrowing is limited to 16384 bytes"),
    ],
    ids=["str", "nan", "int key", "too deep", "too long"],
)
def test_narrowing_is_validated(extra: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Capability(["a"]).narrow(extra)  # type: ignore[arg-type]


def test_narrowing_cannot_grow_a_scope_over_the_limit() -> None:
    cap = Capability(["a", "x" * LONGEST])
    with pytest.raises(ValueError, match="limited to 16384 bytes"):
        cap.narrow(["y" * 1000])


def test_narrowing_an_invalid_capability_keeps_it_invalid() -> None:
    revoked = HolderWire().decode([], signed_entry(["a"]), "x")
    revoked._valid = False
    assert not revoked.narrow(["b"]).is_valid


def test_equality_and_hash_follow_the_full_scope() -> None:
    a = Capability(["video", {"b": 1, "a": 2}])
    b = Capability(("video", {"a": 2, "b": 1}))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert Capability(["video", 7]).narrow(["x"]) == Capability(["video", 7, "x"])
    assert held(["video", 7]) == Capability(["video", 7])  # the MAC plays no part
    assert Capability(["a", 1]) != Capability(["a", 2])
    assert Capability(["a", 1]) != Capability(["a", 1.0])
    assert Capability(["a", 1]) != Capability(["a", True])
    assert Capability(["a"]) != Capability(["a", None])


@pytest.mark.parametrize(
    "other", [["a"], ("a",), '["a"]', None, ANY], ids=["list", "tuple", "key", "None", "ANY"]
)
def test_a_capability_equals_no_other_type(other: object) -> None:
    cap = Capability(["a"])
    assert cap != other
    assert not cap == other  # noqa: SIM201 - __eq__ itself, not __ne__


def test_repr_shows_the_scope_and_never_the_mac() -> None:
    cap = held(["video", 7])
    assert cap._mac is not None
    assert repr(cap) == "Capability(['video', 7])"
    assert cap._mac not in repr(cap)
    assert cap._mac.partition(".")[2] not in repr(cap.narrow(["x"]))
    assert repr(cap.narrow(["x"])) == "Capability(['video', 7, 'x'])"
    cap._valid = False
    assert repr(cap) == "<invalid Capability ['video', 7]>"
    assert cap._mac not in str(cap)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_capability_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Capability(["a"]), protocol)


def test_a_capability_cannot_be_copied_by_copy_module() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.copy(Capability(["a"]))


def test_any_is_a_singleton() -> None:
    assert Capability.ANY is ANY
    assert type(ANY)() is ANY
    assert repr(ANY) == "Capability.ANY"
    assert pickle.loads(pickle.dumps(ANY)) is ANY
    assert copy.deepcopy(ANY) is ANY


# -- unwrap_capability -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["video", ["video", 7], None, Capability.ANY], ids=["str", "list", "None", "ANY"]
)
def test_unwrap_needs_a_capability(value: object) -> None:
    kind = type(value).__name__
    with pytest.raises(PermissionDenied, match=f"not a valid Capability: found {kind}"):
        unwrap_capability(value, ["video", ANY])


def test_unwrap_refuses_a_subclass() -> None:
    class Sub(Capability):
        __slots__ = ()

    with pytest.raises(PermissionDenied, match="found Sub"):
        unwrap_capability(Sub(["video"]), ["video"])


def test_unwrap_refuses_an_invalid_capability() -> None:
    cap = Capability(["video", 7])
    cap._valid = False
    with pytest.raises(PermissionDenied, match=r"capability \['video', 7\] has been invalidated"):
        unwrap_capability(cap, ["video", ANY])


@pytest.mark.parametrize("pattern", ["video", None, {"video": 1}], ids=["str", "None", "dict"])
def test_unwrap_needs_a_list_pattern(pattern: object) -> None:
    with pytest.raises(TypeError, match="the pattern must be a list"):
        unwrap_capability(Capability(["video"]), pattern)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scope", "pattern", "expected"),
    [
        (["video", 7], ["video", ANY], ["video", 7]),
        (["video", 7], ("video", 7), ["video", 7]),
        (["doc", 17, "page", 3], ["doc", ANY, "page", ANY, "extra"], ["doc", 17, "page", 3, None]),
        (["doc"], ["doc", ANY, ANY], ["doc", None, None]),
        (["a", [1, 2]], ["a", (1, 2)], ["a", [1, 2]]),
        (["a", [1, [2]]], ["a", (1, (2,))], ["a", [1, [2]]]),
        (["a", {"x": 1, "y": 2}], ["a", {"y": 2, "x": 1}], ["a", {"x": 1, "y": 2}]),
        (["a", True], ["a", True], ["a", True]),
        (["a", 1.5], ["a", 1.5], ["a", 1.5]),
        (["a", None], [ANY, None], ["a", None]),
        (["a", {"k": [1]}], ["a", ANY], ["a", {"k": [1]}]),
    ],
    ids=[
        "ANY",
        "tuple pattern",
        "broader is padded",
        "much broader",
        "tuple element",
        "nested tuples",
        "dict order",
        "True",
        "float",
        "None value",
        "ANY over a dict",
    ],
)
def test_unwrap_grants(scope: list[object], pattern: list[object], expected: list[object]) -> None:
    assert unwrap_capability(Capability(scope), pattern) == expected


def test_unwrap_returns_a_new_list() -> None:
    cap = Capability(["a", [1]])
    result = unwrap_capability(cap, ["a", ANY])
    result.append("x")
    assert cap.scope == ["a", [1]]


def test_unwrap_refuses_a_too_narrow_capability() -> None:
    cap = Capability(["video", 7, "frame"])
    with pytest.raises(
        PermissionDenied,
        match=r"too narrow: required \['video', Capability.ANY\]; got \['video', 7, 'frame'\]",
    ):
        unwrap_capability(cap, ["video", ANY])


@pytest.mark.parametrize(
    ("scope", "pattern", "shown"),
    [
        (["video", 7], ["video", 8], r"required \['video', 8\]; got \['video', 7\]"),
        (["audio", 7], ["video", ANY], r"required \['video', Capability.ANY\]; got \['audio', 7\]"),
        (["a", True], ["a", 1], r"required \['a', 1\]; got \['a', True\]"),
        (["a", 1], ["a", True], r"required \['a', True\]; got \['a', 1\]"),
        (["a", 1], ["a", 1.0], r"required \['a', 1.0\]; got \['a', 1\]"),
        (["a", 0], ["a", False], r"required \['a', False\]; got \['a', 0\]"),
        (["a", None], ["a", "None"], r"required \['a', 'None'\]; got \['a', None\]"),
        (["a", [1]], ["a", {1}], r".*got \['a', \[1\]\]"),
        (["a", [1]], ["a", [ANY]], r".*got \['a', \[1\]\]"),
        (["a", {"k": 1}], ["a", {"k": 1, 2: 3}], r".*got \['a', \{'k': 1\}\]"),
    ],
    ids=[
        "other value",
        "other first",
        "True is not 1",
        "1 is not True",
        "1 is not 1.0",
        "0 is not False",
        "None is not 'None'",
        "set pattern",
        "ANY only at the top",
        "unsortable keys",
    ],
)
def test_unwrap_refuses_wrong_values(
    scope: list[object], pattern: list[object], shown: str
) -> None:
    with pytest.raises(PermissionDenied, match="incorrect capability: " + shown):
        unwrap_capability(Capability(scope), pattern)


# -- updates ---------------------------------------------------------------------------


def test_send_update_runs_the_handler_at_once_and_queues_it() -> None:
    cap = Capability(["job", 1])
    seen: list[object] = []
    cap.set_update_handler(seen.append)
    cap.send_update({"progress": 10})
    assert seen == [{"progress": 10}]
    cap.send_update({"done": True})
    assert seen == [{"progress": 10}, {"done": True}]
    assert cap._take_update() == {"progress": 10, "done": True}
    assert cap._take_update() is None  # taken: nothing left


def test_queued_dicts_merge_and_anything_else_replaces() -> None:
    cap = Capability(["job", 1])
    cap.send_update({"a": 1, "b": 1})
    cap.send_update({"b": 2})
    assert cap._take_update() == {"a": 1, "b": 2}
    cap.send_update({"a": 1})
    cap.send_update("text")
    assert cap._take_update() == "text"
    cap.send_update([1])
    cap.send_update({"a": 1})
    assert cap._take_update() == {"a": 1}
    cap.send_update(3)
    cap.send_update(4)
    assert cap._take_update() == 4


def test_a_queued_dict_is_a_copy() -> None:
    cap = Capability(["job", 1])
    update = {"a": 1}
    cap.send_update(update)
    cap.send_update({"b": 2})
    assert update == {"a": 1}  # the caller's dict is not merged into
    update["c"] = 3
    assert cap._take_update() == {"a": 1, "b": 2}


def test_updates_queue_without_a_handler() -> None:
    cap = Capability(["job", 1])
    cap.send_update("x")
    assert cap._take_update() == "x"


def test_get_update_replaces_queueing() -> None:
    cap = Capability(["job", 1])
    seen: list[object] = []
    state = {"n": 0}
    cap.set_update_handler(seen.append, lambda: dict(state))
    cap.send_update({"n": 5})
    state["n"] = 7
    assert seen == [{"n": 5}]
    assert not cap._pending  # nothing was queued
    assert cap._take_update() == {"n": 7}
    assert cap._take_update() == {"n": 7}  # asked again, answers again


def test_a_later_handler_replaces_the_first() -> None:
    cap = Capability(["job", 1])
    first: list[object] = []
    second: list[object] = []
    cap.set_update_handler(first.append, lambda: "got")
    cap.set_update_handler(second.append)
    cap.send_update("u")
    assert (first, second) == ([], ["u"])
    assert cap._take_update() == "u"  # get_update was dropped too


def test_send_update_on_an_invalid_capability_is_refused() -> None:
    cap = Capability(["job", 1])
    seen: list[object] = []
    cap.set_update_handler(seen.append)
    cap._valid = False
    with pytest.raises(PermissionDenied, match=r"capability \['job', 1\] has been invalidated"):
        cap.send_update("u")
    assert seen == []
    assert cap._take_update() is None


def test_send_update_goes_to_the_publisher() -> None:
    published: list[tuple[str, object]] = []
    cap = Capability(["job", 1]).narrow([{"b": 1, "a": 2}])
    try:
        set_publisher(lambda key, update: published.append((key, update)))
        cap.send_update({"p": 1})
        assert published == [('["job", 1, {"a": 2, "b": 1}]', {"p": 1})]
    finally:
        set_publisher(None)
    cap.send_update({"p": 2})
    assert len(published) == 1
    assert cap._take_update() == {"p": 2}


def test_an_incoming_update_does_not_go_to_the_publisher() -> None:
    published: list[tuple[str, object]] = []
    cap = Capability(["job", 1])
    try:
        set_publisher(lambda key, update: published.append((key, update)))
        apply_updates([cap], {scope_key(["job", 1]): "u"})
    finally:
        set_publisher(None)
    assert published == []
    assert cap._take_update() == "u"


def test_scope_key_is_pythons_json_dumps_with_sorted_keys() -> None:
    assert scope_key(["a", 1, {"z": 1, "b": [True, None]}]) == (
        '["a", 1, {"b": [true, null], "z": 1}]'
    )
    assert scope_key(["é"]) == '["\\u00e9"]'
    with pytest.raises(ValueError, match="JSON compliant"):
        scope_key([float("nan")])


def test_collect_updates_by_scope_key() -> None:
    job = Capability(["job", 1])
    other = Capability(["job", 2])
    quiet = Capability(["job", 3])
    job.send_update({"p": 1})
    other.send_update("done")
    assert collect_updates([job, other, quiet]) == {'["job", 1]': {"p": 1}, '["job", 2]': "done"}
    assert collect_updates([job, other, quiet]) == {}  # taken


def test_collect_updates_asks_each_instance_once() -> None:
    calls: list[int] = []
    cap = Capability(["job", 1])

    def get_update() -> object:
        calls.append(1)
        return {"n": len(calls)}

    cap.set_update_handler(lambda update: None, get_update)
    assert collect_updates([cap, cap, cap]) == {'["job", 1]': {"n": 1}}
    assert calls == [1]


def test_collect_updates_merges_instances_of_one_scope() -> None:
    first, second, third = (Capability(["job", 1]) for _ in range(3))
    first.send_update({"a": 1, "b": 1})
    second.send_update({"b": 2})
    assert collect_updates([first, second]) == {'["job", 1]': {"a": 1, "b": 2}}
    first.send_update({"a": 1})
    second.send_update("replaced")
    third.send_update({"c": 3})
    assert collect_updates([first, second, third]) == {'["job", 1]': {"c": 3}}


def test_collect_updates_leaves_out_none() -> None:
    cap = Capability(["job", 1])
    cap.set_update_handler(lambda update: None, lambda: None)
    assert collect_updates([cap]) == {}
    assert collect_updates([]) == {}


def test_apply_updates_by_full_scope() -> None:
    cap = Capability(["job", 1])
    narrowed = cap.narrow(["part", 2])
    untouched = Capability(["job", 3])
    seen: list[object] = []
    cap.set_update_handler(seen.append)
    applied = apply_updates(
        [cap, narrowed, untouched],
        {'["job", 1]': {"p": 1}, '["job", 1, "part", 2]': "n", '["job", 9]': "nobody"},
    )
    assert applied == [(cap, {"p": 1}), (narrowed, "n")]
    assert applied[0][0] is cap
    assert seen == [{"p": 1}]
    assert cap._take_update() == {"p": 1}  # queued further upstream
    assert narrowed._take_update() == "n"
    assert untouched._take_update() is None


@pytest.mark.parametrize(
    "key",
    ['["a",1]', '["a", 1]', '[ "a" , 1 ]', '["\\u0061", 1]', '\n["a",\t1]'],
    ids=["compact", "python", "spaces", "escaped", "whitespace"],
)
def test_apply_updates_normalises_keys(key: str) -> None:
    cap = Capability(["a", 1])
    assert apply_updates([cap], {key: "u"}) == [(cap, "u")]


def test_apply_updates_normalises_dict_order() -> None:
    cap = Capability(["a", {"x": 1, "y": 2}])
    assert apply_updates([cap], {'["a",{"y":2,"x":1}]': "u"}) == [(cap, "u")]


def test_apply_updates_ignores_keys_that_are_not_json_scopes() -> None:
    cap = Capability(["a", 1])
    updates: dict[object, object] = {
        "not json": 1,
        "[NaN]": 2,
        5: 3,
        '["a", 1.0]': 4,  # 1.0 is not 1
        '["a", true]': 5,
        '["a", 1]': "right",
    }
    assert apply_updates([cap], updates) == [(cap, "right")]


@pytest.mark.parametrize("updates", [None, {}, [], '{"[\\"a\\"]": 1}', [['["a"]', 1]]], ids=repr)
def test_apply_updates_ignores_non_dicts(updates: object) -> None:
    cap = Capability(["a"])
    assert apply_updates([cap], updates) == []
    assert cap._take_update() is None


def test_apply_updates_applies_once_per_instance() -> None:
    cap = Capability(["a"])
    twin = Capability(["a"])
    seen: list[object] = []
    cap.set_update_handler(seen.append)
    applied = apply_updates([cap, cap, twin, cap], {'["a"]': {"n": 1}})
    assert applied == [(cap, {"n": 1}), (twin, {"n": 1})]
    assert applied[1][0] is twin
    assert seen == [{"n": 1}]


def test_apply_updates_applies_none_too() -> None:
    cap = Capability(["a"])
    seen: list[object] = []
    cap.set_update_handler(seen.append)
    assert apply_updates([cap], {'["a"]': None}) == [(cap, None)]
    assert seen == [None]


def test_a_later_spelling_of_the_same_key_wins() -> None:
    cap = Capability(["a", 1])
    assert apply_updates([cap], {'["a",1]': "first", '["a", 1]': "second"}) == [(cap, "second")]


# -- invalidation ----------------------------------------------------------------------


def test_invalidating_a_holder_wire_invalidates_what_it_read() -> None:
    wire = HolderWire()
    other = HolderWire()
    cap = wire.decode([], signed_entry(["a"]), "response")
    narrowed = cap.narrow(["b"])
    elsewhere = other.decode([], signed_entry(["a"]), "response")
    local = Capability(["a"])
    assert cap.is_valid
    assert narrowed.is_valid
    wire.invalidate()
    assert not cap.is_valid
    assert not narrowed.is_valid
    assert not cap.narrow(["x"]).is_valid  # a narrowed copy keeps its source
    assert elsewhere.is_valid  # another connection's capabilities are untouched
    assert local.is_valid  # so are the ones made here
    assert repr(cap) == "<invalid Capability ['a']>"
    with pytest.raises(PermissionDenied, match="invalidated"):
        cap.send_update("u")
    with pytest.raises(PermissionDenied, match="invalidated"):
        unwrap_capability(cap, ["a"])
    fresh = wire.decode([], signed_entry(["a"]), "response")
    assert fresh.is_valid  # read after the invalidation
    assert fresh == cap  # validity plays no part in equality
    entry = LocalWire().encode([], cap, None)
    assert entry is not None
    assert entry["valid"] is False
    assert holder_sends(cap) == holder_sends(fresh)  # the server decides; same MAC
    wire.invalidate()
    assert not fresh.is_valid


# -- live pushes -----------------------------------------------------------------------


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Capability]] = []

    def subscribe(self, cap: Capability) -> None:
        self.calls.append(("subscribe", cap))

    def unsubscribe(self, cap: Capability) -> None:
        self.calls.append(("unsubscribe", cap))


class FakeConnection:
    def __init__(self) -> None:
        self.client = FakeClient()


def test_subscribe_goes_to_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = FakeConnection()
    monkeypatch.setattr(tether._current, "client", connection)
    cap = Capability(["job", 1])
    cap.subscribe()
    cap.unsubscribe()
    assert connection.client.calls == [("subscribe", cap), ("unsubscribe", cap)]
    assert connection.client.calls[0][1] is cap


@pytest.mark.parametrize("method", ["subscribe", "unsubscribe"])
def test_subscribe_needs_a_connection(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    monkeypatch.setattr(tether._current, "client", None)
    with pytest.raises(AppOfflineError, match=r"needs a connection: call server.connect\(url\)"):
        getattr(Capability(["job", 1]), method)()


# -- Signer ----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [b"", b"x" * 15], ids=["empty", "15 bytes"])
def test_a_short_secret_is_refused(secret: bytes) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(secret)


def test_a_16_byte_secret_is_enough() -> None:
    signer = Signer(b"x" * 16)
    assert signer.verify(["a"], SESSION, signer.sign(["a"], SESSION)) is True


def test_sign_and_verify() -> None:
    mac = SIGNER.sign(["video", 7], SESSION)
    generation, _, digest = mac.partition(".")
    assert generation == "1"
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert SIGNER.verify(["video", 7], SESSION, mac) is True
    assert SIGNER.sign(["video", 7], SESSION) == mac  # deterministic


def test_a_signature_from_an_older_generation_is_revoked() -> None:
    session = CapabilitySession(b"s" * 16, generation=1)
    mac = SIGNER.sign(["a"], session)
    session.generation = 2
    assert SIGNER.verify(["a"], session, mac) is False
    assert SIGNER.verify(["a"], session, SIGNER.sign(["a"], session)) is True


def test_an_invalid_capability_is_signed_as_generation_zero() -> None:
    mac = SIGNER.sign(["a"], SESSION, valid=False)
    assert mac.startswith("0.")
    assert SIGNER.verify(["a"], SESSION, mac) is False


def test_trusted_peers_share_the_session_none() -> None:
    trusted = CapabilitySession()
    assert (trusted.id, trusted.generation) == (None, 1)
    mac = SIGNER.sign(["a"], trusted)
    assert SIGNER.verify(["a"], CapabilitySession(), mac) is True
    assert SIGNER.verify(["a"], SESSION, mac) is None


def test_the_canonical_scope_is_signed() -> None:
    mac = SIGNER.sign(["a", {"x": 1, "y": 2}], SESSION)
    assert SIGNER.verify(["a", {"y": 2, "x": 1}], SESSION, mac) is True


def forged(mac: str) -> dict[str, str]:
    """Variants of a good MAC, each of which must read as a forgery."""
    generation, _, digest = mac.partition(".")
    flipped = ("0" if digest[0] != "0" else "1") + digest[1:]
    return {
        "newer generation": f"{int(generation) + 1}.{digest}",
        "tampered digest": f"{generation}.{flipped}",
        "upper case": f"{generation}.{digest.upper()}",
        "short digest": f"{generation}.{digest[:-1]}",
        "no dot": generation + digest,
        "no generation": f".{digest}",
        "negative": f"-{generation}.{digest}",
        "signed generation": f"+{generation}.{digest}",
        "generation too long": "0" * 12 + f"{generation}.{digest}",
        "not a number": f"x.{digest}",
        "empty": "",
        "just a dot": ".",
    }


@pytest.mark.parametrize(
    "variant",
    list(forged(SIGNER.sign(["a"], SESSION))),
)
def test_a_bad_mac_is_a_forgery(variant: str) -> None:
    mac = SIGNER.sign(["a"], SESSION)
    assert SIGNER.verify(["a"], SESSION, forged(mac)[variant]) is None


def test_leading_zeros_in_the_generation_verify() -> None:
    # Twelve digits are allowed; "01" reads as generation 1 (not a forgery risk: the
    # digest must still match).
    mac = SIGNER.sign(["a"], SESSION)
    assert SIGNER.verify(["a"], SESSION, "0" + mac) is True


def test_a_mac_does_not_verify_for_another_session_scope_or_secret() -> None:
    mac = SIGNER.sign(["a", 1], SESSION)
    assert SIGNER.verify(["a", 1], CapabilitySession(b"t" * 16), mac) is None
    assert SIGNER.verify(["a", 1], CapabilitySession(None), mac) is None
    assert SIGNER.verify(["a", 2], SESSION, mac) is None
    assert SIGNER.verify(["a", 1, "more"], SESSION, mac) is None
    assert SIGNER.verify(["a"], SESSION, mac) is None
    assert SIGNER.verify(["a", 1.0], SESSION, mac) is None
    assert SIGNER.verify(["a", True], SESSION, mac) is None
    assert Signer(b"y" * 32).verify(["a", 1], SESSION, mac) is None


def test_a_superscript_generation_is_a_forgery() -> None:
    assert SIGNER.verify(["a"], SESSION, "².abc") is None


def test_a_non_ascii_digest_is_a_forgery() -> None:
    assert SIGNER.verify(["a"], SESSION, "1.é") is None


@settings(max_examples=75, database=None, deadline=None)
@given(scope=scopes)
def test_any_json_scope_signs_and_verifies(scope: list[object]) -> None:
    full = Capability(scope).scope
    mac = SIGNER.sign(full, SESSION)
    assert SIGNER.verify(full, SESSION, mac) is True
    assert SIGNER.verify(json.loads(json.dumps(full)), SESSION, mac) is True


@settings(max_examples=75, database=None, deadline=None)
@given(scope=scopes, other=scopes)
def test_any_change_to_the_signed_scope_fails(scope: list[object], other: list[object]) -> None:
    full = Capability(scope).scope
    changed = Capability(other).scope
    if scope_key(changed) == scope_key(full):
        changed = [*full, "more"]
    assert SIGNER.verify(changed, SESSION, SIGNER.sign(full, SESSION)) is None


# -- SigningWire -----------------------------------------------------------------------


def test_the_base_wire_writes_and_reads_nothing() -> None:
    wire = CapabilityWire()
    found: list[Capability] = []
    assert wire.encode(found, "not a capability", None) is None
    assert found == []
    with pytest.raises(NotImplementedError):
        wire.encode(found, Capability(["a"]), None)
    with pytest.raises(NotImplementedError):
        wire.decode(found, {"scope": ["a"]}, "args[0]")


@pytest.mark.parametrize(
    "wire",
    [SigningWire(SIGNER, SESSION), HolderWire(), LocalWire()],
    ids=["signing", "holder", "local"],
)
def test_wires_write_only_capabilities_and_record_them(wire: CapabilityWire) -> None:
    found: list[Capability] = []
    for value in (["a"], "a", None, ANY):
        assert wire.encode(found, value, None) is None
    first, second = Capability(["a"]), Capability(["b"])
    assert wire.encode(found, first, None) is not None
    assert wire.encode(found, second, None) is not None
    assert wire.encode(found, first, None) is not None
    assert found == [first, second, first]
    assert found[0] is first


def test_the_signing_wire_signs_the_full_scope() -> None:
    cap = Capability(["video", 7]).narrow(["frame", {"b": 1, "a": 2}])
    found: list[Capability] = []
    entry = SigningWire(SIGNER, SESSION).encode(found, cap, None)
    assert found == [cap]
    assert entry == {
        "type": ["Capability"],
        "scope": ["video", 7, "frame", {"a": 2, "b": 1}],
        "mac": SIGNER.sign(["video", 7, "frame", {"a": 2, "b": 1}], SESSION),
    }


def test_the_signing_wire_reads_what_it_signed() -> None:
    found: list[Capability] = []
    cap = SigningWire(SIGNER, SESSION).decode(found, signed_entry(["video", 7]), "args[0]")
    assert found == [cap]
    assert found[0] is cap
    assert cap.scope == ["video", 7]
    assert cap.is_valid
    assert cap._mac is None  # the server keeps no MAC: it signs again when sending


def test_an_invalid_capability_is_signed_so_it_arrives_invalid() -> None:
    cap = Capability(["video", 7])
    cap._valid = False
    entry = SigningWire(SIGNER, SESSION).encode([], cap, None)
    assert entry is not None
    assert str(entry["mac"]).startswith("0.")
    arrived = server_reads(wire_trip(entry))
    assert arrived.scope == ["video", 7]
    assert not arrived.is_valid
    with pytest.raises(PermissionDenied, match="invalidated"):
        unwrap_capability(arrived, ["video", ANY])


def test_a_revoked_capability_arrives_invalid() -> None:
    session = CapabilitySession(b"s" * 16)
    entry = signed_entry(["video", 7], session)
    session.generation += 1  # invalidate_client_objects() on the server
    cap = server_reads(entry, session=session)
    assert cap.scope == ["video", 7]
    assert not cap.is_valid
    # Signed again now, it stays invalid for its holder (generation 0).
    again = SigningWire(SIGNER, session).encode([], cap, None)
    assert again is not None
    assert str(again["mac"]).startswith("0.")


def test_the_holders_narrow_is_appended() -> None:
    cap = held(["video", 7]).narrow(["frame", (1, 2)]).narrow(["x"])
    entry = holder_sends(cap)
    assert entry["scope"] == ["video", 7]
    assert entry["narrow"] == ["frame", [1, 2], "x"]
    arrived = server_reads(entry)
    assert arrived.scope == ["video", 7, "frame", [1, 2], "x"]
    assert arrived.is_valid
    assert arrived == cap


def test_an_unsigned_capability_from_an_untrusted_peer_is_refused() -> None:
    entry = holder_sends(Capability(["video", 7]))
    assert entry["mac"] is None
    with pytest.raises(PermissionDenied, match=r"unsigned capability at args\[0\]"):
        server_reads(entry)
    del entry["mac"]
    with pytest.raises(PermissionDenied, match="unsigned capability"):
        server_reads(entry)


def test_an_unsigned_capability_from_a_trusted_peer_is_accepted() -> None:
    entry = holder_sends(Capability(["video", 7]).narrow(["x"]))
    cap = server_reads(entry, trusted=True)
    assert cap.scope == ["video", 7, "x"]
    assert cap.is_valid
    assert server_reads({"scope": ["a"]}, trusted=True).scope == ["a"]


def test_trusted_may_be_set_after_the_handshake() -> None:
    wire = SigningWire(SIGNER, SESSION)
    entry = holder_sends(Capability(["a"]))
    with pytest.raises(PermissionDenied):
        wire.decode([], entry, "x")
    wire.trusted = True
    assert wire.decode([], entry, "x").scope == ["a"]


def test_a_trusted_peer_may_not_mint_the_reserved_scope() -> None:
    with pytest.raises(PermissionDenied, match=r"reserved scope '_' at args\[0\]"):
        server_reads({"scope": ["_", "x"], "mac": None}, trusted=True)


def test_a_trusted_peers_signed_capability_is_still_verified() -> None:
    entry = signed_entry(["a"])
    entry["scope"] = ["b"]
    with pytest.raises(PermissionDenied, match="does not verify"):
        server_reads(entry, trusted=True)
    entry["scope"] = ["a"]
    assert server_reads(entry, trusted=True).is_valid


def tampered(entry: dict[str, object]) -> dict[str, dict[str, object]]:
    scope = entry["scope"]
    assert type(scope) is list
    mac = str(entry["mac"])
    generation, _, digest = mac.partition(".")
    return {
        "scope changed": {**entry, "scope": ["video", 8]},
        "widened": {**entry, "scope": ["video"]},
        "extended": {**entry, "scope": [*scope, "more"]},
        "int to float": {**entry, "scope": ["video", 7.0]},
        "mac of another scope": {**entry, "mac": SIGNER.sign(["video", 8], SESSION)},
        "mac for another session": {
            **entry,
            "mac": SIGNER.sign(scope, CapabilitySession(b"t" * 16)),
        },
        "mac for trusted peers": {**entry, "mac": SIGNER.sign(scope, CapabilitySession())},
        "mac from another secret": {**entry, "mac": Signer(b"y" * 32).sign(scope, SESSION)},
        "newer generation": {**entry, "mac": f"{int(generation) + 1}.{digest}"},
        "tampered digest": {**entry, "mac": f"{generation}.{digest[::-1]}"},
        "mac not a str": {**entry, "mac": 12345},
        "mac a list": {**entry, "mac": [mac]},
        "mac true": {**entry, "mac": True},
        "empty mac": {**entry, "mac": ""},
    }


@pytest.mark.parametrize("variant", list(tampered(signed_entry(["video", 7]))))
def test_a_tampered_capability_is_refused(variant: str) -> None:
    entry = tampered(signed_entry(["video", 7]))[variant]
    with pytest.raises(PermissionDenied, match=r"at args\[0\]"):
        server_reads(entry)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scope": "video"}, "scope must be a list, got str"),
        ({"scope": {"a": 1}}, "scope must be a list, got dict"),
        ({"scope": None}, "scope must be a list, got NoneType"),
        ({"scope": ["a", 2**53 + 1]}, "outside"),
        ({"scope": [nested(33)]}, "nested more than 32"),
        ({"scope": ["a", "x" * MAX_SCOPE_BYTES]}, "limited to 16384 bytes"),
        ({"narrow": "x"}, "narrow must be a list, got str"),
        ({"narrow": None}, "narrow must be a list, got NoneType"),
        ({"narrow": [2**60]}, "outside"),
        ({"narrow": ["x" * MAX_SCOPE_BYTES]}, "limited to 16384 bytes"),
        ({"scope": []}, "empty scope"),
        ({"scope": [], "narrow": ["a"]}, "empty scope"),
        ({"mac": None, "scope": []}, "empty scope"),
    ],
    ids=[
        "scope str",
        "scope dict",
        "scope null",
        "scope int too big",
        "scope too deep",
        "scope too long",
        "narrow str",
        "narrow null",
        "narrow int too big",
        "narrow too long",
        "empty scope",
        "empty scope narrowed",
        "empty unsigned scope",
    ],
)
def test_a_malformed_capability_is_refused(fields: dict[str, object], message: str) -> None:
    entry = {**signed_entry(["video", 7]), **fields}
    with pytest.raises(PermissionDenied, match=message):
        server_reads(entry, trusted=True)


def test_a_capability_without_a_scope_is_refused() -> None:
    entry = signed_entry(["video", 7])
    del entry["scope"]
    with pytest.raises(PermissionDenied, match=r"empty scope at args\[0\]"):
        server_reads(entry)


def test_a_full_scope_over_the_limit_is_refused() -> None:
    entry = holder_sends(held(["a", "x" * LONGEST]))
    entry["narrow"] = ["y" * (LONGEST - 10)]  # a hand-written peer: narrow() refuses this
    with pytest.raises(PermissionDenied, match=r"bad capability at args\[0\]: scope over 16384"):
        server_reads(entry)
    exactly = holder_sends(held(["a", "x" * (LONGEST - 4)]).narrow(["y"]))
    assert len(json.dumps(server_reads(exactly).scope, separators=(",", ":"))) == MAX_SCOPE_BYTES


def test_a_narrowed_capability_cannot_be_widened() -> None:
    cap = held(["video", 7]).narrow(["frame", 1])
    entry = holder_sends(cap)
    entry["scope"] = ["video", 7, "frame", 1]  # claims the narrowing was signed...
    del entry["narrow"]  # ...and drops it
    with pytest.raises(PermissionDenied, match="does not verify"):
        server_reads(entry)
    entry = holder_sends(cap)
    entry["narrow"] = []  # dropping the narrowing gives back what the holder was given
    assert server_reads(entry).scope == ["video", 7]


@settings(max_examples=75, database=None, deadline=None)
@given(scope=scopes, extra=narrowings)
def test_narrowing_then_sending_back_yields_scope_and_narrow(
    scope: list[object], extra: list[object]
) -> None:
    cap = held(scope)
    assert cap == Capability(scope)
    arrived = server_reads(holder_sends(cap.narrow(extra)))
    assert arrived.is_valid
    assert scope_key(arrived.scope) == scope_key([*Capability(scope).scope, *extra])
    # and the server's copy of it goes round again
    assert server_reads(holder_sends(held(arrived.scope))) == arrived


# -- HolderWire and LocalWire ----------------------------------------------------------


def test_the_holder_wire_writes_scope_mac_and_narrow() -> None:
    cap = held(["video", 7])
    mac = cap._mac
    assert HolderWire().encode([], cap, None) == {
        "type": ["Capability"],
        "scope": ["video", 7],
        "mac": mac,
    }
    assert HolderWire().encode([], cap.narrow(["x"]), None) == {
        "type": ["Capability"],
        "scope": ["video", 7],
        "mac": mac,
        "narrow": ["x"],
    }
    assert HolderWire().encode([], cap.narrow([]), None) == {
        "type": ["Capability"],
        "scope": ["video", 7],
        "mac": mac,
    }


def test_the_holder_wire_writes_a_local_capability_unsigned() -> None:
    assert HolderWire().encode([], Capability(["a"]), None) == {
        "type": ["Capability"],
        "scope": ["a"],
        "mac": None,
    }


def test_the_holder_wire_reads_scope_and_mac() -> None:
    found: list[Capability] = []
    entry = {"type": ["Capability"], "scope": ["a", (1,)], "mac": "opaque", "narrow": ["n"]}
    cap = HolderWire().decode(found, entry, "response")
    assert found == [cap]
    assert cap.scope == ["a", [1]]  # a narrow from the server is ignored
    assert cap._mac == "opaque"
    assert cap.is_valid
    unsigned = HolderWire().decode([], {"scope": ["a"]}, "response")
    assert unsigned._mac is None


@pytest.mark.parametrize(
    "entry",
    [
        {"scope": "a", "mac": "m"},
        {"scope": [], "mac": "m"},
        {"mac": "m"},
        {"scope": ["a", float("nan")], "mac": "m"},
        {"scope": ["a"], "mac": 5},
        {"scope": ["a"], "mac": ["m"]},
    ],
    ids=["scope str", "empty scope", "no scope", "nan", "mac int", "mac list"],
)
def test_the_holder_wire_refuses_malformed_entries(entry: dict[str, object]) -> None:
    with pytest.raises(SerializationError, match=r"bad capability at response\.x"):
        HolderWire().decode([], entry, "response.x")


def test_the_local_wire_keeps_the_full_scope_and_validity() -> None:
    wire = LocalWire()
    cap = held(["video", 7]).narrow(["x"])
    entry = wire.encode([], cap, None)
    assert entry == {"type": ["Capability"], "scope": ["video", 7, "x"], "valid": True}
    found: list[Capability] = []
    copied = wire.decode(found, wire_trip(entry), "args[0]")
    assert found == [copied]
    assert copied == cap
    assert copied is not cap
    assert copied.is_valid
    assert copied._mac is None
    cap._valid = False
    entry = wire.encode([], cap, None)
    assert entry is not None
    assert entry["valid"] is False
    assert not wire.decode([], entry, "args[0]").is_valid
    assert not wire.decode([], {"scope": ["a"]}, "args[0]").is_valid


@settings(max_examples=75, database=None, deadline=None)
@given(scope=scopes, extra=narrowings)
def test_the_local_wire_round_trips_any_capability(
    scope: list[object], extra: list[object]
) -> None:
    cap = Capability(scope).narrow(extra)
    entry = LocalWire().encode([], cap, None)
    assert entry is not None
    copied = LocalWire().decode([], wire_trip(entry), "x")
    assert copied == cap
    assert copied.is_valid


def test_many_queued_updates_fold_into_one_in_order() -> None:
    cap = Capability(["job", 1])
    for n in range(100):
        cap.send_update({"n": n, f"k{n % 3}": n})
    assert len(cap._pending) <= 33  # folded as it goes: memory stays bounded
    assert cap._take_update() == {"n": 99, "k0": 99, "k1": 97, "k2": 98}
    for n in range(40):
        cap.send_update(n)
    cap.send_update({"last": True})
    assert cap._take_update() == {"last": True}
    assert cap._take_update() is None


def test_collected_updates_apply_without_normalising_again() -> None:
    callee = Capability(["job", {"b": 1, "a": 2}])
    callee.send_update({"x": 1})
    caller = Capability(["job", {"a": 2, "b": 1}])
    got: list[object] = []
    caller.set_update_handler(got.append)
    applied = apply_updates([caller], collect_updates([callee]), normalized=True)
    assert applied == [(caller, {"x": 1})]
    assert got == [{"x": 1}]
