"""A test app: echo functions and portable classes for the integration tests."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from tether import server


@server.portable_class("tests.Item")
class Item:
    def __init__(self, id: int, name: str, tags: list[str]) -> None:
        self.init_calls = getattr(self, "init_calls", 0) + 1
        self.id, self.name, self.tags = id, name, tags

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Item) and (self.id, self.name, self.tags) == (
            other.id,
            other.name,
            other.tags,
        )


@server.portable_class("tests.Counted")
class Counted:
    """Uses global data: every instance in one message shares one counter."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __serialize__(self, global_data: dict[str, object]) -> str:
        global_data["count"] = int(global_data.get("count", 0)) + 1  # type: ignore[call-overload]
        return self.label

    def __deserialize__(self, data: str, global_data: dict[str, object]) -> None:
        self.label = data
        self.seen = global_data["count"]


@server.portable_class("tests.Refused")
class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NotPortable:
    pass


@server.callable
def echo(*args: object, **kwargs: object) -> object:
    if kwargs:
        return [list(args), kwargs]
    return args[0] if len(args) == 1 else list(args)


@server.callable
async def aecho(value: object) -> object:
    await asyncio.sleep(0)
    return value


@server.callable("renamed.echo")
def renamed(value: object) -> object:
    return value


@server.callable
def refuse(code: int) -> None:
    raise Refused("refused", code)


@server.callable
def divide(a: int, b: int) -> float:
    return a / b


@server.callable
def deny() -> None:
    raise server.PermissionDenied("not you")


@server.callable
def unsendable() -> object:
    return NotPortable()


@server.callable
def item_class() -> type:
    return Item


@server.callable
def mutate(item: Item) -> Item:
    item.tags.append("mutated")
    return item


@server.callable
def nested_copy(item: Item) -> dict[str, object]:
    returned = server.call("mutate", item)
    return {"original": item, "returned": returned, "same": returned is item}


@server.callable
async def anested(value: object) -> object:
    return await server.acall("echo", value)


@server.callable
async def blocking_in_loop() -> object:
    return server.call("echo", 1)


_release = threading.Event()


@server.callable
def wait_for_release() -> str:
    released = _release.wait(30)
    _release.clear()
    return "released" if released else "timed out"


@server.callable
def release() -> None:
    _release.set()


@server.callable
def context_info() -> dict[str, object]:
    ctx = server.context
    nested = server.call("nested_context")
    assert ctx.remote_caller is not None
    return {
        "type": ctx.type,
        "client": ctx.client.type,
        "caller": ctx.remote_caller.type,
        "trusted": ctx.remote_caller.is_trusted,
        "nested": nested,
    }


@server.callable
def nested_context() -> dict[str, object]:
    ctx = server.context
    assert ctx.remote_caller is not None
    return {"caller": ctx.remote_caller.type, "trusted": ctx.remote_caller.is_trusted}


@server.callable(require_user=True)
def members_only() -> str:
    return "secret"


@server.callable
def call_peer(name: str, *args: object) -> object:
    return server.call(name, *args)


@server.callable
def imported(name: str) -> bool:
    return name in sys.modules


@server.callable
def sleep_briefly() -> float:
    time.sleep(0.01)
    return 0.01
