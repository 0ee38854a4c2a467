"""Calls the quickstart server and gets portable objects back.

tether serve examples/quickstart --uplink-key dev-key     # in one terminal
python examples/quickstart/client.py                        # in another
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # find shared.py

from shared import Item, Money, OutOfStock

from tether import server

URL = os.environ.get("TETHER_URL", "ws://127.0.0.1:8000/_/ws")


def main() -> None:
    server.connect(URL)
    try:
        print(server.call("hello", "world"))
        items = server.call("list_items")
        assert all(isinstance(item, Item) for item in items)
        print("items:", items)
        price = server.call("price_of", items[0])
        assert isinstance(price, Money)
        print("price of", items[0].name, "is", price)
        order = server.call("buy", 2, quantity=3)
        print(
            "bought:", order["quantity"], "x", order["item"], "at", order["unit"], "on", order["at"]
        )
        try:
            server.call("buy", 99)
        except OutOfStock as exc:
            print("OutOfStock raised as itself:", exc)
        print("sum:", server.call("slow_sum", [1.5, 2.5, float("inf")]))
    finally:
        server.disconnect()


if __name__ == "__main__":
    main()
