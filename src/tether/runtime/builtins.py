"""The connection's own requests: ``tether.private.*`` and Anvil's ``anvil.private.*``.

Live-update subscriptions, invalidation, a new session, background tasks, and the
origins an ``anvil-uplink`` script asks for. A name under these prefixes never reaches a
registered function; an unknown one is ``NoServerFunctionError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.codec.capability import Capability
from tether.errors import BackgroundTaskError, PermissionDenied, SerializationError
from tether.functions import missing_function
from tether.protocol import INVALIDATE, PRIVATE, RESET_SESSION, SUBSCRIBE, UNSUBSCRIBE, Call
from tether.protocol.names import TASK
from tether.runtime.dispatcher import invalidate_session
from tether.runtime.updates import hub

if TYPE_CHECKING:
    from tether.runtime.peer import Peer

__all__ = ["answer_builtin", "is_builtin"]

ANVIL_INVALIDATE = "anvil.private.invalidate_client_objects"  # what anvil-uplink calls
ANVIL_ORIGINS = {  # anvil.server.get_app_origin() / get_api_origin() in anvil-uplink
    "anvil.private.get_app_origin": "",
    "anvil.private.get_api_origin": "/_/api",
}


def is_builtin(command: str) -> bool:
    """Whether ``command`` is the connection's own request, not a function's name."""
    return command.startswith(PRIVATE) or command == ANVIL_INVALIDATE or command in ANVIL_ORIGINS


def answer_builtin(peer: Peer, call: Call) -> object:
    """What the server answers to one of the connection's own requests (under the peer's
    lock).

    Raises:
        PermissionDenied, SerializationError, NoServerFunctionError, ...: refused.
    """
    command = call.command
    if command == SUBSCRIBE:
        cap = call.args[0] if len(call.args) == 1 and not call.kwargs else None
        if type(cap) is not Capability:
            raise PermissionDenied("subscribe needs one Capability")
        if not cap.is_valid:
            raise PermissionDenied(f"capability {cap.scope!r} has been invalidated")
        if peer.dialect != "tether":
            raise PermissionDenied("live updates need a Tether client (/_/ws or TCP)")
        hub.subscribe(peer, cap._key)
        return None
    if command == UNSUBSCRIBE:
        key = call.args[0] if len(call.args) == 1 else None
        if type(key) is not str:
            raise SerializationError("unsubscribe needs the scope key")
        hub.unsubscribe(peer, key)
        return None
    if command in ANVIL_ORIGINS:
        origin = peer.dispatcher.options.origin or peer.origin
        if origin is None:
            raise RuntimeError("the app's origin is not known here: set --origin")
        return origin + ANVIL_ORIGINS[command]
    if command in (INVALIDATE, ANVIL_INVALIDATE):
        invalidate_session(peer.cap_session)
        return None
    if command == TASK:
        return _task(peer, call.args)
    if command == RESET_SESSION and peer.slot is not None:
        slot = peer.slot
        on_reset, slot.on_reset = slot.on_reset, None
        try:
            slot.reset()
        finally:
            slot.on_reset = on_reset
        peer._bind_session(slot)
        return None if peer.browser else slot.token
    raise missing_function(command)


def _task(peer: Peer, args: list[object]) -> object:
    """``TASK(op, ...)``: a question about tasks, or a task's process reporting."""
    if not args or type(args[0]) is not str:
        raise BackgroundTaskError("a background task request needs an operation")
    op, rest = args[0], args[1:]
    tasks = peer.dispatcher.tasks
    if op in ("started", "report", "finished"):
        if peer.task_id is None or not rest or rest[0] != peer.task_id:
            raise PermissionDenied("only a task's own process reports on it")
        if op == "started":
            return tasks.started(peer.task_id)
        if op == "report" and len(rest) == 2:
            tasks.report_state(peer.task_id, rest[1])
            return None
        if op == "finished" and len(rest) == 4 and rest[1] in ("completed", "failed"):
            tasks.finished(peer.task_id, str(rest[1]), rest[2], rest[3])
            return None
        raise BackgroundTaskError(f"bad background task report {op!r}")
    if op == "publish":
        if not peer.trusted or len(rest) != 2 or type(rest[0]) is not str:
            raise PermissionDenied("only trusted peers publish updates by scope")
        hub.publish(rest[0], rest[1])
        return None
    return tasks.ask(op, tuple(rest), trusted=peer.trusted)
