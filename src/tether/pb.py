"""``tether.pb``: Perspective Broker's flavours over Tether connections (API.md §2).

- :class:`Copyable` objects cross as copies of ``get_state_to_copy()``; the receiver builds
  the class it allowed with :func:`set_unjellyable_for_class` (a :class:`RemoteCopy`,
  made without ``__init__`` and filled by ``set_copyable_state``).
- :class:`Cacheable` objects are mirrored once per connection (:class:`RemoteCache`) and
  kept up to date with ``observer.call_remote("name", ...)``, which runs the mirror's
  ``observe_name(...)``; ``stopped_observing`` runs when the mirror is collected or closed
  on the far side, or the connection ends.

Nothing is built from the wire unless its wire name (the sender's ``module.QualName``, or
the name given with ``@server.portable_class("name")``) is on the receiver's allow-list.
Twisted's camelCase names work too.
"""

from __future__ import annotations

from collections.abc import Callable

from tether._caches import RemoteFuture
from tether.codec.flavors import Cacheable, Copyable, RemoteCache, RemoteCopy, unjellyables
from tether.codec.registry import portable_registry
from tether.context import Perspective
from tether.errors import DeadReferenceError, InsecureJelly
from tether.protocol.caches import Observer

__all__ = [
    "Cacheable",
    "Copyable",
    "DeadReferenceError",
    "InsecureJelly",
    "Observer",
    "Perspective",
    "RemoteCache",
    "RemoteCopy",
    "RemoteFuture",
    "setUnjellyableFactoryForClass",
    "setUnjellyableForClass",
    "set_unjellyable_factory_for_class",
    "set_unjellyable_for_class",
    "wire_name",
]


def wire_name(remote_name_or_class: str | type) -> str:
    """The name instances of a class cross under: the name given with
    ``@server.portable_class("name")``, else ``module.QualName``; a str is taken as is."""
    if isinstance(remote_name_or_class, str):
        return remote_name_or_class
    if isinstance(remote_name_or_class, type):
        return portable_registry.copy_name(remote_name_or_class)
    raise TypeError(f"expected a class or its wire name, got {remote_name_or_class!r}")


def set_unjellyable_for_class(remote_name_or_class: str | type, local_class: type) -> None:
    """Allows instances sent as ``remote_name_or_class`` (a class, or its wire name) to
    arrive here, as ``local_class``: a new object made with ``local_class.__new__`` (no
    ``__init__``) and given the sender's state with ``setCopyableState`` (default: its
    ``__dict__`` is updated). Anything not allowed raises ``InsecureJelly`` for that
    message. Allowing one name allows nothing else (not its module, not its subclasses).
    """
    unjellyables.allow(wire_name(remote_name_or_class), local_class)


def set_unjellyable_factory_for_class(
    remote_name_or_class: str | type, factory: Callable[[object], object]
) -> None:
    """Like :func:`set_unjellyable_for_class`, but instances arrive as
    ``factory(state)``, which may return an existing object (copies only: a Cacheable's
    mirror is always built from a class)."""
    unjellyables.allow_factory(wire_name(remote_name_or_class), factory)


setUnjellyableForClass = set_unjellyable_for_class
setUnjellyableFactoryForClass = set_unjellyable_factory_for_class
