"""Floor baseline: asyncio `websockets` + orjson, hand-rolled request/response.

Wire format: one binary frame per message, orjson-encoded
``{"id": n, "m": method, "p": params}`` -> ``{"id": n, "r": result}``.
W3 converts dicts to ``Item`` instances on receipt and back to dicts on send, on both
sides.  permessage-deflate is disabled (it would dominate the CPU cost).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from peers.common import HOST, Item, Plan, Recorder, check_server_items, run_async


def _to_items(dicts: list[dict[str, Any]]) -> list[Item]:
    return [Item(d["id"], d["name"], d["tags"]) for d in dicts]


def _to_dicts(items: list[Item]) -> list[dict[str, Any]]:
    return [{"id": it.id, "name": it.name, "tags": it.tags} for it in items]


def _echo(i: int, s: str) -> list[Any]:
    return [i, s]


def _roundtrip(items: list[Item]) -> list[Item]:
    check_server_items(items, Item)
    return items


async def _handler(ws: ServerConnection) -> None:
    async for message in ws:
        req = orjson.loads(message)
        method, params = req["m"], req["p"]
        if method == "echo":
            result: Any = _echo(*params)
        elif method == "roundtrip":
            result = _to_dicts(_roundtrip(_to_items(params[0])))
        else:
            raise ValueError(f"unknown method {method!r}")
        await ws.send(orjson.dumps({"id": req["id"], "r": result}))


def serve(host: str, port: int) -> None:
    async def main() -> None:
        async with ws_serve(_handler, host, port, compression=None, max_size=None) as server:
            await server.serve_forever()

    asyncio.run(main())


def run_client(port: int, plan: Plan, rec: Recorder) -> None:
    async def main() -> None:
        url = f"ws://{HOST}:{port}/"
        async with connect(url, compression=None, max_size=None, proxy=None) as ws:
            ids = itertools.count()

            async def call(method: str, params: list[Any]) -> Any:
                n = next(ids)
                await ws.send(orjson.dumps({"id": n, "m": method, "p": params}))
                resp = orjson.loads(await ws.recv())
                if resp["id"] != n:
                    raise RuntimeError("response id mismatch")
                return resp["r"]

            async def echo(i: int, s: str) -> Any:
                return await call("echo", [i, s])

            async def roundtrip(items: list[Item]) -> list[Item]:
                return _to_items(await call("roundtrip", [_to_dicts(items)]))

            await run_async(plan, rec, echo, roundtrip, Item)

    asyncio.run(main())
