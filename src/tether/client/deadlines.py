"""Call timeouts of one client: a timer per call with a deadline, on the client's loop,
cancelled when the answer comes (an answered call is not kept until its deadline)."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

from tether._pool import on_loop
from tether.client.waiter import AnyFuture
from tether.errors import TimeoutError as CallTimeoutError

if TYPE_CHECKING:
    from tether.client.aio import AsyncClient

__all__ = ["Deadlines"]


class Deadlines:
    """The timers of ``client``'s calls, by call id."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def arm(self, call_id: str, name: str, future: AnyFuture, timeout: float) -> None:
        """Starts the timer of a call just sent (from any thread)."""
        loop = self.client._loop
        assert loop is not None
        if on_loop(loop):
            self._arm_on_loop(call_id, name, future, timeout)
        else:
            loop.call_soon_threadsafe(self._arm_on_loop, call_id, name, future, timeout)

    @property
    def armed(self) -> bool:
        """Whether any call has a timer (any thread)."""
        return bool(self._timers)

    def answered(self, call_id: str) -> None:
        """The answer came: its timer goes (on the loop)."""
        if self._timers:
            timer = self._timers.pop(call_id, None)
            if timer is not None:
                timer.cancel()

    def cancel_all(self) -> None:
        """The connection is gone: every call failed already."""
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.cancel()

    def _arm_on_loop(self, call_id: str, name: str, future: AnyFuture, timeout: float) -> None:
        client = self.client
        if client._pending.get(call_id) is not future:
            return  # answered already
        expire = functools.partial(self._expire, call_id, name, future, timeout)
        assert client._loop is not None
        self._timers[call_id] = client._loop.call_later(timeout, expire)

    def _expire(self, call_id: str, name: str, future: AnyFuture, timeout: float) -> None:
        self._timers.pop(call_id, None)
        client = self.client
        with client._guard:
            if client._pending.get(call_id) is not future:
                return  # answered (or failed) in time
            del client._pending[call_id]
            client.connection.abandon(call_id)
        if not future.done():
            future.set_exception(
                CallTimeoutError(f"call to {name!r} got no answer within {timeout:g} s")
            )
