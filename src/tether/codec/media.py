"""Binary values: sent as chunks of at most 64 KiB after the message, never inlined in JSON."""

from __future__ import annotations

__all__ = ["CHUNK_SIZE", "BlobMedia", "Media"]

CHUNK_SIZE = 65_536


class Media:
    """A binary value with a content type and an optional name.

    Subclasses provide :meth:`get_bytes`; ``content_type`` and ``name`` are attributes.
    """

    content_type: str = "application/octet-stream"
    name: str | None = None

    def get_bytes(self) -> bytes:
        """Returns the whole content."""
        raise NotImplementedError

    @property
    def length(self) -> int:
        """The size of the content in bytes."""
        return len(self.get_bytes())

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.content_type!r} name={self.name!r} {self.length} bytes>"
        )


class BlobMedia(Media):
    """Media held in memory.

    Args:
        content_type: a MIME type such as ``"image/png"``.
        content: the bytes (or a ``str``, encoded as UTF-8).
        name: an optional file name.
    """

    __slots__ = ("_content", "content_type", "name")

    def __init__(self, content_type: str, content: bytes | str, name: str | None = None) -> None:
        if isinstance(content, str):
            content = content.encode()
        if not isinstance(content, bytes | bytearray | memoryview):
            raise TypeError(f"BlobMedia content must be bytes, got {type(content).__name__}")
        self.content_type = content_type
        self._content = bytes(content)
        self.name = name

    def get_bytes(self) -> bytes:
        return self._content

    @property
    def length(self) -> int:
        return len(self._content)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlobMedia):
            return NotImplemented
        return (self.content_type, self.name, self._content) == (
            other.content_type,
            other.name,
            other._content,
        )


def chunks(content: bytes) -> list[bytes]:
    """Splits content into chunks of at most 64 KiB; empty content is one empty chunk."""
    if not content:
        return [b""]
    return [content[i : i + CHUNK_SIZE] for i in range(0, len(content), CHUNK_SIZE)]
