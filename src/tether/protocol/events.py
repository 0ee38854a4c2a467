"""What a :class:`~tether.protocol.Connection` reports after it reads frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tether.codec import GlobalData
from tether.codec.capability import Capability

__all__ = [
    "AuthFailed",
    "Authenticated",
    "CacheMessage",
    "Call",
    "Event",
    "Failure",
    "Hello",
    "Push",
    "Register",
    "Rejected",
    "Response",
]


@dataclass(frozen=True, slots=True)
class Hello:
    """Server side: the peer's first frame, ``{"key", "v"}``. Answer with accept or reject."""

    key: str | None
    version: int
    extra: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    """The frame's other fields (a Tether client's ``session`` token)."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Client side: the server accepted the key. ``extra`` holds the reply's other fields
    (Tether servers send their ``limits``)."""

    priv: str
    info: dict[str, object]
    extra: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """Client side: the server refused the connection (an ``{"error"}`` with no id)."""

    message: str


@dataclass(frozen=True, slots=True)
class Register:
    """Server side: the peer offers a function under ``name`` (a regular expression)."""

    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """A call to run here. ``meta`` holds the other fields of the CALL frame."""

    id: str
    command: str
    args: list[object]
    kwargs: dict[str, object]
    global_data: GlobalData = field(compare=False, repr=False)
    meta: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    capabilities: list[Capability] = field(default_factory=list, compare=False, repr=False)
    """The capabilities that arrived in the arguments (their updates go back in the reply)."""


@dataclass(frozen=True, slots=True)
class CacheMessage:
    """An owner's ``observer.call_remote``: run ``method(target, *args, **kwargs)`` (an
    ``observe_*`` method of the mirror ``target``) and answer ``id`` like a call."""

    id: str
    target: object
    method: Callable[..., object]
    args: list[object]
    kwargs: dict[str, object]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A call the connection answered with an error itself (it could not be decoded)."""

    id: str
    command: str
    error: Exception


@dataclass(frozen=True, slots=True)
class Response:
    """The result of a call made from here."""

    id: str
    value: object
    meta: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    capabilities: list[Capability] = field(default_factory=list, compare=False, repr=False)
    """The capabilities this side sent in the call: apply ``updates`` to them."""
    updates: dict[str, object] | None = field(default=None, compare=False, repr=False)
    """The reply's ``capUpdates``: scope key -> update."""


@dataclass(frozen=True, slots=True)
class Failure:
    """The error of a call made from here, as the exception to raise."""

    id: str
    error: BaseException
    meta: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    capabilities: list[Capability] = field(default_factory=list, compare=False, repr=False)
    updates: dict[str, object] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Push:
    """Client side: a live update for a scope this connection subscribed to; ``error``
    when it could not be read (the update is then None)."""

    key: str
    update: object
    error: Exception | None = None


Event = (
    Hello
    | Authenticated
    | AuthFailed
    | Register
    | Call
    | CacheMessage
    | Rejected
    | Response
    | Failure
    | Push
)
