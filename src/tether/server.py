"""``tether.server``: one API on both sides of the wire (API.md §1).

In server code, ``call`` runs the function in this process with copy semantics; in a
process that called :func:`connect`, it goes over the connection. The same portable class
can therefore call ``server.call`` in a method and run unchanged on either side.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from tether import _current
from tether.codec import BlobMedia, Media, portable_registry
from tether.codec.capability import Capability, unwrap_capability
from tether.context import CallContext, ClientInfo, StackFrame, current_call
from tether.context import call_timeout as _call_timeout
from tether.errors import (
    AppOfflineError,
    BackgroundTaskError,
    BackgroundTaskKilled,
    BackgroundTaskNotFound,
    ExecutionTerminatedError,
    InternalError,
    InvalidResponseError,
    NoServerFunctionError,
    PermissionDenied,
    QuotaExceededError,
    RemoteError,
    RuntimeUnavailableError,
    SerializationError,
    ServiceNotAdded,
    SessionExpiredError,
    TetherError,
    TimeoutError,
    UplinkDisconnectedError,
)
from tether.functions import UserPredicate, function_registry
from tether.http import (
    Authenticator,
    HttpRequest,
    HttpResponse,
    endpoint_registry,
    set_authenticator,
)
from tether.tasks import Task, ask, task_registry
from tether.tasks import task_state as _task_state

__all__ = [
    "AppOfflineError",
    "BackgroundTaskError",
    "BackgroundTaskKilled",
    "BackgroundTaskNotFound",
    "BlobMedia",
    "Capability",
    "ExecutionTerminatedError",
    "HttpRequest",
    "HttpResponse",
    "InternalError",
    "InvalidResponseError",
    "Media",
    "NoServerFunctionError",
    "PermissionDenied",
    "QuotaExceededError",
    "RemoteError",
    "RuntimeUnavailableError",
    "SerializationError",
    "ServiceNotAdded",
    "SessionExpiredError",
    "Task",
    "TetherError",
    "TimeoutError",
    "UplinkDisconnectedError",
    "acall",
    "background_task",
    "call",
    "call_timeout",
    "callable",
    "connect",
    "context",  # noqa: F822 - a module __getattr__ attribute: the running call's context
    "disconnect",
    "get_api_origin",
    "get_app_origin",
    "get_background_task",
    "get_session_id",
    "http_endpoint",
    "invalidate_client_objects",
    "is_app_online",
    "launch_background_task",
    "list_background_tasks",
    "loading_indicator",
    "no_loading_indicator",
    "portable_class",
    "request",  # noqa: F822 - a module __getattr__ attribute: the HTTP endpoint's request
    "reset_session",
    "session",  # noqa: F822 - a module __getattr__ attribute: the calling client's session
    "set_user_authenticator",
    "set_user_resolver",
    "task_state",  # noqa: F822 - a module __getattr__ attribute: inside a background task
    "unwrap_capability",
    "wait_forever",
]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


@overload
def callable(fn_or_name: F, *, require_user: bool | UserPredicate = False) -> F: ...
@overload
def callable(
    fn_or_name: str | None = None, *, require_user: bool | UserPredicate = False
) -> Callable[[F], F]: ...
def callable(
    fn_or_name: F | str | None = None, *, require_user: bool | UserPredicate = False
) -> F | Callable[[F], F]:
    """Registers a server function (sync or ``async def``) under its name or the given one.

    ``@server.callable``, ``@server.callable("name")`` or
    ``@server.callable(require_user=True)``. ``require_user`` is a bool or a predicate
    ``f(user) -> bool``; failing it raises ``PermissionDenied``. In a client connected with
    the uplink key, the function is offered to the server for everyone to call.
    """
    if builtins.callable(fn_or_name) and not isinstance(fn_or_name, str):
        function_registry.register(fn_or_name, require_user=require_user)
        return fn_or_name
    name = fn_or_name

    def register(fn: F) -> F:
        function_registry.register(fn, name, require_user=require_user)
        return fn

    return register


def http_endpoint(
    path: str,
    methods: list[str] | tuple[str, ...] = ("GET", "POST"),
    *,
    require_credentials: bool = False,
    authenticate_users: bool | Authenticator = False,
    cross_site_session: bool = False,
    enable_cors: bool = False,
) -> Callable[[F], F]:
    """Serves the decorated function (sync or ``async def``) at ``/_/api<path>``.

    ``:name`` segments of ``path`` match one path segment each; form parameters, then
    query parameters, then path parameters (later wins) are its keyword arguments, as
    strings (uploaded files as ``Media``). It reads ``server.request`` and returns a
    ``str``, bytes or ``Media``, a JSON-able value, or an :class:`HttpResponse`.

    Args:
        methods: the methods it answers (``HEAD`` comes with ``GET``); others get a 405.
        require_credentials: HTTP Basic credentials are required (401 without); they
            are in ``server.request.username`` / ``.password``.
        authenticate_users: check them too: True uses the function given to
            :func:`set_user_authenticator`, or give a function
            ``f(username, password) -> user or None``. A None user is a 401; the user is
            ``server.request.user``.
        cross_site_session: requests from another site's pages get the browser's session
            too (by default they get a fresh one, so another site cannot act in it).
        enable_cors: any origin's scripts may call it (CORS headers, ``OPTIONS``
            preflight); with ``cross_site_session``, with the browser's cookie.
    """

    def register(fn: F) -> F:
        endpoint_registry.register(
            fn,
            path,
            methods,
            require_credentials=require_credentials,
            authenticate_users=authenticate_users,
            cross_site_session=cross_site_session,
            enable_cors=enable_cors,
        )
        return fn

    return register


@overload
def background_task(fn_or_name: F) -> F: ...
@overload
def background_task(fn_or_name: str | None = None) -> Callable[[F], F]: ...
def background_task(fn_or_name: F | str | None = None) -> F | Callable[[F], F]:
    """Registers a background task (a plain function) under its name or the given one;
    :func:`launch_background_task` runs it in its own process."""
    if builtins.callable(fn_or_name) and not isinstance(fn_or_name, str):
        task_registry.register(fn_or_name)
        return fn_or_name
    name = fn_or_name

    def register(fn: F) -> F:
        task_registry.register(fn, name)
        return fn

    return register


def launch_background_task(name: str, /, *args: object, **kwargs: object) -> Task:
    """Starts background task ``name`` in its own process and returns its :class:`Task`
    at once (it waits in a queue while ``--max-tasks`` others run).

    Raises:
        BackgroundTaskError: no such task, or called from an untrusted client.
        SerializationError: the arguments cannot be sent to the task.
    """
    task = ask("launch", name, list(args), kwargs)
    assert isinstance(task, Task)
    return task


def get_background_task(task_id: str) -> Task:
    """The task with this id.

    Raises:
        BackgroundTaskNotFound: no task has it.
    """
    task = ask("get", task_id)
    assert isinstance(task, Task)
    return task


def list_background_tasks(*, all_environments: bool = False) -> list[Task]:
    """Every task this server keeps a record of, oldest first (server code and trusted
    clients). ``all_environments`` is accepted for Anvil's sake: one server, one list."""
    tasks = ask("list")
    assert isinstance(tasks, list)
    return tasks


