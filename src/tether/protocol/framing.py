"""Length-prefixed frames for the raw TCP path between Python peers (``tether://``).

The same messages as on a WebSocket, framed more cheaply. A stream starts with
:data:`PREAMBLE` from the client; then each frame is a 4-byte big-endian header and the
payload. The header's top bit marks a binary frame (a media chunk); the other 31 bits are
the payload's length. Text frames carry UTF-8 JSON.
"""

from __future__ import annotations

import struct

from tether.errors import FrameTooLarge, RemoteProtocolError

__all__ = ["PREAMBLE", "FrameReader", "pack_frame"]

PREAMBLE = b"TETHER/1\n"
"""The first bytes a client sends: names the framing and its version."""

_HEADER = struct.Struct(">I")
_BINARY = 0x8000_0000
_LENGTH = 0x7FFF_FFFF


def pack_frame(frame: str | bytes) -> bytes:
    """One frame on the wire: header and payload."""
    if isinstance(frame, str):
        payload = frame.encode()
        return _HEADER.pack(len(payload)) + payload
    return _HEADER.pack(len(frame) | _BINARY) + frame


class FrameReader:
    """Cuts a byte stream into frames.

    Args:
        max_size: the largest payload accepted; a header announcing more raises
            :class:`FrameTooLarge` before the payload is read.
        preamble: expect :data:`PREAMBLE` first (the server's side).
    """

    def __init__(self, max_size: int, *, preamble: bool = False) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._preamble = preamble

    def feed(self, data: bytes) -> list[str | bytes]:
        """Adds received bytes; returns the frames they complete, in order.

        Raises:
            RemoteProtocolError: a wrong preamble or a text frame that is not UTF-8.
            FrameTooLarge: a frame announced over ``max_size``.
        """
        buffer = self._buffer
        if buffer or self._preamble:
            buffer += data
            if self._preamble and not self._skip_preamble():
                return []
            data = bytes(buffer)
            buffer.clear()
        # Frames are cut straight out of ``data``: one copy per payload, none when a read
        # holds exactly what it needs; only an incomplete tail is kept for the next read.
        frames: list[str | bytes] = []
        view = memoryview(data)
        start = 0
        end = len(data)
        while end - start >= 4:
            (header,) = _HEADER.unpack_from(data, start)
            size = header & _LENGTH
            if size > self.max_size:
                raise FrameTooLarge(f"frame of {size} bytes is over the limit of {self.max_size}")
            stop = start + 4 + size
            if stop > end:
                break
            if header & _BINARY:
                frames.append(bytes(view[start + 4 : stop]))
            else:
                try:
                    frames.append(str(view[start + 4 : stop], "utf-8"))
                except UnicodeDecodeError as exc:
                    raise RemoteProtocolError(f"text frame is not UTF-8: {exc}") from None
            start = stop
        if start < end:
            buffer += view[start:]
        return frames

    def _skip_preamble(self) -> bool:
        """Checks and drops the preamble; False while it is still incomplete."""
        buffer = self._buffer
        if len(buffer) < len(PREAMBLE):
            if not PREAMBLE.startswith(buffer):
                raise RemoteProtocolError("not a Tether stream (wrong preamble)")
            return False
        if buffer[: len(PREAMBLE)] != PREAMBLE:
            raise RemoteProtocolError("not a Tether stream (wrong preamble)")
        del buffer[: len(PREAMBLE)]
        self._preamble = False
        return True
