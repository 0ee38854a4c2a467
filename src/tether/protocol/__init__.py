"""The sans-I/O protocol: frames <-> events. No asyncio, no sockets, no clock."""

from tether.protocol.connection import (
    FRAME_SLACK,
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    Connection,
    Frame,
    Role,
    State,
)
from tether.protocol.events import (
    Authenticated,
    AuthFailed,
    Call,
    Event,
    Failure,
    Hello,
    Push,
    Register,
    Rejected,
    Response,
)

__all__ = [
    "FRAME_SLACK",
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "AuthFailed",
    "Authenticated",
    "Call",
    "Connection",
    "Event",
    "Failure",
    "Frame",
    "Hello",
    "Push",
    "Register",
    "Rejected",
    "Response",
    "Role",
    "State",
]
