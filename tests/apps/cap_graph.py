"""A test app for capability updates over random call graphs (test_capability_graphs).

A plan (JSON) describes one call tree, and every node runs the same code wherever it
runs: in the server (``cap_graph_node``, async ``cap_graph_anode``) or in the trusted
worker process (``cap_graph_unode``, async ``cap_graph_aunode``, registered by
tests/apps/cap_graph_worker.py, so the update crosses a real peer hop). One node::

    {"id": "n3", "fn": "unode", "raise": false,
     "slots": [{"h": 0, "how": "box", "narrow": null, "scope": ["g", 1], "passive": false}],
     "steps": [["update", 0, {"k1": 1}], ["call", {...a child's plan...}]]}

``slots`` say how the caller passes this node its capabilities: slot ``j`` is the
caller's capability number ``h`` (narrowed by ``narrow`` when set), sent as a positional
argument ("arg"), the keyword argument ``s<j>`` ("kw"), inside a portable Box ("box"
positional, "kwbox" keyword) or deep in lists and dicts ("nest"). A passive slot repeats
a scope already present in the node and is never touched. The node checks each arrives
with the planned ``scope``, records what its handlers see, runs its steps in order,
catches ``NodeFailed`` only from a child planned to raise, and returns
``{"id", "seen", "children"}``: what each slot's handler saw, and its children's results.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Generator
from typing import Any

from tether import server

FUNCTIONS = {
    "node": "cap_graph_node",
    "anode": "cap_graph_anode",
    "unode": "cap_graph_unode",
    "aunode": "cap_graph_aunode",
}
"""A plan's ``fn`` -> the server function name that runs such a node."""

Plan = dict[str, Any]
Request = tuple[str, list[object], dict[str, object]]
Outcome = tuple["NodeFailed | None", object]


@server.portable_class("tests.cap_graph.Box")
class Box:
    """A portable object carrying a capability: updates must find it inside."""

    def __init__(self, cap: server.Capability) -> None:
        self.cap = cap


@server.portable_class("tests.cap_graph.NodeFailed")
class NodeFailed(Exception):
    """A node planned to fail did so (after running its steps)."""

    def __init__(self, node: str) -> None:
        super().__init__(f"node {node} failed as planned")
        self.node = node


def pack(
    slots: list[dict[str, Any]], caps: list[server.Capability]
) -> tuple[list[object], dict[str, object]]:
    """The positional and keyword arguments that carry ``caps`` as ``slots`` say."""
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for j, slot in enumerate(slots):
        cap = caps[slot["h"]]
        if slot["narrow"] is not None:
            cap = cap.narrow([slot["narrow"]])
        how = slot["how"]
        if how == "arg":
            args.append(cap)
        elif how == "kw":
            kwargs[f"s{j}"] = cap
        elif how == "box":
            args.append(Box(cap))
        elif how == "kwbox":
            kwargs[f"s{j}"] = Box(cap)
        else:
            assert how == "nest", how
            args.append([{"x": [cap]}])
    return args, kwargs


def unpack(
    slots: list[dict[str, Any]], args: tuple[object, ...], kwargs: dict[str, object]
) -> list[server.Capability]:
    """The capabilities a node received, by slot (the reverse of :func:`pack`)."""
    positional = iter(args)
    caps: list[server.Capability] = []
    for j, slot in enumerate(slots):
        how = slot["how"]
        value: Any = kwargs[f"s{j}"] if how in ("kw", "kwbox") else next(positional)
        if how in ("box", "kwbox"):
            assert type(value) is Box, value
            value = value.cap
        elif how == "nest":
            value = value[0]["x"][0]
        if type(value) is not server.Capability or value.scope != slot["scope"]:
            raise AssertionError(f"slot {j} should hold {slot['scope']}, got {value!r}")
        caps.append(value)
    if list(positional) or len(kwargs) != sum(s["how"] in ("kw", "kwbox") for s in slots):
        raise AssertionError(f"unexpected arguments {args!r} {kwargs!r}")
    return caps


def _record(record: list[object], update: object) -> None:
    record.append(copy.deepcopy(update))


def _node(
    plan: Plan, args: tuple[object, ...], kwargs: dict[str, object]
) -> Generator[Request, Outcome, dict[str, object]]:
    """One node's work; yields each nested call and is sent its (error, result)."""
    slots = plan["slots"]
    caps = unpack(slots, args, kwargs)
    seen: list[list[object]] = [[] for _ in slots]
    for j, slot in enumerate(slots):
        if not slot["passive"]:
            caps[j].set_update_handler(functools.partial(_record, seen[j]))
    children: list[object] = []
    for step in plan["steps"]:
        if step[0] == "update":
            caps[step[1]].send_update(copy.deepcopy(step[2]))
            continue
        child = step[1]
        child_args, child_kwargs = pack(child["slots"], caps)
        error, result = yield FUNCTIONS[child["fn"]], [child, *child_args], child_kwargs
        if error is None and not child["raise"]:
            children.append(result)
        elif error is None or not child["raise"] or error.node != child["id"]:
            raise AssertionError(f"{plan['id']}: child {child['id']} gave {error or result!r}")
    if plan["raise"]:
        raise NodeFailed(plan["id"])
    return {"id": plan["id"], "seen": seen, "children": children}


def run_node(plan: Plan, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
    """Runs a node with blocking ``server.call``s (here or in the worker)."""
    steps = _node(plan, args, kwargs)
    try:
        name, call_args, call_kwargs = next(steps)
        while True:
            try:
                result = server.call(name, *call_args, **call_kwargs)
            except NodeFailed as exc:
                name, call_args, call_kwargs = steps.send((exc, None))
            else:
                name, call_args, call_kwargs = steps.send((None, result))
    except StopIteration as stop:
        return stop.value


async def arun_node(plan: Plan, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
    """Runs a node with ``await server.acall``s (here or in the worker)."""
    steps = _node(plan, args, kwargs)
    try:
        name, call_args, call_kwargs = next(steps)
        while True:
            try:
                result = await server.acall(name, *call_args, **call_kwargs)
            except NodeFailed as exc:
                name, call_args, call_kwargs = steps.send((exc, None))
            else:
                name, call_args, call_kwargs = steps.send((None, result))
    except StopIteration as stop:
        return stop.value


@server.callable("cap_graph_mint")
def mint(*indices: int) -> list[server.Capability]:
    """Fresh capabilities ``["g", i]``, signed for the caller on the way out."""
    return [server.Capability(["g", i]) for i in indices]


@server.callable("cap_graph_node")
def node(plan: Plan, *args: object, **kwargs: object) -> object:
    return run_node(plan, args, kwargs)


@server.callable("cap_graph_anode")
async def anode(plan: Plan, *args: object, **kwargs: object) -> object:
    return await arun_node(plan, args, kwargs)
