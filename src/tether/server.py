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

__all__ = [
    "AppOfflineError",
    "BackgroundTaskError",
    "BackgroundTaskKilled",
    "BackgroundTaskNotFound",
    "BlobMedia",
    "Capability",
    "ExecutionTerminatedError",
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
    "TetherError",
    "TimeoutError",
    "UplinkDisconnectedError",
    "acall",
    "call",
    "call_timeout",
    "callable",
    "connect",
    "context",  # noqa: F822 - a module __getattr__ attribute: the running call's context
    "disconnect",
    "get_session_id",
    "invalidate_client_objects",
    "is_app_online",
    "loading_indicator",
    "no_loading_indicator",
    "portable_class",
    "reset_session",
    "session",  # noqa: F822 - a module __getattr__ attribute: the calling client's session
    "set_user_resolver",
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
    def __init__(self, client: Any) -> None:
        self.client = client

    def call(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        return self.client.call(name, *args, **kwargs)

    async def acall(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        return await self.client.acall(name, *args, **kwargs)
