"""One outgoing message: values -> a JSON text frame and its media chunk frames.

Pure: no I/O, no clock. The cyclic garbage collector is paused while a message is
encoded or decoded (:func:`without_gc`): the trees and the objects built from them hold
no cycles, and an object-heavy message would otherwise set off collections that walk
every object of the process.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

import orjson

from tether.codec import Limits, PortableRegistry, encode_values
from tether.codec.encoder import CacheWriter, ExtraEncoder
from tether.errors import SerializationError
from tether.protocol.chunks import media_frames
from tether.protocol.names import Frame

__all__ = ["json_text", "without_gc", "write_message"]

T = TypeVar("T")


def write_message(
    header: dict[str, object],
    values: dict[str, object],
    request_id: str,
    *,
    registry: PortableRegistry,
    limits: Limits,
    extra: ExtraEncoder | None,
    compact: bool,
    caches: CacheWriter,
    media: bool = True,
) -> list[Frame]:
    """The frames of ``header`` plus the encoded ``values``: the JSON text, then one
    frame per media chunk (``media=False`` refuses a message that would carry media).

    Raises:
        SerializationError: a value cannot be sent, or the message is over the frame limit.
    """
    encoded = encode_values(values, registry, limits, extra, compact=compact, caches=caches)
    if encoded.media and not media:
        raise SerializationError("an update with Media cannot be pushed (send a URL or id)")
    header.update(encoded.values)
    header["objects"] = encoded.objects
    if encoded.vt_global is not None:
        header["vt_global"] = encoded.vt_global
    text = json_text(header, limits)
    if not encoded.media:
        return [text]
    return [text, *media_frames(encoded.media, request_id, limits.max_media_bytes)]


def json_text(message: dict[str, object], limits: Limits) -> str:
    """``message`` as the JSON text of one frame.

    Raises:
        SerializationError: orjson refused a value (e.g. a lone surrogate in a str), or
            the text is over the frame limit.
    """
    try:
        text = orjson.dumps(message)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(str(exc)) from None
    if len(text) > limits.max_frame_bytes:
        raise SerializationError(
            f"message of {len(text)} bytes is over the frame limit of"
            f" {limits.max_frame_bytes} bytes (send large data as Media)"
        )
    return text.decode()


def without_gc(work: Callable[..., T], *args: object) -> T:
    """Runs ``work`` with the cyclic collector paused, if it was running."""
    if not gc.isenabled():
        return work(*args)
    gc.disable()
    try:
        return work(*args)
    finally:
        gc.enable()
