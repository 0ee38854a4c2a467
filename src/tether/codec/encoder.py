"""Values -> a JSON-able tree plus the ``objects`` side table (Anvil's uplink model).

A value JSON cannot carry is ``None`` in place and described by an entry of ``objects``:
``{"path": [...], "type": [...], ...}``. Entries are written inner before outer, and the
entries of ``vt_global`` come first. Plain containers whose contents need no change are
reused, not copied: the tree is handed to the JSON encoder at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from tether.codec.limits import Limits
from tether.codec.media import Media
from tether.codec.paths import format_path
from tether.codec.registry import DisabledGlobalData, GlobalData, PortableRegistry
from tether.errors import SerializationError

__all__ = ["EncodedValues", "Encoder", "encode_values", "format_datetime"]

INT_LIMIT = 2_147_483_647
INF = float("inf")

# A hook for types the codec does not own (capabilities, Cacheables): it returns the
# entry fields to record, or None to fall through to the other rules.
ExtraEncoder = Callable[[object, "Encoder"], dict[str, object] | None]


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
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.astimezone()
    return value.strftime("%Y-%m-%d %H:%M:%S.%f%z")


class Encoder:
    """Walks one message's values. Not reusable: make one per message."""

    __slots__ = (
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
    )

    def __init__(
        self,
        registry: PortableRegistry,
        limits: Limits,
        extra: ExtraEncoder | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.max_depth = limits.max_depth
        self.extra = extra
        self.objects: list[dict[str, object]] = []
        self.media: list[tuple[str, Media]] = []
        self.path: list[object] = []
        self.stack: list[int] = []  # ids of the containers and objects being walked
        self.global_data = GlobalData()
        self.in_global = False
        self.root: object = None

    # -- walking ------------------------------------------------------------------------

    def value(self, v: object, depth: int) -> object:
        """Encodes one value found at ``self.path``."""
        t = type(v)
        if t is str or v is None or t is bool:
            return v
        if t is int:
            return v if -INT_LIMIT <= v <= INT_LIMIT else self._long(v)  # type: ignore[operator]
        if t is float:
            return v if -INF < v < INF else self._float(v)  # type: ignore[operator]
        if t is list or t is tuple:
            return self.sequence(v, depth)  # type: ignore[arg-type]
        if t is dict:
            return self.mapping(v, depth)  # type: ignore[arg-type]
        return self.special(v, depth)

    def sequence(self, seq: list[object] | tuple[object, ...], depth: int) -> list[object]:
        if depth >= self.max_depth:
            self._too_deep(seq)
        stack = self.stack
        stack.append(id(seq))
        path = self.path
        out: list[object] | None = None
        value = self.value
        depth += 1
        for i, item in enumerate(seq):
            t = type(item)
            if t is str or item is None or t is bool or (
                t is int and -INT_LIMIT <= item <= INT_LIMIT  # type: ignore[operator]
            ):
                if out is not None:
                    out.append(item)
                continue
            path.append(i)
            new = value(item, depth)
            path.pop()
            if out is None:
                if new is item and t is not tuple:
                    continue
                out = list(seq[:i])
            out.append(new)
        stack.pop()
        if out is None:
            return seq if type(seq) is list else list(seq)  # type: ignore[return-value]
        return out

    def mapping(self, mapping: dict[object, object], depth: int) -> dict[str, object]:
        if depth >= self.max_depth:
            self._too_deep(mapping)
        stack = self.stack
        stack.append(id(mapping))
        path = self.path
        out: dict[str, object] | None = None
        value = self.value
        depth += 1
        for key, item in mapping.items():
            if type(key) is not str:
                raise SerializationError(
                    f"dict keys must be strings, got {type(key).__name__} key {key!r}"
                    f" at {format_path(path)}"
                )
            t = type(item)
            if t is str or item is None or t is bool or (
                t is int and -INT_LIMIT <= item <= INT_LIMIT  # type: ignore[operator]
            ):
                if out is not None:
                    out[key] = item
                continue
            path.append(key)
            new = value(item, depth)
            path.pop()
            if out is None:
                if new is item:
                    continue
                out = {}
                for k, old in mapping.items():
                    if k is key:
                        break
                    out[k] = old  # type: ignore[index]
            out[key] = new
        stack.pop()
        return mapping if out is None else out  # type: ignore[return-value]

    def special(self, v: object, depth: int) -> object:
        t = type(v)
        portable = self.registry.by_class.get(t)
        if portable is not None:
            if depth >= self.max_depth:
                self._too_deep(v)
            self.stack.append(id(v))
            gd = DISABLED if self.in_global else self.global_data
            if portable.serialize:
                data = v.__serialize__(gd)  # type: ignore[attr-defined]
            elif portable.is_exception:
                data = {"args": list(v.args), "attrs": v.__dict__}  # type: ignore[attr-defined]
            else:
                try:
                    data = v.__dict__
                except AttributeError:
                    raise SerializationError(
                        f"cannot serialize {t.__name__} object at {format_path(self.path)}:"
                        " it has no __dict__; define __serialize__ and __deserialize__"
                    ) from None
            tree = self.value(data, depth + 1)
            self.stack.pop()
            self.objects.append(
                {"path": list(self.path), "type": ["ValueType"], "typeName": portable.name}
            )
            return tree
        if self.extra is not None:
            fields = self.extra(v, self)
            if fields is not None:
                fields["path"] = list(self.path)
                self.objects.append(fields)
                return None
        if t is dt.datetime:
            return self._entry("DateTime", format_datetime(v))  # type: ignore[arg-type]
        if t is dt.date:
            return self._entry("Date", v.isoformat())  # type: ignore[attr-defined]
        if t is bytes or t is bytearray:
            return self._media(v, raw=True)
        if isinstance(v, Media):
            return self._media(v, raw=False)
        if isinstance(v, type) and v in self.registry.by_class:
            name = self.registry.by_class[v].name
            self.objects.append({"path": list(self.path), "type": ["ClassType"], "typeName": name})
            return None
        if isinstance(v, dt.datetime):  # subclasses, after the exact-type fast paths
            return self._entry("DateTime", format_datetime(v))
        if isinstance(v, dt.date):
            return self._entry("Date", v.isoformat())
        hint = (
            "register the class with @server.portable_class"
            if not isinstance(v, type)
            else "register the class with @server.portable_class to send it as a ClassType"
        )
        raise SerializationError(f"cannot serialize {t!r} object at {format_path(self.path)}: {hint}")

    # -- leaves -------------------------------------------------------------------------

    def _entry(self, kind: str, value: str) -> None:
        self.objects.append({"path": list(self.path), "type": [kind], "value": value})

    def _long(self, v: int) -> None:
        text = str(v)
        if len(text.lstrip("-")) > self.limits.max_int_digits:
            raise SerializationError(
                f"integer with {len(text.lstrip('-'))} digits at {format_path(self.path)}"
                f" is over the limit of {self.limits.max_int_digits} digits"
            )
        self._entry("Long", text)

    def _float(self, v: float) -> None:
        self._entry("Float", "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))

    def _media(self, v: object, raw: bool) -> None:
        media_id = str(len(self.media))
        if raw:
            from tether.codec.media import BlobMedia

            media: Media = BlobMedia("application/octet-stream", bytes(v))  # type: ignore[call-overload]
        else:
            media = v  # type: ignore[assignment]
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
        if id(v) in self.stack:
            raise SerializationError(
                f"circular reference at {format_path(self._cycle_path(v))}:"
                " a value contains itself"
            )
        raise SerializationError(
            f"nesting deeper than {self.max_depth} levels at {format_path(self.path[:8])}..."
            " (limit max_depth)"
        )


    def _cycle_path(self, v: object) -> list[object]:
        """The shortest prefix of the path that reaches ``v`` again (best effort)."""
        path = self.path
        seen: set[int] = set()
        node: object = self.root
        for i, key in enumerate(path[1:], start=1):
            if not isinstance(node, list | tuple | dict):
                node = getattr(node, "__dict__", None)
            try:
                node = node[key]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                return path
            if id(node) == id(v):
                if id(v) in seen:
                    return path[: i + 1]
                seen.add(id(v))
        return path


DISABLED = DisabledGlobalData()


def encode_values(
    values: dict[str, object],
    registry: PortableRegistry,
    limits: Limits,
    extra: ExtraEncoder | None = None,
) -> EncodedValues:
    """Encodes each value of ``values`` (e.g. ``{"args": [...], "kwargs": {...}}``).

    Returns the encoded values, the ``objects`` table (``vt_global`` entries first), the
    encoded ``vt_global`` (None when no portable object used global data) and the media
    to send as chunks after the message.

    Raises:
        SerializationError: a value cannot be sent; the message names its path.
    """
    enc = Encoder(registry, limits, extra)
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
    if len(objects) > limits.max_objects:
        raise SerializationError(
            f"message has {len(objects)} objects, over the limit of {limits.max_objects}"
            " (limit max_objects)"
        )
    return EncodedValues(out, objects, vt_global, enc.media)
