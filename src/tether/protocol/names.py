"""The protocol's names: versions, frame sizes, and the connection's own calls."""

from __future__ import annotations

import enum
import hashlib

__all__ = [
    "ECHO",
    "FRAME_SLACK",
    "INVALIDATE",
    "MAX_ID_LENGTH",
    "OBSERVE",
    "PRIVATE",
    "PROTOCOL_VERSION",
    "RESET_SESSION",
    "SESSION_PUSH",
    "SUBPROTOCOL",
    "SUBSCRIBE",
    "TASK",
    "UNSUBSCRIBE",
    "Frame",
    "Role",
    "State",
    "session_id",
]

PROTOCOL_VERSION = 8
SUBPROTOCOL = "tether.v1"
"""The WebSocket subprotocol of Tether's own peers (they may receive compact object runs)."""
FRAME_SLACK = 64 * 1024
"""Room for WebSocket framing over ``max_frame_bytes`` when sizing a transport's limit."""

Frame = str | bytes
"""A text frame (one JSON message) or a binary frame (one media chunk)."""

ECHO = "anvil.private.echo"
"""Anvil's keep-alive: answered by the connection itself."""
PRIVATE = "tether.private."
"""Calls under this prefix are the connection's own requests, never a registered function."""
SUBSCRIBE = PRIVATE + "subscribe"
UNSUBSCRIBE = PRIVATE + "unsubscribe"
INVALIDATE = PRIVATE + "invalidate_client_objects"
RESET_SESSION = PRIVATE + "reset_session"
"""Starts a fresh session for this connection; answers the new session token."""
TASK = PRIVATE + "task"
"""Background tasks: ``TASK(op, *args)`` launches, reads or kills a task; a task's own
process also fetches its arguments, reports its state and result, and publishes updates."""
SESSION_PUSH = PRIVATE + "session"
"""The key of a PUSH that carries this connection's new session token (after the
server's ``reset_session()``): the client presents it when it reconnects."""


def session_id(token: str) -> str:
    """The public id of the session a token opens (``get_session_id()``): a hash, so
    showing the id never gives away the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


MAX_ID_LENGTH = 128
"""Longest call id, and longest observe_* method name, a peer may send."""
OBSERVE = "observe_"
"""The prefix of the only methods a ``CACHE_MESSAGE`` can reach on a mirror."""


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    NEW = "new"  # client: hello not sent yet; server: waiting for the hello
    AUTHENTICATING = "authenticating"  # hello sent (client) or received (server), no answer yet
    OPEN = "open"
    CLOSED = "closed"
