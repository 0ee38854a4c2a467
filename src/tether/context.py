"""The call context: who is calling, from where. Set per call in a contextvar."""

from __future__ import annotations

import contextvars
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Protocol

from tether.codec.capability_wire import CapabilitySession

__all__ = ["CallContext", "ClientInfo", "Location", "Perspective", "StackFrame"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a client is, from the server's GeoIP database (any field may be None)."""

    city: str | None = None
    subdivision: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    country_code: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where the call came from: ``type`` is browser, uplink, http or background_task."""

    type: str
    ip: str | None = None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class StackFrame:
    """The immediate caller: ``type`` and whether it is trusted."""

    type: str
    is_trusted: bool


@dataclass(frozen=True, slots=True, eq=False)
class Perspective:
    """Whom a Cacheable is observed for: the peer at the far end of one connection.

    One object per connection (equal only to itself), handed to
    ``get_state_to_cache_and_observe_for`` and again to ``stopped_observing``.

    Attributes:
        client: the peer (on a server: the client's ``ClientInfo``; in a client: the
            server, ``ClientInfo("server")``).
        is_trusted: whether the peer connected with the uplink key (in a client: True).
        session_id: the session of the connection when it was accepted (as
            ``server.get_session_id()``), or None.
    """

    client: ClientInfo
    is_trusted: bool
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallContext:
    """``server.context``: the running call's context."""

    type: str
    client: ClientInfo
    remote_caller: StackFrame | None
    background_task_id: str | None = None


class Session(Protocol):
    """What a call can do with its session (``tether.runtime.sessions.CallSession``)."""

    @property
    def id(self) -> str: ...

    def view(self) -> MutableMapping[str, object]: ...

    def reset(self) -> None: ...

    def save_blocking(self) -> None: ...

    async def save(self) -> None: ...


class Caller(Protocol):
    """Something that can run ``server.call`` for the code running in a call."""

    def call(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object: ...

    async def acall(
        self, name: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object: ...


@dataclass(slots=True)
class CallState:
    """What the code of one call can reach: its context and where nested calls go."""

    context: CallContext
    caller: Caller
    extra: dict[str, object] = field(default_factory=dict)
    cap_session: CapabilitySession | None = None
    """Whom capabilities are signed for in this call (the calling client's session)."""
    session: Session | None = None
    """The calling client's session (shared with the nested calls)."""
    origin: str | None = None
    """The public origin the client reached (``https://app.example.com``), when known."""
    request: object = None
    """``server.request``: the ``HttpRequest`` of an HTTP endpoint's call (not nested)."""


current_call: contextvars.ContextVar[CallState | None] = contextvars.ContextVar(
    "tether_current_call", default=None
)


call_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "tether_call_timeout", default=None
)
"""Seconds the calls made here may take (``with server.call_timeout(s)``); None: the
client's default."""
