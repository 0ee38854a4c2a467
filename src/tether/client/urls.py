"""Server addresses as a client writes them: the WebSocket URL, the TCP URL, the origin."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from tether.transports.tcp import SCHEME as TCP_SCHEME

__all__ = ["TCP_SCHEME", "http_origin", "websocket_url"]


def websocket_url(url: str) -> str:
    """``http://h:p`` / ``ws://h:p`` -> ``ws://h:p/_/ws``; an explicit path is kept.

    A ``tether://HOST:PORT`` URL (the server's TCP port) is returned as it is.
    """
    parts = urlsplit(url)
    if parts.scheme == TCP_SCHEME:
        return url
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(
            f"not a server URL: {url!r}"
            " (use ws://HOST:PORT/_/ws, http://HOST:PORT or tether://HOST:TCP_PORT)"
        )
    path = parts.path if parts.path not in ("", "/") else "/_/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def http_origin(url: str) -> str | None:
    """The HTTP origin (``http://HOST:PORT``) of a server URL; None for ``tether://``."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    return f"{scheme}://{parts.netloc}" if scheme else None
