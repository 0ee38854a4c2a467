"""Portable classes: the allow-list of what may be built from the wire, and global data.

Only classes registered here are ever instantiated by the decoder. A name on the wire is
looked up in a dict; nothing is imported because a peer named it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tether.codec.flavors import Copyable

__all__ = ["GlobalData", "PortableClass", "PortableRegistry", "portable_registry"]

T = TypeVar("T", bound=type)


@dataclass(frozen=True, slots=True)
class PortableClass:
    """How one registered class crosses the wire."""

    name: str
    cls: type[Any]
    serialize: bool  # defines __serialize__(global_data)
    deserialize: bool  # defines __deserialize__(data, global_data)
    new_deserialized: bool  # defines static __new_deserialized__(data, global_data)
    is_exception: bool


class PortableRegistry:
    """Wire name <-> class. One per process by default (:data:`portable_registry`)."""

    def __init__(self) -> None:
        self.by_name: dict[str, PortableClass] = {}
        self.by_class: dict[type, PortableClass] = {}
        self.copy_names: dict[type, str] = {}
        """Wire names given to Copyable and Cacheable classes (they cross as PB flavours,
        never as portable objects)."""

    def copy_name(self, cls: type) -> str:
        """The wire name of a Copyable or Cacheable class: the one given with
        ``@portable_class("name")``, else ``module.QualName``."""
        name = self.copy_names.get(cls)
        return name if name is not None else f"{cls.__module__}.{cls.__qualname__}"

    def register(self, cls: type, name: str | None = None) -> PortableClass:
        """Registers ``cls`` under ``name`` (default ``module.QualName``).

        Registering a name again for a class of the same module and qualified name (a
        module imported twice, or reloaded) replaces it; any other clash is a ValueError.
        A Copyable or Cacheable class only gets its wire name here: it crosses with its
        own hooks (``get_state_to_copy``), and the receiver's allow-list decides.
        """
        if not isinstance(cls, type):
            raise TypeError(f"portable_class needs a class, got {cls!r}")
        name = name if name is not None else f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"a portable class name must be a non-empty str, got {name!r}")
        if issubclass(cls, Copyable):  # named only: it crosses as a copy or a cache
            self.copy_names[cls] = name
            return PortableClass(name, cls, False, False, False, False)
        old = self.by_name.get(name)
        if old is not None and old.cls is not cls:
            if (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ValueError(
                    f"portable class name {name!r} is already registered for {old.cls!r}"
                )
            del self.by_class[old.cls]
        entry = PortableClass(
            name=name,
            cls=cls,
            serialize=callable(getattr(cls, "__serialize__", None)),
            deserialize=callable(getattr(cls, "__deserialize__", None)),
            new_deserialized=callable(getattr(cls, "__new_deserialized__", None)),
            is_exception=issubclass(cls, BaseException),
        )
        self.by_name[name] = entry
        self.by_class[cls] = entry
        return entry

    def decorator(self, name_or_cls: str | T | None = None) -> Callable[[T], T] | T:
        """``@portable_class`` and ``@portable_class("name")``."""
        if isinstance(name_or_cls, type):
            self.register(name_or_cls)
            return name_or_cls

        def register(cls: T) -> T:
            self.register(cls, name_or_cls)
            return cls

        return register


portable_registry = PortableRegistry()
"""The process-wide registry that ``server.portable_class`` fills."""


class GlobalData(MutableMapping[str, object]):
    """One dict-like object per call or response, shared by every portable object in it.

    It is truthy even when empty, so ``if global_data:`` tells a usable one from the
    disabled one that objects stored inside global data receive.
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, object] | None = None) -> None:
        self._data: dict[str, object] = data if data is not None else {}

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __setitem__(self, key: str, value: object) -> None:
        if not isinstance(key, str):
            raise TypeError(f"global_data keys must be str, got {type(key).__name__}")
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"GlobalData({self._data!r})"


class DisabledGlobalData(GlobalData):
    """The falsey global data of objects that are themselves inside global data."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()

    def __bool__(self) -> bool:
        return False

    def _refuse(self) -> RuntimeError:
        return RuntimeError("global_data is not available to objects stored inside global_data")

    def __getitem__(self, key: str) -> object:
        raise self._refuse()

    def __setitem__(self, key: str, value: object) -> None:
        raise self._refuse()

    def __delitem__(self, key: str) -> None:
        raise self._refuse()

    def __iter__(self) -> Iterator[str]:
        raise self._refuse()

    def __len__(self) -> int:
        raise self._refuse()

    def __contains__(self, key: object) -> bool:
        raise self._refuse()
