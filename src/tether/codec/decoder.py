"""A received tree plus its ``objects`` table -> values, building only registered classes.

Entries are applied in order (inner before outer). Every path is checked: it must start at
one of the message's value keys and lead, through dicts and lists, to a value that is
there. A type name is looked up in the registry and nothing else: an unknown name is an
:class:`InsecureJelly` for that message, and no module is ever imported because of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from tether.codec import _accel
from tether.codec.flavors import Unjellyables
from tether.codec.limits import Limits
from tether.codec.media import Media
from tether.codec.paths import format_path, short
from tether.codec.registry import DisabledGlobalData, GlobalData, PortableClass, PortableRegistry
from tether.errors import InsecureJelly, SerializationError

__all__ = ["CacheReader", "decode_values", "entry_kind", "media_ids"]

# A hook for object types the codec does not own (capabilities, Cacheables): it gets the
# entry and returns the value, or raises SerializationError.
ExtraDecoder = Callable[[dict[str, object], str], object]

_FLOATS = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}
_CACHE_KINDS = frozenset({"Cache", "Cached", "CacheRef"})
_KNOWN = frozenset(
    {
        "Long",
        "Float",
        "Date",
        "DateTime",
        "DataMedia",
        "ValueType",
        "ClassType",
        "Capability",
        "Copy",
        *_CACHE_KINDS,
    }
)


class CacheReader(Protocol):
    """How one connection reads Cacheables and mirrors (:mod:`tether.protocol.caches`)."""

    def read(
        self, kind: str, entry: dict[str, object], current: object, path: list[object]
    ) -> object:
        """The mirror (``Cache``, ``Cached``) or the original (``CacheRef``) an entry
        names; ``current`` is the decoded state of a ``Cache`` entry."""
        ...


def media_ids(objects: object) -> list[str]:
    """The ids of the media a message's objects table says will follow as chunks."""
    ids: list[str] = []
    if type(objects) is list:
        for entry in objects:
            if type(entry) is dict:
                kinds = entry.get("type")
                if type(kinds) is list and kinds and kinds[0] == "DataMedia":
                    media_id = entry.get("id")
                    if type(media_id) is not str:
                        raise SerializationError("DataMedia entry has no string id")
                    ids.append(media_id)
    return ids


