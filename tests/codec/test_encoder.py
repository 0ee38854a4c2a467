"""encode_values: every value type, the wire form of each, and every sending limit."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator

import orjson
import pytest

from tether.codec import (
    BlobMedia,
    Limits,
    Media,
    PortableRegistry,
    decode_values,
    encode_values,
    format_datetime,
)
from tether.codec.encoder import Encoder
from tether.errors import SerializationError

LIMITS = Limits()
REGISTRY = PortableRegistry()


class NotPortable:
    pass


@REGISTRY.decorator("enc.Node")
class Node:
    """A portable object that may point at itself."""

    def __init__(self) -> None:
        self.me: object = None


@REGISTRY.decorator("enc.Wrapper")
class Wrapper:
    """A portable object whose serialized form is a list holding itself."""

    def __serialize__(self, global_data: object) -> object:
        return [self]

    def __deserialize__(self, data: object, global_data: object) -> None:
        pass


def roundtrip(
    values: dict[str, object], registry: PortableRegistry = REGISTRY, limits: Limits = LIMITS
) -> dict[str, object]:
    """Encodes, sends through JSON (and media as chunks would arrive), decodes."""
    encoded = encode_values(values, registry, limits)
    message: dict[str, object] = {**encoded.values, "objects": encoded.objects}
    if encoded.vt_global is not None:
        message["vt_global"] = encoded.vt_global
    message = orjson.loads(orjson.dumps(message))
    arrived: dict[str, Media] = {
        media_id: BlobMedia("application/octet-stream", item.get_bytes())
        for media_id, item in encoded.media
    }
    decode_values(message, tuple(values), registry, limits, arrived)
    return {key: message[key] for key in values}


def entries(values: dict[str, object], limits: Limits = LIMITS) -> list[dict[str, object]]:
    return encode_values(values, REGISTRY, limits).objects


# -- ints ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, -1, 2_147_483_647, -2_147_483_647], ids=str)
def test_ints_within_32_bits_are_plain(value: int) -> None:
    encoded = encode_values({"args": [value], "kwargs": {"k": value}}, REGISTRY, LIMITS)
    assert encoded.values == {"args": [value], "kwargs": {"k": value}}
    assert encoded.objects == []
    assert roundtrip({"response": value}) == {"response": value}


@pytest.mark.parametrize(
    "value",
    [2_147_483_648, -2_147_483_648, 2**63, -(2**64) - 1, 10**100, -(10**300)],
    ids=["2^31", "-2^31", "2^63", "-2^64-1", "10^100", "-10^300"],
)
def test_ints_beyond_32_bits_are_longs(value: int) -> None:
    encoded = encode_values({"args": [value]}, REGISTRY, LIMITS)
    assert encoded.values == {"args": [None]}
    assert encoded.objects == [{"path": ["args", 0], "type": ["Long"], "value": str(value)}]
    [back] = roundtrip({"args": [value]})["args"]  # type: ignore[misc]
    assert back == value
    assert type(back) is int


def test_a_long_at_the_top_of_a_value() -> None:
    assert entries({"response": 2**40}) == [
        {"path": ["response"], "type": ["Long"], "value": str(2**40)}
    ]
    assert roundtrip({"response": 2**40}) == {"response": 2**40}


def test_int_digits_limit_on_sending() -> None:
    limits = Limits(max_int_digits=10)
    assert entries({"args": [-9_999_999_999]}, limits)[0]["value"] == "-9999999999"
    with pytest.raises(SerializationError, match=r"11 digits at msg\['args'\]\[1\]"):
        encode_values({"args": [0, 10**10]}, REGISTRY, limits)


def test_int_digits_limit_on_receiving() -> None:
    limits = Limits(max_int_digits=10)
    message: dict[str, object] = {
        "args": [None, None],
        "objects": [
            {"path": ["args", 0], "type": ["Long"], "value": "-9999999999"},
            {"path": ["args", 1], "type": ["Long"], "value": "1" * 11},
        ],
    }
    with pytest.raises(SerializationError, match=r"11 digits.*limit max_int_digits"):
        decode_values(message, ("args",), REGISTRY, limits)


def test_ints_at_the_default_digit_limit_cross() -> None:
    value = -(10**4299)  # 4,300 digits, the default limit
    assert roundtrip({"args": [value]}) == {"args": [value]}


def test_ints_over_the_default_digit_limit_are_a_serialization_error() -> None:
    # 4,301 digits: over Limits().max_int_digits, and also over Python's own str(int) limit.
    with pytest.raises(SerializationError, match="4301 digits"):
        encode_values({"args": [10**4300]}, REGISTRY, LIMITS)
    message: dict[str, object] = {
        "args": [None],
        "objects": [{"path": ["args", 0], "type": ["Long"], "value": "9" * 4301}],
    }
    with pytest.raises(SerializationError, match="4301 digits"):
        decode_values(message, ("args",), REGISTRY, LIMITS)


# -- floats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(math.inf, "Infinity"), (-math.inf, "-Infinity"), (math.nan, "NaN")],
    ids=["inf", "-inf", "nan"],
)
def test_non_finite_floats_are_float_entries(value: float, text: str) -> None:
    encoded = encode_values({"args": [1.5, value]}, REGISTRY, LIMITS)
    assert encoded.values == {"args": [1.5, None]}
    assert encoded.objects == [{"path": ["args", 1], "type": ["Float"], "value": text}]
    [plain, back] = roundtrip({"args": [1.5, value]})["args"]  # type: ignore[misc]
    assert plain == 1.5
    assert type(back) is float
    assert (math.isnan(back) and math.isnan(value)) or back == value


def test_finite_floats_are_plain() -> None:
    values = {"args": [0.0, -0.0, 1e308, -5e-324], "kwargs": {"f": 2.5}}
    encoded = encode_values(values, REGISTRY, LIMITS)
    assert encoded.objects == []
    assert encoded.values["args"] is values["args"]  # nothing changed: reused, not copied
    assert encoded.values["kwargs"] is values["kwargs"]


# -- dates and datetimes ---------------------------------------------------------------


class MyDate(dt.date):
    pass


class MyDateTime(dt.datetime):
    pass


def test_dates() -> None:
    values = {"args": [dt.date(2024, 2, 29), MyDate(1999, 12, 31)]}
    assert entries(values) == [
        {"path": ["args", 0], "type": ["Date"], "value": "2024-02-29"},
        {"path": ["args", 1], "type": ["Date"], "value": "1999-12-31"},
    ]
    assert roundtrip(values) == {"args": [dt.date(2024, 2, 29), dt.date(1999, 12, 31)]}


def test_aware_datetimes_keep_their_offset() -> None:
    minus_five = dt.timezone(dt.timedelta(hours=-5))
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=minus_five)
    utc = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    sub = MyDateTime(2020, 1, 1, tzinfo=dt.UTC)
    assert entries({"args": [when, utc, sub]}) == [
        {"path": ["args", 0], "type": ["DateTime"], "value": "2024-01-02 03:04:05.000678-0500"},
        {"path": ["args", 1], "type": ["DateTime"], "value": "2024-05-01 10:00:00.000000+0000"},
        {"path": ["args", 2], "type": ["DateTime"], "value": "2020-01-01 00:00:00.000000+0000"},
    ]
    [back, back_utc, back_sub] = roundtrip({"args": [when, utc, sub]})["args"]  # type: ignore[misc]
    assert back == when
    assert back.utcoffset() == dt.timedelta(hours=-5)
    assert back_utc == utc
    assert back_utc.utcoffset() == dt.timedelta(0)
    assert back_sub == sub


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC+05:30 for the test, so a naive datetime's offset is visible."""
    monkeypatch.setenv("TZ", "IST-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("india_time")
def test_naive_datetimes_are_sent_with_the_local_offset() -> None:
    naive = dt.datetime(2024, 1, 2, 3, 4, 5)
    assert format_datetime(naive) == "2024-01-02 03:04:05.000000+0530"
    [back] = roundtrip({"args": [naive]})["args"]  # type: ignore[misc]
    assert back.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert back.replace(tzinfo=None) == naive


def test_a_tzinfo_without_an_offset_counts_as_naive() -> None:
    class NoOffset(dt.tzinfo):
        def utcoffset(self, when: dt.datetime | None) -> None:
            return None

    value = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=NoOffset())
    assert format_datetime(value) == format_datetime(value.replace(tzinfo=None))


