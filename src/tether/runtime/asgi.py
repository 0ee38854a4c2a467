"""The ASGI types the runtime's HTTP and WebSocket handlers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Message", "Receive", "Scope", "SendMessage", "raw_headers", "route_path"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
SendMessage = Callable[[Message], Awaitable[None]]


def raw_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name; of a repeated one, the last."""
    return dict(scope.get("headers") or ())


def route_path(scope: Scope) -> str:
    """The path below the app's mount point: ``scope["path"]`` without ``root_path``
    (Starlette's ``Mount`` keeps the whole path and sets ``root_path``)."""
    path = str(scope["path"])
    root = scope.get("root_path") or ""
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path
