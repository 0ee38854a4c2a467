"""Limits validate themselves; paths read the way a user writes them."""

from __future__ import annotations

import pytest

from tether.codec import Limits, format_path


def test_default_limits() -> None:
    limits = Limits()
    assert limits.max_frame_bytes == 16 * 1024 * 1024
    assert limits.max_depth == 200
    assert limits.max_objects == 100_000
    assert limits.max_int_digits == 4_300
    assert limits.max_media_bytes == 1024 * 1024 * 1024


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_frame_bytes", 0),
        ("max_depth", -1),
        ("max_objects", 1.5),
        ("max_int_digits", True),
        ("max_media_bytes", "10"),
        ("max_depth", None),
    ],
    ids=["zero", "negative", "float", "bool", "str", "None"],
)
def test_limits_must_be_positive_ints(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"limit {field} must be a positive int"):
        Limits(**{field: value})  # type: ignore[arg-type]


def test_limits_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Limits().max_depth = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ([], "msg"),
        (["args", 0, "tags", 2], "msg['args'][0]['tags'][2]"),
        (("kwargs", "it's"), "msg['kwargs'][\"it's\"]"),
    ],
    ids=["root", "args", "quote"],
)
def test_format_path(path: list[object], text: str) -> None:
    assert format_path(path) == text
