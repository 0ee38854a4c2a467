"""Values -> a JSON-able tree plus the ``objects`` side table (Anvil's uplink model).

A value JSON cannot carry is ``None`` in place and described by an entry of ``objects``:
``{"path": [...], "type": [...], ...}``. Entries are written inner before outer, and the
entries of ``vt_global`` come first. Plain containers whose contents need no change are
reused, not copied: the tree goes to the JSON encoder at once.

With ``compact=True`` (Tether's own ``tether.v1`` peers), consecutive portable objects of
one class in one list share one entry: ``{"path": <the list>, "type": ["ValueType"],
"typeName": ..., "items": [indices]}``. Anvil's uplink peers never receive that form.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tether.codec import _accel
from tether.codec.flavors import Cacheable, Copyable, RemoteCache
from tether.codec.limits import Limits
from tether.codec.media import BlobMedia, Media
from tether.codec.paths import format_path
from tether.codec.registry import DisabledGlobalData, GlobalData, PortableClass, PortableRegistry
from tether.errors import SerializationError

__all__ = ["EncodedValues", "Encoder", "all_plain", "encode_values", "format_datetime"]

INT_LIMIT = 2_147_483_647
INF = float("inf")

# A hook for types the codec does not own (capabilities, Cacheables): it returns the
# entry fields to record, or None to fall through to the other rules.
ExtraEncoder = Callable[[object, "Encoder"], dict[str, object] | None]


class CacheWriter(Protocol):
    """How one connection writes Cacheables and mirrors (:mod:`tether.protocol.caches`)."""

    def write(
        self, value: Cacheable | RemoteCache, encoder: Encoder, depth: int
    ) -> tuple[dict[str, object], object]:
        """The objects entry (without its path) and the tree to put in the value's place."""
        ...


class EncodedValues:
    """What :func:`encode_values` produced besides the tree."""

    __slots__ = ("media", "objects", "values", "vt_global")

    def __init__(
        self,
        values: dict[str, object],
        objects: list[dict[str, object]],
        vt_global: object,
        media: list[tuple[str, Media]],
    ) -> None:
        self.values = values
        self.objects = objects
        self.vt_global = vt_global
        self.media = media


def format_datetime(value: dt.datetime) -> str:
    """Anvil's DateTime form, always with ``+HHMM``; a naive value is taken as local time."""
    offset = value.utcoffset()
    if offset is None:
        value = value.astimezone()
        offset = value.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}"
        f":{value.second:02d}.{value.microsecond:06d}{sign}{hours:02d}{minutes:02d}"
    )


def _plain(v: object) -> bool:
    """True for values JSON carries as they are (no entry, no copy)."""
    t = type(v)
    if t is str or v is None or t is bool:
        return True
    if type(v) is int:
        return -INT_LIMIT <= v <= INT_LIMIT
    if type(v) is float:
        return -INF < v < INF
    return False


def _flat(data: dict[str, object]) -> bool:
    """True if every key is a str and every value plain, or a list or tuple of plain values.

    JSON carries such a dict as it is; this is the fast path for the attributes of
    default portable objects.
    """
    for key, v in data.items():
        if type(key) is not str:
            return False
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if type(v) is int:
            if -INT_LIMIT <= v <= INT_LIMIT:
                continue
            return False
        if type(v) is float:
            if -INF < v < INF:
                continue
            return False
        if type(v) is list or type(v) is tuple:
            for e in v:
                te = type(e)
                if te is str or e is None or te is bool:
                    continue
                if type(e) is int and -INT_LIMIT <= e <= INT_LIMIT:
                    continue
                if type(e) is float and -INF < e < INF:
                    continue
                return False
            continue
        return False
    return True


_FLAVOURS = (Copyable, RemoteCache)  # Cacheable is a Copyable
_C_FLAT = _accel.flat_dicts
"""The C version of :func:`_flat_run_py`, or None."""


def _flat_run(
    seq: list[object] | tuple[object, ...], cls: type, deep_enough: bool
) -> list[dict[str, object]] | None:
    """The ``__dict__``s of a list made only of objects of exactly ``cls`` whose
    attributes are all plain values or lists of them (what :func:`_flat` accepts); None
    when the list is anything else, and the object-by-object walk decides."""
    if not deep_enough:
        return None
    if _C_FLAT is not None:
        return _C_FLAT(seq, cls, INT_LIMIT)
    return _flat_run_py(seq, cls)


def _flat_run_py(
    seq: list[object] | tuple[object, ...], cls: type
) -> list[dict[str, object]] | None:
    """:func:`_flat_run` in Python (what ``_speedups.flat_dicts`` does in C)."""
    if set(map(type, seq)) != {cls}:
        return None
    try:
        dicts: list[dict[str, object]] = [item.__dict__ for item in seq]
    except AttributeError:
        return None
    if all(type(d) is dict and _flat(d) for d in dicts):
        return dicts
    return None


