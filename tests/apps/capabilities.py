"""A test app for capabilities: minting, checking, updates, revocation, pushes."""

from __future__ import annotations

import threading

import tests.apps.echo  # noqa: F401 - the uplink worker's sync point calls echo
from tether import server


@server.portable_class("tests.Holder")
class Holder:
    """A portable object carrying a capability (updates must find it inside)."""

    def __init__(self, cap: server.Capability) -> None:
        self.cap = cap


@server.callable
def cap_mint(scope: list[object]) -> server.Capability:
    return server.Capability(scope)


@server.callable
def cap_check(cap: object, pattern: list[object]) -> list[object]:
    return server.unwrap_capability(
        cap, [server.Capability.ANY if p == "*" else p for p in pattern]
    )


@server.callable
def cap_scope(cap: server.Capability) -> list[object]:
    return cap.scope


@server.callable
def cap_echo(value: object) -> object:
    return value


@server.callable
def cap_valid(cap: server.Capability) -> bool:
    return cap.is_valid


@server.callable
def cap_update(cap: server.Capability, *updates: object) -> None:
    for update in updates:
        cap.send_update(update)


@server.callable
def cap_update_holder(holder: Holder, update: object) -> None:
    holder.cap.send_update(update)


@server.callable
async def cap_aupdate(cap: server.Capability, update: object) -> None:
    cap.send_update(update)


@server.callable
def cap_nested(cap: server.Capability, update: object, depth: int = 2) -> None:
    """Forwards ``cap`` through ``depth`` nested calls; the innermost sends the update."""
    if depth == 0:
        cap.send_update(update)
    else:
        server.call("cap_nested", cap, update, depth - 1)


@server.callable
async def cap_anested(cap: server.Capability, update: object) -> None:
    await server.acall("cap_update", cap, update)


@server.callable
def cap_nested_narrowed(cap: server.Capability, update: object) -> None:
    """Passes on a narrowed copy: its update does not reach the broader capability."""
    server.call("cap_update", cap.narrow(["sub"]), update)


@server.callable
def cap_via_peer(cap: server.Capability, update: object) -> None:
    """Calls a function registered by a trusted client, which sends the update."""
    server.call("peer_cap_update", cap, update)


@server.callable
def cap_fail_after_update(cap: server.Capability) -> None:
    cap.send_update({"lost": True})
    raise ValueError("failed after sending an update")


@server.callable
def cap_getter(cap: server.Capability) -> None:
    cap.set_update_handler(lambda update: None, lambda: {"from": "get_update"})


@server.callable
def cap_revoke() -> None:
    server.invalidate_client_objects()


@server.callable
def cap_publish(scope: list[object], update: object) -> None:
    """Server code sends an update on a capability nobody passed in: pushes only."""
    server.Capability(scope).send_update(update)


@server.callable
def cap_publish_later(scope: list[object], update: object, delay: float) -> None:
    """A timer thread sends the update after the call returned."""
    threading.Timer(delay, server.Capability(scope).send_update, [update]).start()


@server.callable
def cap_unsendable_update(cap: server.Capability) -> None:
    cap.send_update({"bad": object()})


@server.callable
def cap_bad_getter(cap: server.Capability) -> None:
    def broken() -> object:
        raise LookupError("get_update failed")

    cap.set_update_handler(lambda update: None, broken)


@server.callable
def cap_via_peer_with_broken_handler(cap: server.Capability, update: object) -> str:
    """The worker's update comes back through the nested call to this handler."""

    def broken(update: object) -> None:
        raise RuntimeError("server-side handler bug")

    cap.set_update_handler(broken)
    server.call("peer_cap_update", cap, update)
    return "done"
