"""The ASGI application: WebSockets at ``/_/ws`` and ``/_/uplink``, HTTP through Starlette."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from urllib.parse import urlsplit

from starlette.applications import Starlette

from tether.errors import FrameTooLarge, RemoteProtocolError, SessionExpiredError
from tether.protocol import SUBPROTOCOL, Frame
from tether.runtime.asgi import Message, Receive, Scope, SendMessage, raw_headers, route_path
from tether.runtime.assets import STATIC_PREFIX, AppPage, use_assets
from tether.runtime.dispatcher import Dispatcher, ServerOptions
from tether.runtime.endpoints import API_PREFIX, EndpointServer
from tether.runtime.network import GeoIP, TrustedProxies
from tether.runtime.peer import Peer
from tether.runtime.sessions import COOKIE, DEFAULT_TIMEOUT, SessionSlot, cookie_token
from tether.runtime.tcp import TcpListener

__all__ = ["TetherApp", "create_app"]

log = logging.getLogger("tether")


WEBSOCKET_PATHS = {"/_/ws": "tether", "/_/uplink": "uplink"}
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class TetherApp:
    """The ASGI app returned by :func:`create_app`."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.dispatcher = Dispatcher(options)
        self.proxies = TrustedProxies(options.trusted_proxies)
        self.geoip = GeoIP(options.geoip) if options.geoip else None
        self.http = Starlette()
        self.assets = use_assets(options.static_dir, dev=options.dev)
        self.page = AppPage(self.assets)
        self.endpoints = EndpointServer(self)
        self.tcp: TcpListener | None = None
        self.tcp_address: tuple[str, int] | None = None
        """Where the TCP port listens, once the lifespan started it."""

    async def __call__(self, scope: Scope, receive: Receive, send: SendMessage) -> None:
        kind = scope["type"]
        if kind == "websocket":
            dialect = WEBSOCKET_PATHS.get(route_path(scope))
            if dialect is not None:
                await self.dispatcher.open()
                await self._websocket(scope, receive, send, dialect)
                return
        elif kind == "lifespan":
            await self._lifespan(receive, send)
            return
        elif kind == "http":
            await self.dispatcher.open()
            await self._http(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: SendMessage) -> None:
        """Static assets need no session (and stay cacheable); endpoints make one only when
        they use it; any other page shares the browser's session: a request without a live
        session cookie gets a new session and the cookie with its answer."""
        path = route_path(scope)
        if path.startswith(STATIC_PREFIX):
            await self.assets.files(scope, receive, send)
            return
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            await self.endpoints(scope, receive, send)
            return
        slot, cookie = await self._browser_session(scope)
        scope["tether.session"] = slot

        async def send_with_cookie(message: Message) -> None:
            if cookie is not None and message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), (b"set-cookie", cookie)]
            await send(message)

        if path == "/":
            await self.page(scope, receive, send_with_cookie)
        else:
            await self.http(scope, receive, send_with_cookie)

    async def cookie_session(self, scope: Scope) -> SessionSlot | None:
        """The live session the request's cookie names (marked used), else None."""
        token = cookie_token(raw_headers(scope))
        if token is None:
            return None
        sessions = self.dispatcher.sessions
        try:
            slot = sessions.slot(token) or await sessions.resume(token)
            slot.check()
        except SessionExpiredError:
            return None
        except Exception:
            log.exception(
                "could not read a session from %s: it counts as expired", sessions.store.url
            )
            return None
        return slot

    async def _browser_session(self, scope: Scope) -> tuple[SessionSlot, bytes | None]:
        """The session a browser's cookie names (marked used), or a new one and the
        ``Set-Cookie`` that gives it, when the cookie is missing, expired or unknown."""
        slot = await self.cookie_session(scope)
        if slot is not None:
            return slot, None
        fresh = self.dispatcher.sessions.slot(None)
        assert fresh is not None
        return fresh, self.set_cookie(scope, fresh.token)

    def set_cookie(self, scope: Scope, token: str) -> bytes:
        """The ``Set-Cookie`` value that gives the browser session ``token``."""
        cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
        if self._scheme(scope, raw_headers(scope)) in ("https", "wss"):
            cookie += "; Secure"
        return cookie.encode()

    def public_origin(self, scope: Scope) -> str:
        """The app's origin as the client reached it (``--origin`` when configured)."""
        if self.options.origin:
            return self.options.origin
        headers = raw_headers(scope)
        scheme = {"ws": "http", "wss": "https"}.get(s := self._scheme(scope, headers), s)
        host = headers.get(b"host", b"").decode("latin-1")
        if not host:
            server = scope.get("server")
            address = f"[{server[0]}]" if server and ":" in server[0] else server and server[0]
            host = f"{address}:{server[1]}" if server else "localhost"
        return f"{scheme}://{host}"

    def _scheme(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        """The scheme the client used: ``X-Forwarded-Proto`` from a trusted proxy wins."""
        scheme = str(scope.get("scheme", "http"))
        client = scope.get("client")
        forwarded = headers.get(b"x-forwarded-proto")
        if forwarded and client and self.proxies.trusts(client[0]):
            scheme = forwarded.decode("latin-1").split(",")[0].strip().lower()
        return scheme

    def client_ip(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        """The connection's address, or the client's from a trusted proxy's
        ``X-Forwarded-For``."""
        client = scope.get("client")
        ip = client[0] if client else None
        forwarded = headers.get(b"x-forwarded-for")
        if ip is not None and forwarded:
            ip = self.proxies.client_of(ip, forwarded.decode("latin-1"))
        return ip

    async def _lifespan(self, receive: Receive, send: SendMessage) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.dispatcher.open()
                    await self._start_tcp()
                except (OSError, ValueError, sqlite3.Error) as exc:
                    log.error("cannot start: %s", exc)
                    await self.dispatcher.close()
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.tcp is not None:
                    self.tcp.stop()
                    self.tcp = self.tcp_address = None
                await self.dispatcher.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_tcp(self) -> None:
        port = self.options.tcp_port
        if port is not None and self.tcp is None:
            locate = self.geoip.locate if self.geoip is not None else None
            listener = TcpListener(self.dispatcher, self.options.tcp_host, port, locate)
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
        if text in self.options.allowed_origins or text == self.options.origin:
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
        headers = raw_headers(scope)
        # A browser (it always sends Origin) shares the session of its cookie with the
        # page and the HTTP endpoints; without one, it gets a new session and the cookie.
        browser = dialect == "tether" and b"origin" in headers
        slot: SessionSlot | None = None
        accept: dict[str, object] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if browser:
            slot, cookie = await self._browser_session(scope)
            if cookie is not None:
                accept["headers"] = [(b"set-cookie", cookie)]
        await send(accept)
        ip = self.client_ip(scope, headers)

        async def send_frame(frame: Frame) -> None:
            if type(frame) is str:
                await send({"type": "websocket.send", "text": frame})
            else:
                await send({"type": "websocket.send", "bytes": frame})

        peer = Peer(
            self.dispatcher,
            send_frame,
            client_ip=ip,
            dialect=dialect,
            subprotocol=subprotocol,
            browser=browser,
            slot=slot,
            origin=self.public_origin(scope),
            location=self.geoip.locate(ip) if self.geoip is not None and ip else None,
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
    tcp_threads: int = 64,
    secret: bytes | str | None = None,
    data_dir: str | None = None,
    store: str | None = None,
    session_timeout: float = DEFAULT_TIMEOUT,
    trusted_proxies: tuple[str, ...] | list[str] = (),
    geoip: str | None = None,
    static_dir: str | None = None,
    origin: str | None = None,
    max_request_bytes: int = 16 * 1024 * 1024,
    max_tasks: int = 4,
    app_id: str = "tether-app",
    environment: str = "default",
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
        tcp_threads: TCP connections read by a thread of their own that runs their sync
            calls itself (the loop reads the rest); 0 for none.
        secret: the secret that signs capabilities (16 bytes or more). None reads
            ``TETHER_SECRET``, else the store's (made once and kept there).
        data_dir: the folder where the server keeps its files: the default store is
            ``data_dir/tether.db``.
        store: ``"memory"`` or ``"sqlite:///path"``; None: SQLite in ``data_dir`` when
            it is given, else memory (gone when the process stops).
        session_timeout: seconds a session may stay unused before it expires
            (default 30 minutes).
        trusted_proxies: reverse proxies (addresses or networks) whose
            ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed.
        geoip: a MaxMind GeoIP2/GeoLite2 City ``.mmdb`` file: ``context.client.location``
            (needs ``pip install tether[geoip]``).
        static_dir: the folder served at ``/_/static/`` with cache-busted URLs; its
            ``index.html`` is the app page at ``/``.
        origin: the public origin (``https://app.example.com``) of an app behind a proxy
            that changes it, for ``get_app_origin()``; None: the one each request reached.
        max_request_bytes: the largest request body an HTTP endpoint accepts (413 beyond).
        max_tasks: background task processes running at once; more wait in a queue.
        app_id, environment: what uplink scripts see as ``anvil.app.id`` and
            ``anvil.app.environment.name``.

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
        tcp_threads=tcp_threads,
        secret=secret,
        data_dir=data_dir,
        store=store,
        session_timeout=session_timeout,
        trusted_proxies=tuple(trusted_proxies),
        geoip=geoip,
        static_dir=static_dir,
        origin=origin.rstrip("/") if origin else None,
        max_request_bytes=max_request_bytes,
        max_tasks=max_tasks,
        app_id=app_id,
        environment=environment,
    )
    return TetherApp(options)
