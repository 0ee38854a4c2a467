"""Server functions registered in this process with ``@server.callable``.

The same registry serves a server process (the functions it runs) and a trusted client
process (the functions it offers to the server). Pure: no I/O.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

from tether.errors import NoServerFunctionError

__all__ = ["FunctionRegistry", "ServerFunction", "function_registry", "missing_function"]

UserPredicate = Callable[[object], bool]


@dataclass(frozen=True, slots=True)
class ServerFunction:
    """One registered function."""

    name: str
    fn: Callable[..., object]
    is_async: bool
    require_user: bool | UserPredicate = False


class FunctionRegistry:
    """Name -> function, with listeners told of every new registration."""

    def __init__(self) -> None:
        self.functions: dict[str, ServerFunction] = {}
        self.listeners: list[Callable[[ServerFunction], None]] = []

    def register(
        self,
        fn: Callable[..., object],
        name: str | None = None,
        *,
        require_user: bool | UserPredicate = False,
    ) -> ServerFunction:
        """Registers ``fn`` under ``name`` (default: its ``__name__``)."""
        if not callable(fn):
            raise TypeError(f"server.callable needs a function, got {fn!r}")
        name = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a server function name must be a non-empty str, got {name!r}")
        try:
            re.compile(name)
        except re.error as exc:
            raise ValueError(
                f"server function name {name!r} is not a valid pattern: {exc}"
            ) from None
        entry = ServerFunction(name, fn, inspect.iscoroutinefunction(fn), require_user)
        self.functions[name] = entry
        for listener in list(self.listeners):
            listener(entry)
        return entry

    def get(self, name: str) -> ServerFunction | None:
        return self.functions.get(name)


function_registry = FunctionRegistry()
"""The process-wide registry that ``server.callable`` fills."""


def missing_function(name: str) -> NoServerFunctionError:
    """The error for a call to a name nothing is registered under."""
    return NoServerFunctionError(f"no server function named {name!r}")
