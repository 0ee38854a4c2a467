"""Media after a message: CHUNK_HEADER text frames, each followed by one binary chunk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from tether.codec import Media
from tether.codec.media import chunks
from tether.errors import RemoteProtocolError, SerializationError

__all__ = ["Partial", "media_frames", "next_chunk"]


@dataclass(slots=True)
class Partial:
    """A message whose media chunks are still arriving."""

    message: dict[str, object]
    is_call: bool
    waiting: dict[str, bytearray]
    next_index: dict[str, int]
    done: dict[str, Media] = field(default_factory=dict)
    received: int = 0
    failed: bool = False


def next_chunk(
    header: dict[str, object], incoming: Mapping[str, Partial], max_id: int
) -> tuple[Partial, str, bool]:
    """Checks a ``CHUNK_HEADER`` against the messages waiting for media and returns
    (that message, the media id, whether it is the last chunk); counts the chunk.

    Raises:
        RemoteProtocolError: an unknown request or media, or a chunk out of order.
    """
    request_id = header.get("requestId")
    media_id = header.get("mediaId")
    index = header.get("chunkIndex")
    partial = incoming.get(request_id) if type(request_id) is str else None
    if partial is None:
        raise RemoteProtocolError(f"media chunk for unknown request {str(request_id)[:max_id]!r}")
    if type(media_id) is not str or media_id not in partial.next_index:
        raise RemoteProtocolError(f"media chunk for unknown media {str(media_id)[:max_id]!r}")
    if type(index) is not int or index != partial.next_index[media_id]:
        raise RemoteProtocolError(f"media chunk {index!r} out of order")
    partial.next_index[media_id] = index + 1
    return partial, media_id, header.get("lastChunk") is True


def media_frames(
    media: Sequence[tuple[str, Media]], request_id: str, max_media_bytes: int
) -> list[str | bytes]:
    """The frames that carry ``media`` (id, media) for message ``request_id``: per chunk of
    at most 64 KiB, a ``CHUNK_HEADER`` then the chunk.

    Raises:
        SerializationError: the media add up to more than ``max_media_bytes``.
    """
    frames: list[str | bytes] = []
    total = 0
    for media_id, item in media:
        content = item.get_bytes()
        total += len(content)
        if total > max_media_bytes:
            raise SerializationError(
                f"media in one message add up to more than {max_media_bytes} bytes"
            )
        parts = chunks(content)
        last = len(parts) - 1
        for index, part in enumerate(parts):
            header = {
                "type": "CHUNK_HEADER",
                "requestId": request_id,
                "mediaId": media_id,
                "chunkIndex": index,
                "lastChunk": index == last,
            }
            frames.append(orjson.dumps(header).decode())
            frames.append(part)
    return frames
