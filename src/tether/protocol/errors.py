"""Exceptions across the wire: ``{"type", "message", "trace"?, "value"?}`` both ways.

Tether's own exceptions travel as ``anvil.server.<Name>``, portable exceptions under their
portable name (and whole, under ``value``), builtins by bare name, anything else as
``module.QualName``; the receiver rebuilds what it knows and a ``RemoteError`` otherwise.
"""

from __future__ import annotations

from typing import Any

from tether.codec import PortableRegistry
from tether.errors import RemoteError, error_class_for_wire_name, wire_name_of_error

__all__ = ["error_fields", "error_from_wire"]


def error_fields(error: BaseException, registry: PortableRegistry) -> dict[str, object]:
    """The ``type`` and ``message`` of an error reply for ``error``."""
    return {"type": _wire_type(error, registry), "message": _message(error)}


def error_from_wire(error: object, registry: PortableRegistry) -> BaseException:
    """The exception an error reply stands for (only registered classes are built)."""
    if type(error) is not dict:
        return RemoteError(str(error))
    message = error.get("message")
    text = message if type(message) is str else str(message)
    type_name = error.get("type")
    trace = error.get("trace")
    trace_list = trace if type(trace) is list else None
    value = error.get("value")
    if isinstance(value, BaseException):
        return value
    if type(type_name) is str:
        cls = error_class_for_wire_name(type_name)
        if cls is not None:
            return cls(text)
        portable = registry.by_name.get(type_name)
        if portable is not None and portable.is_exception:
            cls_any: Any = portable.cls
            exc: BaseException = cls_any.__new__(cls_any)
            exc.args = (text,)
            return exc
        return RemoteError(text, type_name, trace_list)
    return RemoteError(text, "Exception", trace_list)


def _wire_type(error: BaseException, registry: PortableRegistry) -> str:
    cls = type(error)
    if isinstance(error, RemoteError):
        return error.type_name
    name = wire_name_of_error(cls)
    if name is not None:
        return name
    portable = registry.by_class.get(cls)
    if portable is not None:
        return portable.name
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _message(error: BaseException) -> str:
    if isinstance(error, RemoteError):
        return str(error.args[0]) if error.args else ""
    return str(error)