def test_datetimes_before_year_1000_cross() -> None:
    # strftime("%Y") does not pad years below 1000 on every platform; the wire needs 4 digits.
    old = dt.datetime(999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert format_datetime(old).startswith("0999-12-31 ")
    assert roundtrip({"args": [old]}) == {"args": [old]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02 03:04:05.000678+0000", dt.datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)),
        (
            "2024-01-02 03:04:05.000678+0530",
            dt.datetime(
                2024, 1, 2, 3, 4, 5, 678, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
            ),
        ),
        ("2024-01-02 03:04:05.000678", dt.datetime(2024, 1, 2, 3, 4, 5, 678)),
        ("2024-01-02T03:04:05Z", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        ("2024-01-02 03:04:05.123Z", dt.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=dt.UTC)),
    ],
    ids=["+0000", "+0530", "no offset is naive", "Z is UTC", "Z with millis"],
)
def test_datetime_parsing(text: str, expected: dt.datetime) -> None:
    message: dict[str, object] = {
        "args": [None],
        "objects": [{"path": ["args", 0], "type": ["DateTime"], "value": text}],
    }
    decode_values(message, ("args",), REGISTRY, LIMITS)
    [value] = message["args"]  # type: ignore[misc]
    assert value == expected
    assert value.utcoffset() == expected.utcoffset()


