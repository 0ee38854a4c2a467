"""Cacheables over one connection: the owner's export table and the receiver's mirrors.

Owner (DESIGN §5): ``cache id -> (object, observer, count)``. The first time a Cacheable
is written on a connection it gets a new id, ``get_state_to_cache_and_observe_for`` runs
and the state goes out (a ``Cache`` entry); later references send only the id
(``Cached``). ``count`` is how many references were sent and not yet released.

Receiver: ``cache id -> (class, state, live mirror, references received)``. One mirror
object per id while it lives; when it is garbage-collected or closed, the receiver sends
``DECACHE(id, references received)``. The owner subtracts; at zero it runs
``stopped_observing`` and sends ``UNCACHE(id)``, after which the receiver forgets the id.
Until then the receiver keeps the state, so a reference already in flight when it
released the mirror still finds it (a new mirror object on the same state).

An id the connection was never given, in any message, is a protocol error.

Pure: no I/O, no clock. Garbage collection may release a mirror on any thread; that only
queues the id (:attr:`CacheTables.released`) and calls ``on_release``, and the owner of
the connection then calls :meth:`CacheTables.flush_released` under its lock.
"""

from __future__ import annotations

import collections
import copy
import itertools
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from tether.codec.decoder import entry_kind
from tether.codec.encoder import Encoder
from tether.codec.flavors import (
    Cacheable,
    RemoteCache,
    Unjellyables,
    fill,
    link_mirror,
    new_blank,
    unlink_mirror,
)
from tether.codec.paths import format_path, short
from tether.codec.registry import PortableRegistry
from tether.errors import (
    DeadReferenceError,
    NoServerFunctionError,
    RemoteProtocolError,
    SerializationError,
)

__all__ = ["CACHE_KINDS", "CacheLink", "CacheTables", "Observer"]

CACHE_KINDS = frozenset({"Cache", "Cached", "CacheRef"})


