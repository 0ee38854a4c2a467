"""Tether: Python client/server apps in which live objects cross the wire safely.

``from tether import server`` is the API (see ``tether.server``); ``tether.create_app``
returns the ASGI application.
"""

from __future__ import annotations

from typing import Any

from tether import _current
from tether.codec import BlobMedia, Media
from tether.codec.capability import set_subscriptions
from tether.errors import TetherError
from tether.tasks import Task as _Task  # registers the portable Task in every process

del _Task
set_subscriptions(_current.subscriptions)  # cap.subscribe() goes to server.connect's connection

__all__ = ["BlobMedia", "Media", "TetherError", "create_app"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tether.runtime.app import create_app

        return create_app
    raise AttributeError(f"module 'tether' has no attribute {name!r}")
