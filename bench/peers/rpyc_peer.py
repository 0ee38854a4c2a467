"""RPyC "with obtain": real copies both ways via rpyc.classic.obtain (pickle).

RPyC passes lists and custom objects *by reference* (netrefs), so a plain roundtrip
would copy nothing.  To make it copy:

* the client calls ``roundtrip(items)``; RPyC boxes ``items`` as a netref;
* the server calls ``rpyc.classic.obtain(items)``: the netref's ``__reduce_ex__`` asks
  the client to pickle the list, and the server unpickles real ``Item`` objects;
* the server returns that list, which reaches the client as a netref again;
* the client calls ``rpyc.classic.obtain(result)``: the server pickles, the client
  unpickles real ``Item`` objects.

Both sides set ``allow_pickle=True`` (needed for obtain).  The bound-method netrefs
``conn.root.echo`` / ``conn.root.roundtrip`` are looked up once (each attribute access
on a netref is a round trip).  W1's ``echo`` returns a tuple, which RPyC sends by value.
"""

from __future__ import annotations

from typing import Any

import rpyc
from rpyc.utils.classic import obtain
from rpyc.utils.server import ThreadedServer

from peers.common import HOST, Item, Plan, Recorder, check_server_items, run_sync

CONFIG = {"allow_pickle": True}


class BenchService(rpyc.Service):  # type: ignore[misc]
    def exposed_echo(self, i: int, s: str) -> tuple[int, str]:
        return (i, s)

    def exposed_roundtrip(self, items: Any) -> list[Item]:
        local: list[Item] = obtain(items)
        check_server_items(local, Item)
        return local


def serve(host: str, port: int) -> None:
    ThreadedServer(BenchService, hostname=host, port=port, protocol_config=CONFIG).start()


def run_client(port: int, plan: Plan, rec: Recorder) -> None:
    conn = rpyc.connect(HOST, port, config=CONFIG)
    try:
        remote_echo = conn.root.echo
        remote_roundtrip = conn.root.roundtrip

        def roundtrip(items: list[Item]) -> list[Item]:
            copied: list[Item] = obtain(remote_roundtrip(items))
            return copied

        run_sync(plan, rec, remote_echo, roundtrip, Item)
    finally:
        conn.close()
