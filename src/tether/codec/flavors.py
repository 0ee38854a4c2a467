"""Perspective Broker's flavours, the pure part (API.md §2, DESIGN §5).

- :class:`Copyable` is sent as a copy of its state (``get_state_to_copy``); the receiver
  builds the class it allowed for that wire name (:class:`RemoteCopy`) without calling
  ``__init__`` and hands it the state (``set_copyable_state``).
- :class:`Cacheable` is sent once per connection; the receiver keeps one mirror
  (:class:`RemoteCache`) that the owner updates through ``observe_*`` messages. The
  per-connection tables live in :mod:`tether.protocol.caches`.
- :class:`Unjellyables` is the receiver's allow-list. A wire name is looked up in a dict
  and nothing else: nothing is imported, and allowing a class allows nothing but that
  wire name.

Twisted's camelCase names are accepted: each camelCase method delegates to the snake_case
one, and Tether calls the camelCase one, so a subclass may override either spelling.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.codec.paths import format_path, short
from tether.errors import InsecureJelly, SerializationError

__all__ = [
    "Cacheable",
    "Copyable",
    "RemoteCache",
    "RemoteCopy",
    "Unjellyables",
    "unjellyables",
]


class Copyable:
    """An object sent by copy: the receiver gets a new object filled with its state.

    Its wire name is its class's ``module.QualName``, or the name given with
    ``@server.portable_class("name")``. The receiver must allow that name with
    ``tether.pb.set_unjellyable_for_class``.
    """

    def get_state_to_copy(self) -> object:
        """The state to send (any value Tether can send); default: a copy of ``__dict__``."""
        return self.__dict__.copy()

    def getStateToCopy(self) -> object:
        return self.get_state_to_copy()


class RemoteCopy:
    """A receiver's copy of a :class:`Copyable`: made with ``cls.__new__(cls)`` (never
    ``__init__``), then given the sender's state."""

    def set_copyable_state(self, state: object) -> None:
        """Fills this new object from the sender's state; default: ``__dict__.update``.

        Raises:
            SerializationError: the default was given something other than a dict with
                string keys.
        """
        if type(state) is not dict:
            raise SerializationError(
                f"{type(self).__name__} needs a dict of attributes as its state, got"
                f" {type(state).__name__} (define set_copyable_state to take another state)"
            )
        self.__dict__.update(state)

    def setCopyableState(self, state: object) -> None:
        self.set_copyable_state(state)


class Cacheable(Copyable):
    """An object mirrored on each connection it is sent over, and kept up to date there.

    The first time it goes over a connection, Tether calls
    :meth:`get_state_to_cache_and_observe_for` with that connection's perspective and an
    observer; keep the observer and call ``observer.call_remote("name", *args)`` to run
    ``observe_name(*args)`` on that connection's mirror. When the far side drops its
    mirror, or the connection ends, :meth:`stopped_observing` gets the same perspective
    and an observer equal to the one given: once per connection and object.
    """

    def get_state_to_cache_and_observe_for(self, perspective: object, observer: object) -> object:
        """The state to send to a new mirror; default: :meth:`get_state_to_copy`."""
        return self.getStateToCopy()

    def getStateToCacheAndObserveFor(self, perspective: object, observer: object) -> object:
        return self.get_state_to_cache_and_observe_for(perspective, observer)

    def stopped_observing(self, perspective: object, observer: object) -> None:
        """The mirror on ``observer``'s connection is gone; default: nothing."""

    def stoppedObserving(self, perspective: object, observer: object) -> None:
        self.stopped_observing(perspective, observer)


_releases: dict[int, Callable[[object], object]] = {}
"""id(mirror) -> its release (set by the connection that built it)."""


def link_mirror(mirror: object, release: Callable[[object], object]) -> None:
    """Records how :meth:`RemoteCache.close` releases ``mirror`` (the protocol's part)."""
    _releases[id(mirror)] = release


def unlink_mirror(mirror_id: int) -> Callable[[object], object] | None:
    """Forgets the release of the mirror with this id; returns it if it was there."""
    return _releases.pop(mirror_id, None)


