"""The ASGI application: WebSockets at ``/_/ws`` and ``/_/uplink``, HTTP through Starlette."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette

from tether.errors import FrameTooLarge, RemoteProtocolError
from tether.protocol import SUBPROTOCOL, Frame
from tether.runtime.dispatcher import Dispatcher, ServerOptions
from tether.runtime.peer import Peer
from tether.runtime.tcp import TcpListener

__all__ = ["TetherApp", "create_app"]

log = logging.getLogger("tether")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
SendMessage = Callable[[Message], Awaitable[None]]

WEBSOCKET_PATHS = {"/_/ws": "tether", "/_/uplink": "uplink"}
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class TetherApp:
    """The ASGI app returned by :func:`create_app`."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.dispatcher = Dispatcher(options)
        self.http = Starlette()
        self.tcp: TcpListener | None = None
        self.tcp_address: tuple[str, int] | None = None
        """Where the TCP port listens, once the lifespan started it."""

    async def __call__(self, scope: Scope, receive: Receive, send: SendMessage) -> None:
        kind = scope["type"]
        if kind == "websocket":
            dialect = WEBSOCKET_PATHS.get(scope["path"])
            if dialect is not None:
                self.dispatcher.start()
                await self._websocket(scope, receive, send, dialect)
                return
        elif kind == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: SendMessage) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.dispatcher.start()
                try:
                    await self._start_tcp()
                except OSError as exc:
                    self.dispatcher.stop()
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.tcp is not None:
                    self.tcp.stop()
                    self.tcp = self.tcp_address = None
                self.dispatcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_tcp(self) -> None:
        port = self.options.tcp_port
        if port is not None and self.tcp is None:
            listener = TcpListener(self.dispatcher, self.options.tcp_host, port)
            self.tcp_address = await listener.start()
            self.tcp = listener
            log.info("TCP port for tether:// clients: %s:%d", *self.tcp_address)

    def origin_allowed(self, scope: Scope) -> bool:
        """Same origin as the Host header, or an allowed one; no Origin (not a browser) passes."""
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is None:
            return True
        text = origin.decode("latin-1")
        if text in self.options.allowed_origins:
            return True
        parts = urlsplit(text)
        host = headers.get(b"host", b"").decode("latin-1")
        return (
            parts.scheme in ("http", "https", "ws", "wss") and parts.netloc == host and bool(host)
        )

    async def _websocket(
        self, scope: Scope, receive: Receive, send: SendMessage, dialect: str
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if not self.origin_allowed(scope):
            log.warning("refused WebSocket from origin %r", dict(scope["headers"]).get(b"origin"))
            await send({"type": "websocket.close", "code": CLOSE_POLICY})  # -> HTTP 403
            return
        offered = scope.get("subprotocols") or ()
        subprotocol = SUBPROTOCOL if dialect == "tether" and SUBPROTOCOL in offered else None
        await send({"type": "websocket.accept", "subprotocol": subprotocol})

        async def send_frame(frame: Frame) -> None:
            if type(frame) is str:
                await send({"type": "websocket.send", "text": frame})
            else:
                await send({"type": "websocket.send", "bytes": frame})

        client = scope.get("client")
        peer = Peer(
            self.dispatcher,
            send_frame,
            client_ip=client[0] if client else None,
            dialect=dialect,
            subprotocol=subprotocol,
        )
        code, reason = 1000, ""
        try:
            async with asyncio.timeout(self.options.handshake_timeout):
                message = await receive()
                if message["type"] == "websocket.receive":
                    await peer.receive(_frame_of(message))
            while message["type"] == "websocket.receive" and peer.close_reason is None:
                message = await receive()
                if message["type"] == "websocket.receive":
                    await peer.receive(_frame_of(message))
        except TimeoutError:
            code, reason = CLOSE_POLICY, "no key within the handshake timeout"
        except RemoteProtocolError as exc:
            log.warning("closing connection from %s: %s", peer.client_ip, exc)
            code = CLOSE_TOO_BIG if isinstance(exc, FrameTooLarge) else CLOSE_PROTOCOL_ERROR
            reason = str(exc)
        finally:
            peer.close()
        if message["type"] != "websocket.disconnect":
            if peer.close_reason is not None:
                code, reason = CLOSE_POLICY, peer.close_reason
            try:
                await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
            except Exception:  # already gone
                log.debug("close failed", exc_info=True)


def _frame_of(message: Message) -> Frame:
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")


def create_app(
    *,
    uplink_key: str | None = None,
    client_key: str | None = None,
    dev: bool = False,
    limits: object = None,
    threads: int = 32,
    allowed_origins: tuple[str, ...] | list[str] = (),
    handshake_timeout: float = 10.0,
    tcp_port: int | None = None,
    tcp_host: str = "127.0.0.1",
    secret: bytes | str | None = None,
    data_dir: str | None = None,
) -> TetherApp:
    """Returns the ASGI application serving the functions registered in this process.

    Args:
        uplink_key: the key that makes a peer trusted (it may register functions).
        client_key: a key for untrusted clients; any other key is refused.
        dev: send tracebacks with errors (never in production).
        limits: a :class:`tether.codec.Limits`; defaults apply when None.
        threads: the thread pool size for sync server functions.
        allowed_origins: extra browser origins allowed to open the WebSocket.
        handshake_timeout: seconds a connection has to send its key.
        tcp_port: also listen for Python clients on this raw TCP port
            (``tether://HOST:PORT``; 0 picks a free one), started with the ASGI lifespan.
        tcp_host: the interface of the TCP port.
        secret: the secret that signs capabilities (16 bytes or more). None reads
            ``TETHER_SECRET``, else the ``secret`` file in ``data_dir`` (made once), else
            makes a random one for this process.
        data_dir: the folder where the server keeps its files (the secret).

    Run it under any ASGI server (``uvicorn``) or mount it in Starlette/FastAPI.
    """
    from tether.codec import Limits

    if limits is not None and not isinstance(limits, Limits):
        raise TypeError("limits must be a tether.codec.Limits")
    options = ServerOptions(
        uplink_key=uplink_key or None,
        client_key=client_key or None,
        dev=dev,
        limits=limits or Limits(),
        threads=threads,
        allowed_origins=tuple(allowed_origins),
        handshake_timeout=handshake_timeout,
        tcp_host=tcp_host,
        tcp_port=tcp_port,
        secret=secret,
        data_dir=data_dir,
    )
    return TetherApp(options)
