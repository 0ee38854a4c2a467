"""Portable classes shared by the server (app.py) and the client (client.py)."""

from __future__ import annotations

import datetime as dt

from tether import server


@server.portable_class
class Item:
    """A plain portable class: its __dict__ crosses the wire; __init__ never runs on arrival."""

    def __init__(self, id: int, name: str, tags: list[str]) -> None:
        self.id = id
        self.name = name
        self.tags = tags

    def __repr__(self) -> str:
        return f"Item({self.id}, {self.name!r}, {self.tags})"


@server.portable_class("quickstart.Money")
class Money:
    """Custom serialization: sent as a compact string, rebuilt by __new_deserialized__."""

    def __init__(self, amount_cents: int, currency: str) -> None:
        self.amount_cents = amount_cents
        self.currency = currency

    def __serialize__(self, global_data: object) -> str:
        return f"{self.amount_cents} {self.currency}"

    @staticmethod
    def __new_deserialized__(data: str, global_data: object) -> Money:
        amount, currency = data.split()
        return Money(int(amount), currency)

    def __repr__(self) -> str:
        return f"{self.amount_cents / 100:.2f} {self.currency}"


@server.portable_class
class OutOfStock(Exception):
    """A portable exception: raised on the server, re-raised as itself in the client."""


def today() -> dt.date:
    return dt.date.today()
