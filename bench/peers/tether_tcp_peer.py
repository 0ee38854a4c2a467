"""Tether over its TCP port: the same client as tether_peer, at ``tether://HOST:PORT``.

The server is ``python -m tether serve bench/apps/tether_app.py --tcp-port PORT``.
"""

from __future__ import annotations

from peers import tether_peer
from peers.common import HOST, Plan, Recorder

serve = tether_peer.serve


def run_client(port: int, plan: Plan, rec: Recorder) -> None:
    tether_peer.run_client_at(f"tether://{HOST}:{port}", plan, rec)
