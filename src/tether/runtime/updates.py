"""Live pushes: which connections subscribed to which scope, and the fan-out.

One hub per process. A connection subscribes with a capability the server verified;
``send_update`` on any capability with that scope, anywhere in the process, reaches
:meth:`UpdateHub.publish`, which queues a ``PUSH`` on every subscribed connection.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from tether.codec.capability import CapabilitySession

if TYPE_CHECKING:
    from tether.runtime.peer import Peer

__all__ = ["UpdateHub", "hub"]

log = logging.getLogger("tether")


class UpdateHub:
    """Subscriptions by scope key; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, dict[Peer, None]] = {}  # an ordered set per key
        self._by_peer: dict[Peer, set[str]] = {}

    def subscribe(self, peer: Peer, key: str) -> None:
        with self._lock:
            self._by_key.setdefault(key, {})[peer] = None
            self._by_peer.setdefault(peer, set()).add(key)

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
        """Pushes ``update`` to every connection subscribed to ``key``.

        Raises:
            SerializationError: the update cannot be sent (nothing was pushed).
        """
        with self._lock:
            peers = list(self._by_key.get(key, ()))
        for peer in peers:
            peer.push(key, update)


hub = UpdateHub()
