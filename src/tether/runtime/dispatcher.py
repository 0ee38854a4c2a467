"""Finds and runs server functions: local ones, and those registered by trusted peers.

Incoming calls arrive already decoded (so they are copies). Nested ``server.call`` from
server code goes through :class:`ServerCaller`, which copies arguments and results
through the codec, so a callee behaves exactly as if it ran in another process.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tether._pool import CallPool, Done, Job, on_loop
from tether.codec import Limits, PortableRegistry, copy_values, portable_registry
from tether.codec.capability import Capability, apply_updates, collect_updates, set_publisher
from tether.codec.capability_wire import CapabilitySession, LocalWire, Signer
from tether.codec.flavors import Unjellyables
from tether.codec.flavors import unjellyables as default_unjellyables
from tether.context import CallContext, CallState, ClientInfo, Session, StackFrame, current_call
from tether.errors import PermissionDenied
from tether.functions import FunctionRegistry, ServerFunction, function_registry, missing_function
from tether.runtime.secret import configured_secret, load_secret
from tether.runtime.sessions import DEFAULT_TIMEOUT, SessionManager
from tether.runtime.stores import open_store
from tether.runtime.updates import hub

if TYPE_CHECKING:
    from tether.runtime.peer import Peer

__all__ = ["Dispatcher", "ServerCaller", "ServerOptions"]

log = logging.getLogger("tether")

DRAIN_TIMEOUT = 10.0
"""Seconds a stopping server waits for calls still running to finish and save."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How one server behaves; ``tether serve`` flags map onto these.

    Attributes:
        uplink_key: peers presenting it are trusted (may register functions).
        client_key: peers presenting it are untrusted clients; without one configured,
            any peer without the uplink key is an untrusted client.
        dev: send tracebacks with errors.
        limits: bounds on every message.
        threads: size of the thread pool that runs sync server functions.
        allowed_origins: browser origins allowed on the WebSocket besides the server's own.
        handshake_timeout: seconds a new connection has to send its key.
        app_id: the id reported to peers in ``app-info`` (``anvil.app.id`` in a script).
        environment: the environment name reported with it (``anvil.app.environment.name``).
        tcp_host, tcp_port: where to listen for ``tether://`` clients (raw TCP, Python
            peers only); None for no TCP port, 0 for a free one.
        tcp_threads: TCP connections that get a reading thread of their own, which runs
            their sync calls itself (see :mod:`tether.transports.threaded`); the loop
            reads the others. 0: the loop reads them all.
        secret: signs capabilities (at least 16 bytes); None reads ``TETHER_SECRET``,
            else the store's (made once and kept there).
        data_dir: where the server keeps its files (``tether serve``: ``APP/.tether``);
            the default store is ``data_dir/tether.db``.
        store: ``memory`` or ``sqlite:///path``; None: SQLite in ``data_dir`` when there
            is one, else memory.
        session_timeout: seconds a session may stay unused before it expires.
        trusted_proxies: addresses (or networks) of reverse proxies whose
            ``X-Forwarded-For`` gives the client's address.
        geoip: a MaxMind ``.mmdb`` database that gives ``context.client.location``.
        static_dir: the folder served at ``/_/static/`` (its ``index.html`` is the app
            page at ``/``); None serves none.
        origin: the app's public origin (``https://app.example.com``) when a proxy in front
            changes it; None: the one each request reached.
        max_request_bytes: the largest body an HTTP endpoint accepts (413 beyond).
        max_tasks: background task processes running at once (the rest wait queued).
    """

    uplink_key: str | None = None
    client_key: str | None = None
    dev: bool = False
    limits: Limits = field(default_factory=Limits)
    threads: int = 32
    allowed_origins: tuple[str, ...] = ()
    handshake_timeout: float = 10.0
    app_id: str = "tether-app"
    environment: str = "default"
    tcp_host: str = "127.0.0.1"
    tcp_port: int | None = None
    tcp_threads: int = 64
    secret: bytes | str | None = field(default=None, repr=False)
    data_dir: str | None = None
    store: str | None = None
    session_timeout: float = DEFAULT_TIMEOUT
    trusted_proxies: tuple[str, ...] = ()
    geoip: str | None = None
    static_dir: str | None = None
    origin: str | None = None
    max_request_bytes: int = 16 * 1024 * 1024
    max_tasks: int = 4


class Dispatcher:
    """One server's view of every function it can run."""

    def __init__(
        self,
        options: ServerOptions,
        *,
        functions: FunctionRegistry = function_registry,
        registry: PortableRegistry = portable_registry,
        unjellyables: Unjellyables = default_unjellyables,
    ) -> None:
        self.options = options
        self.functions = functions
        self.registry = registry
        self.unjellyables = unjellyables
        self.limits = options.limits
        configured_secret(options.secret)  # a bad one fails here, before serving
        self.store = open_store(options.store, options.data_dir)
        self.sessions = SessionManager(
            self.store, registry, options.limits, timeout=options.session_timeout
        )
        from tether.runtime.tasks import TaskManager

        self.tasks = TaskManager(self, max_tasks=options.max_tasks)
        self._signer: Signer | None = None
        self._opened: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pool: CallPool | None = None
        self._peer_exact: dict[str, list[Peer]] = {}
        self._peer_patterns: list[tuple[re.Pattern[str], Peer]] = []
        self.caller = ServerCaller(self)

    # -- lifetime -----------------------------------------------------------------------

    @property
    def signer(self) -> Signer:
        assert self._signer is not None, "the server is not open yet"
        return self._signer

    async def open(self) -> None:
        """Starts on the running loop and opens the store (idempotent; concurrent callers
        wait for the first): at lifespan start or the first connection.

        Raises:
            sqlite3.Error, OSError, ValueError: the store cannot be opened.
        """
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
            try:
                self.start()
                await self.store.open()
                try:
                    self._signer = Signer(await load_secret(self.options.secret, self.store))
                    await self.sessions.open(self._signer)
                    await self.tasks.open()
                except BaseException:
                    await self.store.close()
                    raise
            except BaseException as exc:
                self._opened.set_exception(exc)
                self._opened.exception()  # retrieved: raised below
                self._opened = None
                raise
            self._opened.set_result(None)
        await asyncio.shield(self._opened)

    async def close(self) -> None:
        """Closes the store and stops (lifespan shutdown)."""
        if self._opened is not None and self._opened.done():
            await self.tasks.close()
            await self.sessions.drain(DRAIN_TIMEOUT)
            await self.sessions.close()
            await self.store.close()
        self._opened = None
        self.stop()

    def start(self) -> None:
        """Binds to the running loop (idempotent): at lifespan start or first connection."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self._pool = CallPool(self.loop, self.options.threads, "tether-call")
            from tether import _current

            _current.dispatchers.append(self)
            set_publisher(hub.publish)

    def stop(self) -> None:
        from tether import _current

        if self in _current.dispatchers:
            _current.dispatchers.remove(self)
        if not _current.dispatchers:
            set_publisher(None)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.loop = None

    @property
    def pool(self) -> CallPool:
        assert self._pool is not None, "dispatcher not started"
        return self._pool

    # -- peer registrations -------------------------------------------------------------

    def register_peer_function(self, name: str, peer: Peer) -> None:
        """A trusted peer offers ``name`` (a pattern, as in Anvil); peers win over locals."""
        self._peer_exact.setdefault(name, []).append(peer)
        if re.escape(name) != name:
            self._peer_patterns.append((re.compile(name), peer))

    def unregister_peer(self, peer: Peer) -> None:
        for name in [n for n, peers in self._peer_exact.items() if peer in peers]:
            peers = self._peer_exact[name]
            peers[:] = [p for p in peers if p is not peer]
            if not peers:
                del self._peer_exact[name]
        self._peer_patterns = [(p, q) for p, q in self._peer_patterns if q is not peer]

    def require(self, name: str) -> ServerFunction | Peer:
        """Like :meth:`resolve`, but raises NoServerFunctionError when nothing is found."""
        target = self.resolve(name)
        if target is None:
            raise missing_function(name)
        return target

    def resolve(self, name: str) -> ServerFunction | Peer | None:
        """The peer that registered ``name`` (the newest), else the local function."""
        peers = self._peer_exact.get(name)
        if peers:
            return peers[-1]
        for pattern, peer in reversed(self._peer_patterns):
            if pattern.fullmatch(name):
                return peer
        return self.functions.functions.get(name)

    # -- running ------------------------------------------------------------------------

    def start_local(
        self,
        target: ServerFunction,
        args: list[object],
        kwargs: dict[str, object],
        state: CallState,
        done: Done,
        *,
        in_thread: bool = False,
        owns_session: bool = False,
        inline: bool = False,
    ) -> Job | None:
        """Starts a local function for a call: async ones as a task, sync ones in the pool.

        ``done(result, error)`` runs on the loop when it ends; with ``in_thread``, a sync
        function's ``done`` runs on the worker thread that ran it instead. With
        ``owns_session``, the changes to ``server.session`` are saved before ``done``.
        With ``inline`` (a sync function, from any thread), nothing starts: the job is
        returned for this thread to run (see :mod:`tether.transports.threaded`).

        Raises:
            PermissionDenied: ``require_user`` refused the call; nothing ran.
        """
        ctx = contextvars.copy_context()
        ctx.run(current_call.set, state)
        if target.require_user is not False:  # it reads the session: in the call's context
            ctx.run(check_user, target)
        session = state.session if owns_session else None
        if session is not None:
            self.sessions.call_started()
        if not target.is_async:
            fn = target.fn
            if session is not None:
                fn = functools.partial(_saving, target.fn, session, self.sessions)
            if inline:
                return ctx, fn, args, kwargs, done
            self.pool.submit(ctx, fn, args, kwargs, done, in_thread=in_thread)
            return None
        assert self.loop is not None
        assert not inline, "only a sync function runs inline"
        coroutine: Coroutine[object, object, object] = target.fn(*args, **kwargs)  # type: ignore[assignment]
        if session is not None:
            coroutine = _saving_async(coroutine, session, self.sessions)
        task = self.loop.create_task(coroutine, context=ctx)
        task.add_done_callback(functools.partial(_report, done))
        return None

    async def run(
        self, name: str, args: list[object], kwargs: dict[str, object], state: CallState
    ) -> object:
        """Runs ``name`` wherever it lives, for arguments that are already copies."""
        target = self.require(name)
        if isinstance(target, ServerFunction):
            return await self.run_local(target, args, kwargs, state)
        return await target.call_peer(name, args, kwargs, state)

    async def run_local(
        self,
        target: ServerFunction,
        args: list[object],
        kwargs: dict[str, object],
        state: CallState,
        *,
        owns_session: bool = False,
    ) -> object:
        """Runs a local function (see :meth:`start_local`) and returns its result."""
        assert self.loop is not None
        future: asyncio.Future[object] = self.loop.create_future()
        self.start_local(
            target,
            args,
            kwargs,
            state,
            functools.partial(_settle, future),
            owns_session=owns_session,
        )
        return await future


def _saving(
    fn: Callable[..., object],
    session: Session,
    sessions: SessionManager,
    *args: object,
    **kwargs: object,
) -> object:
    """Runs a sync function, then saves what it changed in the session (even if it raised)."""
    try:
        return fn(*args, **kwargs)
    finally:
        try:
            session.save_blocking()
        finally:
            sessions.call_ended()


async def _saving_async(
    coroutine: Coroutine[object, object, object], session: Session, sessions: SessionManager
) -> object:
    try:
        return await coroutine
    finally:
        try:
            await session.save()
        finally:
            sessions.call_ended()


def _report(done: Done, task: asyncio.Task[object]) -> None:
    if task.cancelled():
        done(None, asyncio.CancelledError())
    else:
        error = task.exception()
        done(None if error is not None else task.result(), error)


def _settle(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def check_user(target: ServerFunction) -> None:
    """``require_user``: a user must be logged in (and pass the predicate, if one is set)."""
    rule = target.require_user
    if rule is False:
        return
    from tether.server import current_user

    user = current_user()
    if user is None:
        raise PermissionDenied(f"server function {target.name!r} requires a logged-in user")
    if rule is not True and not rule(user):
        raise PermissionDenied(f"this user may not call server function {target.name!r}")


def nested_state(outer: CallState | None, caller: ServerCaller) -> CallState:
    """The state of a nested call: a trusted server_module caller, the same client."""
    client = outer.context.client if outer is not None else ClientInfo("server")
    context = CallContext(
        type="server_module",
        client=client,
        remote_caller=StackFrame("server_module", True),
        background_task_id=outer.context.background_task_id if outer is not None else None,
    )
    if outer is None:
        return CallState(context, caller)
    return CallState(
        context, caller, cap_session=outer.cap_session, session=outer.session, origin=outer.origin
    )


def invalidate_session(session: CapabilitySession | None) -> None:
    """``server.invalidate_client_objects()``: the capabilities signed for this session
    turn invalid (for good: the store keeps the generation), and its live subscriptions
    end. Trusted peers (no session) are unaffected."""
    if session is None or session.id is None:
        return
    session.generation += 1
    hub.drop_session(session)
    from tether import _current

    for dispatcher in _current.dispatchers:
        dispatcher.sessions.invalidated(session)


_LOCAL_WIRE = LocalWire()


class ServerCaller:
    """``server.call`` / ``server.acall`` from server code: nested calls with copy semantics."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def _copy(
        self,
        values: dict[str, object],
        sent: list[Capability] | None = None,
        arrived: list[Capability] | None = None,
    ) -> dict[str, object]:
        """Copies as the wire would; capabilities written go to ``sent``, those made to
        ``arrived`` (their updates flow back from the copies to the originals)."""
        return copy_values(
            values,
            self.dispatcher.registry,
            self.dispatcher.limits,
            functools.partial(_LOCAL_WIRE.encode, [] if sent is None else sent),
            {
                "Capability": functools.partial(
                    _LOCAL_WIRE.decode, [] if arrived is None else arrived
                )
            },
            self.dispatcher.unjellyables,
        )

    def _copy_call(
        self,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        sent: list[Capability],
        arrived: list[Capability],
    ) -> tuple[list[object], dict[str, object]]:
        copied = self._copy({"args": list(args), "kwargs": kwargs}, sent, arrived)
        new_args, new_kwargs = copied["args"], copied["kwargs"]
        assert type(new_args) is list
        assert type(new_kwargs) is dict
        return new_args, new_kwargs

    def call(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        dispatcher = self.dispatcher
        loop = dispatcher.loop
        if loop is None:
            raise RuntimeError("the server is not running")
        if on_loop(loop):
            raise RuntimeError(
                f"server.call({name!r}) would block the event loop: use 'await server.acall(...)'"
                " in async server functions"
            )
        sent: list[Capability] = []
        arrived: list[Capability] = []
        copied_args, copied_kwargs = self._copy_call(args, kwargs, sent, arrived)
        state = nested_state(current_call.get(), self)
        target = dispatcher.require(name)
        if isinstance(target, ServerFunction) and not target.is_async:
            ctx = contextvars.copy_context()
            ctx.run(current_call.set, state)
            if target.require_user is not False:  # it reads the session: in the call's context
                ctx.run(check_user, target)
            result = ctx.run(target.fn, *copied_args, **copied_kwargs)
        else:
            future = asyncio.run_coroutine_threadsafe(
                dispatcher.run(name, copied_args, copied_kwargs, state),
                loop,
            )
            result = future.result()
        _hand_back(sent, arrived)
        return self._copy({"r": result})["r"]

    async def acall(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        sent: list[Capability] = []
        arrived: list[Capability] = []
        copied_args, copied_kwargs = self._copy_call(args, kwargs, sent, arrived)
        state = nested_state(current_call.get(), self)
        result = await self.dispatcher.run(name, copied_args, copied_kwargs, state)
        _hand_back(sent, arrived)
        return self._copy({"r": result})["r"]


def _hand_back(sent: list[Capability], arrived: list[Capability]) -> None:
    """A nested call succeeded: the updates queued on the callee's copies of capabilities
    go to the caller's originals (their handlers run, and they queue further up)."""
    if arrived:
        apply_updates(sent, collect_updates(arrived), normalized=True)
