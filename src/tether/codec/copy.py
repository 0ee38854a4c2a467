"""Copy semantics for calls inside one process: exactly what crossing the wire would give."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from tether.codec.decoder import ExtraDecoder, decode_values
from tether.codec.encoder import Encoder, ExtraEncoder, encode_values
from tether.codec.flavors import Cacheable, RemoteCache, Unjellyables, unjellyables
from tether.codec.limits import Limits
from tether.codec.media import BlobMedia, Media
from tether.codec.paths import format_path
from tether.codec.registry import PortableRegistry
from tether.errors import SerializationError

__all__ = ["SameObjects", "copy_values"]


class SameObjects:
    """Cacheables and mirrors in a copy inside one process: the same objects arrive (a
    mirror sent back to its owner is its original, and here everyone is the owner)."""

    def __init__(self) -> None:
        self.objects: list[object] = []

    def write(
        self, value: Cacheable | RemoteCache, encoder: Encoder, depth: int
    ) -> tuple[dict[str, object], object]:
        self.objects.append(value)
        return {"type": ["CacheRef"], "cache": len(self.objects) - 1}, None

    def read(
        self, kind: str, entry: dict[str, object], current: object, path: list[object]
    ) -> object:
        index = entry.get("cache")
        if kind != "CacheRef" or type(index) is not int or not 0 <= index < len(self.objects):
            raise SerializationError(f"bad cache entry at {format_path(path)}")
        return self.objects[index]


def copy_values(
    values: dict[str, object],
    registry: PortableRegistry,
    limits: Limits,
    extra: ExtraEncoder | None = None,
    decoders: Mapping[str, ExtraDecoder] | None = None,
    allowed: Unjellyables = unjellyables,
) -> dict[str, object]:
    """Returns copies of ``values`` made by encoding and decoding them, as a peer would.

    ``extra`` and ``decoders`` handle further object types, as for
    :func:`encode_values` and :func:`decode_values` (a capability wire, say).
    Copyables are copied as the allow-list ``allowed`` says; Cacheables and mirrors
    arrive as themselves.

    Raises:
        SerializationError: a value cannot be sent (so it could not be sent remotely either).
    """
    same = SameObjects()
    encoded = encode_values(values, registry, limits, extra, caches=same)
    tree = orjson.loads(
        orjson.dumps(
            {"v": encoded.values, "objects": encoded.objects, "vt_global": encoded.vt_global}
        )
    )
    media: dict[str, Media] = {
        media_id: BlobMedia(item.content_type, item.get_bytes(), item.name)
        for media_id, item in encoded.media
    }
    for entry in tree["objects"]:
        path = entry["path"]
        if path[0] != "vt_global":
            entry["path"] = ["v", *path]
    decode_values(
        tree, ("v",), registry, limits, media, decoders, unjellyables=allowed, caches=same
    )
    result: dict[str, object] = tree["v"]
    return result
