"""Capability updates over random call graphs, against a real server and a real peer.

The rule (API.md, "Capability-scoped updates"): when a call succeeds, the updates queued
on every capability that arrived in its arguments go back to its caller, keyed by full
scope, and run the handler of each capability instance the caller passed with that scope
once; they queue there and go further up. So an update reaches every caller that passed
the capability, through any depth of nested ``server.call`` and through functions a
trusted worker process runs in the middle, and never a caller that did not pass it (nor
one that passed only a narrowed copy, nor another instance it kept). A failed call sends
nothing back.

A hypothesis state machine grows and prunes a call tree: who passes which capability to
whom, and how (positional, keyword, inside a portable object, deep in containers,
narrowed); which node sends which update (dicts that merge, values that replace, None
that sends nothing); where each node runs (the server or a trusted worker process, sync
or async); which nodes fail; which of two clients calls, with which of its instances.
After every rule it makes the call for real (tests/apps/cap_graph.py) and a pure model
here says what every handler must have seen, in each node and in both clients. A call
that goes wrong shrinks its own plan to a smallest one that still does.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests import conftest
from tests.apps.cap_graph import FUNCTIONS, NodeFailed, Plan, pack
from tests.conftest import TIMEOUT, stop
from tether import server, testing
from tether.client import Client

KEY = "cap-graph-uplink-key"
MAX_NODES = 8  # each call runs at most this many nodes
MAX_DEPTH = 3  # the root is at depth 0: at most four levels of calls
MAX_FANOUT = 3
MAX_STEPS = 6  # updates and calls in one node
MAX_HELD = 8  # capability instances the clients hold
MAX_ROOT_SLOTS = 4

# No shrinking: each step makes a real call, so hypothesis would need minutes to shrink a
# failure; a failing call shrinks its own plan instead (CapabilityGraphs.smallest).
SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)

FNS = st.sampled_from(sorted(FUNCTIONS))
HOWS = st.sampled_from(["arg", "kw", "box", "kwbox", "nest"])
KINDS = st.sampled_from(["dict", "dict", "shared", "int", "str", "list", "none"])
PICK = st.integers(0, 15)  # an index, taken modulo the number of choices


# -- the model ------------------------------------------------------------------------------

_NOTHING: Any = object()


def key(scope: list[object]) -> str:
    return json.dumps(scope)


def merged(pending: object, update: object) -> object:
    """What is queued after ``update``: dicts merge into a queued dict, the rest replace."""
    if type(update) is not dict:
        return update
    return {**pending, **update} if type(pending) is dict else dict(update)


@dataclass
class Expected:
    updates: dict[str, object]  # what the node's reply carries, by scope key
    result: dict[str, Any]  # what the node returns: its handlers' and its children's


def model(plan: Plan) -> Expected | None:
    """What a node returns and sends back, from its plan alone; None when it fails."""
    slots = plan["slots"]
    pending: list[object] = [_NOTHING] * len(slots)
    seen: list[list[object]] = [[] for _ in slots]
    children: list[object] = []

    def apply(j: int, update: object) -> None:
        seen[j].append(update)
        pending[j] = merged(pending[j], update)

    for step in plan["steps"]:
        if step[0] == "update":
            apply(step[1], step[2])
            continue
        child = step[1]
        outcome = model(child)
        if outcome is None:
            continue  # the node catches it; a failed call sends no updates
        children.append(outcome.result)
        # each capability this node passed as it is (not narrowed), once however often
        for j in sorted({slot["h"] for slot in child["slots"] if slot["narrow"] is None}):
            update = outcome.updates.get(key(slots[j]["scope"]), _NOTHING)
            if update is not _NOTHING:
                apply(j, update)
    if plan["raise"]:
        return None
    updates = {
        key(slot["scope"]): pending[j]
        for j, slot in enumerate(slots)
        if not slot["passive"] and pending[j] is not _NOTHING and pending[j] is not None
    }
    return Expected(updates, {"id": plan["id"], "seen": seen, "children": children})


def test_the_model_merges_replaces_and_drops_failed_subtrees() -> None:
    def slot(h: int, scope: list[object], narrow: str | None = None) -> dict[str, object]:
        return {"h": h, "how": "arg", "narrow": narrow, "scope": scope, "passive": False}

    g0, g1 = ["g", 0], ["g", 1]
    steps = [["update", 0, {"b": 2}], ["update", 0, {"c": 3}]]
    leaf: Plan = {"id": "n2", "fn": "node", "raise": False, "slots": [slot(0, g0)], "steps": steps}
    failing = {**leaf, "id": "n3", "raise": True}
    narrowed = {**leaf, "id": "n4", "slots": [slot(1, [*g1, "t"], "t")]}
    root: Plan = {
        "id": "n1",
        "fn": "node",
        "raise": False,
        "slots": [slot(0, g0), slot(1, g1)],
        "steps": [
            ["update", 0, {"a": 1}],
            ["update", 1, 5],
            ["call", leaf],
            ["call", failing],
            ["call", narrowed],
        ],
    }
    expected = model(root)
    assert expected is not None
    assert expected.updates == {key(g0): {"a": 1, "b": 2, "c": 3}, key(g1): 5}
    assert expected.result["seen"] == [[{"a": 1}, {"b": 2, "c": 3}], [5]]
    assert [child["id"] for child in expected.result["children"]] == ["n2", "n4"]
    assert model({**root, "steps": [["update", 0, {"a": 1}], ["update", 0, None]]}) == Expected(
        {}, {"id": "n1", "seen": [[{"a": 1}, None], []], "children": []}
    )


def simpler(plan: Plan) -> Iterator[Plan]:
    """Plans one change simpler than ``plan``: a step fewer (a call: its whole subtree),
    a failure fewer, a node run in the server without async, a last capability that
    nothing uses left out, a capability passed as a plain positional argument."""
    stack: list[tuple[list[int], Plan]] = [([], plan)]
    while stack:
        path, node = stack.pop(0)
        for i in range(len(node["steps"])):
            yield edited(plan, path, without_step(i))
        if node["raise"]:
            yield edited(plan, path, lambda n: n.update({"raise": False}))
        if node["fn"] != "node":
            yield edited(plan, path, lambda n: n.update({"fn": "node"}))
        used = {step[1] for step in node["steps"] if step[0] == "update"}
        used.update(
            slot["h"] for step in node["steps"] if step[0] == "call" for slot in step[1]["slots"]
        )
        if node["slots"] and len(node["slots"]) - 1 not in used:
            yield edited(plan, path, lambda n: n["slots"].pop())
        for j, slot in enumerate(node["slots"]):
            if slot["how"] != "arg":
                yield edited(plan, path, plain_argument(j))
        stack += [
            ([*path, i], step[1]) for i, step in enumerate(node["steps"]) if step[0] == "call"
        ]


def without_step(i: int) -> Callable[[Plan], object]:
    return lambda node: node["steps"].pop(i)


def plain_argument(j: int) -> Callable[[Plan], object]:
    return lambda node: node["slots"][j].update({"how": "arg"})


def edited(plan: Plan, path: list[int], change: Callable[[Plan], object]) -> Plan:
    """A copy of ``plan`` with ``change`` made to the node at ``path`` (step indices)."""
    plan = copy.deepcopy(plan)
    node = plan
    for i in path:
        node = node["steps"][i][1]
    change(node)
    return plan


# -- the machine ----------------------------------------------------------------------------


@dataclass
class Forward:
    """How a caller passes one of its capabilities to a child: its ``h``-th one (modulo
    how many it has), sent ``how``, narrowed or not."""

    h: int
    how: str
    narrow: bool = False


@dataclass
class Node:
    fn: str
    depth: int
    parent: int | None
    forwards: list[Forward] = field(default_factory=list)
    steps: list[tuple[str, Any]] = field(default_factory=list)  # ("update", (h, u)), ("call", id)
    raises: bool = False


NARROW = st.sampled_from([False, False, True])
FORWARDS = st.lists(st.builds(Forward, PICK, HOWS, NARROW), min_size=1, max_size=3)
RAISES = st.sampled_from([False, False, False, True])


def slots_for(
    forwards: list[Forward], scopes: list[list[object] | None], tag: str | None
) -> list[dict[str, Any]]:
    """A child's slots; ``scopes`` are the caller's capabilities (None: passive, unused).

    A narrowed slot gets a tag no other edge uses; a slot whose scope is already present
    in the child is passive, so no two capabilities a node uses share a scope.
    """
    live = [i for i, scope in enumerate(scopes) if scope is not None]
    slots: list[dict[str, Any]] = []
    present: list[list[object]] = []
    for j, forward in enumerate(forwards if live else []):
        h = live[forward.h % len(live)]
        narrow = f"{tag}.{j}" if forward.narrow and tag is not None else None
        base = scopes[h]
        assert base is not None
        scope = [*base, narrow] if narrow is not None else base
        passive = scope in present
        slots.append(
            {"h": h, "how": forward.how, "narrow": narrow, "scope": scope, "passive": passive}
        )
        present.append(scope)
    return slots


class CapabilityGraphs(RuleBasedStateMachine):
    """Two clients hold capability instances; a tree of nodes says what happens to them.

    Rules mint and narrow capabilities in the clients, choose which client calls and
    which of its capabilities it passes to the root and how, add and remove children
    (each with what its caller passes it), updates and failures. After each rule the
    invariant makes the call and checks every handler.
    """

    def __init__(self, clients: tuple[Client, Client]) -> None:
        super().__init__()
        self.clients = clients
        self.caller = 0  # which client calls the root
        self.held: list[server.Capability] = []
        self.owner: list[int] = []  # which client holds each instance
        self.recorded: list[list[object]] = []  # what each held instance's handler got
        self.expected: list[list[object]] = []
        self.nodes: dict[int, Node] = {0: Node("node", 0, None)}
        self.next_id = 1
        self.next_value = 1

    # -- the clients' capabilities

    def hold(self, cap: object, owner: int) -> None:
        assert type(cap) is server.Capability
        record: list[object] = []
        cap.set_update_handler(lambda update: record.append(copy.deepcopy(update)))
        self.held.append(cap)
        self.owner.append(owner)
        self.recorded.append(record)
        self.expected.append([])

    def mint(self, owner: int, *indices: int) -> None:
        future = self.clients[owner].aio.call_threadsafe("cap_graph_mint", indices, {})
        minted = future.result(TIMEOUT)
        assert isinstance(minted, list)
        for cap in minted:
            self.hold(cap, owner)

    @initialize(
        indices=st.lists(st.integers(0, 2), min_size=1, max_size=3),
        others=st.lists(st.integers(0, 2), max_size=2),
        fn=FNS,
        passed=st.lists(st.tuples(PICK, HOWS), min_size=1, max_size=MAX_ROOT_SLOTS),
        children=st.lists(
            st.tuples(PICK, FNS, PICK, FORWARDS, RAISES), min_size=1, max_size=MAX_NODES - 1
        ),
        updates=st.lists(st.tuples(PICK, PICK, KINDS, PICK), max_size=MAX_NODES + 2),
    )
    def start(
        self,
        indices: list[int],
        others: list[int],
        fn: str,
        passed: list[tuple[int, str]],
        children: list[tuple[int, str, int, list[Forward], bool]],
        updates: list[tuple[int, int, str, int]],
    ) -> None:
        """Some capabilities in each client (the first calls), and a random tree to begin
        with (the rules then change it)."""
        self.mint(0, *indices)
        self.mint(1, *others)
        self.nodes[0].fn = fn
        self.nodes[0].forwards = [Forward(held, how) for held, how in passed]
        for child in children:
            if self.room_for_child():
                self.add_child(*child)
        for update in updates:
            if self.room_for_update():
                self.add_update(*update)

    @precondition(lambda self: len(self.held) < MAX_HELD)
    @rule(index=st.integers(0, 2), owner=st.integers(0, 1))
    def mint_another(self, index: int, owner: int) -> None:
        """Another instance: of a new scope, or of one a client already holds."""
        self.mint(owner, index)

    @precondition(lambda self: len(self.held) < MAX_HELD)
    @rule(source=PICK, tag=st.sampled_from(["a", "b"]))
    def narrow_held(self, source: int, tag: str) -> None:
        i = source % len(self.held)
        self.hold(self.held[i].narrow([tag]), self.owner[i])

    @rule()
    def switch_caller(self) -> None:
        """The other client calls from now on, passing its own instances (the root's
        forwards pick among them)."""
        self.caller = 1 - self.caller

    @precondition(lambda self: len(self.nodes[0].forwards) < MAX_ROOT_SLOTS)
    @rule(held=PICK, how=HOWS)
    def pass_held(self, held: int, how: str) -> None:
        self.nodes[0].forwards.append(Forward(held, how))

    @precondition(lambda self: self.nodes[0].forwards)
    @rule(index=PICK)
    def unpass_held(self, index: int) -> None:
        forwards = self.nodes[0].forwards
        del forwards[index % len(forwards)]

    # -- the tree

    def can_have_child(self, node: Node) -> bool:
        calls = sum(kind == "call" for kind, _ in node.steps)
        return node.depth < MAX_DEPTH and calls < MAX_FANOUT and len(node.steps) < MAX_STEPS

    def room_for_child(self) -> bool:
        return len(self.nodes) < MAX_NODES and any(map(self.can_have_child, self.nodes.values()))

    def room_for_update(self) -> bool:
        return any(len(node.steps) < MAX_STEPS for node in self.nodes.values())

    def pick(self, index: int, eligible: list[int]) -> int:
        return sorted(eligible)[index % len(eligible)]

    @precondition(room_for_child)
    @rule(parent=PICK, fn=FNS, position=PICK, forwards=FORWARDS, raises=RAISES)
    def add_child(
        self, parent: int, fn: str, position: int, forwards: list[Forward], raises: bool
    ) -> None:
        parent_id = self.pick(parent, [i for i, n in self.nodes.items() if self.can_have_child(n)])
        node = self.nodes[parent_id]
        child_id, self.next_id = self.next_id, self.next_id + 1
        forwards = [replace(forward) for forward in forwards]
        self.nodes[child_id] = Node(fn, node.depth + 1, parent_id, forwards, raises=raises)
        node.steps.insert(position % (len(node.steps) + 1), ("call", child_id))

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(node=PICK)
    def remove_child(self, node: int) -> None:
        child_id = self.pick(node, [i for i in self.nodes if i != 0])
        parent_id = self.nodes[child_id].parent
        assert parent_id is not None
        self.nodes[parent_id].steps.remove(("call", child_id))
        doomed = [child_id]
        while doomed:
            gone = self.nodes.pop(doomed.pop())
            doomed += [what for kind, what in gone.steps if kind == "call"]

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(node=PICK, forwards=FORWARDS)
    def reforward(self, node: int, forwards: list[Forward]) -> None:
        """Changes what a caller passes to one child (the child's own steps stay)."""
        child_id = self.pick(node, [i for i in self.nodes if i != 0])
        self.nodes[child_id].forwards = [replace(f) for f in forwards]

    @precondition(room_for_update)
    @rule(node=PICK, handle=PICK, kind=KINDS, position=PICK)
    def add_update(self, node: int, handle: int, kind: str, position: int) -> None:
        target = self.nodes[
            self.pick(node, [i for i, n in self.nodes.items() if len(n.steps) < MAX_STEPS])
        ]
        n, self.next_value = self.next_value, self.next_value + 1
        update = {
            "dict": {f"k{n}": n},  # a key of its own: merges
            "shared": {"shared": n},  # a key others use too: merges, the later wins
            "int": n,  # anything else replaces what was queued
            "str": f"v{n}",
            "list": [n, "x"],
            "none": None,  # replaces, and then nothing is sent
        }[kind]
        target.steps.insert(position % (len(target.steps) + 1), ("update", (handle, update)))

    @precondition(lambda self: any(k == "update" for n in self.nodes.values() for k, _ in n.steps))
    @rule(node=PICK, index=PICK)
    def remove_update(self, node: int, index: int) -> None:
        eligible = [i for i, n in self.nodes.items() if any(k == "update" for k, _ in n.steps)]
        target = self.nodes[self.pick(node, eligible)]
        updates = [step for step in target.steps if step[0] == "update"]
        target.steps.remove(updates[index % len(updates)])

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(node=PICK)
    def toggle_failure(self, node: int) -> None:
        target = self.nodes[self.pick(node, [i for i in self.nodes if i != 0])]
        target.raises = not target.raises

    @rule()
    def fail_the_next_call(self) -> None:
        self.nodes[0].raises = True  # until the invariant has made that call

    # -- running it

    def compile(self, node_id: int, slots: list[dict[str, Any]]) -> Plan:
        """The JSON plan of a node (and its subtree) for the slots its caller fills."""
        node = self.nodes[node_id]
        scopes = [None if slot["passive"] else slot["scope"] for slot in slots]
        live = [j for j, scope in enumerate(scopes) if scope is not None]
        steps: list[list[object]] = []
        for kind, what in node.steps:
            if kind == "update":
                if live:
                    handle, update = what
                    steps.append(["update", live[handle % len(live)], update])
                continue
            child_slots = slots_for(self.nodes[what].forwards, scopes, f"n{what}")
            steps.append(["call", self.compile(what, child_slots)])
        return {
            "id": f"n{node_id}",
            "fn": node.fn,
            "raise": node.raises,
            "slots": slots,
            "steps": steps,
        }

    def run(self, plan: Plan) -> list[str]:
        """Makes the call ``plan`` describes; what differs from the model (nothing: [])."""
        expected = model(plan)
        before = [len(record) for record in self.recorded]
        args, kwargs = pack(plan["slots"], self.held)
        client = self.clients[self.caller]
        future = client.aio.call_threadsafe(FUNCTIONS[plan["fn"]], (plan, *args), kwargs)
        result: object = None
        failed: str | None = None  # the node that failed, or the error
        try:
            result = future.result(TIMEOUT)
        except NodeFailed as exc:
            failed = exc.node
        except TimeoutError:
            raise AssertionError(f"no answer in {TIMEOUT} s to {json.dumps(plan)}") from None
        except Exception as exc:  # a node's own check failed, or worse
            failed = repr(exc)
        wanted: list[list[object]] = [[] for _ in self.held]
        for i in sorted({slot["h"] for slot in plan["slots"]}):  # each instance passed, once
            update = (
                expected.updates.get(key(self.held[i].scope), _NOTHING) if expected else _NOTHING
            )
            if update is not _NOTHING:
                wanted[i].append(update)
            self.expected[i] += wanted[i]
        got = [record[n:] for record, n in zip(self.recorded, before, strict=True)]
        problems = []
        if expected is None and failed != "n0":
            problems.append(f"the root should have failed; it gave {failed or result!r}")
        elif expected is not None and failed is not None:
            problems.append(f"the call failed: {failed}")
        elif expected is not None and result != expected.result:
            problems.append(f"the nodes saw {result!r}, not {expected.result!r}")
        if got != wanted:
            problems.append(f"the client's handlers got {got!r}, not {wanted!r}")
        return problems

    def smallest(self, plan: Plan) -> Plan:
        """A plan that still goes wrong, made smaller by one change at a time."""
        changed = True
        while changed:
            changed = False
            for candidate in simpler(plan):
                if self.run(candidate):
                    plan, changed = candidate, True
                    break
        return plan

    @invariant()
    def a_call_delivers_exactly_as_modelled(self) -> None:
        """Makes the call the tree now describes. Every node's handlers saw what the model
        says (the nodes return it); every client handler ran as the model says: at most
        once, and only for instances the calling client passed, with that full scope."""
        root = self.nodes[0]
        mine = [
            cap.scope if owner == self.caller else None
            for cap, owner in zip(self.held, self.owner, strict=True)
        ]
        plan = self.compile(0, slots_for(root.forwards, mine, None))
        problems = self.run(plan)
        if problems:
            smallest = self.smallest(plan)
            raise AssertionError(
                f"{'; '.join(problems)}\nplan: {json.dumps(plan)}\n"
                f"smallest plan that goes wrong: {json.dumps(smallest)}\n"
                f"it goes wrong so: {'; '.join(self.run(smallest))}"
            )
        assert self.recorded == self.expected  # over all the calls so far
        root.raises = False  # fail_the_next_call is done


# -- against a real server --------------------------------------------------------------------


def start_worker(url: str) -> subprocess.Popen[str]:
    return conftest.start_worker("tests.apps.cap_graph_worker", url, KEY)


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[Client, Client]]:
    """Two clients of one server, the first on its WebSocket and the second on its TCP
    port; the worker is on the TCP port too (so both ways of answering a call are used)."""
    with testing.serve("tests.apps.cap_graph", uplink_key=KEY, tcp_port=0) as url:
        assert url.tcp is not None
        worker = start_worker(url.tcp)
        try:
            with Client(url) as first, Client(url.tcp) as second:
                yield first, second
        finally:
            stop(worker)


def test_updates_reach_exactly_the_callers_that_passed_the_capability(
    clients: tuple[Client, Client],
) -> None:
    run_state_machine_as_test(lambda: CapabilityGraphs(clients), settings=SETTINGS)
