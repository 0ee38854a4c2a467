"""Where ``server.call`` goes when no call is running: the process's server or client.

Runtime and client register themselves here, so the facade needs to import neither.
"""

from __future__ import annotations

from typing import Any

dispatchers: list[Any] = []
"""Servers (``tether.runtime.dispatcher.Dispatcher``) running in this process, newest last."""

client: Any = None
"""The connection made by ``server.connect``, if any."""