# -- containers ------------------------------------------------------------------------


def test_tuples_arrive_as_lists() -> None:
    values = {"args": (1, (2, "x"), [3, (4,)]), "kwargs": {"t": ()}}
    encoded = encode_values(values, REGISTRY, LIMITS)
    assert encoded.values == {"args": [1, [2, "x"], [3, [4]]], "kwargs": {"t": []}}
    assert type(encoded.values["args"]) is list
    assert roundtrip(values) == {"args": [1, [2, "x"], [3, [4]]], "kwargs": {"t": []}}


def test_containers_are_copied_only_where_something_changed() -> None:
    inner = [1, "a", None]
    values: dict[str, object] = {
        "args": [inner, "x", 2**40, "after", [2.5], 7],
        "kwargs": {"a": 1, "b": inner, "c": dt.date(2024, 1, 1), "d": "after", "e": [1.0]},
    }
    encoded = encode_values(values, REGISTRY, LIMITS)
    args = encoded.values["args"]
    kwargs = encoded.values["kwargs"]
    assert args == [inner, "x", None, "after", [2.5], 7]
    assert args is not values["args"]
    assert args[0] is inner  # type: ignore[index]
    assert kwargs == {"a": 1, "b": inner, "c": None, "d": "after", "e": [1.0]}
    assert list(kwargs) == ["a", "b", "c", "d", "e"]  # type: ignore[call-overload]
    assert values["args"][2] == 2**40  # type: ignore[index]  # the caller's value is untouched
    assert values["kwargs"]["c"] == dt.date(2024, 1, 1)  # type: ignore[index]


def test_the_first_dict_item_changing() -> None:
    encoded = encode_values({"kwargs": {"big": 2**40, "small": 1}}, REGISTRY, LIMITS)
    assert encoded.values == {"kwargs": {"big": None, "small": 1}}
    assert entries({"kwargs": {"big": 2**40}}) == [
        {"path": ["kwargs", "big"], "type": ["Long"], "value": str(2**40)}
    ]


def test_bytes_arrive_as_bytes() -> None:
    values = {"args": [b"\x00\xff", bytearray(b"ab"), b""]}
    encoded = encode_values(values, REGISTRY, LIMITS)
    assert encoded.values == {"args": [None, None, None]}
    assert encoded.objects[0] == {
        "path": ["args", 0],
        "type": ["DataMedia"],
        "id": "0",
        "mime-type": "application/octet-stream",
        "name": None,
        "bytes": True,
    }
    assert [media_id for media_id, _ in encoded.media] == ["0", "1", "2"]
    back = roundtrip(values)["args"]
    assert back == [b"\x00\xff", b"ab", b""]
    assert [type(item) for item in back] == [bytes, bytes, bytes]  # type: ignore[attr-defined]


def test_blob_media_arrives_as_blob_media() -> None:
    media = BlobMedia("image/png", b"\x89PNG", name="a.png")
    unnamed = BlobMedia("text/plain", "hi")
    encoded = encode_values({"response": {"m": media, "u": unnamed}}, REGISTRY, LIMITS)
    assert encoded.objects == [
        {
            "path": ["response", "m"],
            "type": ["DataMedia"],
            "id": "0",
            "mime-type": "image/png",
            "name": "a.png",
        },
        {
            "path": ["response", "u"],
            "type": ["DataMedia"],
            "id": "1",
            "mime-type": "text/plain",
            "name": None,
        },
    ]
    assert encoded.media == [("0", media), ("1", unnamed)]
    back = roundtrip({"response": {"m": media, "u": unnamed}})["response"]
    assert back == {"m": media, "u": unnamed}
    assert isinstance(back["m"], BlobMedia)  # type: ignore[index]
    assert back["m"].content_type == "image/png"  # type: ignore[index]
    assert back["m"].name == "a.png"  # type: ignore[index]


