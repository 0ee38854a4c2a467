"""Helpers for users' own tests: a real server on 127.0.0.1 and a free port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

__all__ = ["ServerURL", "serve"]


class ServerURL(str):
    """``http://127.0.0.1:PORT``, with the TCP port's URL in ``.tcp`` (None without one)."""

    tcp: str | None = None


@contextmanager
def serve(app: str | ModuleType | Any = None, **options: Any) -> Iterator[ServerURL]:
    """Starts a real server on a thread and yields its URL (``http://127.0.0.1:PORT``).

    Args:
        app: what to serve: a module name or path (imported first, as ``tether serve``
            does), an imported module, a ``TetherApp`` from ``create_app``, or None for the
            functions already registered in this process.
        **options: ``create_app`` options (``uplink_key``, ``dev``, ``limits``...);
            ``tcp_port=0`` also opens a TCP port for ``tether://`` clients on a free port.

    The server accepts connections when this yields, and is stopped on exit. The URL it
    yields is a ``str``; its ``.tcp`` is ``tether://127.0.0.1:PORT`` when a TCP port is
    open.
    """
    from tether.runtime.app import TetherApp, create_app
    from tether.runtime.assets import use_assets
    from tether.runtime.loader import load_app
    from tether.runtime.serving import serve_in_thread

    if isinstance(app, str):
        # static_url() at import time sees the folder, as under ``tether serve``
        use_assets(options.get("static_dir"), dev=bool(options.get("dev", False)))
        load_app(app)
    asgi = app if isinstance(app, TetherApp) else create_app(**options)
    with serve_in_thread(asgi) as url:
        served = ServerURL(url)
        if asgi.tcp_address is not None:
            served.tcp = "tether://{}:{}".format(*asgi.tcp_address)
        yield served
