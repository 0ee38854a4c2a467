"""The sans-I/O connection: frames in, events out; calls in, frames out.

One :class:`Connection` per WebSocket. It keeps the protocol's state (handshake, call ids,
media chunks in flight) and makes every protocol decision; transports only move frames and
the runtime only acts on events. Nothing here touches a socket, a loop or a clock.
"""

from __future__ import annotations

import enum
import functools
import gc
import itertools
import os
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tether.codec import (
    BlobMedia,
    GlobalData,
    Limits,
    Media,
    PortableRegistry,
    decode_values,
    encode_values,
    media_ids,
    portable_registry,
)
from tether.codec.capability import Capability
from tether.codec.capability_wire import CapabilityWire
from tether.codec.flavors import Unjellyables, unjellyables
from tether.errors import (
    DeadReferenceError,
    FrameTooLarge,
    LocalProtocolError,
    NoServerFunctionError,
    PermissionDenied,
    RemoteProtocolError,
    SerializationError,
)
from tether.protocol.caches import CacheTables, Observer
from tether.protocol.chunks import Partial, media_frames, next_chunk
from tether.protocol.errors import error_fields, error_from_wire
from tether.protocol.events import (
    Authenticated,
    AuthFailed,
    CacheMessage,
    Call,
    Event,
    Failure,
    Hello,
    Push,
    Register,
    Rejected,
    Response,
)
from tether.protocol.names import (
    ECHO,
    PROTOCOL_VERSION,
    Frame,
)

__all__ = ["Connection", "Role", "State"]

MAX_ID_LENGTH = 128
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


