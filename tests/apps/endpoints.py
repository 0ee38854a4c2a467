"""HTTP endpoints for the endpoint tests (every path under ``/t/``: the registry is
process-wide, so they must not collide with other test apps)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, MutableMapping

from tether import server
from tether.codec import BlobMedia, Media
from tether.context import CallContext
from tether.http import HttpRequest

USERS = {"alice": "wonderland"}


@server.portable_class("tests.endpoints.Point")
class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


def request() -> HttpRequest:
    """``server.request``, typed."""
    found = server.request
    assert isinstance(found, HttpRequest)
    return found


def session() -> MutableMapping[str, object]:
    """``server.session``, typed."""
    found = server.session
    assert isinstance(found, MutableMapping)
    return found


def describe(value: object) -> object:
    """A JSON-able picture of a parameter (Media as its name, type and bytes)."""
    if isinstance(value, Media):
        return {
            "media": True,
            "name": value.name,
            "content_type": value.content_type,
            "bytes": value.get_bytes().decode("latin-1"),
        }
    return value


def request_facts() -> dict[str, object]:
    """Everything ``server.request`` holds, as JSON."""
    current = request()
    return {
        "method": current.method,
        "path": current.path,
        "headers": current.headers,
        "query_params": current.query_params,
        "form_params": {k: describe(v) for k, v in current.form_params.items()},
        "body": None if current.body is None else describe(current.body),
        "body_json": current.body_json,
        "origin": current.origin,
        "remote_address": current.remote_address,
        "username": current.username,
        "password": current.password,
        "user": current.user,
    }


# -- parameters -------------------------------------------------------------------------


@server.http_endpoint("/t/echo/:a/:b")
def echo(a: str, b: str) -> dict[str, object]:
    return {"a": a, "b": b, "path": request().path}


@server.http_endpoint("/t/files/:name.txt")
def file_name(name: str) -> str:
    return name


@server.http_endpoint("/t/users/me")
def users_me() -> str:
    return "literal"


@server.http_endpoint("/t/users/:id")
def users_id(id: str) -> str:
    return f"pattern {id}"


@server.http_endpoint("/t/params/:x", ["GET", "POST"])
def params(x: str, **rest: object) -> dict[str, object]:
    return {"x": x, **{k: describe(v) for k, v in rest.items()}}


@server.http_endpoint("/t/strict")
def strict(q: str) -> str:
    return q


# -- server.request ---------------------------------------------------------------------


@server.http_endpoint("/t/request", ["GET", "POST", "PUT"])
def request_sync(**_: object) -> dict[str, object]:
    return request_facts()


@server.http_endpoint("/t/request-async", ["GET", "POST"])
async def request_async(**_: object) -> dict[str, object]:
    return request_facts()


@server.callable("endpoints.request_in_nested_call")
def request_in_nested_call() -> str:
    try:
        server.request  # noqa: B018 - the attribute access is what is tested
    except RuntimeError as exc:
        return str(exc)
    return "server.request was available"


@server.http_endpoint("/t/nested")
def nested() -> object:
    return server.call("endpoints.request_in_nested_call")


# -- return values ----------------------------------------------------------------------

RETURNS: dict[str, Callable[[], object]] = {
    "text": lambda: "héllo",
    "bytes": lambda: b"\x00\x01\xff",
    "png": lambda: BlobMedia("image/png", b"\x89PNG", name="x.png"),
    "unnamed-media": lambda: BlobMedia("text/csv", b"a,b"),
    "unicode-name": lambda: BlobMedia("application/pdf", b"%PDF", name="résumé.pdf"),
    "dict": lambda: {"a": 1, "b": [True, None]},
    "list": lambda: [1, "two"],
    "portable": lambda: Point(1, 2),
    "none": lambda: None,
    "custom": lambda: server.HttpResponse(
        201, "made", {"X-Custom": "yes", "Location": "/t/thing/1"}
    ),
    "custom-type": lambda: server.HttpResponse(
        202, {"ok": True}, {"Content-Type": "application/vnd.test+json"}
    ),
    "custom-empty": lambda: server.HttpResponse(204, None),
    "injection": lambda: server.HttpResponse(200, "x", {"X-Bad": "a\r\nSet-Cookie: evil=1"}),
    "bad-status": lambda: server.HttpResponse(99, "x"),
    "informational-status": lambda: server.HttpResponse(102, "x"),
    "bad-header-name": lambda: server.HttpResponse(200, "x", {"X Bad": "v"}),
    "not-modified-with-body": lambda: server.HttpResponse(304, "stale body"),
    "no-content-with-body": lambda: server.HttpResponse(204, "stale body"),
    "control-character": lambda: server.HttpResponse(200, "x", {"X-Bad": "a\x01b"}),
    "bad-media-type": lambda: BlobMedia("text/plain\r\nX-Evil: 1", b"x"),
    "content-length": lambda: server.HttpResponse(200, "abc", {"Content-Length": "10"}),
    "transfer-encoding": lambda: server.HttpResponse(200, "abc", {"Transfer-Encoding": "chunked"}),
    "broken-media": lambda: BrokenMedia(),
}


class BrokenMedia(BlobMedia):
    """Media whose bytes cannot be read."""

    def __init__(self) -> None:
        super().__init__("text/plain", b"")

    def get_bytes(self) -> bytes:
        raise OSError("the disk went away")


@server.http_endpoint("/t/return/:kind")
def returns(kind: str) -> object:
    return RETURNS[kind]()


@server.http_endpoint("/t/fail")
def fail() -> None:
    raise ValueError("the secret detail that must stay in the log")


# -- methods and CORS -------------------------------------------------------------------


@server.http_endpoint("/t/put-delete", ["put", "DELETE"])
def put_delete() -> str:
    return request().method


@server.http_endpoint("/t/get-only", ["GET"])
def get_only() -> str:
    return "body of GET"


@server.http_endpoint("/t/cors", enable_cors=True)
def cors() -> str:
    return "shared"


@server.http_endpoint("/t/cors-session", enable_cors=True, cross_site_session=True)
def cors_session() -> int:
    return count()


# -- credentials ------------------------------------------------------------------------


def check_user(username: str, password: str) -> dict[str, str] | None:
    if USERS.get(username) == password:
        return {"name": username}
    return None


@server.http_endpoint("/t/basic", require_credentials=True)
def basic() -> dict[str, object]:
    return {"username": request().username, "password": request().password}


@server.http_endpoint("/t/auth-fn", authenticate_users=check_user)
def auth_fn() -> object:
    return request().user


@server.http_endpoint("/t/auth-global", authenticate_users=True)
def auth_global() -> object:
    return request().user


# -- context, origins, threads ----------------------------------------------------------


def context_facts() -> dict[str, object]:
    ctx = server.context
    assert isinstance(ctx, CallContext)
    assert ctx.remote_caller is not None
    try:
        asyncio.get_running_loop()
        on_loop = True
    except RuntimeError:
        on_loop = False
    return {
        "type": ctx.type,
        "client": ctx.client.type,
        "ip": ctx.client.ip,
        "caller": ctx.remote_caller.type,
        "trusted": ctx.remote_caller.is_trusted,
        "app_origin": server.get_app_origin(),
        "api_origin": server.get_api_origin(),
        "on_loop": on_loop,
        "thread": threading.current_thread().name,
    }


@server.http_endpoint("/t/context")
def context_sync() -> dict[str, object]:
    return context_facts()


@server.http_endpoint("/t/context-async")
async def context_async() -> dict[str, object]:
    return context_facts()


# -- sessions ---------------------------------------------------------------------------


@server.http_endpoint("/t/count")
def count() -> int:
    data = session()
    n = data.get("n", 0)
    assert isinstance(n, int)
    data["n"] = n + 1
    return n + 1


@server.http_endpoint("/t/count-async")
async def count_async() -> int:
    return count()


@server.http_endpoint("/t/count-xsite", cross_site_session=True)
def count_cross_site() -> int:
    return count()


@server.http_endpoint("/t/read-session")
def read_session() -> object:
    return session().get("n")  # reading only: no session is made for it


@server.http_endpoint("/t/untouched")
def untouched() -> str:
    return "no session used"


@server.http_endpoint("/t/reset")
def reset() -> int:
    server.reset_session()
    return count()


# -- request bodies ---------------------------------------------------------------------


@server.http_endpoint("/t/size", ["POST"])
def size() -> int:
    body = request().body
    return 0 if body is None else len(body.get_bytes())


@server.http_endpoint("/t/fail-async")
async def fail_async() -> None:
    raise ValueError("the secret detail that must stay in the log")