class RemoteCache(RemoteCopy):
    """A mirror of a :class:`Cacheable` on the far side of one connection.

    Built without ``__init__`` and filled by ``set_copyable_state``; the owner's
    ``observer.call_remote("name", ...)`` runs its ``observe_name(...)`` method. Its state
    lives in ``__dict__`` (no ``__slots__``). Every reference to one Cacheable that
    arrives over a connection is this same object while it lives.
    """

    def close(self) -> None:
        """Stops mirroring now, rather than when this object is garbage-collected: the
        owner is told (its ``stopped_observing`` runs once nothing else on this connection
        holds the object) and this object keeps the last state it had, unlinked."""
        release = _releases.get(id(self))
        if release is not None:
            release(self)


@dataclass(frozen=True, slots=True)
class Unjellyable:
    """What a wire name builds: ``local_class`` (``__new__`` + ``setCopyableState``), or
    ``factory(state)``."""

    name: str
    local_class: type | None
    factory: Callable[[object], object] | None


class Unjellyables:
    """The receiver's allow-list: wire name -> what to build. One per process by default
    (:data:`unjellyables`, which ``tether.pb.set_unjellyable_for_class`` fills)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Unjellyable] = {}

    def allow(self, name: str, local_class: type) -> None:
        """Instances sent under ``name`` arrive as ``local_class``."""
        if not isinstance(local_class, type):
            raise TypeError(f"set_unjellyable_for_class needs a class, got {local_class!r}")
        self.by_name[_checked(name)] = Unjellyable(name, local_class, None)

    def allow_factory(self, name: str, factory: Callable[[object], object]) -> None:
        """Instances sent under ``name`` arrive as ``factory(state)``, which may return an
        existing object."""
        if not callable(factory):
            raise TypeError(f"set_unjellyable_factory_for_class needs a callable, got {factory!r}")
        self.by_name[_checked(name)] = Unjellyable(name, None, factory)

    def forget(self, name: str) -> None:
        """Takes ``name`` off the allow-list (nothing happens if it was not on it)."""
        self.by_name.pop(name, None)

    def find(self, name: object, path: list[object]) -> Unjellyable:
        """The allowed entry for a wire name; checked before any class is touched.

        Raises:
            InsecureJelly: ``name`` is not on the allow-list.
        """
        found = self.by_name.get(name) if type(name) is str else None
        if found is None:
            raise InsecureJelly(
                f"class {short(name)} is not allowed here (at {format_path(path)}):"
                " the receiver allows it with tether.pb.set_unjellyable_for_class"
            )
        return found

    def build(self, name: object, state: object, path: list[object]) -> object:
        """A new object for ``name`` from ``state`` (a factory may return an old one).

        Raises:
            InsecureJelly: ``name`` is not on the allow-list.
            SerializationError: the object could not be built from that state.
        """
        allowed = self.find(name, path)
        try:
            if allowed.factory is not None:
                return allowed.factory(state)
            return fill(new_blank(allowed), state)
        except SerializationError as exc:  # InsecureJelly from a factory stays one
            raise type(exc)(f"cannot build {allowed.name!r} at {format_path(path)}: {exc}") from exc
        except Exception as exc:
            raise SerializationError(
                f"cannot build {allowed.name!r} at {format_path(path)}: {type(exc).__name__}: {exc}"
            ) from exc


def new_blank(allowed: Unjellyable) -> Any:
    """A new instance of the allowed class, without ``__init__``."""
    cls: Any = allowed.local_class
    if cls is None:
        raise SerializationError(f"{allowed.name!r} is allowed through a factory, not a class")
    return cls.__new__(cls)


def fill(obj: Any, state: object) -> object:
    """Gives a new object its state: ``setCopyableState`` if it has one, else the
    default of :class:`RemoteCopy`."""
    setter = getattr(obj, "setCopyableState", None)
    if setter is not None:
        setter(state)
    else:
        RemoteCopy.set_copyable_state(obj, state)
    return obj


def _checked(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a wire name must be a non-empty str, got {name!r}")
    return name


unjellyables = Unjellyables()
"""The process-wide allow-list of :mod:`tether.pb`."""