class CacheLink(Protocol):
    """What an observer sends through: the runtime's or the client's end of the connection."""

    def observe(
        self, observer: Observer, method: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        """Sends ``observe_<method>(*args, **kwargs)`` to the mirror; returns a future."""
        ...


class Observer:
    """Given to ``get_state_to_cache_and_observe_for``: the way to the mirror of one
    Cacheable on one connection. Equal to every other observer of the same object on the
    same connection for the same perspective (``stopped_observing`` gets such a one)."""

    __slots__ = ("cache_id", "cacheable", "link", "perspective")

    def __init__(
        self, link: CacheLink | None, cache_id: int, cacheable: Cacheable, perspective: object
    ) -> None:
        self.link = link
        self.cache_id = cache_id
        self.cacheable = cacheable
        self.perspective = perspective

    def call_remote(self, method: str, *args: object, **kwargs: object) -> Any:
        """Runs ``observe_<method>(*args, **kwargs)`` on the mirror, after every message
        sent before it on this connection. Returns a future (``await`` it, or call
        ``.result(timeout)``) of what it returned; a gone mirror or connection fails the
        future with ``DeadReferenceError``, and a call that cannot be sent fails it with
        ``SerializationError``: nothing is raised here."""
        if self.link is None:
            raise RuntimeError("this observer's connection has no runtime to send with")
        return self.link.observe(self, method, args, kwargs)

    def callRemote(self, method: str, *args: object, **kwargs: object) -> Any:
        return self.call_remote(method, *args, **kwargs)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Observer:
            return NotImplemented
        return (
            self.link is other.link
            and self.cacheable is other.cacheable
            and self.perspective is other.perspective
        )

    def __hash__(self) -> int:
        return hash((id(self.link), id(self.cacheable)))

    def __repr__(self) -> str:
        return f"<Observer of {type(self.cacheable).__name__} as cache {self.cache_id}>"


class _Export:
    __slots__ = ("count", "observer", "ready")

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.count = 1
        self.ready = False  # its state is written (a reference from inside it is a cycle)


class _Import:
    __slots__ = ("closed", "cls", "finalizer", "mirror", "received", "serial", "state")

    def __init__(self) -> None:
        self.finalizer: weakref.finalize[Any, Any] | None = None
        self.cls: type | None = None
        self.state: dict[str, object] | None = None  # the mirrors' __dict__
        self.mirror: weakref.ref[object] | None = None
        self.serial = 0  # which mirror object is the current one
        self.closed = -1  # the serial of a mirror closed but not yet released
        self.received = 0  # references received since the last DECACHE

    def live(self) -> object | None:
        if self.mirror is None or self.closed == self.serial:
            return None
        return self.mirror()


Stopped = tuple[Cacheable, object, Observer]


class CacheTables:
    """Both tables of one connection (each side may own and mirror).

    Args:
        registry: gives a Cacheable class its wire name.
        unjellyables: the allow-list mirrors are built from.
        limit: most Cacheables exported, and most mirrored, at once.
        send: queues one protocol message (DECACHE, UNCACHE) on the connection.
    """

    def __init__(
        self,
        registry: PortableRegistry,
        unjellyables: Unjellyables,
        limit: int,
        send: Callable[[dict[str, object]], None],
    ) -> None:
        self.registry = registry
        self.unjellyables = unjellyables
        self.limit = limit
        self.peer_limit = limit
        """How many the peer mirrors at once (from its handshake; a lower one wins)."""
        self._send = send
        self.perspective: object = None
        """Handed to ``get_state_to_cache_and_observe_for`` (the runtime sets it)."""
        self.link: CacheLink | None = None
        """Where observers send through (the runtime sets it)."""
        self.on_release: Callable[[], object] | None = None
        """Called (on any thread, maybe inside garbage collection) when a mirror is
        released: the runtime then calls :meth:`flush_released` under its lock."""
        self.exports: dict[int, _Export] = {}
        self._export_ids: dict[int, int] = {}  # id(cacheable) -> cache id
        self.imports: dict[int, _Import] = {}
        self._mirror_ids: dict[int, int] = {}  # id(live mirror) -> cache id
        self.released: collections.deque[tuple[int, int]] = collections.deque()
        self.stopped: list[Stopped] = []
        """``stopped_observing`` calls owed; the runtime makes them outside its lock."""
        self._ids = itertools.count(1)
        self._journal: list[tuple[bool, int]] | None = None  # (new?, id) written this message
        self._writes = 0  # Cacheables and mirrors written in the message being written
        self.wrote = False
        """Whether the last message written holds a Cacheable or mirror (its frame is this
        connection's own: ids are per connection)."""
        self.enabled = True
        """False for peers that cannot hold mirrors (the Anvil uplink dialect)."""
        self._counted: dict[int, int] | None = None  # id -> references read this message
        self.closed = False

    # -- owner: writing -----------------------------------------------------------------

    def write(
        self, value: Cacheable | RemoteCache, encoder: Encoder, depth: int
    ) -> tuple[dict[str, object], object]:
        if not self.enabled:
            raise SerializationError(
                f"cannot send {type(value).__name__} at {format_path(encoder.path)}: this"
                " peer speaks Anvil's uplink dialect, which has no Cacheables"
            )
        self._writes += 1
        if not isinstance(value, Cacheable):
            return self._write_mirror(value, encoder)
        journal = self._journal
        if journal is None:
            journal = self._journal = []
        cache_id = self._export_ids.get(id(value))
        if cache_id is not None:
            export = self.exports[cache_id]
            if not export.ready:
                raise SerializationError(
                    f"circular reference at {format_path(encoder.path)}: the state of"
                    f" {type(value).__name__} contains the object itself"
                )
            if encoder.in_global and (True, cache_id) in journal:
                # global data is read first: this reference would come before its state
                raise SerializationError(
                    f"{type(value).__name__} at {format_path(encoder.path)} is in global_data"
                    " and also elsewhere in this message, where it was sent first: put it"
                    " in one of them"
                )
            export.count += 1
            journal.append((False, cache_id))
            return {"type": ["Cached"], "cache": cache_id}, None
        limit = min(self.limit, self.peer_limit)
        if len(self.exports) >= limit:
            raise SerializationError(
                f"cannot send {type(value).__name__} at {format_path(encoder.path)}: this"
                f" connection already mirrors {limit} Cacheables (limit max_cacheables"
                + (", the peer's" if limit < self.limit else "")
                + "): release some first"
            )
        cache_id = next(self._ids)
        observer = Observer(self.link, cache_id, value, self.perspective)
        export = _Export(observer)
        self.exports[cache_id] = export
        self._export_ids[id(value)] = cache_id
        journal.append((True, cache_id))
        state = value.getStateToCacheAndObserveFor(self.perspective, observer)
        tree = encoder.state(value, state, depth)
        export.ready = True
        name = self.registry.copy_name(type(value))
        return {"type": ["Cache"], "typeName": name, "cache": cache_id}, tree

    def _write_mirror(self, mirror: object, encoder: Encoder) -> tuple[dict[str, object], object]:
        cache_id = self._mirror_ids.get(id(mirror))
        imported = self.imports.get(cache_id) if cache_id is not None else None
        if imported is not None and imported.live() is mirror:
            return {"type": ["CacheRef"], "cache": cache_id}, None
        raise SerializationError(
            f"cannot send {type(mirror).__name__} mirror at {format_path(encoder.path)}: a"
            " RemoteCache goes back only to its owner, over the connection it came from"
        )

    def written(self) -> None:
        """The message holding what :meth:`write` wrote was queued."""
        self.wrote = self._writes > 0
        self._writes = 0
        self._journal = None

    def unwritten(self) -> None:
        """The message failed: undo what :meth:`write` did for it (a new export's
        ``stopped_observing`` is owed, since its observer was handed out)."""
        journal, self._journal = self._journal, None
        self._writes = 0
        for new, cache_id in reversed(journal or ()):
            export = self.exports[cache_id]
            if new:
                self._drop_export(cache_id, export)
            else:
                export.count -= 1

    def _drop_export(self, cache_id: int, export: _Export) -> None:
        del self.exports[cache_id]
        observer = export.observer
        del self._export_ids[id(observer.cacheable)]
        self.stopped.append((observer.cacheable, observer.perspective, observer))

    # -- owner: releases ----------------------------------------------------------------

    def is_exported(self, observer: Observer) -> bool:
        """Whether ``observer``'s mirror is still there to send to."""
        export = self.exports.get(observer.cache_id)
        return (
            not self.closed and export is not None and export.observer is observer and export.ready
        )

    def receive_decache(self, message: dict[str, object]) -> None:
        """``DECACHE(cache, count)``: the receiver released ``count`` references."""
        cache_id, count = message.get("cache"), message.get("count")
        export = self.exports.get(cache_id) if type(cache_id) is int else None
        if export is None:
            raise RemoteProtocolError(f"DECACHE of cache id {short(cache_id, 40)} never given")
        if type(count) is not int or not 0 < count <= export.count:
            raise RemoteProtocolError(
                f"DECACHE of cache id {cache_id} with count {short(count, 40)}: {export.count}"
                " references are out"
            )
        export.count -= count
        if export.count == 0:
            assert type(cache_id) is int
            self._drop_export(cache_id, export)
            self._send({"type": "UNCACHE", "cache": cache_id})

    # -- receiver: reading --------------------------------------------------------------

    def read(
        self, kind: str, entry: dict[str, object], current: object, path: list[object]
    ) -> object:
        if not self.enabled:
            raise SerializationError(
                f"a Cacheable at {format_path(path)} from a peer of Anvil's uplink dialect,"
                " which has none"
            )
        cache_id = entry.get("cache")
        if type(cache_id) is not int:
            raise SerializationError(f"cache entry without an int id at {format_path(path)}")
        if kind == "CacheRef":
            export = self.exports.get(cache_id)
            if export is None:
                raise RemoteProtocolError(f"cache id {cache_id} sent back was never given")
            return export.observer.cacheable
        counted = self._counted
        if counted is None:
            counted = self._counted = {}
        if kind == "Cache":
            if cache_id in self.imports:
                raise RemoteProtocolError(f"cache id {cache_id} given twice")
            if len(self.imports) >= self.limit:
                raise RemoteProtocolError(
                    f"the peer sent more than {self.limit} Cacheables (limit max_cacheables)"
                )
            imported = self.imports[cache_id] = _Import()
            imported.received = 1
            counted[cache_id] = counted.get(cache_id, 0) + 1
            allowed = self.unjellyables.find(entry.get("typeName"), path)
            try:
                mirror = fill(new_blank(allowed), current)
                imported.state = mirror.__dict__
                imported.cls = type(mirror)
                self._attach(cache_id, imported, mirror)
            except Exception as exc:
                imported.state = None
                raise SerializationError(
                    f"cannot build {allowed.name!r} at {format_path(path)}:"
                    f" {type(exc).__name__}: {exc}"
                ) from exc
            return mirror
        imported_or_none = self.imports.get(cache_id)
        if imported_or_none is None:
            raise RemoteProtocolError(f"cache id {cache_id} was never given to this connection")
        imported = imported_or_none
        imported.received += 1
        counted[cache_id] = counted.get(cache_id, 0) + 1
        return self._mirror(cache_id, imported, path)

    def _mirror(self, cache_id: int, imported: _Import, path: list[object]) -> object:
        """The live mirror, or a new one on the kept state."""
        mirror = imported.live()
        if mirror is not None:
            return mirror
        if imported.cls is None or imported.state is None:
            raise SerializationError(
                f"cache id {cache_id} at {format_path(path)} has no state here: the message"
                " that carried it failed"
            )
        cls: Any = imported.cls
        mirror = cls.__new__(cls)
        mirror.__dict__ = imported.state
        self._attach(cache_id, imported, mirror)
        return mirror

    def _attach(self, cache_id: int, imported: _Import, mirror: object) -> None:
        serial, mirror_id = imported.serial + 1, id(mirror)
        finalizer = weakref.finalize(mirror, self._collected, cache_id, serial, mirror_id)
        finalizer.atexit = False
        imported.serial = serial
        imported.mirror = weakref.ref(mirror)
        imported.finalizer = finalizer
        self._mirror_ids[mirror_id] = cache_id

        def close(mirror: object) -> None:  # RemoteCache.close(): keep a private state
            finalizer.detach()
            try:  # the kept state goes on being updated: the closed object must not share it
                mirror.__dict__ = copy.deepcopy(mirror.__dict__)
            except Exception:  # something in it cannot be copied: at least its top level
                mirror.__dict__ = dict(mirror.__dict__)
            imported.closed = serial
            self._collected(cache_id, serial, mirror_id)

        link_mirror(mirror, close)

    def _collected(self, cache_id: int, serial: int, mirror_id: int) -> None:
        """A mirror was collected or closed (any thread): queue its release."""
        unlink_mirror(mirror_id)
        if self._mirror_ids.get(mirror_id) == cache_id:
            self._mirror_ids.pop(mirror_id, None)
        self.released.append((cache_id, serial))
        on_release = self.on_release
        if on_release is not None and not self.closed:
            on_release()

    def read_done(self, objects: object, failed: bool) -> None:
        """A message was read (``failed``: its values were not all built). A failed one's
        references are all released now, those never reached included, unless a live
        mirror holds them."""
        counted, self._counted = self._counted, None
        if not failed or not self.enabled:  # an uplink peer was given no mirror to release
            return
        wanted: dict[int, int] = {}
        given: set[int] = set()  # ids of Cache entries: new to this side
        for entry in objects if type(objects) is list else ():
            if type(entry) is dict and type(entry.get("type")) is list:
                kind = entry_kind(entry["type"])
                cache_id = entry.get("cache")
                if kind in ("Cache", "Cached") and type(cache_id) is int:
                    wanted[cache_id] = wanted.get(cache_id, 0) + 1
                    if kind == "Cache":
                        given.add(cache_id)
        for cache_id, count in wanted.items():
            missed = count - (counted or {}).get(cache_id, 0)
            imported = self.imports.get(cache_id)
            if imported is None:
                if cache_id not in given or len(self.imports) >= self.limit:
                    continue  # an id never given is the owner's lie: nothing to release
                imported = self.imports[cache_id] = _Import()  # never built: no state
            imported.received += max(missed, 0)
            if imported.live() is None:
                self._release(cache_id, imported)

    def _release(self, cache_id: int, imported: _Import) -> None:
        imported.mirror = None
        if imported.received:
            self._send({"type": "DECACHE", "cache": cache_id, "count": imported.received})
            imported.received = 0

    def flush_released(self) -> None:
        """Sends a DECACHE for each mirror collected or closed since the last flush."""
        released = self.released
        while released:
            cache_id, serial = released.popleft()
            imported = self.imports.get(cache_id)
            if imported is not None and imported.serial == serial and not self.closed:
                self._release(cache_id, imported)

    def receive_uncache(self, message: dict[str, object]) -> None:
        """``UNCACHE(cache)``: the owner stopped observing; forget the id."""
        cache_id = message.get("cache")
        imported = self.imports.pop(cache_id, None) if type(cache_id) is int else None
        if imported is None:
            raise RemoteProtocolError(f"UNCACHE of cache id {short(cache_id, 40)} never given")
        self._unlink(imported)  # a live mirror here means a broken peer: it stays, stale

    def _unlink(self, imported: _Import) -> None:
        """The mirror of ``imported`` (if any) gets no more updates and releases nothing."""
        found = imported.finalizer.detach() if imported.finalizer is not None else None
        if found is not None:  # it was alive (detach hands it back)
            unlink_mirror(id(found[0]))
            self._mirror_ids.pop(id(found[0]), None)
        imported.mirror = None

    def given(self, cache_id: object) -> _Import:
        """The mirror entry of an id this connection was given.

        Raises:
            RemoteProtocolError: the id was never given to this connection.
        """
        imported = self.imports.get(cache_id) if type(cache_id) is int else None
        if imported is None:
            raise RemoteProtocolError(
                f"CACHE_MESSAGE to cache id {short(cache_id, 40)}, never given to this connection"
            )
        return imported

    def method_for(self, cache_id: object, name: str) -> tuple[object, Callable[..., object]]:
        """The object a ``CACHE_MESSAGE`` runs on (see :meth:`target`) and its method
        ``name`` (an ``observe_*`` name), looked up on the class only.

        Raises:
            RemoteProtocolError: the id was never given to this connection.
            DeadReferenceError: there is no state to run it on.
            NoServerFunctionError: the mirror's class has no such method.
        """
        target = self.target(cache_id)
        if target is None:
            raise DeadReferenceError("that mirror could not be built here")
        method = getattr(type(target), name, None)
        if not callable(method):
            raise NoServerFunctionError(f"{type(target).__name__} has no method {name!r}")
        return target, method

    def target(self, cache_id: object) -> object | None:
        """The object a ``CACHE_MESSAGE`` for ``cache_id`` runs on: the live mirror, or
        one made for the message on the kept state (the mirror was just released, but a
        reference in flight may bring it back); None when there is no state.

        Raises:
            RemoteProtocolError: the id was never given to this connection.
        """
        imported = self.given(cache_id)
        mirror = imported.live()
        if mirror is not None or imported.cls is None or imported.state is None:
            return mirror
        cls: Any = imported.cls
        transient: object = cls.__new__(cls)
        transient.__dict__ = imported.state
        return transient

    # -- end ----------------------------------------------------------------------------

    def close(self) -> None:
        """The connection ended: every export's ``stopped_observing`` is owed, and every
        mirror stays as it is, unlinked."""
        self.closed = True
        for cache_id, export in list(self.exports.items()):
            self._drop_export(cache_id, export)
        for imported in self.imports.values():
            self._unlink(imported)
        self.imports.clear()
        self._mirror_ids.clear()
        self.released.clear()
        self._journal = None
        self._counted = None

    def take_stopped(self) -> list[Stopped]:
        """The ``stopped_observing`` calls owed, once each."""
        stopped, self.stopped = self.stopped, []
        return stopped