class Connection:
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
        call_id = f"{self._id_prefix}{next(self._ids)}"
        header: dict[str, object] = {"type": "CALL", "id": call_id, "command": command}
        if meta:
            header.update(meta)
        try:
            sent = self._send_values(header, {"args": args, "kwargs": kwargs}, call_id)
        except SerializationError as exc:
            raise SerializationError(f"cannot serialize arguments to {command!r}: {exc}") from exc
        self._pending_out[call_id] = command
        if sent:
            self._sent_caps[call_id] = sent
        return call_id

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
        call_id = f"{self._id_prefix}{next(self._ids)}"
        header: dict[str, object] = {
            "type": "CACHE_MESSAGE",
            "id": call_id,
            "cache": observer.cache_id,
            "method": method,
        }
        try:
            sent = self._send_values(header, {"args": list(args), "kwargs": kwargs}, call_id)
        except SerializationError as exc:
            raise SerializationError(
                f"cannot serialize arguments to {OBSERVE}{method}: {exc}"
            ) from exc
        self._pending_out[call_id] = OBSERVE + method
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

    # -- frames in ----------------------------------------------------------------------

    def receive_frame(self, frame: Frame) -> None:
        """Reads one frame; then call :meth:`events_received` and :meth:`frames_to_send`.

        The cyclic garbage collector is paused while the frame is decoded: a decoded tree
        and the objects built from it hold no cycles, and an object-heavy message would
        otherwise set off collections that walk every object of the process.

        Raises:
            RemoteProtocolError: the peer broke the protocol; close this connection.
        """
        _without_gc(self._receive_frame, frame)

    def _receive_frame(self, frame: Frame) -> None:
        if self.state is State.CLOSED:
            return
        if isinstance(frame, bytes):
            self._receive_chunk(frame)
            return
        if self._chunk is not None:
            raise RemoteProtocolError("expected a binary media chunk after CHUNK_HEADER")
        limit = self.limits.max_frame_bytes
        if len(frame) * 4 > limit:  # UTF-8 takes at most 4 bytes a character
            size = len(frame.encode())
            if size > limit:
                raise FrameTooLarge(f"frame of {size} bytes is over the limit of {limit}")
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError(f"frame is not valid JSON: {exc}") from None
        if type(message) is not dict:
            raise RemoteProtocolError("frame is not a JSON object")
        kind = message.get("type")
        if kind == "CALL":
            self._require_open("CALL")
            self._receive_call(message)
        elif kind is None and "id" in message and ("response" in message or "error" in message):
            self._require_open("response")
            self._receive_answer(message)
        elif kind == "CHUNK_HEADER":
            self._receive_chunk_header(message)
        elif kind == "CACHE_MESSAGE":
            self._require_open("CACHE_MESSAGE")
            self._receive_cache_message(message)
        elif kind == "DECACHE":
            self._require_open("DECACHE")
            self.caches.receive_decache(message)
        elif kind == "UNCACHE":
            self._require_open("UNCACHE")
            self.caches.receive_uncache(message)
        elif kind == "PUSH" and self.role is Role.CLIENT:
            self._require_open("PUSH")
            self._receive_push(message)
        elif kind == "REGISTER" and self.role is Role.SERVER:
            if self.state not in (State.AUTHENTICATING, State.OPEN):
                raise RemoteProtocolError("REGISTER before the key")
            name = message.get("name")
            if type(name) is not str or not name:
                raise RemoteProtocolError("REGISTER needs a non-empty name")
            self._events.append(Register(name))
        elif kind is None and self.role is Role.SERVER and self.state is State.NEW:
            key = message.get("key")
            version = message.get("v", 0)
            if (key is not None and type(key) is not str) or type(version) is not int:
                raise RemoteProtocolError("first frame must be {'key': str, 'v': int}")
            self.state = State.AUTHENTICATING
            extra = {k: v for k, v in message.items() if k not in ("key", "v")}
            self._events.append(Hello(key, version, extra))
        elif kind is None and self.role is Role.CLIENT and "auth" in message:
            if self.state is not State.AUTHENTICATING:
                raise RemoteProtocolError("unexpected auth reply")
            self.state = State.OPEN
            info = message.get("app-info")
            extra = {k: v for k, v in message.items() if k not in ("auth", "priv", "app-info")}
            self._events.append(
                Authenticated(str(message.get("priv")), info if type(info) is dict else {}, extra)
            )
        elif kind is None and self.role is Role.CLIENT and "error" in message:
            self.state = State.CLOSED
            self._events.append(AuthFailed(str(message["error"])))
        elif kind is None and "output" in message:
            pass  # server output for an Anvil console: nothing to do in Tether
        else:
            raise RemoteProtocolError(f"unknown message type {kind!r}")

    def receive_close(self) -> list[str]:
        """The transport closed. Returns the ids of calls made from here left unanswered."""
        self.state = State.CLOSED
        pending = list(self._pending_out)
        self._pending_out.clear()
        self._sent_caps.clear()
        self._incoming.clear()
        self._chunk = None
        self.caches.close()
        return pending

    # -- internals ----------------------------------------------------------------------

    def _expect(self, role: Role, state: State) -> None:
        if self.role is not role or self.state is not state:
            raise LocalProtocolError(
                f"not allowed for a {self.role.value} in state {self.state.value}"
            )

    def _require_open(self, what: str) -> None:
        if self.state is not State.OPEN:
            raise RemoteProtocolError(f"{what} before authentication")

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
        found: list[Capability] = []
        self._writing += 1
        try:
            try:
                _without_gc(self._encode_values, header, values, request_id, found, media)
            except BaseException:
                self.caches.unwritten()  # nothing of it is sent: its Cacheables are not out
                raise
            self.caches.written()
        except SerializationError:
            raise
        except Exception as exc:  # a hook (__serialize__, get_state_to_copy, ...) raised
            raise SerializationError(f"{type(exc).__name__} while writing it: {exc}") from exc
        finally:
            self._writing -= 1
        return found

    def _decoders(self, found: list[Capability]) -> dict[str, Any] | None:
        wire = self.capabilities
        return None if wire is None else {"Capability": functools.partial(wire.decode, found)}

    def _encode_values(
        self,
        header: dict[str, object],
        values: dict[str, object],
        request_id: str,
        found: list[Capability],
        media: bool,
    ) -> None:
        wire = self.capabilities
        extra = None if wire is None else functools.partial(wire.encode, found)
        encoded = encode_values(
            values, self.registry, self.limits, extra, compact=self.compact, caches=self.caches
        )
        if encoded.media and not media:
            raise SerializationError("an update with Media cannot be pushed (send a URL or id)")
        header.update(encoded.values)
        header["objects"] = encoded.objects
        if encoded.vt_global is not None:
            header["vt_global"] = encoded.vt_global
        try:
            text = orjson.dumps(header)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise SerializationError(str(exc)) from None
        if len(text) > self.limits.max_frame_bytes:
            raise SerializationError(
                f"message of {len(text)} bytes is over the frame limit of"
                f" {self.limits.max_frame_bytes} bytes (send large data as Media)"
            )
        frames = media_frames(encoded.media, request_id, self.limits.max_media_bytes)
        self._out.append(text.decode())
        self._out.extend(frames)

    def _decode(
        self,
        message: dict[str, object],
        keys: tuple[str, ...],
        media: dict[str, Media] | None,
        found: list[Capability],
    ) -> GlobalData:
        """Decodes a message's values; whatever fails, its Cacheable references are
        accounted for (released at once when nothing holds them)."""
        objects = message.get("objects")
        if (objects is None or objects == []) and message.get("vt_global") is None:
            return GlobalData()  # plain JSON: nothing to build
        failed = True
        try:
            global_data = decode_values(
                message,
                keys,
                self.registry,
                self.limits,
                media,
                self._decoders(found),
                unjellyables=self.unjellyables,
                caches=self.caches,
            )
            failed = False
        finally:
            self.caches.read_done(message.get("objects"), failed)
        return global_data

    def _receive_cache_message(self, message: dict[str, object]) -> None:
        call_id = message.get("id")
        method = message.get("method")
        if type(call_id) is not str or not 0 < len(call_id) <= MAX_ID_LENGTH:
            raise RemoteProtocolError("CACHE_MESSAGE needs a string id")
        if not (type(method) is str and method.isidentifier() and len(method) <= MAX_ID_LENGTH):
            raise RemoteProtocolError("CACHE_MESSAGE needs a method name")
        self.caches.target(message.get("cache"))  # an id never given closes the connection
        message["command"] = OBSERVE + method
        self._receive_call(message)

    def _receive_call(self, message: dict[str, object]) -> None:
        call_id = message.get("id")
        command = message.get("command")
        if type(call_id) is not str or not 0 < len(call_id) <= MAX_ID_LENGTH:
            raise RemoteProtocolError("CALL needs a string id")
        if type(command) is not str:
            raise RemoteProtocolError("CALL needs a string command")
        if type(message.setdefault("args", [])) is not list:
            raise RemoteProtocolError("CALL args must be a list")
        if type(message.setdefault("kwargs", {})) is not dict:
            raise RemoteProtocolError("CALL kwargs must be a dict")
        self._hold_or_finish(call_id, message, is_call=True)

    def _receive_answer(self, message: dict[str, object]) -> None:
        call_id = message["id"]
        if type(call_id) is str and call_id in self._abandoned:
            # A late answer to a call given up on: read its media, if any, and drop it all.
            self._abandoned.discard(call_id)
            self._hold_or_finish(call_id, message, is_call=False, drop=True)
            return
        if type(call_id) is not str or call_id not in self._pending_out:
            raise RemoteProtocolError(f"answer to unknown call id {str(call_id)[:MAX_ID_LENGTH]!r}")
        self._hold_or_finish(call_id, message, is_call=False)

    def _hold_or_finish(
        self, msg_id: str, message: dict[str, object], is_call: bool, drop: bool = False
    ) -> None:
        if msg_id in self._incoming:
            raise RemoteProtocolError(f"duplicate message id {msg_id!r}")
        try:
            ids = media_ids(message.get("objects"))
        except SerializationError as exc:
            self.caches.read_done(message.get("objects"), failed=True)
            if not drop:
                self._fail(msg_id, message, is_call, exc)
            return
        if not ids:
            if drop:
                self.caches.read_done(message.get("objects"), failed=True)
            else:
                self._finish(msg_id, message, is_call, None)
            return
        self._incoming[msg_id] = Partial(
            message, is_call, {i: bytearray() for i in ids}, dict.fromkeys(ids, 0), failed=drop
        )

    def _finish(
        self, msg_id: str, message: dict[str, object], is_call: bool, media: dict[str, Media] | None
    ) -> None:
        found: list[Capability] = []
        if is_call:
            command = str(message["command"])
            try:
                global_data = self._decode(message, ("args", "kwargs"), media, found)
            except (SerializationError, PermissionDenied) as exc:
                self._fail(msg_id, message, True, exc)
                return
            args = message["args"]
            kwargs = message["kwargs"]
            if type(args) is not list or type(kwargs) is not dict:
                error = SerializationError("an objects entry replaced the args list or kwargs dict")
                self._fail(msg_id, message, True, error)
                return
            if command == ECHO:
                self.send_response(msg_id, args[0] if args else None)
                return
            if message.get("type") == "CACHE_MESSAGE":
                self._cache_message(msg_id, message, args, kwargs)
                return
            self._events.append(Call(msg_id, command, args, kwargs, global_data, message, found))
            return
        self._pending_out.pop(msg_id, None)
        sent = self._sent_caps.pop(msg_id, [])
        try:
            if "error" in message:
                self._decode(message, ("error",), media, found)
                raised = error_from_wire(message["error"], self.registry)
                self._events.append(Failure(msg_id, raised, message, sent))
            else:
                self._decode(message, ("response", "capUpdates"), media, found)
                updates = message.get("capUpdates")
                self._events.append(
                    Response(
                        msg_id,
                        message["response"],
                        message,
                        sent,
                        updates if type(updates) is dict else None,
                    )
                )
        except (SerializationError, PermissionDenied) as exc:
            self._events.append(Failure(msg_id, exc, message, sent))

    def _receive_push(self, message: dict[str, object]) -> None:
        key = message.get("key")
        if type(key) is not str:
            raise RemoteProtocolError("PUSH needs a string key")
        if "update" not in message:
            raise RemoteProtocolError("PUSH needs an update")
        try:
            has_media = bool(media_ids(message.get("objects")))
        except SerializationError as exc:
            raise RemoteProtocolError(f"bad PUSH: {exc}") from None
        if has_media:
            raise RemoteProtocolError("PUSH cannot carry media")
        try:
            self._decode(message, ("update",), None, [])
        except (SerializationError, PermissionDenied) as exc:
            self._events.append(Push(key, None, exc))
            return
        self._events.append(Push(key, message["update"]))

    def _cache_message(
        self, msg_id: str, message: dict[str, object], args: list[object], kwargs: dict[str, object]
    ) -> None:
        """A ``CACHE_MESSAGE`` whose arguments arrived: find the mirror and its method."""
        target = self.caches.target(message.get("cache"))
        name = str(message["command"])
        if target is None:
            self.send_error(msg_id, DeadReferenceError("that mirror could not be built here"))
            return
        method = getattr(type(target), name, None)
        if not callable(method):
            self.send_error(
                msg_id, NoServerFunctionError(f"{type(target).__name__} has no method {name!r}")
            )
            return
        self._events.append(CacheMessage(msg_id, target, method, args, kwargs))

    def _fail(
        self,
        msg_id: str,
        message: dict[str, object],
        is_call: bool,
        exc: SerializationError | PermissionDenied,
    ) -> None:
        if is_call:
            command = str(message.get("command"))
            error = type(exc)(f"cannot receive arguments of {command!r}: {exc}")
            self.send_error(msg_id, error)
            self._events.append(Rejected(msg_id, command, error))
        else:
            self._pending_out.pop(msg_id, None)
            self._events.append(Failure(msg_id, exc, message, self._sent_caps.pop(msg_id, [])))

    def _receive_chunk_header(self, message: dict[str, object]) -> None:
        self._chunk = next_chunk(message, self._incoming, MAX_ID_LENGTH)

    def _receive_chunk(self, data: bytes) -> None:
        if self._chunk is None:
            raise RemoteProtocolError("binary frame without a CHUNK_HEADER")
        partial, media_id, last = self._chunk
        self._chunk = None
        if len(data) > self.limits.max_frame_bytes:
            raise FrameTooLarge("media chunk over the frame limit")
        msg_id = str(partial.message["id"])
        partial.received += len(data)
        if not partial.failed:
            if partial.received > self.limits.max_media_bytes:
                partial.failed = True
                error = SerializationError(
                    f"media in one message add up to more than {self.limits.max_media_bytes}"
                    " bytes (limit max_media_bytes)"
                )
                self._fail(msg_id, partial.message, partial.is_call, error)
            else:
                partial.waiting[media_id] += data
        if last:
            buffer = partial.waiting.pop(media_id)
            partial.next_index.pop(media_id)
            partial.done[media_id] = BlobMedia("application/octet-stream", bytes(buffer))
            if not partial.next_index:
                del self._incoming[msg_id]
                if partial.failed:  # dropped unread: release the Cacheables it carried
                    self.caches.read_done(partial.message.get("objects"), failed=True)
                else:
                    self._finish(msg_id, partial.message, partial.is_call, partial.done)


def _without_gc(work: Callable[..., None], *args: object) -> None:
    """Runs ``work`` with the cyclic collector paused, if it was running."""
    if not gc.isenabled():
        work(*args)
        return
    gc.disable()
    try:
        work(*args)
    finally:
        gc.enable()
