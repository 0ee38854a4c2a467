"""Paths into a message, written the way a user reads them: ``msg['args'][0]['tags'][2]``."""

from __future__ import annotations

from collections.abc import Iterable


def format_path(path: Iterable[object]) -> str:
    """Formats a path of keys and indices from the message root."""
    return "msg" + "".join(f"[{key!r}]" for key in path)


def short(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: a peer's value in an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