def set_user_authenticator(authenticate: Authenticator | None) -> None:
    """Sets how ``http_endpoint(authenticate_users=True)`` checks Basic credentials: a
    function ``f(username, password)`` returning the user, or None to refuse (401)."""
    set_authenticator(authenticate)


def get_app_origin() -> str:
    """The app's public origin (``https://app.example.com``): the server's ``--origin``,
    else the one the calling client reached; in a client, the server it connected to.

    Raises:
        RuntimeError: not known here (server code outside a call, without ``--origin``).
    """
    state = current_call.get()
    if state is not None and state.origin:
        return state.origin
    for dispatcher in reversed(_current.dispatchers):
        if dispatcher.options.origin:
            return str(dispatcher.options.origin)
    if _current.client is not None:
        origin = _current.client.client.origin
        if origin:
            return str(origin)
    raise RuntimeError(
        "the app's origin is not known outside a call: start the server with --origin URL"
    )


def get_api_origin() -> str:
    """Where the app's HTTP endpoints are: ``get_app_origin() + "/_/api"``."""
    return get_app_origin() + "/_/api"


@overload
def portable_class(name_or_cls: C) -> C: ...
@overload
def portable_class(name_or_cls: str | None = None) -> Callable[[C], C]: ...
def portable_class(name_or_cls: C | str | None = None) -> C | Callable[[C], C]:
    """Registers a class whose instances may cross the wire, under ``module.QualName`` or
    the given name. Only registered classes are ever built from the wire.
    """
    return portable_registry.decorator(name_or_cls)


def _caller() -> Any:
    state = current_call.get()
    if state is not None:
        return state.caller
    if _current.client is not None:
        return _current.client.caller
    if _current.dispatchers:
        return _current.dispatchers[-1].caller
    raise AppOfflineError("not connected: call server.connect(url) first")


def call(name: str, *args: object, **kwargs: object) -> object:
    """Calls server function ``name`` and returns its result.

    From a client: over the connection, blocking. In server code: a nested call in this
    process with copy semantics (the callee gets copies, as if it ran elsewhere).
    """
    return _caller().call(name, args, kwargs)


async def acall(name: str, *args: object, **kwargs: object) -> object:
    """The coroutine form of :func:`call`, on both sides."""
    return await _caller().acall(name, args, kwargs)


def connect(url: str, key: str | None = None, **options: Any) -> None:
    """Connects this process to a server (``ws://HOST:PORT/_/ws`` or ``http://HOST:PORT``).

    With the server's uplink key the process is trusted: its ``@server.callable``
    functions, decorated before or after connecting, are registered on the server. With
    the client key or none it is an untrusted client, and registering functions raises
    ``PermissionDenied``. Options are those of :class:`tether.client.AsyncClient`.
    """
    from tether.client.sync import Client

    disconnect()
    # A process that is itself serving (a test running a server in a thread) already
    # serves its functions: it does not offer them again unless asked to.
    options.setdefault("register", not _current.dispatchers)
    _current.client = _FacadeClient(Client(url, key, **options))


