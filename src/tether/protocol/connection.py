"""The sans-I/O connection: frames in, events out; calls in, frames out.

The reading half is :class:`~tether.protocol.reading.Reader`; this module has the
handshake and the sending half.

One :class:`Connection` per WebSocket. It keeps the protocol's state (handshake, call ids,
media chunks in flight) and makes every protocol decision; transports only move frames and
the runtime only acts on events. Nothing here touches a socket, a loop or a clock.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Mapping

import orjson

from tether.codec import (
    Limits,
    PortableRegistry,
    all_plain,
    portable_registry,
)
from tether.codec.capability import Capability
from tether.codec.capability_wire import CapabilityWire
from tether.codec.flavors import Unjellyables, unjellyables
from tether.errors import (
    DeadReferenceError,
    LocalProtocolError,
    SerializationError,
)
from tether.protocol.caches import CacheTables, Observer
from tether.protocol.chunks import Partial
from tether.protocol.errors import error_fields
from tether.protocol.events import (
    Event,
)
from tether.protocol.names import MAX_ID_LENGTH, OBSERVE, PROTOCOL_VERSION, Frame, Role, State
from tether.protocol.reading import Reader
from tether.protocol.writing import json_text, without_gc, write_message

__all__ = ["Connection", "Role", "State"]


class Connection(Reader):
    """One side of one connection.

    Args:
        role: which side this is.
        registry: the portable classes that may be built from the wire.
        limits: bounds on every message, both ways.
        compact: write runs of portable objects as one ``objects`` entry (only for peers
            that speak ``tether.v1``; every peer's runs are read either way).
        capabilities: how this side writes and reads capabilities (signing on a server,
            holding on a client); None refuses them as unknown values.
        unjellyables: the allow-list Copyables and mirrors of Cacheables are built from.
    """

    def __init__(
        self,
        role: Role,
        *,
        registry: PortableRegistry = portable_registry,
        limits: Limits | None = None,
        compact: bool = False,
        capabilities: CapabilityWire | None = None,
        unjellyables: Unjellyables = unjellyables,
    ) -> None:
        self.role = role
        self.unjellyables = unjellyables
        self.compact = compact
        self.capabilities = capabilities
        self.registry = registry
        self.limits = limits or Limits()
        self.state = State.NEW
        self.caches = CacheTables(registry, unjellyables, self.limits.max_cacheables, self._send)
        """Cacheables this side sent, and mirrors of those it received."""
        self._out: list[Frame] = []
        self._writing = 0  # messages being written (user hooks run meanwhile)
        self._events: list[Event] = []
        self._pending_out: dict[str, str] = {}  # call id -> command, for calls made from here
        self._sent_caps: dict[str, list[Capability]] = {}  # call id -> capabilities sent in it
        self._abandoned: set[str] = set()
        self._incoming: dict[str, Partial] = {}
        self._chunk: tuple[Partial, str, bool] | None = None
        prefix = "server-" if role is Role.SERVER else ""
        self._id_prefix = prefix + os.urandom(5).hex()
        self._ids = itertools.count(1)

    # -- reading ------------------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """Returns and forgets the events of the frames received so far."""
        events, self._events = self._events, []
        return events

    def frames_to_send(self) -> list[Frame]:
        """Returns and forgets the frames to send, in order."""
        out, self._out = self._out, []
        return out

    @property
    def writing(self) -> bool:
        """True while a message is being written (user hooks may run meanwhile)."""
        return self._writing > 0

    @property
    def pending_calls(self) -> int:
        """How many calls made from here are still unanswered."""
        return len(self._pending_out)

    # -- handshake ----------------------------------------------------------------------

    def send_hello(self, key: str | None, **extra: object) -> None:
        """Client: sends the key (``{"key", "v"}``); the answer is an Authenticated event."""
        self._expect(Role.CLIENT, State.NEW)
        self._send({"key": key, "v": PROTOCOL_VERSION, **extra})
        self.state = State.AUTHENTICATING

    def accept(self, priv: str, info: Mapping[str, object], **extra: object) -> None:
        """Server: accepts the hello; ``priv`` is ``"uplink"`` (trusted) or ``"client"``."""
        self._expect(Role.SERVER, State.AUTHENTICATING)
        self._send({"auth": "OK", "priv": priv, "app-info": info, **extra})
        self.state = State.OPEN

    def reject(self, message: str) -> None:
        """Server: refuses the hello; the transport closes after sending this frame."""
        self._send({"error": message})
        self.state = State.CLOSED

    def send_register(self, name: str) -> None:
        """Client: offers a function under ``name``."""
        self._send({"type": "REGISTER", "name": name})

    # -- calls --------------------------------------------------------------------------

    def send_call(
        self,
        command: str,
        args: list[object] | tuple[object, ...],
        kwargs: dict[str, object],
        meta: Mapping[str, object] | None = None,
    ) -> str:
        """Queues a CALL and returns its id.

        Raises:
            SerializationError: an argument cannot be sent; nothing was queued.
        """
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot call {command!r}: connection is {self.state.value}")
        header: dict[str, object] = {"type": "CALL", "id": None, "command": command}
        if meta:
            header.update(meta)
        return self._send_request(header, args, kwargs, command)

    def send_response(
        self,
        call_id: str,
        value: object,
        meta: dict[str, object] | None = None,
        *,
        updates: dict[str, object] | None = None,
    ) -> None:
        """Queues the result of a call, with ``updates`` (scope key -> update, from
        :func:`~tether.codec.capability.collect_updates`) as its ``capUpdates``.

        Raises:
            SerializationError: the value or an update cannot be sent; nothing was
                queued, so send an error instead.
        """
        header: dict[str, object] = {"id": call_id}
        if meta:
            header.update(meta)
        values: dict[str, object] = {"response": value}
        if updates:
            values["capUpdates"] = updates
        try:
            self._send_values(header, values, call_id)
        except SerializationError as exc:
            raise SerializationError(f"cannot serialize return value: {exc}") from exc

    def send_push(self, key: str, update: object, shared: dict[bool, Frame] | None = None) -> None:
        """Server: queues a live update for the subscribed scope ``key`` (a ``PUSH``).

        ``shared`` lets one fan-out encode the update once: a frame that holds no
        capability (those are signed per connection) is kept there and reused by every
        connection of the same dialect.

        Raises:
            SerializationError: the update cannot be sent, or holds Media (pushes carry
                no media chunks).
        """
        self._expect(Role.SERVER, State.OPEN)
        if shared is not None:
            frame = shared.get(self.compact)
            if frame is not None:
                self._out.append(frame)
                return
        header: dict[str, object] = {"type": "PUSH", "key": key}
        found = self._send_values(header, {"update": update}, "", media=False)
        if shared is not None and not found and not self.caches.wrote:
            shared[self.compact] = self._out[-1]  # nothing in it is this connection's own

    def send_cache_message(
        self,
        observer: Observer,
        method: str,
        args: tuple[object, ...] | list[object],
        kwargs: dict[str, object],
    ) -> str:
        """Queues ``observe_<method>(*args, **kwargs)`` for ``observer``'s mirror (a
        ``CACHE_MESSAGE``, answered like a call) and returns its id.

        Raises:
            DeadReferenceError: the mirror was released, or the connection is closed.
            SerializationError: an argument cannot be sent, or ``method`` is not a name.
        """
        if self._writing:
            raise RuntimeError(
                "observer.call_remote while this connection writes a message (from"
                " get_state_to_cache_and_observe_for or __serialize__?): call it afterwards"
            )
        if self.state is not State.OPEN or not self.caches.is_exported(observer):
            raise DeadReferenceError(
                f"the mirror of {type(observer.cacheable).__name__} is gone"
                + (" (its connection closed)" if self.state is not State.OPEN else "")
            )
        if not (type(method) is str and method.isidentifier() and len(method) <= MAX_ID_LENGTH):
            raise SerializationError(f"observe method name must be an identifier, got {method!r}")
        header: dict[str, object] = {
            "type": "CACHE_MESSAGE",
            "id": None,
            "cache": observer.cache_id,
            "method": method,
        }
        return self._send_request(header, list(args), kwargs, OBSERVE + method, OBSERVE + method)

    def _send_request(
        self,
        header: dict[str, object],
        args: list[object] | tuple[object, ...],
        kwargs: dict[str, object],
        name: str,
        label: str | None = None,
    ) -> str:
        """Queues a request answered like a call (a CALL, a CACHE_MESSAGE) under a new id;
        ``label`` names it in an error (by default ``repr(name)``)."""
        call_id = header["id"] = f"{self._id_prefix}{next(self._ids)}"
        try:
            sent = self._send_values(header, {"args": args, "kwargs": kwargs}, call_id)
        except SerializationError as exc:
            label = repr(name) if label is None else label
            raise SerializationError(f"cannot serialize arguments to {label}: {exc}") from exc
        self._pending_out[call_id] = name
        if sent:
            self._sent_caps[call_id] = sent
        return call_id

    def send_error(
        self,
        call_id: str,
        error: BaseException,
        *,
        trace: list[object] | None = None,
        meta: dict[str, object] | None = None,
    ) -> None:
        """Queues an error reply: ``{"id", "error": {"type", "message", "trace"?}}``.

        A portable exception also carries its serialized self under ``error.value``, so
        the caller re-raises the same class with the same attributes.
        """
        fields = error_fields(error, self.registry)
        if trace is not None:
            fields["trace"] = trace
        header: dict[str, object] = {"id": call_id}
        if meta:
            header.update(meta)
        if type(error) in self.registry.by_class:
            try:
                self._send_values(header, {"error": {**fields, "value": error}}, call_id)
                return
            except SerializationError:
                pass  # fall back to type and message
        self._send({**header, "error": fields})

    def abandon(self, call_id: str) -> None:
        """Forgets a call made from here (it timed out); a late answer is then ignored."""
        self._sent_caps.pop(call_id, None)
        if self._pending_out.pop(call_id, None) is None:
            return
        partial = self._incoming.get(call_id)
        if partial is not None and not partial.is_call:
            partial.failed = True  # its answer is arriving: read the rest and drop it
        else:
            self._abandoned.add(call_id)

    # -- internals ----------------------------------------------------------------------

    def _expect(self, role: Role, state: State) -> None:
        if self.role is not role or self.state is not state:
            raise LocalProtocolError(
                f"not allowed for a {self.role.value} in state {self.state.value}"
            )

    def _send(self, message: dict[str, object]) -> None:
        self._out.append(orjson.dumps(message).decode())

    def _send_values(
        self,
        header: dict[str, object],
        values: dict[str, object],
        request_id: str,
        *,
        media: bool = True,
    ) -> list[Capability]:
        """Encodes and queues one message; returns the capabilities written into it.
        ``media=False``: a message that would carry media is refused."""
        if all_plain(values):  # the common small message: JSON carries it as it is
            header.update(values)
            header["objects"] = []
            self._out.append(json_text(header, self.limits))
            self.caches.written()  # (nothing: no Cacheable went out in it)
            return []
        found: list[Capability] = []
        wire = self.capabilities
        self._writing += 1
        try:
            try:
                frames = without_gc(  # see receive_frame
                    functools.partial(
                        write_message,
                        registry=self.registry,
                        limits=self.limits,
                        extra=None if wire is None else functools.partial(wire.encode, found),
                        compact=self.compact,
                        caches=self.caches,
                        media=media,
                    ),
                    header,
                    values,
                    request_id,
                )
            except BaseException:
                self.caches.unwritten()  # nothing of it is sent: its Cacheables are not out
                raise
            self.caches.written()
            self._out.extend(frames)
        except SerializationError:
            raise
        except Exception as exc:  # a hook (__serialize__, get_state_to_copy, ...) raised
            raise SerializationError(f"{type(exc).__name__} while writing it: {exc}") from exc
        finally:
            self._writing -= 1
        return found
