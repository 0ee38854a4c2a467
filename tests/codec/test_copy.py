"""copy_values: the copies a call in the same process gets, exactly as if sent."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from tether.codec import BlobMedia, GlobalData, Limits, PortableRegistry, copy_values
from tether.errors import SerializationError

LIMITS = Limits()
REGISTRY = PortableRegistry()


@REGISTRY.decorator("copy.Video")
class Video:
    def __init__(self, title: str, tags: list[str]) -> None:
        self.title, self.tags = title, tags


@REGISTRY.decorator("copy.Counted")
class Counted:
    def __init__(self, label: str) -> None:
        self.label = label

    def __serialize__(self, global_data: GlobalData) -> object:
        global_data["count"] = int(global_data.get("count", 0)) + 1  # type: ignore[call-overload]
        global_data["when"] = dt.date(2024, 1, 1)
        return self.label

    def __deserialize__(self, data: object, global_data: GlobalData) -> None:
        self.label = data
        self.count = global_data["count"]
        self.when = global_data["when"]


def test_copies_are_real_copies() -> None:
    original: dict[str, object] = {
        "args": [[1, 2], {"a": [3]}, (4, 5), "s", 2**40, math.inf],
        "kwargs": {"d": {"x": [1]}},
    }
    copied = copy_values(original, REGISTRY, LIMITS)
    assert copied == {
        "args": [[1, 2], {"a": [3]}, [4, 5], "s", 2**40, math.inf],
        "kwargs": {"d": {"x": [1]}},
    }
    copied["args"][0].append(99)  # type: ignore[index]
    copied["args"][1]["a"].append(99)  # type: ignore[index]
    copied["kwargs"]["d"]["x"].append(99)  # type: ignore[index]
    assert original == {
        "args": [[1, 2], {"a": [3]}, (4, 5), "s", 2**40, math.inf],
        "kwargs": {"d": {"x": [1]}},
    }
    assert copied["args"] is not original["args"]
    assert copied["kwargs"] is not original["kwargs"]


def test_portable_objects_are_new_instances() -> None:
    video = Video("cats", ["a"])
    copied = copy_values({"args": [video]}, REGISTRY, LIMITS)
    [copy] = copied["args"]  # type: ignore[misc]
    assert type(copy) is Video
    assert copy is not video
    assert copy.tags == ["a"]
    assert copy.tags is not video.tags
    copy.tags.append("b")
    assert video.tags == ["a"]


def test_global_data_survives_the_copy() -> None:
    copied = copy_values({"args": [Counted("x"), Counted("y")]}, REGISTRY, LIMITS)
    first, second = copied["args"]  # type: ignore[misc]
    assert (first.label, second.label) == ("x", "y")
    assert first.count == second.count == 2
    assert first.when == dt.date(2024, 1, 1)


def test_media_is_copied() -> None:
    media = BlobMedia("text/plain", b"hello", "h.txt")
    copied = copy_values({"response": {"m": media, "b": b"raw"}}, REGISTRY, LIMITS)
    back = copied["response"]
    assert back == {"m": media, "b": b"raw"}
    assert back["m"] is not media  # type: ignore[index]


def test_what_cannot_be_sent_cannot_be_copied() -> None:
    with pytest.raises(SerializationError, match=r"at msg\['args'\]\[0\]"):
        copy_values({"args": [object()]}, REGISTRY, LIMITS)
