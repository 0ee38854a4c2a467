"""Live pushes: which connections subscribed to which scope, and the fan-out.

One hub per process. A connection subscribes with a capability the server verified;
``send_update`` on any capability with that scope, anywhere in the process, reaches
:meth:`UpdateHub.publish`, which queues a ``PUSH`` on every subscribed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from tether._pool import on_loop
from tether.codec.capability_wire import CapabilitySession
from tether.errors import QuotaExceededError
from tether.protocol import Frame

if TYPE_CHECKING:
    from tether.runtime.peer import Peer

__all__ = ["MAX_SUBSCRIPTIONS", "UpdateHub", "hub"]

MAX_SUBSCRIPTIONS = 10_000
"""Scopes one connection may subscribe to at once (a named limit)."""

log = logging.getLogger("tether")


class UpdateHub:
    """Subscriptions by scope key; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, dict[Peer, None]] = {}  # an ordered set per key
        self._by_peer: dict[Peer, set[str]] = {}

    def subscribe(self, peer: Peer, key: str) -> None:
        """Records the subscription (idempotent).

        Raises:
            QuotaExceededError: the connection holds MAX_SUBSCRIPTIONS already.
        """
        with self._lock:
            keys = self._by_peer.setdefault(peer, set())
            if key not in keys and len(keys) >= MAX_SUBSCRIPTIONS:
                raise QuotaExceededError(
                    f"a connection may subscribe to at most {MAX_SUBSCRIPTIONS} scopes"
                )
            keys.add(key)
            self._by_key.setdefault(key, {})[peer] = None

    def unsubscribe(self, peer: Peer, key: str) -> None:
        with self._lock:
            keys = self._by_peer.get(peer)
            if keys is None or key not in keys:
                return
            keys.discard(key)
            if not keys:
                del self._by_peer[peer]
            self._forget_locked(peer, key)

    def drop(self, peer: Peer) -> None:
        """The connection closed: forget all its subscriptions."""
        with self._lock:
            for key in self._by_peer.pop(peer, ()):
                self._forget_locked(peer, key)

    def drop_session(self, session: CapabilitySession) -> None:
        """The session invalidated its capabilities: its subscriptions end too."""
        with self._lock:
            peers = [peer for peer in self._by_peer if peer.cap_session is session]
            for peer in peers:
                for key in self._by_peer.pop(peer):
                    self._forget_locked(peer, key)

    def _forget_locked(self, peer: Peer, key: str) -> None:
        peers = self._by_key.get(key)
        if peers is not None:
            peers.pop(peer, None)
            if not peers:
                del self._by_key[key]

    def subscribers(self, key: str) -> int:
        with self._lock:
            return len(self._by_key.get(key, ()))

    def publish(self, key: str, update: object) -> None:
        """Pushes ``update`` to every connection subscribed to ``key``: encoded once (per
        dialect; per connection when it holds capabilities), written at once on the TCP
        port, and flushed with one hop to each loop for WebSockets.

        Raises:
            SerializationError: the update cannot be sent (nothing was pushed).
        """
        with self._lock:
            peers = list(self._by_key.get(key, ()))
        shared: dict[bool, Frame] = {}
        waiting: dict[asyncio.AbstractEventLoop, list[Peer]] = {}
        for peer in peers:
            if peer.push(key, update, shared):
                loop = peer.dispatcher.loop
                if loop is not None:
                    waiting.setdefault(loop, []).append(peer)
        for loop, flush in waiting.items():
            if on_loop(loop):
                _flush_all(flush)
            else:
                with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                    loop.call_soon_threadsafe(_flush_all, flush)


def _flush_all(peers: list[Peer]) -> None:
    for peer in peers:
        peer.flush_soon()


hub = UpdateHub()
