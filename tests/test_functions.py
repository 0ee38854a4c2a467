"""Registering server functions and portable classes through the facade."""

from __future__ import annotations

import pytest

from tether import server
from tether.codec import PortableRegistry
from tether.functions import FunctionRegistry


def test_registry_checks_names_and_tells_listeners() -> None:
    registry = FunctionRegistry()
    seen: list[str] = []
    registry.listeners.append(lambda entry: seen.append(entry.name))

    def f() -> None: ...

    async def g() -> None: ...

    assert registry.register(f).name == "f"
    assert registry.register(g, "other").is_async
    assert seen == ["f", "other"]
    with pytest.raises(TypeError, match="needs a function"):
        registry.register(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty str"):
        registry.register(f, "")
    with pytest.raises(ValueError, match="not a valid pattern"):
        registry.register(f, "bad(")


def test_decorator_forms() -> None:
    @server.callable
    def plain_fn_x() -> int:
        return 1

    @server.callable("named_fn_x", require_user=lambda user: user == "ann")
    def named() -> int:
        return 2

    @server.callable(require_user=True)
    def guarded_fn_x() -> int:
        return 3

    assert plain_fn_x() == 1
    assert named() == 2
    assert guarded_fn_x() == 3


def test_portable_registry_names() -> None:
    registry = PortableRegistry()

    class A:
        pass

    class B:
        pass

    assert registry.register(A).name.endswith("test_portable_registry_names.<locals>.A")
    registry.register(A, "x.A")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(B, "x.A")
    with pytest.raises(TypeError, match="needs a class"):
        registry.register(42)  # type: ignore[arg-type]


def test_outside_a_call_the_context_says_so() -> None:
    ctx = server.context
    assert ctx.type in ("uplink", "server_module")
    with server.loading_indicator(), server.no_loading_indicator():
        pass


def test_wait_forever_needs_a_connection() -> None:
    with pytest.raises(server.AppOfflineError, match="not connected"):
        server.wait_forever()
