"""Media and BlobMedia, and how content is cut into chunks."""

from __future__ import annotations

import pytest

from tether.codec import CHUNK_SIZE, BlobMedia, Media
from tether.codec.media import chunks


def test_blob_media_fields() -> None:
    media = BlobMedia("image/png", b"\x89PNG", name="a.png")
    assert (media.content_type, media.name, media.get_bytes()) == ("image/png", "a.png", b"\x89PNG")
    assert media.length == 4
    assert repr(media) == "<BlobMedia 'image/png' name='a.png' 4 bytes>"


@pytest.mark.parametrize(
    "content",
    ["héllo", b"h\xc3\xa9llo", bytearray(b"h\xc3\xa9llo"), memoryview(b"h\xc3\xa9llo")],
    ids=["str", "bytes", "bytearray", "memoryview"],
)
def test_blob_media_content_becomes_bytes(content: object) -> None:
    media = BlobMedia("text/plain", content)  # type: ignore[arg-type]
    assert media.get_bytes() == "héllo".encode()
    assert type(media.get_bytes()) is bytes
    assert media.name is None


@pytest.mark.parametrize("content", [None, 5, ["a"]], ids=["None", "int", "list"])
def test_blob_media_content_must_be_bytes(content: object) -> None:
    with pytest.raises(TypeError, match="content must be bytes"):
        BlobMedia("text/plain", content)  # type: ignore[arg-type]


def test_blob_media_equality() -> None:
    media = BlobMedia("a/b", b"x", "n")
    assert media == BlobMedia("a/b", b"x", "n")
    assert media != BlobMedia("a/c", b"x", "n")
    assert media != BlobMedia("a/b", b"y", "n")
    assert media != BlobMedia("a/b", b"x")
    assert media != b"x"
    assert media.__eq__(b"x") is NotImplemented


def test_media_base_class() -> None:
    with pytest.raises(NotImplementedError):
        Media().get_bytes()

    class Lazy(Media):
        def get_bytes(self) -> bytes:
            return b"12345"

    lazy = Lazy()
    assert lazy.length == 5
    assert (lazy.content_type, lazy.name) == ("application/octet-stream", None)
    assert repr(lazy) == "<Lazy 'application/octet-stream' name=None 5 bytes>"


@pytest.mark.parametrize(
    ("size", "sizes"),
    [
        (0, [0]),
        (1, [1]),
        (CHUNK_SIZE - 1, [CHUNK_SIZE - 1]),
        (CHUNK_SIZE, [CHUNK_SIZE]),
        (CHUNK_SIZE + 1, [CHUNK_SIZE, 1]),
        (2 * CHUNK_SIZE, [CHUNK_SIZE, CHUNK_SIZE]),
        (1024 * 1024, [CHUNK_SIZE] * 16),
    ],
    ids=["empty", "1", "64K-1", "64K", "64K+1", "128K", "1MiB"],
)
def test_chunks(size: int, sizes: list[int]) -> None:
    content = bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
    parts = chunks(content)
    assert [len(part) for part in parts] == sizes
    assert b"".join(parts) == content
    assert CHUNK_SIZE == 65_536