def decode_values(
    message: dict[str, object],
    value_keys: Collection[str],
    registry: PortableRegistry,
    limits: Limits,
    media: Mapping[str, Media] | None = None,
    extra: Mapping[str, ExtraDecoder] | None = None,
    *,
    unjellyables: Unjellyables | None = None,
    caches: CacheReader | None = None,
) -> GlobalData:
    """Replaces, in place, the values described by ``message["objects"]``.

    Args:
        message: a parsed message; only the values under ``value_keys`` (and
            ``vt_global``) may be touched by its objects table.
        value_keys: the top-level keys that hold values, e.g. ``("args", "kwargs")``.
        registry: the classes that may be built.
        limits: bounds to check.
        media: the media that arrived as chunks, by id.
        extra: decoders for further object types, e.g. ``{"Capability": ...}``.
        unjellyables: the allow-list of Copyable wire names (None: none allowed).
        caches: the connection's Cacheable tables (None: Cacheables are unknown here).

    Returns:
        The message's global data.

    Raises:
        SerializationError: a malformed entry, an unknown type, a broken limit.
        InsecureJelly: a type name that is not registered.
    """
    objects = message.get("objects")
    global_data = GlobalData()
    if objects is None:
        return global_data
    if type(objects) is not list:
        raise SerializationError("'objects' must be a list")
    max_depth = limits.max_depth
    max_objects = limits.max_objects
    count = 0
    by_name = registry.by_name
    gd: GlobalData = DISABLED
    in_global = True
    for entry in objects:
        if type(entry) is not dict:
            raise SerializationError(f"objects entry must be a dict, got {type(entry).__name__}")
        path = entry.get("path")
        kinds = entry.get("type")
        if type(path) is not list or not path or len(path) > max_depth:
            raise SerializationError(f"objects entry has a bad path: {short(path)}")
        if type(kinds) is not list:
            raise SerializationError(f"objects entry has a bad type at {format_path(path)}")
        root = path[0]
        if root == "vt_global":
            if not in_global:
                raise SerializationError("vt_global entries must come before the others")
        else:
            if in_global:
                in_global = False
                gd = global_data = _global_data(message.get("vt_global"))
            if root not in value_keys:
                raise SerializationError(f"objects entry outside the values: {format_path(path)}")
        node: object = message
        items = entry.get("items")
        if items is not None:
            if _kind(kinds, None) != "ValueType":
                raise SerializationError(
                    f"a run of objects must be ValueType at {format_path(path)}"
                )
            # A run: the portable objects at path + [i] for each i (Tether's compact form).
            for key in path:
                node = _step(node, key, path)
            if type(node) is not list or type(items) is not list or not items:
                raise SerializationError(f"bad run of objects at {format_path(path)}")
            count += len(items)
            if count > max_objects:
                _too_many(count, max_objects)
            _build_run(node, items, _portable(by_name, entry, path), gd, path)
            continue
        count += 1
        if count > max_objects:
            _too_many(count, max_objects)
        for key in path[:-1]:
            node = _step(node, key, path)
        key = path[-1]
        current = _step(node, key, path)
        kind = _kind(kinds, extra)
        value: object
        if kind == "ValueType":
            value = _build(_portable(by_name, entry, path), current, gd, path)
        elif kind == "Long":
            value = _long(entry.get("value"), limits, path)
        elif kind == "Float":
            text = entry.get("value")
            if type(text) is not str or text not in _FLOATS:
                raise SerializationError(f"bad Float value {short(text)} at {format_path(path)}")
            value = _FLOATS[text]
        elif kind == "DateTime":
            value = _parse(dt.datetime.fromisoformat, entry.get("value"), "DateTime", path)
        elif kind == "Date":
            value = _parse(dt.date.fromisoformat, entry.get("value"), "Date", path)
        elif kind == "DataMedia":
            value = _media(entry, media, path)
        elif kind == "ClassType":
            value = _portable(by_name, entry, path).cls
        elif kind == "Copy":
            if unjellyables is None:
                raise InsecureJelly(f"no class may be copied in here (at {format_path(path)})")
            value = unjellyables.build(entry.get("typeName"), current, path)
        elif kind in _CACHE_KINDS and caches is not None:
            value = caches.read(kind, entry, current, path)
        elif kind is not None and extra is not None and kind in extra:
            value = extra[kind](entry, format_path(path))
        else:
            raise SerializationError(f"unknown object type {short(kinds)} at {format_path(path)}")
        if type(node) is dict:
            node[key] = value
        else:  # _step walks only through dicts and lists, with int keys into lists
            assert type(node) is list
            assert type(key) is int
            node[key] = value
    if in_global:
        global_data = _global_data(message.get("vt_global"))
    return global_data


def entry_kind(kinds: list[object]) -> str | None:
    """The kind an objects entry's ``type`` list names, for the kinds the codec knows."""
    return _kind(kinds, None)


def _kind(kinds: list[object], extra: Mapping[str, ExtraDecoder] | None) -> str | None:
    """The first type name this side knows (Anvil lists fallbacks after it)."""
    for kind in kinds:
        if type(kind) is str and (kind in _KNOWN or (extra is not None and kind in extra)):
            return kind
    return None


def _too_many(count: int, limit: int) -> None:
    raise SerializationError(
        f"message has {count} or more objects, over the limit of {limit} (limit max_objects)"
    )


def _portable(
    by_name: dict[str, PortableClass], entry: dict[str, object], path: list[object]
) -> PortableClass:
    name = entry.get("typeName")
    portable = by_name.get(name) if type(name) is str else None
    if portable is None:
        raise InsecureJelly(
            f"no portable class named {short(name)} is registered here (at {format_path(path)})"
        )
    return portable