def disconnect() -> None:
    """Closes the connection made by :func:`connect`, if any."""
    client, _current.client = _current.client, None
    if client is not None:
        client.close()


def wait_forever() -> None:
    """Blocks while connected (serving the server's calls to this process's functions)."""
    client = _current.client
    if client is None:
        raise AppOfflineError("not connected: call server.connect(url) first")
    with contextlib.suppress(KeyboardInterrupt):
        client.wait_closed()


def is_app_online() -> bool:
    """True while this process can reach a server (or is one)."""
    if _current.client is not None:
        return bool(_current.client.connected)
    return bool(_current.dispatchers)


def invalidate_client_objects() -> None:
    """Invalidates every capability signed for the calling client's session: they arrive
    with ``is_valid`` False from now on, using one raises ``PermissionDenied``, and the
    session's live subscriptions end. In a client, it asks the server to do so for this
    connection. Trusted peers and server code have no session: a no-op for them.
    """
    state = current_call.get()
    if state is not None and _current.dispatchers:
        from tether.runtime.dispatcher import invalidate_session

        invalidate_session(state.cap_session)
        return
    if _current.client is not None:
        _current.client.client.invalidate_client_objects()


_user_resolver: Callable[[], object] | None = None


def set_user_resolver(resolver: Callable[[], object] | None) -> None:
    """Sets how ``require_user`` finds the current user (a function of no arguments,
    called in the call's context); None goes back to ``server.session.get("user")``."""
    global _user_resolver
    _user_resolver = resolver


def current_user() -> object:
    """The user ``require_user`` checks: the resolver's answer, else the session's
    ``"user"`` (None outside a call with a session)."""
    if _user_resolver is not None:
        return _user_resolver()
    state = current_call.get()
    if state is None or state.session is None:
        return None
    return state.session.view().get("user")


def _call_session() -> Any:
    state = current_call.get()
    if state is None or state.session is None:
        raise RuntimeError(
            "there is no session here: server.session, get_session_id() and reset_session()"
            " work in a server function called by a client"
        )
    return state.session


def get_session_id() -> str:
    """The calling client's session id (in a client process: this connection's).

    Raises:
        SessionExpiredError: the session has expired.
        RuntimeError: no client session here (server code run outside a call).
    """
    state = current_call.get()
    if (state is None or state.session is None) and _current.client is not None:
        return str(_current.client.client.session_id)
    return str(_call_session().id)


def reset_session() -> None:
    """Starts a fresh, empty session for the calling client (the old one is deleted).
    In a client process: for this connection, after SessionExpiredError.

    In server code, the rest of the call (and the client's later calls) use the new
    session; a Python client keeps its new token to reconnect with. A browser's cookie
    still names the old session: its next page load starts another fresh one.
    """
    state = current_call.get()
    if (state is None or state.session is None) and _current.client is not None:
        _current.client.client.reset_session()
        return
    _call_session().reset()


@contextlib.contextmanager
def call_timeout(seconds: float | None) -> Iterator[None]:
    """Calls made inside (in this thread or task) raise ``TimeoutError`` after ``seconds``
    without an answer; None goes back to the connection's default (``call_timeout`` of
    :func:`connect`). The remote function is not stopped: its late answer is dropped.
    """
    if seconds is not None and not seconds > 0:
        raise ValueError("call_timeout needs a positive number of seconds (or None)")
    token = _call_timeout.set(seconds)
    try:
        yield
    finally:
        _call_timeout.reset(token)


@contextlib.contextmanager
def loading_indicator() -> Iterator[None]:
    """Shows the loading indicator in a browser; a no-op elsewhere."""
    yield


@contextlib.contextmanager
def no_loading_indicator() -> Iterator[None]:
    """Hides the loading indicator in a browser; a no-op elsewhere."""
    yield


_OUTSIDE = CallContext("uplink", ClientInfo("uplink"), None)
_SERVER = CallContext("server_module", ClientInfo("server"), StackFrame("server_module", True))


def __getattr__(name: str) -> object:
    if name == "session":
        return _call_session().view()
    if name == "task_state":
        return _task_state()
    if name == "request":
        state = current_call.get()
        if state is None or not isinstance(state.request, HttpRequest):
            raise RuntimeError("server.request is only available in http_endpoint calls")
        return state.request
    if name == "context":
        state = current_call.get()
        if state is not None:
            return state.context
        return _SERVER if _current.dispatchers and _current.client is None else _OUTSIDE
    raise AttributeError(f"module 'tether.server' has no attribute {name!r}")


class _FacadeClient:
    """The process's connection, as the facade uses it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.caller = _SyncCaller(client)

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    def wait_closed(self) -> None:
        self.client.wait_closed()

    def close(self) -> None:
        self.client.close()


class _SyncCaller:
    call: Callable[[str, tuple[object, ...], dict[str, object]], object]

    def __init__(self, client: Any) -> None:
        self.client = client
        self.call = client._call_values  # bound once: server.call goes straight to it

    async def acall(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        return await self.client.acall(name, *args, **kwargs)
