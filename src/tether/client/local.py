"""This client's own functions: offered to the server (a trusted client only) and run
when the server calls them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import traceback
from typing import TYPE_CHECKING, Any

from tether.codec.capability import collect_updates
from tether.context import CallContext, CallState, ClientInfo, StackFrame, current_call
from tether.errors import AppOfflineError, PermissionDenied, SerializationError
from tether.functions import ServerFunction, missing_function
from tether.protocol import Call

if TYPE_CHECKING:
    from tether.client.aio import AsyncClient

__all__ = ["LocalCalls"]

log = logging.getLogger("tether.client")


class LocalCalls:
    """Registers the process's ``@server.callable`` functions with the server (those
    decorated later too) and runs the server's CALLs to them: async functions as tasks,
    sync ones on up to ``threads`` worker threads, each answered through the client."""

    def __init__(self, client: AsyncClient, threads: int) -> None:
        self.client = client
        self._threads = threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def register_locked(self) -> None:
        """Offers every function (after the key was accepted; the client's lock held).

        Raises:
            PermissionDenied: there are functions to offer and the client is not trusted.
        """
        client = self.client
        if not client.register:
            return
        functions = client.functions
        names = list(functions.functions)
        if names and not client.trusted:
            raise PermissionDenied(
                f"only a client connected with the uplink key may register server functions"
                f" ({', '.join(sorted(names))})"
            )
        for name in names:
            client.connection.send_register(name)
        if self._on_new_function not in functions.listeners:
            functions.listeners.append(self._on_new_function)

    def _on_new_function(self, entry: ServerFunction) -> None:
        client = self.client
        if not client.trusted:
            raise PermissionDenied(
                f"cannot register {entry.name!r}: this client is not trusted (no uplink key)"
            )
        loop = client._loop
        if loop is not None and client.connected:
            loop.call_soon_threadsafe(self._send_register, entry.name)

    def _send_register(self, name: str) -> None:
        client = self.client
        with client._guard:
            if client.connected:
                client.connection.send_register(name)
                client._flush_locked()

    def start_locked(self, call: Call) -> None:
        """Starts ``call`` (on the loop, the client's lock held)."""
        client = self.client
        entry = client.functions.get(call.command) if client.trusted and client.register else None
        if entry is None:
            client.connection.send_error(call.id, missing_function(call.command))
            return
        state = CallState(_context_of(call.meta), _ClientCaller(client))
        ctx = contextvars.copy_context()
        ctx.run(current_call.set, state)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any]
        if entry.is_async:
            future = loop.create_task(entry.fn(*call.args, **call.kwargs), context=ctx)  # type: ignore[arg-type]
        else:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self._threads, thread_name_prefix="tether-client-call"
                )
            future = loop.run_in_executor(
                self._executor, functools.partial(ctx.run, entry.fn, *call.args, **call.kwargs)
            )
        future.add_done_callback(functools.partial(self._finish, call))

    def shutdown(self) -> None:
        listeners = self.client.functions.listeners
        if self._on_new_function in listeners:
            listeners.remove(self._on_new_function)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _finish(self, call: Call, done: asyncio.Future[object]) -> None:
        error = done.exception() if not done.cancelled() else AppOfflineError("cancelled")
        updates: dict[str, object] | None = None
        if error is None and call.capabilities:
            try:  # before the lock: get_update is user code
                updates = collect_updates(call.capabilities)
            except Exception as exc:
                error = exc
        client = self.client
        with client._guard:
            if not client.connected:
                return
            if error is None:
                try:
                    client.connection.send_response(call.id, done.result(), updates=updates)
                except SerializationError as exc:
                    error = exc
            if error is not None:
                log.info(
                    "function %r raised %s",
                    call.command,
                    "".join(traceback.format_exception_only(error)).strip(),
                )
                client.connection.send_error(call.id, error)
            client._flush_locked()


def _context_of(meta: dict[str, object]) -> CallContext:
    client = meta.get("client")
    stack = meta.get("call-stack")
    client_type = client.get("type") if type(client) is dict else None
    ip = client.get("ip") if type(client) is dict else None
    caller = (
        stack[0].get("type") if type(stack) is list and stack and type(stack[0]) is dict else None
    )
    trusted = caller in ("server_module", "uplink", "background_task")
    return CallContext(
        type="uplink",
        client=ClientInfo(str(client_type or "server"), ip if type(ip) is str else None),
        remote_caller=StackFrame(str(caller or "server_module"), trusted),
    )


class _ClientCaller:
    """Nested ``server.call`` from a function this client runs for the server."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    def call(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        return self.client.call_blocking(name, args, kwargs)

    async def acall(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        return await self.client.call(name, *args, **kwargs)
