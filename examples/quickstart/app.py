"""The quickstart app: `tether serve examples/quickstart --uplink-key dev-key`."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from shared import Item, Money, OutOfStock

from tether import server

STOCK = {
    1: Item(1, "teapot", ["kitchen", "ceramic"]),
    2: Item(2, "kettle", ["kitchen", "steel"]),
}


@server.callable
def hello(name: str) -> str:
    return f"Hello, {name}!"


@server.callable
def list_items() -> list[Item]:
    return list(STOCK.values())


@server.callable("price_of")
def price(item: Item) -> Money:
    return Money(1999 if item.name == "teapot" else 4550, "EUR")


@server.callable
def buy(item_id: int, quantity: int = 1) -> dict[str, object]:
    if item_id not in STOCK:
        raise OutOfStock(f"item {item_id} is out of stock")
    total = server.call("price_of", STOCK[item_id])  # a nested call: copies, as if remote
    return {
        "item": STOCK[item_id],
        "quantity": quantity,
        "unit": total,
        "at": dt.datetime.now(dt.UTC),
    }


@server.callable
async def slow_sum(numbers: list[float]) -> float:
    await asyncio.sleep(0.01)  # async server functions run on the event loop
    return sum(numbers)


# -- HTTP endpoints: the page's script (static/js/app.js) reads these ----------------------


@server.http_endpoint("/items")
def items_json() -> list[dict[str, object]]:
    """GET /_/api/items: the stock as JSON (portable objects are for server functions)."""
    return [{"id": item.id, "name": item.name, "tags": item.tags} for item in STOCK.values()]


@server.http_endpoint("/items/:item_id/price")
def item_price(item_id: str, currency: str = "EUR") -> server.HttpResponse | dict[str, object]:
    """GET /_/api/items/1/price: path parameters arrive as strings."""
    if not item_id.isdigit() or int(item_id) not in STOCK:
        return server.HttpResponse(404, {"error": f"no item {item_id}"})
    money = price(STOCK[int(item_id)])
    return {"item": int(item_id), "cents": money.amount_cents, "currency": currency}


@server.http_endpoint("/visits")
def visits() -> dict[str, int]:
    """GET /_/api/visits: counts this browser's visits in its session (a cookie)."""
    server.session["visits"] = int(server.session.get("visits", 0)) + 1
    return {"visits": server.session["visits"]}


# -- a background task: its own process, progress in server.task_state -------------------


@server.background_task
def restock(count: int = 20) -> int:
    """Runs in its own process; `tether tasks` (or the page) shows its progress."""
    for done in range(1, count + 1):
        time.sleep(0.1)  # a slow supplier
        server.task_state["progress"] = done / count
    return count


@server.http_endpoint("/restock", methods=["POST"])
def start_restock() -> dict[str, str]:
    """POST /_/api/restock: launches the task and answers its id at once."""
    return {"id": server.launch_background_task("restock", 20).get_id()}


@server.http_endpoint("/tasks/:task_id")
def task_progress(task_id: str) -> dict[str, object]:
    """GET /_/api/tasks/<id>: the task's status and progress (its id is unguessable)."""
    task = server.get_background_task(task_id)
    status = task.get_termination_status() or "running"
    return {"status": status, "progress": task.get_state().get("progress", 0)}
