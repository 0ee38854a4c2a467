"""Running a :class:`TetherApp` under uvicorn, in the foreground or on a thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from tether.protocol import FRAME_SLACK
from tether.runtime.app import TetherApp
from tether.runtime.dispatcher import DRAIN_TIMEOUT

__all__ = ["serve_forever", "serve_in_thread", "uvicorn_config"]

STOP_TIMEOUT = DRAIN_TIMEOUT + 10
"""Seconds to wait for a server thread to stop (its calls get DRAIN_TIMEOUT to finish)."""


def uvicorn_config(
    app: TetherApp, *, log_level: str = "warning", **extra: object
) -> uvicorn.Config:
    """uvicorn settings Tether relies on: the sans-I/O websockets stack, no compression."""
    return uvicorn.Config(
        app,
        ws="websockets-sansio",
        ws_max_size=app.options.limits.max_frame_bytes + FRAME_SLACK,
        ws_per_message_deflate=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        lifespan="on",
        proxy_headers=False,  # X-Forwarded-For is read only from --trusted-proxy hosts
        log_level=log_level,
        access_log=False,
        **extra,  # type: ignore[arg-type]
    )


def serve_forever(app: TetherApp, host: str, port: int, *, log_level: str = "info") -> None:
    """Serves until interrupted (Ctrl-C / SIGTERM)."""
    uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level=log_level)).run()


@contextmanager
def serve_in_thread(app: TetherApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serves on a thread; yields ``http://HOST:PORT`` once the socket accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn_config(app))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="tether-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError("the server did not start") from (
                    failure[0] if failure else None
                )
            thread.join(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        if thread.is_alive():
            raise RuntimeError(f"the server thread did not stop within {STOP_TIMEOUT:g} s")