def _build_run(
    node: list[object],
    items: list[object],
    portable: PortableClass,
    gd: GlobalData,
    path: list[object],
) -> None:
    size = len(node)
    default = not (portable.new_deserialized or portable.deserialize or portable.is_exception)
    cls: Any = portable.cls
    if default and items == list(range(size)):  # the whole list, the common case
        try:
            stop = _build_dicts(node, cls, 0)
        except Exception as exc:  # cls.__new__ failed, or it has no __dict__
            raise SerializationError(
                f"cannot build {portable.name!r} in the run at {format_path(path)}:"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        if stop < size:
            raise SerializationError(
                f"cannot build {portable.name!r} at {format_path([*path, stop])}: expected a"
                f" dict of attributes, got {type(node[stop]).__name__}"
            )
        return
    for i in items:
        if type(i) is not int or not 0 <= i < size:
            raise SerializationError(
                f"bad index {short(i)} in the run of objects at {format_path(path)}"
            )
        data = node[i]
        if default and type(data) is dict:
            obj = cls.__new__(cls)
            obj.__dict__.update(data)
            node[i] = obj
        else:
            node[i] = _build(portable, data, gd, [*path, i])


def _build_dicts_py(node: list[object], cls: Any, start: int) -> int:
    """Replaces each dict of ``node[start:]`` with ``cls.__new__(cls)`` holding it as its
    ``__dict__`` (a fresh dict from the JSON parser: no copy), up to the first item that
    is not a dict; returns its index (what ``_speedups.build_dicts`` does in C)."""
    new = cls.__new__
    size = len(node)
    while start < size:
        data = node[start]
        if type(data) is not dict:
            break
        obj = new(cls)
        object.__setattr__(obj, "__dict__", data)  # as the C version: no __setattr__ hook
        node[start] = obj
        start += 1
    return start


_build_dicts = _accel.build_dicts or _build_dicts_py


def _step(node: object, key: object, path: list[object]) -> object:
    if type(node) is dict and type(key) is str:
        if key in node:
            return node[key]
    elif type(node) is list and type(key) is int and 0 <= key < len(node):
        return node[key]
    raise SerializationError(f"objects entry points nowhere: {format_path(path)}")


def _global_data(value: object) -> GlobalData:
    if value is None:
        return GlobalData()
    if type(value) is dict:
        return GlobalData(value)
    if type(value) is list and len(value) % 2 == 0:
        # Anvil's shared_data form: [key, data, key, data, ...]; ":GLOBAL" is the dict API.
        legacy: object = None
        for key, data in zip(value[::2], value[1::2], strict=True):
            if type(key) is not str:
                raise SerializationError(f"vt_global keys must be strings, got {short(key)}")
            if key == ":GLOBAL":
                legacy = data
        return GlobalData(legacy if type(legacy) is dict else {})
    raise SerializationError(f"vt_global must be a dict, got {type(value).__name__}")


def _build(portable: PortableClass, data: object, gd: GlobalData, path: list[object]) -> object:
    cls: Any = portable.cls
    try:
        if portable.new_deserialized:
            built: object = getattr(cls, "__new_deserialized__")(data, gd)  # noqa: B009
            return built
        obj = cls.__new__(cls)
        if portable.deserialize:
            obj.__deserialize__(data, gd)
        elif portable.is_exception:
            if type(data) is not dict or type(data.get("args")) is not list:
                raise SerializationError("exception data must be {'args': [...], 'attrs': {...}}")
            obj.args = tuple(data["args"])
            attrs = data.get("attrs")
            if type(attrs) is dict:
                obj.__dict__.update(attrs)
        else:
            if type(data) is not dict:
                raise SerializationError(
                    f"expected a dict of attributes, got {type(data).__name__}"
                )
            obj.__dict__.update(data)
        return obj
    except SerializationError as exc:
        raise SerializationError(
            f"cannot build {portable.name!r} at {format_path(path)}: {exc}"
        ) from exc
    except Exception as exc:
        raise SerializationError(
            f"cannot build {portable.name!r} at {format_path(path)}: {type(exc).__name__}: {exc}"
        ) from exc


def _long(text: object, limits: Limits, path: list[object]) -> int:
    if type(text) is not str:
        raise SerializationError(f"bad Long value at {format_path(path)}")
    digits = len(text) - text.startswith("-")
    if digits > limits.max_int_digits:
        raise SerializationError(
            f"integer with {digits} digits at {format_path(path)} is over the limit of"
            f" {limits.max_int_digits} digits (limit max_int_digits)"
        )
    body = text[1:] if text.startswith("-") else text
    if not (body.isdigit() and body.isascii()):
        raise SerializationError(f"bad Long value {short(text)} at {format_path(path)}")
    return int(text)


def _parse(parse: Callable[[str], object], text: object, kind: str, path: list[object]) -> object:
    if type(text) is not str or len(text) > 64:
        raise SerializationError(f"bad {kind} value at {format_path(path)}")
    try:
        return parse(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise SerializationError(f"bad {kind} value {text!r} at {format_path(path)}") from None


def _media(
    entry: dict[str, object], media: Mapping[str, Media] | None, path: list[object]
) -> object:
    media_id = entry.get("id")
    found = media.get(media_id) if media is not None and type(media_id) is str else None
    if found is None:
        raise SerializationError(f"media {media_id!r} did not arrive (at {format_path(path)})")
    if entry.get("bytes") is True:
        return found.get_bytes()
    mime = entry.get("mime-type")
    name = entry.get("name")
    if type(mime) is str:
        found.content_type = mime
    if name is None or type(name) is str:
        found.name = name
    return found


DISABLED = DisabledGlobalData()
