"""Keeping a client connected: a keep-alive that notices a silently dead network, and
reconnecting with exponential backoff after a drop."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from tether.errors import AppOfflineError, PermissionDenied
from tether.errors import TimeoutError as CallTimeoutError
from tether.protocol import ECHO, SUBSCRIBE

if TYPE_CHECKING:
    from tether.client.aio import AsyncClient

__all__ = ["keep_alive", "reconnect_forever", "start_reconnecting"]

log = logging.getLogger("tether.client")


async def keep_alive(client: AsyncClient, epoch: int) -> None:
    """Echoes every ``keepalive_interval`` seconds while transport ``epoch`` is current;
    no answer within ``keepalive_timeout`` drops it (the loss then starts reconnecting)."""
    interval, timeout = client.keepalive_interval, client.keepalive_timeout
    assert interval is not None
    while True:
        await asyncio.sleep(interval)
        if epoch != client._epoch or not client.connected:
            return
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        client.start_call(ECHO, ("keep-alive",), {}, future, timeout)
        try:
            await future
        except CallTimeoutError:
            ws = client._ws
            if epoch == client._epoch and ws is not None:
                log.warning("no keep-alive answer within %g s: dropping the connection", timeout)
                ws.abort()
            return
        except Exception:  # lost meanwhile: reconnecting starts a new keep-alive
            return


async def reconnect_forever(client: AsyncClient) -> bool:
    """After a drop: reconnects with backoff (and jitter) until it works (True), the
    server refuses this client (False) or the client is closed (False)."""
    delay = client.reconnect_delay
    attempt = 0
    while not client._closing:
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        if client._closing:
            return False
        attempt += 1
        try:
            await client._open()
        except PermissionDenied as exc:
            log.error("the server refused to reconnect this client: %s", exc)
            return False
        except Exception as exc:  # keep trying, but say what it was
            if isinstance(exc, AppOfflineError):
                log.info("reconnect attempt %d failed: %s", attempt, exc)
            else:
                log.warning("reconnect attempt %d failed", attempt, exc_info=exc)
            delay = min(delay * 2, client.max_reconnect_delay)
            continue
        log.info("reconnected to %s after %d attempt(s)", client.url, attempt)
        return True
    return False


def start_reconnecting(client: AsyncClient) -> None:
    """Starts :func:`reconnect_forever` for ``client`` (on its loop), and when it is back,
    renews its subscriptions (the server forgot them with the old connection)."""
    loop = client._loop
    if loop is not None and not loop.is_closed():
        client._reconnecting = loop.create_task(reconnect_forever(client))
        client._reconnecting.add_done_callback(lambda task: _reconnected(client, task))


def _reconnected(client: AsyncClient, task: asyncio.Task[bool]) -> None:
    if client._reconnecting is not task:
        return
    client._reconnecting = None
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("reconnecting stopped", exc_info=task.exception())
        return
    if not task.result():
        return  # closed, or the server refused this client
    if client.connected:
        for cap in client.subscriptions.renewals():
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_log_renewal_failure)
            client.start_call(SUBSCRIBE, (cap,), {}, future)
    elif not client._closing:  # lost again at once: go on
        start_reconnecting(client)


def _log_renewal_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("renewing a live-update subscription failed: %s", future.exception())
