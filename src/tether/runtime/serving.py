"""Running a :class:`TetherApp` under uvicorn, in the foreground or on a thread."""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from tether.protocol import FRAME_SLACK
from tether.runtime.app import TetherApp
from tether.runtime.dispatcher import DRAIN_TIMEOUT

__all__ = ["GC_THRESHOLD", "serve_forever", "serve_in_thread", "tune_gc", "uvicorn_config"]

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


GC_THRESHOLD = 50_000
"""``tether serve``'s first-generation threshold for the cyclic garbage collector."""


def tune_gc() -> None:
    """Garbage-collector settings for a process that is a Tether server (``tether serve``
    calls this; call it yourself under another ASGI server if you like).

    - What is loaded before serving (the app, its libraries) lives as long as the
      process: ``gc.freeze()`` takes it out of every later collection.
    - The first generation is collected once 50,000 more container objects were made
      than freed (Python's default is 700). One message of 1,000 portable objects makes
      about 3,000 that stay alive while its call runs, so at 700 every such call paid a
      collection that walked them all (10 to 20 % of the server's CPU per call here); at
      50,000 a collection comes only when objects really pile up (cyclic garbage).
    """
    gc.collect()
    gc.freeze()
    first, *older = gc.get_threshold()
    gc.set_threshold(max(first, GC_THRESHOLD), *older)


def serve_forever(app: TetherApp, host: str, port: int, *, log_level: str = "info") -> None:
    """Serves until interrupted (Ctrl-C / SIGTERM), with :func:`tune_gc`'s settings."""
    config = uvicorn_config(app, host=host, port=port, log_level=log_level)
    tune_gc()
    uvicorn.Server(config).run()


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
