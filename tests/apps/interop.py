"""Server functions the real anvil-uplink client calls (tests/interop)."""

from __future__ import annotations

import datetime as dt
import math

from tether import server


@server.portable_class("interop.Point")
class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


@server.portable_class("interop.Refused")
class Refused(Exception):
    pass


@server.callable("interop.echo")
def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


@server.callable("interop.describe")
def describe(value: object) -> str:
    """How the server sees a value: its type and a stable text."""
    if isinstance(value, float) and math.isnan(value):
        return "float nan"
    if isinstance(value, server.Media):
        return f"media {value.content_type} {value.name} {value.length}"
    if isinstance(value, Point):
        return f"Point {value.x} {value.y}"
    if isinstance(value, dt.datetime):
        return f"datetime {value.isoformat()}"
    return f"{type(value).__name__} {value!r}"


@server.callable("interop.media")
def media(size: int) -> server.BlobMedia:
    return server.BlobMedia("application/octet-stream", b"m" * size, name=f"{size}.bin")


@server.callable("interop.point")
def point(p: Point) -> Point:
    return Point(p.y, p.x)


@server.callable("interop.point_class")
def point_class() -> type:
    return Point


@server.callable("interop.fail")
def fail(kind: str) -> None:
    if kind == "portable":
        raise Refused("refused here")
    if kind == "permission":
        raise server.PermissionDenied("not you")
    raise ZeroDivisionError("plain failure")


@server.callable("interop.context")
def context() -> list[object]:
    ctx = server.context
    return [
        ctx.client.type,
        ctx.remote_caller.type if ctx.remote_caller else None,
        bool(ctx.remote_caller and ctx.remote_caller.is_trusted),
    ]


@server.callable("interop.call_script")
def call_script(name: str, *args: object) -> object:
    return server.call(name, *args)


@server.callable("interop.mint")
def mint(*scope: object) -> server.Capability:
    return server.Capability(list(scope))


@server.callable("interop.check")
def check(cap: server.Capability, *pattern: object) -> list[object]:
    """``"*"`` in the pattern stands for ``Capability.ANY`` (which does not cross the wire)."""
    wanted = [server.Capability.ANY if p == "*" else p for p in pattern]
    return [cap.scope, server.unwrap_capability(cap, wanted)]


@server.callable("interop.progress")
def progress(cap: server.Capability, value: object) -> str:
    """Sends an update on the caller's capability: it goes back in capUpdates."""
    cap.send_update({"progress": value})
    return "sent"


@server.callable("interop.relay")
def relay(name: str, cap: server.Capability) -> object:
    """Passes ``cap`` on to a script's function: its updates flow back through here."""
    return server.call(name, cap)


@server.callable("interop.remember")
def remember(value: object) -> None:
    server.session["remembered"] = value


@server.callable("interop.recall")
def recall() -> object:
    return server.session.get("remembered")


@server.callable("interop.origins")
def origins() -> list[str]:
    return [server.get_app_origin(), server.get_api_origin()]


@server.callable("interop.slow")
def slow(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "late"


@server.portable_class("interop.Priced")
class Priced:
    """Custom serialisation with a shared ``global_data``: the currency travels once."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __serialize__(self, global_data: dict[str, object]) -> int:
        global_data["currency"] = self.currency
        return self.cents

    def __deserialize__(self, data: int, global_data: dict[str, object]) -> None:
        self.cents, self.currency = data, str(global_data["currency"])


@server.callable("interop.double_prices")
def double_prices(items: list[Priced]) -> list[Priced]:
    return [Priced(p.cents * 2, p.currency + "!") for p in items]


@server.callable("interop.mint_narrowed")
def mint_narrowed() -> server.Capability:
    return server.Capability(["doc", 1]).narrow(["page", 2])