def all_plain(values: dict[str, object]) -> bool:
    """Whether JSON carries ``values`` as they are, with nothing to encode.

    Args:
        values: a message's values (``{"args": [...], "kwargs": {...}}``, say).

    Returns:
        True if each value is plain (None, bool, str, an int within ±2**31-1, a finite
        float), or a list, tuple or str-keyed dict of plain values.
    """
    # _plain written out (this runs on every message). Any: mypy does not narrow on
    # ``type(e) is int``, and the checks below are what makes each value safe.
    each: Iterable[Any] = values.values()
    for v in each:
        t = type(v)
        if t is list or t is tuple:
            items: Iterable[Any] = v
        elif t is dict:
            for key in v:
                if type(key) is not str:
                    return False
            items = v.values()
        else:
            items = (v,)
        for e in items:
            te = type(e)
            if te is str or e is None or te is bool:
                continue
            if te is int:
                if -INT_LIMIT <= e <= INT_LIMIT:
                    continue
            elif te is float and -INF < e < INF:
                continue
            return False
    return True


class Encoder:
    """Walks one message's values. Not reusable: make one per message."""

    __slots__ = (
        "by_class",
        "caches",
        "compact",
        "extra",
        "global_data",
        "in_global",
        "limits",
        "max_depth",
        "media",
        "objects",
        "path",
        "registry",
        "root",
        "stack",
        "stack_at",
    )

    def __init__(
        self,
        registry: PortableRegistry,
        limits: Limits,
        extra: ExtraEncoder | None = None,
        compact: bool = False,
        caches: CacheWriter | None = None,
    ) -> None:
        self.registry = registry
        self.caches = caches
        self.by_class = registry.by_class
        self.limits = limits
        self.max_depth = limits.max_depth
        self.extra = extra
        self.compact = compact
        self.objects: list[dict[str, object]] = []
        self.media: list[tuple[str, Media]] = []
        self.path: list[object] = []
        self.stack: list[int] = []  # ids of the containers and objects being walked
        self.stack_at: list[int] = []  # the path length when each was pushed
        self.global_data = GlobalData()
        self.in_global = False
        self.root: object = None

    # -- walking ------------------------------------------------------------------------

    def value(self, v: object, depth: int) -> object:
        """Encodes one value found at ``self.path``."""
        if _plain(v):
            return v
        if type(v) is list or type(v) is tuple:
            return self.sequence(v, depth)
        if type(v) is dict:
            return self.mapping(v, depth)
        portable = self.by_class.get(type(v))
        if portable is not None:
            return self.portable(v, portable, depth)
        return self.special(v, depth)

    def sequence(self, seq: list[object] | tuple[object, ...], depth: int) -> list[object]:
        if depth >= self.max_depth:
            self._too_deep(seq)
        if self.compact and len(seq) > 1:
            portable = self.by_class.get(type(seq[0]))
            if portable is not None and not (portable.serialize or portable.is_exception):
                flat = _flat_run(seq, portable.cls, depth + 3 < self.max_depth)
                if flat is not None:  # one entry for the whole list
                    self.objects.append(
                        {
                            "path": self.path.copy(),
                            "type": ["ValueType"],
                            "typeName": portable.name,
                            "items": list(range(len(flat))),
                        }
                    )
                    return list(flat)
        stack = self.stack
        stack.append(id(seq))
        self.stack_at.append(len(self.path))
        path = self.path
        objects = self.objects
        by_class = self.by_class
        compact = self.compact
        out: list[object] | None = None
        run: list[object] | None = None
        run_class: PortableClass | None = None
        run_at = -1
        depth += 1
        for i, item in enumerate(seq):
            t = type(item)
            if (  # _plain(item), inlined: a call per element costs ~10 % on plain data
                t is str
                or item is None
                or t is bool
                or (type(item) is int and -INT_LIMIT <= item <= INT_LIMIT)
                or (type(item) is float and -INF < item < INF)
            ):
                if out is not None:
                    out.append(item)
                continue
            portable = by_class.get(t)
            if portable is None:
                path.append(i)
                new = self.value(item, depth)
                path.pop()
            elif not compact:
                path.append(i)
                new = self.portable(item, portable, depth)
                path.pop()
            else:
                before = len(objects)
                # Fast path: a default portable object whose attributes are plain values or
                # flat lists of them goes out as its own __dict__ (no walk, no copy).
                data = (
                    getattr(item, "__dict__", None)
                    if not portable.serialize
                    and not portable.is_exception
                    and depth + 2 < self.max_depth
                    else None
                )
                if type(data) is dict and _flat(data):
                    new = data
                else:
                    path.append(i)
                    new = self.portable_data(item, portable, depth)
                    path.pop()
                if len(objects) != before:  # it held objects: its own entry, after theirs
                    objects.append(
                        {"path": [*path, i], "type": ["ValueType"], "typeName": portable.name}
                    )
                elif run is not None and run_class is portable and run_at == before - 1:
                    run.append(i)
                else:
                    run = [i]
                    run_class = portable
                    run_at = before
                    objects.append(
                        {
                            "path": path.copy(),
                            "type": ["ValueType"],
                            "typeName": portable.name,
                            "items": run,
                        }
                    )
            if out is None:
                if new is item and type(seq) is list:
                    continue
                out = list(seq[:i])
            out.append(new)
        stack.pop()
        self.stack_at.pop()
        if out is None:
            return seq if type(seq) is list else list(seq)
        return out

    def mapping(self, mapping: dict[str, object], depth: int) -> dict[str, object]:
        """Encodes a dict; its keys are checked to be strings (the annotation is the goal)."""
        if depth >= self.max_depth:
            self._too_deep(mapping)
        stack = self.stack
        stack.append(id(mapping))
        self.stack_at.append(len(self.path))
        path = self.path
        out: dict[str, object] | None = None
        depth += 1
        for key, item in mapping.items():
            if type(key) is not str:
                raise SerializationError(
                    f"dict keys must be strings, got {type(key).__name__} key {key!r}"
                    f" at {format_path(path)}"
                )
            t = type(item)
            if (  # _plain(item), inlined: a call per element costs ~10 % on plain data
                t is str
                or item is None
                or t is bool
                or (type(item) is int and -INT_LIMIT <= item <= INT_LIMIT)
                or (type(item) is float and -INF < item < INF)
            ):
                if out is not None:
                    out[key] = item
                continue
            path.append(key)
            new = self.value(item, depth)
            path.pop()
            if out is None:
                if new is item:
                    continue
                out = {k: mapping[k] for k in itertools.takewhile(key.__ne__, mapping)}
            out[key] = new
        stack.pop()
        self.stack_at.pop()
        return mapping if out is None else out

    def portable(self, v: object, portable: PortableClass, depth: int) -> object:
        tree = self.portable_data(v, portable, depth)
        self.objects.append(
            {"path": list(self.path), "type": ["ValueType"], "typeName": portable.name}
        )
        return tree

    def portable_data(self, v: object, portable: PortableClass, depth: int) -> object:
        """The encoded data of a portable object (its entry is the caller's to write)."""
        gd: GlobalData = DISABLED if self.in_global else self.global_data
        data: object
        if portable.serialize:
            data = getattr(v, "__serialize__")(gd)  # noqa: B009 - a dunder by name
        elif portable.is_exception:
            assert isinstance(v, BaseException)
            data = {"args": list(v.args), "attrs": v.__dict__}
        else:
            try:
                data = v.__dict__
            except AttributeError:
                raise SerializationError(
                    f"cannot serialize {type(v).__name__} object at {format_path(self.path)}:"
                    " it has no __dict__; define __serialize__ and __deserialize__"
                ) from None
        return self.state(v, data, depth)

    def state(self, owner: object, data: object, depth: int) -> object:
        """Encodes ``data``, the state of ``owner``, in ``owner``'s place (a cycle back to
        ``owner`` is reported as one)."""
        if depth >= self.max_depth:
            self._too_deep(owner)
        self.stack.append(id(owner))
        self.stack_at.append(len(self.path))
        tree = self.value(data, depth + 1)
        self.stack.pop()
        self.stack_at.pop()
        return tree

    def special(self, v: object, depth: int) -> object:
        if self.extra is not None:
            fields = self.extra(v, self)
            if fields is not None:
                fields["path"] = list(self.path)
                self.objects.append(fields)
                return None
        if type(v) is int:
            self._long(v)
        elif type(v) is float:
            self._entry("Float", "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))
        elif isinstance(v, dt.datetime):
            self._entry("DateTime", format_datetime(v))
        elif isinstance(v, dt.date):
            self._entry("Date", v.isoformat())
        elif isinstance(v, bytes | bytearray):
            self._media(BlobMedia("application/octet-stream", bytes(v)), raw=True)
        elif isinstance(v, Media):
            self._media(v, raw=False)
        elif isinstance(v, type) and v in self.by_class:
            self.objects.append(
                {"path": list(self.path), "type": ["ClassType"], "typeName": self.by_class[v].name}
            )
        elif isinstance(v, _FLAVOURS):
            return self.flavour(v, depth)
        else:
            hint = "register the class with @server.portable_class"
            if isinstance(v, type):
                hint += " to send it as a ClassType"
            raise SerializationError(
                f"cannot serialize {type(v)!r} object at {format_path(self.path)}: {hint}"
            )
        return None

    def flavour(self, v: Copyable | RemoteCache, depth: int) -> object:
        """A Perspective Broker flavour: a Cacheable or a mirror (the connection's
        tables decide), or a Copyable (its state, as a ``Copy`` entry)."""
        if isinstance(v, Cacheable | RemoteCache):
            if self.caches is None:
                raise SerializationError(
                    f"cannot send {type(v).__name__} object at {format_path(self.path)}:"
                    " Cacheables and their mirrors cross only a Tether connection"
                )
            fields, tree = self.caches.write(v, self, depth)
            fields["path"] = list(self.path)
            self.objects.append(fields)
            return tree
        tree = self.state(v, v.getStateToCopy(), depth)
        self.objects.append(
            {
                "path": list(self.path),
                "type": ["Copy"],
                "typeName": self.registry.copy_name(type(v)),
            }
        )
        return tree

    # -- leaves -------------------------------------------------------------------------

    def _entry(self, kind: str, value: str) -> None:
        self.objects.append({"path": list(self.path), "type": [kind], "value": value})

    def _long(self, v: int) -> None:
        limit = self.limits.max_int_digits
        # bit_length bounds the digits without building a string Python may refuse to build
        digits = int(v.bit_length() * 0.30102999566398120) + 1
        if digits <= limit + 1:
            try:
                text = str(v)
            except ValueError:  # over Python's own int_max_str_digits
                text = ""
            digits = len(text) - (v < 0) if text else limit + 1
        if digits > limit:
            raise SerializationError(
                f"integer with {digits} digits at {format_path(self.path)}"
                f" is over the limit of {self.limits.max_int_digits} digits (limit max_int_digits)"
            )
        self._entry("Long", text)

    def _media(self, media: Media, raw: bool) -> None:
        media_id = str(len(self.media))
        self.media.append((media_id, media))
        entry: dict[str, object] = {
            "path": list(self.path),
            "type": ["DataMedia"],
            "id": media_id,
            "mime-type": media.content_type,
            "name": media.name,
        }
        if raw:
            entry["bytes"] = True
        self.objects.append(entry)

    def _too_deep(self, v: object) -> None:
        stack = self.stack
        seen: dict[int, int] = {}
        for index, ident in enumerate([*stack, id(v)]):
            first = seen.setdefault(ident, index)
            if first != index:
                at = self.stack_at[index] if index < len(stack) else len(self.path)
                raise SerializationError(
                    f"circular reference at {format_path(self.path[:at])}:"
                    f" it contains the value at {format_path(self.path[: self.stack_at[first]])}"
                )
        raise SerializationError(
            f"nesting deeper than {self.max_depth} levels at {format_path(self.path[:8])}..."
            " (limit max_depth)"
        )


DISABLED = DisabledGlobalData()


def encode_values(
    values: dict[str, object],
    registry: PortableRegistry,
    limits: Limits,
    extra: ExtraEncoder | None = None,
    *,
    compact: bool = False,
    caches: CacheWriter | None = None,
) -> EncodedValues:
    """Encodes each value of ``values`` (e.g. ``{"args": [...], "kwargs": {...}}``).

    Returns the encoded values, the ``objects`` table (``vt_global`` entries first), the
    encoded ``vt_global`` (None when no portable object used global data) and the media
    to send as chunks after the message.

    Raises:
        SerializationError: a value cannot be sent; the message names its path.
    """
    if all_plain(values):  # the common small call: nothing to walk, nothing to record
        return EncodedValues(values, [], None, [])
    enc = Encoder(registry, limits, extra, compact, caches)
    out: dict[str, object] = {}
    for key, v in values.items():
        enc.path.append(key)
        enc.root = v
        out[key] = enc.value(v, 0)
        enc.path.pop()
    objects = enc.objects
    vt_global: object = None
    if len(enc.global_data):
        body = enc.objects
        enc.objects = []
        enc.in_global = True
        enc.path.append("vt_global")
        vt_global = enc.value(dict(enc.global_data), 0)
        enc.path.pop()
        objects = enc.objects + body
    count = len(objects)
    if compact:
        for entry in objects:
            items = entry.get("items")
            if type(items) is list:
                count += len(items) - 1
    if count > limits.max_objects:
        raise SerializationError(
            f"message has {count} objects, over the limit of {limits.max_objects}"
            " (limit max_objects)"
        )
    return EncodedValues(out, objects, vt_global, enc.media)