def test_any_media_subclass_is_sent_by_its_bytes() -> None:
    class Generated(Media):
        content_type = "text/csv"
        name = "t.csv"

        def get_bytes(self) -> bytes:
            return b"a,b\n"

    [back] = roundtrip({"args": [Generated()]})["args"]  # type: ignore[misc]
    assert back == BlobMedia("text/csv", b"a,b\n", "t.csv")


# -- what cannot be sent ---------------------------------------------------------------


def test_dict_with_a_non_str_key_names_the_path() -> None:
    with pytest.raises(SerializationError, match=r"int key 1 at msg\['args'\]\[0\]\['a'\]$"):
        encode_values({"args": [{"a": {1: "x"}}]}, REGISTRY, LIMITS)


@pytest.mark.parametrize(
    "bad",
    [NotPortable(), {1, 2}, object(), memoryview(b"x"), 1 + 2j, True.__class__],
    ids=["unregistered object", "set", "object", "memoryview", "complex", "builtin class"],
)
def test_an_unregistered_value_names_the_path(bad: object) -> None:
    values = {"args": [{"tags": ["a", "b", bad]}]}
    with pytest.raises(SerializationError, match=r"at msg\['args'\]\[0\]\['tags'\]\[2\]") as info:
        encode_values(values, REGISTRY, LIMITS)
    assert repr(type(bad)) in str(info.value)


def test_an_unregistered_class_object_hints_at_class_type() -> None:
    with pytest.raises(SerializationError, match=r"msg\['kwargs'\]\['cls'\].*ClassType"):
        encode_values({"kwargs": {"cls": NotPortable}}, REGISTRY, LIMITS)


def test_a_portable_class_without_dict_or_hooks_is_refused() -> None:
    registry = PortableRegistry()

    @registry.decorator
    class Slotted:
        __slots__ = ("x",)

    item = Slotted()
    item.x = 1
    with pytest.raises(SerializationError, match=r"Slotted object at msg\['args'\]\[0\].*__dict__"):
        encode_values({"args": [item]}, registry, LIMITS)


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda a: {"args": [a]}, "msg['args'][0][0]"),
        (lambda a: {"args": [1, {"x": a}]}, "msg['args'][1]['x'][0]"),
    ],
    ids=["list in args", "list in a dict"],
)
def test_a_circular_list_names_a_short_path(build: object, where: str) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError) as info:
        encode_values(build(loop), REGISTRY, LIMITS)  # type: ignore[operator]
    assert str(info.value).startswith(f"circular reference at {where}: it contains the value at")


def test_a_circular_dict_names_a_short_path() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(SerializationError) as info:
        encode_values({"args": [loop]}, REGISTRY, LIMITS)
    assert str(info.value) == (
        "circular reference at msg['args'][0]['self']: it contains the value at msg['args'][0]"
    )
    with pytest.raises(SerializationError, match=r"^circular reference at msg\['kwargs'\]"):
        encode_values({"kwargs": loop}, REGISTRY, LIMITS)


def test_a_cycle_found_within_the_depth_limit() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match=r"^circular reference at msg\['args'\]\[0\]:"):
        encode_values({"args": loop}, REGISTRY, Limits(max_depth=1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Node(),
        lambda: Wrapper(),
    ],
    ids=["attribute points back", "__serialize__ returns itself"],
)
def test_a_circular_portable_object_names_a_short_path(make: object) -> None:
    item = make()  # type: ignore[operator]
    if isinstance(item, Node):
        item.me = item
    with pytest.raises(SerializationError, match=r"^circular reference at msg\['args'\]\[0\]"):
        encode_values({"args": [item]}, REGISTRY, LIMITS)
    with pytest.raises(SerializationError) as info:
        encode_values({"args": [item]}, REGISTRY, LIMITS)
    assert len(str(info.value)) < 120, str(info.value)


def test_a_cycle_through_serialize_at_an_odd_depth_limit() -> None:
    with pytest.raises(SerializationError, match=r"^circular reference at msg\['args'\]\[0\]\[0\]"):
        encode_values({"args": [Wrapper()]}, REGISTRY, Limits(max_depth=3))


