"""The sans-I/O protocol: frames <-> events. No asyncio, no sockets, no clock."""

from tether.protocol.connection import PROTOCOL_VERSION, Connection, Frame, Role, State
from tether.protocol.events import (
    Authenticated,
    AuthFailed,
    Call,
    Event,
    Failure,
    Hello,
    Register,
    Rejected,
    Response,
)

__all__ = [
    "PROTOCOL_VERSION",
    "AuthFailed",
    "Authenticated",
    "Call",
    "Connection",
    "Event",
    "Failure",
    "Frame",
    "Hello",
    "Register",
    "Rejected",
    "Response",
    "Role",
    "State",
]
