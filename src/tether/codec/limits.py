"""The bounds every message is checked against, on both sides of the wire."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one message. Breaking one fails that call with a clear error.

    Attributes:
        max_frame_bytes: largest text frame, in bytes (default 16 MiB, as Anvil).
        max_depth: deepest nesting of lists, dicts and portable objects (default 200).
        max_objects: most entries in one message's ``objects`` table (default 100,000).
        max_int_digits: most decimal digits of an integer sent as ``Long`` (default 4,300,
            Python's own ``int`` parsing limit).
        max_media_bytes: most media bytes in one message, all media added up (default 1 GiB).
        max_cacheables: most Cacheables one connection mirrors at once, each way (default
            1,024, as Perspective Broker's ``MAX_BROKER_REFS``).
    """

    max_frame_bytes: int = 16 * 1024 * 1024
    max_depth: int = 200
    max_objects: int = 100_000
    max_int_digits: int = 4_300
    max_media_bytes: int = 1024 * 1024 * 1024
    max_cacheables: int = 1024

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"limit {name} must be a positive int, got {value!r}")
