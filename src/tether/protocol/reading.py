"""The sans-I/O connection's reading half: frames in, events out.

:class:`Reader` turns received frames into events (calls, answers, pushes, Cacheable
messages), checking every protocol rule on the way; :class:`~tether.protocol.Connection`
adds the handshake and the sending half. Nothing here touches a socket, a loop or a clock.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson

from tether.codec import (
    BlobMedia,
    GlobalData,
    Limits,
    Media,
    PortableRegistry,
    decode_values,
    media_ids,
)
from tether.codec.capability import Capability
from tether.codec.capability_wire import CapabilityWire
from tether.codec.flavors import Unjellyables
from tether.errors import (
    DeadReferenceError,
    FrameTooLarge,
    NoServerFunctionError,
    PermissionDenied,
    RemoteProtocolError,
    SerializationError,
)
from tether.protocol.caches import CacheTables
from tether.protocol.chunks import Partial, next_chunk
from tether.protocol.errors import error_from_wire
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
from tether.protocol.names import ECHO, MAX_ID_LENGTH, OBSERVE, Frame, Role, State
from tether.protocol.writing import without_gc

__all__ = ["SMALL_FRAME", "Reader"]

SMALL_FRAME = 4096
"""Frames up to this many characters are decoded without pausing the garbage collector."""


class Reader:
    """Frames in, events out, for :class:`~tether.protocol.Connection` (which sets
    everything declared here)."""

    role: Role
    state: State
    limits: Limits
    registry: PortableRegistry
    capabilities: CapabilityWire | None
    unjellyables: Unjellyables
    caches: CacheTables
    _events: list[Event]
    _pending_out: dict[str, str]
    _sent_caps: dict[str, list[Capability]]
    _abandoned: set[str]
    _incoming: dict[str, Partial]
    _chunk: tuple[Partial, str, bool] | None
    send_response: Callable[..., None]
    send_error: Callable[..., None]

    # -- frames in ----------------------------------------------------------------------

    def receive_frame(self, frame: Frame) -> None:
        """Reads one frame; then call :meth:`events_received` and :meth:`frames_to_send`.

        The cyclic garbage collector is paused while a text frame of more than
        :data:`SMALL_FRAME` characters (or a binary one) is decoded: a decoded tree and
        the objects built from it hold no cycles, and an object-heavy message would
        otherwise set off collections that walk every object of the process.

        Raises:
            RemoteProtocolError: the peer broke the protocol; close this connection.
        """
        if type(frame) is str and len(frame) <= SMALL_FRAME:  # too few objects to matter
            self._receive_frame(frame)
        else:
            without_gc(self._receive_frame, frame)

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
            if self.state is not State.OPEN:
                raise RemoteProtocolError("CALL before authentication")
            self._receive_call(message)
        elif kind is None and "id" in message and ("response" in message or "error" in message):
            if self.state is not State.OPEN:
                raise RemoteProtocolError("response before authentication")
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

    def _require_open(self, what: str) -> None:
        if self.state is not State.OPEN:
            raise RemoteProtocolError(f"{what} before authentication")

    def _decoders(self, found: list[Capability]) -> dict[str, Any] | None:
        wire = self.capabilities
        return None if wire is None else {"Capability": functools.partial(wire.decode, found)}

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
        self.caches.given(message.get("cache"))  # an id never given closes the connection
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
        objects = message.get("objects")
        if objects is None or objects == []:  # plain JSON: no media follows
            if drop:
                self.caches.read_done(objects, failed=True)
            else:
                self._finish(msg_id, message, is_call, None, "vt_global" in message)
            return
        try:
            ids = media_ids(objects)
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
        self,
        msg_id: str,
        message: dict[str, object],
        is_call: bool,
        media: dict[str, Media] | None,
        built: bool = True,
    ) -> None:
        """Turns a whole message into its event; ``built=False``: it is plain JSON."""
        found: list[Capability] = []
        if is_call:
            command = str(message["command"])
            try:
                global_data = (
                    self._decode(message, ("args", "kwargs"), media, found)
                    if built
                    else GlobalData()
                )
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
                if built:
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
        try:
            target, method = self.caches.method_for(message.get("cache"), str(message["command"]))
        except (DeadReferenceError, NoServerFunctionError) as exc:
            self.send_error(msg_id, exc)
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
