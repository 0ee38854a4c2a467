"""Registry of the peers the harness can run (kept import-light: no framework imports)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
APPS_DIR = BENCH_DIR / "apps"


@dataclass(frozen=True)
class PeerInfo:
    name: str
    label: str
    module: str  # importable from bench/ (sys.path[0] of serve.py and worker.py)
    requires: tuple[str, ...]  # imported in a subprocess before the peer runs

    def server_argv(self, host: str, port: int) -> list[str]:
        if self.name in TETHERS:
            app = str(APPS_DIR / "tether_app.py")
            argv = [sys.executable, "-m", "tether", "serve", app, "--host", host]
            if self.name == "tether_tcp":  # the harness waits for the TCP port; HTTP on any
                return [*argv, "--port", "0", "--tcp-port", str(port)]
            return [*argv, "--port", str(port)]
        serve = str(BENCH_DIR / "serve.py")
        return [sys.executable, serve, self.name, "--host", host, "--port", str(port)]


PEERS: dict[str, PeerInfo] = {
    p.name: p
    for p in (
        PeerInfo(
            "ws_json", "websockets+orjson (floor)", "peers.ws_json_peer", ("websockets", "orjson")
        ),
        PeerInfo("rpyc", "RPyC with obtain", "peers.rpyc_peer", ("rpyc",)),
        PeerInfo("pyro5", "Pyro5 (serpent, class_to_dict)", "peers.pyro5_peer", ("Pyro5.api",)),
        PeerInfo(
            "twisted_pb", "Twisted PB (Copyable)", "peers.twisted_pb_peer", ("twisted.spread.pb",)
        ),
        PeerInfo("grpc", "gRPC with conversion", "peers.grpc_peer", ("grpc", "grpc_tools.protoc")),
        PeerInfo("tether", "Tether", "peers.tether_peer", ("tether.server",)),
        PeerInfo(
            "tether_tcp", "Tether over tether://", "peers.tether_tcp_peer", ("tether.server",)
        ),
    )
}
TETHER = "tether"
TETHERS = ("tether", "tether_tcp")
