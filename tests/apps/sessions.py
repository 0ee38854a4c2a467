"""Server functions for the session, context, user and connection tests."""

from __future__ import annotations

import threading

from tether import server

_together = threading.Barrier(2)
_first_may_finish = threading.Event()
_started = threading.Event()


@server.portable_class("tests.Cart")
class Cart:
    def __init__(self, items: list[str]) -> None:
        self.items = items


@server.callable
def session_set(key: str, value: object) -> str:
    server.session[key] = value
    return server.get_session_id()


@server.callable
async def session_set_async(key: str, value: object) -> None:
    server.session[key] = value


@server.callable
def session_get(key: str, default: object = None) -> object:
    return server.session.get(key, default)


@server.callable
def session_keys() -> list[str]:
    return sorted(server.session)


@server.callable
def session_delete(key: str) -> None:
    del server.session[key]


@server.callable
def session_append(key: str, item: object) -> list[object]:
    items = server.session.setdefault(key, [])
    assert isinstance(items, list)
    items.append(item)  # changed in place: saved all the same
    return items


@server.callable
def session_add_to_cart(item: str) -> Cart:
    cart = server.session.get("cart")
    if cart is None:
        cart = server.session["cart"] = Cart([])
    assert isinstance(cart, Cart)
    cart.items.append(item)
    return cart


@server.callable
def session_set_then_fail(key: str, value: object) -> None:
    server.session[key] = value
    raise ValueError("failed after setting the session")


@server.callable
def session_set_together(key: str, value: object) -> None:
    """Two calls meet here, so both have read the session before either saves."""
    _ = dict(server.session)
    server.session[key] = value
    _together.wait(10)


@server.callable
def session_set_and_hold(key: str, value: object) -> None:
    """Sets ``key``, then finishes only after ``release_held`` (so it finishes last)."""
    server.session[key] = value
    _started.set()
    _first_may_finish.wait(10)


@server.callable
def wait_held_started() -> bool:
    return _started.wait(10)


@server.callable
def release_held() -> None:
    _started.clear()
    _first_may_finish.set()


@server.callable
def reset_held() -> None:
    _first_may_finish.clear()
    _started.clear()
    _together.reset()


@server.callable
def reset_and_set(key: str, value: object) -> str:
    server.reset_session()
    server.session[key] = value
    return server.get_session_id()


@server.callable
def nested_session_get(key: str) -> object:
    server.session[key + "-outer"] = "set by the outer call"
    return server.call("session_get", key + "-outer")


@server.callable
def context_of() -> dict[str, object]:
    ctx = server.context
    assert ctx.remote_caller is not None
    return {
        "type": ctx.type,
        "client": ctx.client.type,
        "ip": ctx.client.ip,
        "location": ctx.client.location,
        "caller": ctx.remote_caller.type,
        "trusted": ctx.remote_caller.is_trusted,
        "task": ctx.background_task_id,
        "session": server.get_session_id(),
    }


@server.callable
def nested_context_of() -> dict[str, object]:
    return {"outer": context_of(), "nested": server.call("context_of")}


@server.callable
def location_of() -> dict[str, object] | None:
    location = server.context.client.location
    if location is None:
        return None
    return {"city": location.city, "country": location.country_code}


@server.callable
def login(name: str) -> None:
    server.session["user"] = name


@server.callable
def logout() -> None:
    server.session.pop("user", None)


@server.callable(require_user=True)
def whoami() -> object:
    return server.session["user"]


@server.callable(require_user=lambda user: user == "admin")
def admin_only() -> str:
    return "welcome, admin"


@server.callable
def sleep_for(seconds: float) -> str:
    threading.Event().wait(min(seconds, 10))
    return "slept"


@server.callable
def session_set_unsendable() -> None:
    server.session["weird"] = object()
