"""A client's live-update subscriptions: which capabilities want the server's pushes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import Callable

from tether.codec.capability import Capability
from tether.protocol import Push

__all__ = ["Subscriptions"]

log = logging.getLogger("tether.client")


class Subscriptions:
    """Scope key -> the capabilities subscribed to it, by identity and held weakly.

    Collecting the last capability of a scope calls ``ended(key)`` on the loop (the
    client then tells the server). Used on the loop only.
    """

    def __init__(self, ended: Callable[[str], None]) -> None:
        self._ended = ended
        self._by_key: dict[str, dict[int, weakref.ref[Capability]]] = {}

    def add(self, cap: Capability, loop: asyncio.AbstractEventLoop) -> None:
        key = cap._key
        self._by_key.setdefault(key, {})[id(cap)] = weakref.ref(
            cap, functools.partial(self._collected, loop, key, id(cap))
        )

    def remove(self, cap: Capability) -> bool:
        """Forgets ``cap``; True when it was the last one of its scope."""
        holders = self._by_key.get(cap._key)
        if holders is None or holders.pop(id(cap), None) is None:
            return False
        if holders:
            return False
        del self._by_key[cap._key]
        return True

    def clear(self) -> None:
        self._by_key.clear()

    def renewals(self) -> list[Capability]:
        """One live capability per scope: what to subscribe again after a reconnect."""
        found = []
        for holders in self._by_key.values():
            cap = next((c for c in (ref() for ref in holders.values()) if c is not None), None)
            if cap is not None:
                found.append(cap)
        return found

    def apply(self, push: Push) -> None:
        """Runs the update handler of every capability subscribed to the push's scope."""
        if push.error is not None:
            log.error("could not read a live update for %s: %s", push.key, push.error)
            return
        for ref in list(self._by_key.get(push.key, {}).values()):
            cap = ref()
            if cap is None or cap._handler is None:
                continue
            try:
                cap._handler(push.update)
            except Exception:
                log.exception("the update handler of %r raised", cap)

    def _collected(
        self, loop: asyncio.AbstractEventLoop, key: str, ident: int, _ref: object
    ) -> None:
        """A subscribed capability was collected (any thread)."""
        if loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._forget, key, ident)

    def _forget(self, key: str, ident: int) -> None:
        holders = self._by_key.get(key)
        if holders is None:
            return
        ref = holders.get(ident)
        if ref is not None and ref() is None:
            del holders[ident]
        if not holders:
            del self._by_key[key]
            self._ended(key)
