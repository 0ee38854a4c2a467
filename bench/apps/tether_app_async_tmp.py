"""Tether benchmark app, served with ``python -m tether serve bench/apps/tether_app.py``."""

from __future__ import annotations

from typing import Any

from tether_shared import Item

from tether import server


@server.callable
async def echo(i: int, s: str) -> list[Any]:
    return [i, s]


@server.callable
def roundtrip(items: list[Item]) -> list[Item]:
    # Cheap guard, same as every peer's server: the server must hold real Items.
    if not items or type(items[0]) is not Item:
        raise TypeError(
            f"server expected Item instances, got {type(items[0]).__name__ if items else 'empty'}"
        )
    return items
