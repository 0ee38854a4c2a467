"""The ASGI types the runtime's HTTP and WebSocket handlers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Message", "Receive", "Scope", "SendMessage", "raw_headers"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
SendMessage = Callable[[Message], Awaitable[None]]


def raw_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name; of a repeated one, the last."""
    return dict(scope.get("headers") or ())
