"""Values <-> JSON trees with Anvil's ``objects`` side table. Pure: no I/O, no clock."""

from tether.codec.decoder import decode_values, media_ids
from tether.codec.encoder import EncodedValues, all_plain, encode_values, format_datetime
from tether.codec.limits import Limits
from tether.codec.media import CHUNK_SIZE, BlobMedia, Media
from tether.codec.paths import format_path
from tether.codec.registry import GlobalData, PortableClass, PortableRegistry, portable_registry

__all__ = [
    "CHUNK_SIZE",
    "BlobMedia",
    "EncodedValues",
    "GlobalData",
    "Limits",
    "Media",
    "PortableClass",
    "PortableRegistry",
    "all_plain",
    "decode_values",
    "encode_values",
    "format_datetime",
    "format_path",
    "media_ids",
    "portable_registry",
]

from tether.codec.copy import copy_values

__all__ += ["copy_values"]
