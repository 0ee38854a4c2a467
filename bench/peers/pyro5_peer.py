"""Pyro5 with its default serializer (serpent) and Item registered as a custom class.

``register_class_to_dict`` / ``register_dict_to_class`` are called in both processes,
so the server receives real ``Item`` objects and so does the client.  One proxy, one
connection, sequential calls; the server uses Pyro5's default thread-pool server.
"""

from __future__ import annotations

from typing import Any

from Pyro5.api import Daemon, Proxy, expose, register_class_to_dict, register_dict_to_class

from peers.common import HOST, Item, Plan, Recorder, check_server_items, run_sync

ITEM_CLASSNAME = "bench.Item"


def _item_to_dict(obj: Item) -> dict[str, Any]:
    return {"__class__": ITEM_CLASSNAME, "id": obj.id, "name": obj.name, "tags": obj.tags}


def _dict_to_item(classname: str, d: dict[str, Any]) -> Item:
    return Item(d["id"], d["name"], d["tags"])


def _register() -> None:
    register_class_to_dict(Item, _item_to_dict)
    register_dict_to_class(ITEM_CLASSNAME, _dict_to_item)


@expose
class BenchService:
    def echo(self, i: int, s: str) -> list[Any]:
        return [i, s]

    def roundtrip(self, items: list[Item]) -> list[Item]:
        check_server_items(items, Item)
        return items


def serve(host: str, port: int) -> None:
    _register()
    with Daemon(host=host, port=port) as daemon:
        daemon.register(BenchService, "bench")
        daemon.requestLoop()


def run_client(port: int, plan: Plan, rec: Recorder) -> None:
    _register()
    with Proxy(f"PYRO:bench@{HOST}:{port}") as proxy:
        proxy._pyroBind()
        run_sync(plan, rec, proxy.echo, proxy.roundtrip, Item)
