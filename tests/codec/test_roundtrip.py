"""Property: plain values survive encode -> JSON -> decode unchanged."""

from __future__ import annotations

import datetime as dt
import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.codec import Limits, PortableRegistry, decode_values, encode_values

LIMITS = Limits()
REGISTRY = PortableRegistry()
BIGGEST = 10**LIMITS.max_int_digits - 1

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
datetimes = st.datetimes(
    min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=offsets
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**31) - 2, max_value=2**31 + 1)
    | st.integers()
    | st.integers(min_value=-BIGGEST, max_value=BIGGEST)
    | st.sampled_from([BIGGEST, -BIGGEST, 2**31, -(2**31), 2**31 - 1, -(2**31) + 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.dates()
    | datetimes
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN and types (int/bool/float, date/datetime) kept."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b  # type: ignore[arg-type]
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)  # type: ignore[attr-defined,index]
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()  # type: ignore[attr-defined]
    return a == b


@settings(max_examples=200, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(values, max_size=4), kwargs=st.dictionaries(st.text(), values, max_size=4))
def test_plain_values_round_trip(args: list[object], kwargs: dict[str, object]) -> None:
    encoded = encode_values({"args": args, "kwargs": kwargs}, REGISTRY, LIMITS)
    assert encoded.media == []
    assert encoded.vt_global is None
    text = orjson.dumps({**encoded.values, "objects": encoded.objects})
    message = orjson.loads(text)
    global_data = decode_values(message, ("args", "kwargs"), REGISTRY, LIMITS)
    assert len(global_data) == 0
    assert same(message["args"], args)
    assert same(message["kwargs"], kwargs)
