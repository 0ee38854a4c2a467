"""The trusted worker of test_capability_graphs: runs plan nodes for the server.

python -m tests.apps.cap_graph_worker URL KEY

It offers only ``cap_graph_unode`` and ``cap_graph_aunode`` (from a registry of its own,
so the server's functions it imports with tests.apps.cap_graph are not offered again),
prints READY once the server knows them, and serves until it is terminated.
"""

from __future__ import annotations

import sys

from tests.apps.cap_graph import Plan, arun_node, run_node
from tether.client import Client
from tether.functions import FunctionRegistry


def unode(plan: Plan, *args: object, **kwargs: object) -> object:
    return run_node(plan, args, kwargs)


async def aunode(plan: Plan, *args: object, **kwargs: object) -> object:
    return await arun_node(plan, args, kwargs)


def main() -> None:
    url, key = sys.argv[1], sys.argv[2]
    functions = FunctionRegistry()
    functions.register(unode, "cap_graph_unode")
    functions.register(aunode, "cap_graph_aunode")
    with Client(url, key, register=True, functions=functions) as client:
        client.call("cap_graph_mint")  # a sync point: the REGISTER frames went first
        print("READY", flush=True)
        client.wait_closed()


if __name__ == "__main__":
    main()
