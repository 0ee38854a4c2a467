"""Where ``server.call`` goes when no call is running: the process's server or client.

Runtime and client register themselves here, so the facade needs to import neither.
"""

from __future__ import annotations

from typing import Any

dispatchers: list[Any] = []
"""Servers (``tether.runtime.dispatcher.Dispatcher``) running in this process, newest last."""

client: Any = None
"""The connection made by ``server.connect``, if any."""


def subscriptions(cap: Any, on: bool) -> None:
    """``cap.subscribe()`` / ``cap.unsubscribe()``: through the ``server.connect`` connection.

    Raises:
        AppOfflineError: not connected.
    """
    if client is None:
        from tether.errors import AppOfflineError

        raise AppOfflineError(
            "subscribe() needs a connection: call server.connect(url) first"
            " (or use AsyncClient.subscribe)"
        )
    connection = client.client
    if on:
        connection.subscribe(cap)
    else:
        connection.unsubscribe(cap)