def test_nesting_deeper_than_max_depth() -> None:
    limits = Limits(max_depth=5)

    def nested(levels: int) -> object:
        value: object = "leaf"
        for level in range(levels):
            value = [value] if level % 2 else {"k": value}
        return value

    assert roundtrip({"args": nested(5)}, limits=limits) == {"args": nested(5)}
    with pytest.raises(SerializationError, match=r"nesting deeper than 5 levels.*max_depth"):
        encode_values({"args": nested(6)}, REGISTRY, limits)
    with pytest.raises(SerializationError, match=r"nesting deeper than 5 levels"):
        encode_values({"kwargs": nested(7)}, REGISTRY, limits)


def test_deep_nesting_names_only_the_start_of_the_path() -> None:
    value: object = []
    for _ in range(300):
        value = [value]
    with pytest.raises(SerializationError) as info:
        encode_values({"args": value}, REGISTRY, LIMITS)
    assert str(info.value) == (
        "nesting deeper than 200 levels at msg['args'][0][0][0][0][0][0][0]... (limit max_depth)"
    )


def test_portable_objects_count_towards_the_depth() -> None:
    node = Node()
    with pytest.raises(SerializationError, match="nesting deeper than 1 levels"):
        encode_values({"args": [node]}, REGISTRY, Limits(max_depth=1))
    with pytest.raises(SerializationError, match="nesting deeper than 1 levels"):
        encode_values({"args": node}, REGISTRY, Limits(max_depth=1))


def test_max_objects_on_sending() -> None:
    limits = Limits(max_objects=3)
    assert len(entries({"args": [2**40] * 3}, limits)) == 3
    with pytest.raises(SerializationError, match=r"4 objects.*limit of 3.*max_objects"):
        encode_values({"args": [2**40] * 4}, REGISTRY, limits)


def test_max_objects_on_receiving() -> None:
    limits = Limits(max_objects=3)
    objects = [{"path": ["args", i], "type": ["Long"], "value": "5"} for i in range(4)]
    decode_values({"args": [None] * 3, "objects": objects[:3]}, ("args",), REGISTRY, limits)
    with pytest.raises(SerializationError, match=r"4 or more objects.*max_objects"):
        decode_values({"args": [None] * 4, "objects": objects}, ("args",), REGISTRY, limits)


# -- hooks for types the codec does not own -------------------------------------------


class Token:
    def __init__(self, scope: list[object]) -> None:
        self.scope = scope


def test_extra_encoder_and_decoder_hooks() -> None:
    seen_paths: list[list[object]] = []

    def extra_encode(value: object, encoder: Encoder) -> dict[str, object] | None:
        seen_paths.append(list(encoder.path))
        if isinstance(value, Token):
            return {"type": ["Capability"], "scope": value.scope}
        return None

    when = dt.date(2024, 1, 1)
    encoded = encode_values({"args": [Token(["doc", 1]), when]}, REGISTRY, LIMITS, extra_encode)
    assert encoded.objects == [
        {"type": ["Capability"], "scope": ["doc", 1], "path": ["args", 0]},
        {"path": ["args", 1], "type": ["Date"], "value": "2024-01-01"},
    ]
    assert seen_paths == [["args", 0], ["args", 1]]

    def extra_decode(entry: dict[str, object], where: str) -> object:
        assert where == "msg['args'][0]"
        return Token(entry["scope"])  # type: ignore[arg-type]

    message = orjson.loads(orjson.dumps({**encoded.values, "objects": encoded.objects}))
    decode_values(message, ("args",), REGISTRY, LIMITS, None, {"Capability": extra_decode})
    token, date = message["args"]
    assert isinstance(token, Token)
    assert token.scope == ["doc", 1]
    assert date == when


def test_the_first_known_type_name_decides() -> None:
    message: dict[str, object] = {
        "args": [None],
        "objects": [{"path": ["args", 0], "type": ["FutureThing", "Long"], "value": "12"}],
    }
    decode_values(message, ("args",), REGISTRY, LIMITS, None, {"Other": lambda e, w: None})
    assert message["args"] == [12]


def test_a_far_too_long_integer_is_refused_without_printing_it() -> None:
    with pytest.raises(SerializationError, match="over the limit of 4300 digits"):
        encode_values({"args": [10**6000]}, REGISTRY, LIMITS)
