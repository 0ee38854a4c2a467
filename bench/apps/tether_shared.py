"""The Item class shared by the Tether benchmark app (server) and its client adapter.

Both sides import this file as the top-level module ``tether_shared`` (bench/apps is on
sys.path in both processes), so the class and its portable name are identical.
"""

from __future__ import annotations

from tether import server


@server.portable_class("bench.Item")
class Item:
    def __init__(self, id: int, name: str, tags: list[str]) -> None:
        self.id, self.name, self.tags = id, name, tags

    def __repr__(self) -> str:
        return f"Item({self.id!r}, {self.name!r}, {self.tags!r})"
