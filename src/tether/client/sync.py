"""The sync client: an :class:`AsyncClient` running on its own loop thread.

The loop keeps serving the server's calls to this process while the caller blocks.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tether.client.aio import AsyncClient
from tether.codec.capability import Capability

__all__ = ["Client"]


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard] on Linux
        return asyncio.new_event_loop()


class Client:
    """A blocking connection to a Tether server; the twin of :class:`AsyncClient`.

    Takes the same arguments as :class:`AsyncClient`.
    """

    def __init__(self, url: str, key: str | None = None, **options: Any) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tether-client", daemon=True
        )
        self._thread.start()
        self._loop_thread = self._thread.ident
        options.setdefault("caller_reads", True)
        self.aio = AsyncClient(url, key, **options)
        try:
            self._run(self.aio.connect())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def trusted(self) -> bool:
        return self.aio.trusted

    @property
    def connected(self) -> bool:
        return self.aio.connected

    def call(self, name: str, *args: object, **kwargs: object) -> object:
        """Calls server function ``name``, blocking until it returns; see AsyncClient.call."""
        return self._call_values(name, args, kwargs)

    def _call_values(
        self, name: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        """:meth:`call` with the arguments as they are (``server.call`` comes here)."""
        # get_ident(), not current_thread(): cheaper; is_alive(): an ident is reused
        # once its thread ended, and the loop thread ends when the client closes.
        if threading.get_ident() == self._loop_thread and self._thread.is_alive():
            raise RuntimeError("Client.call() from the client's own loop would deadlock; use acall")
        return self.aio.call_blocking(name, args, kwargs)

    async def acall(self, name: str, *args: object, **kwargs: object) -> object:
        """Calls from a coroutine on another loop, without blocking that loop."""
        return await asyncio.wrap_future(self.aio.call_threadsafe(name, args, kwargs))

    @property
    def origin(self) -> str | None:
        """The server's HTTP origin; see :attr:`AsyncClient.origin`."""
        return self.aio.origin

    @property
    def session_id(self) -> str | None:
        """This connection's session id; see :attr:`AsyncClient.session_id`."""
        return self.aio.session_id

    def reset_session(self) -> None:
        """A fresh session; see :meth:`AsyncClient.reset_session`."""
        self._run(self.aio.reset_session())

    def wait_online(self, timeout: float | None = None) -> bool:
        """Blocks until connected (reconnected); False on timeout."""
        return bool(self._run(self.aio.wait_online(timeout)))

    def subscribe(self, cap: Capability) -> None:
        """Live updates for ``cap``'s scope; see :meth:`AsyncClient.subscribe`."""
        self._run(self.aio.subscribe(cap))

    def unsubscribe(self, cap: Capability) -> None:
        """Ends them; see :meth:`AsyncClient.unsubscribe`."""
        self._run(self.aio.unsubscribe(cap))

    def invalidate_client_objects(self) -> None:
        """See :meth:`AsyncClient.invalidate_client_objects`."""
        self._run(self.aio.invalidate_client_objects())

    def wait_closed(self, timeout: float | None = None) -> None:
        """Blocks until the connection ends (or ``timeout`` seconds pass)."""
        future = asyncio.run_coroutine_threadsafe(self.aio.wait_closed(), self._loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()

    def close(self) -> None:
        """Closes the connection and stops the loop thread."""
        if self._thread.is_alive():
            try:
                self._run(self.aio.close())
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
