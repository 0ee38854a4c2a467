"""The server secret that signs capabilities.

From, in order: ``ServerOptions.secret``; the ``TETHER_SECRET`` environment variable;
else the store's (32 random bytes made once and kept there: in the SQLite file for the
embedded default, so capabilities survive a restart; for the memory store, per process).
"""

from __future__ import annotations

import os
import secrets

from tether.runtime.stores import Store

__all__ = ["MIN_SECRET_BYTES", "configured_secret", "load_secret"]

MIN_SECRET_BYTES = 16


def configured_secret(secret: bytes | str | None) -> bytes | None:
    """The secret given in the options or ``TETHER_SECRET``; None when there is none.

    Raises:
        ValueError: a configured secret shorter than 16 bytes.
    """
    if secret is None:
        secret = os.environ.get("TETHER_SECRET") or None
    if secret is None:
        return None
    value = secret.encode() if isinstance(secret, str) else secret
    if len(value) < MIN_SECRET_BYTES:
        raise ValueError(f"the server secret must be at least {MIN_SECRET_BYTES} bytes")
    return value


async def load_secret(secret: bytes | str | None, store: Store) -> bytes:
    """The secret to sign capabilities with: the configured one, else the store's.

    Raises:
        ValueError: a configured or stored secret shorter than 16 bytes.
    """
    value = configured_secret(secret)
    if value is not None:
        return value
    value = await store.secret(secrets.token_bytes(32))
    if len(value) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret kept in {store.url} is shorter than {MIN_SECRET_BYTES} bytes")
    return value
