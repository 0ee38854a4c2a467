"""What a :class:`~tether.protocol.Connection` reports after it reads frames."""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.codec import GlobalData

__all__ = [
    "AuthFailed",
    "Authenticated",
    "Call",
    "Event",
    "Failure",
    "Hello",
    "Register",
    "Rejected",
    "Response",
]


@dataclass(frozen=True, slots=True)
class Hello:
    """Server side: the peer's first frame, ``{"key", "v"}``. Answer with accept or reject."""

    key: str | None
    version: int


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


@dataclass(frozen=True, slots=True)
class Failure:
    """The error of a call made from here, as the exception to raise."""

    id: str
    error: BaseException
    meta: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


Event = Hello | Authenticated | AuthFailed | Register | Call | Rejected | Response | Failure
