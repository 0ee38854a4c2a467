"""Copy semantics for calls inside one process: exactly what crossing the wire would give."""

from __future__ import annotations

import orjson

from tether.codec.decoder import decode_values
from tether.codec.encoder import encode_values
from tether.codec.limits import Limits
from tether.codec.media import BlobMedia, Media
from tether.codec.registry import PortableRegistry


def copy_values(
    values: dict[str, object], registry: PortableRegistry, limits: Limits
) -> dict[str, object]:
    """Returns copies of ``values`` made by encoding and decoding them, as a peer would.

    Raises:
        SerializationError: a value cannot be sent (so it could not be sent remotely either).
    """
    encoded = encode_values(values, registry, limits)
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
    decode_values(tree, ("v",), registry, limits, media)
    result: dict[str, object] = tree["v"]
    return result
