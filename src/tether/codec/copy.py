"""Copy semantics for calls inside one process: exactly what crossing the wire would give."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from tether.codec.decoder import ExtraDecoder, decode_values
from tether.codec.encoder import ExtraEncoder, encode_values
from tether.codec.limits import Limits
from tether.codec.media import BlobMedia, Media
from tether.codec.registry import PortableRegistry


def copy_values(
    values: dict[str, object],
    registry: PortableRegistry,
    limits: Limits,
    extra: ExtraEncoder | None = None,
    decoders: Mapping[str, ExtraDecoder] | None = None,
) -> dict[str, object]:
    """Returns copies of ``values`` made by encoding and decoding them, as a peer would.

    ``extra`` and ``decoders`` handle further object types, as for
    :func:`encode_values` and :func:`decode_values` (a capability wire, say).

    Raises:
        SerializationError: a value cannot be sent (so it could not be sent remotely either).
    """
    encoded = encode_values(values, registry, limits, extra)
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
    decode_values(tree, ("v",), registry, limits, media, decoders)
    result: dict[str, object] = tree["v"]
    return result
