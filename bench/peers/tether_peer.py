"""Tether client adapter: the module-level sync client, ``server.call(name, *args)``.

The server is ``python -m tether serve bench/apps/tether_app.py``; ``Item`` lives in
bench/apps/tether_shared.py, imported here as the same top-level module.
"""

from __future__ import annotations

import sys
from functools import partial

from peers import APPS_DIR
from peers.common import HOST, Plan, Recorder, run_sync


def serve(host: str, port: int) -> None:
    raise RuntimeError("Tether is served by `python -m tether serve`, not by bench/serve.py")


def run_client(port: int, plan: Plan, rec: Recorder) -> None:
    run_client_at(f"ws://{HOST}:{port}/_/ws", plan, rec)


def run_client_at(url: str, plan: Plan, rec: Recorder) -> None:
    sys.path.insert(0, str(APPS_DIR))
    from tether_shared import Item

    from tether import server

    server.connect(url)
    try:
        run_sync(plan, rec, partial(server.call, "echo"), partial(server.call, "roundtrip"), Item)
    finally:
        server.disconnect()
