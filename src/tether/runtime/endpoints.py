"""Serving ``/_/api``: each request to an HTTP endpoint runs as a call from an ``http``
client, with the browser's session when its cookie comes along."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import MutableMapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response

from tether.codec import BlobMedia, Media, portable_registry
from tether.context import CallContext, CallState, ClientInfo, StackFrame
from tether.functions import ServerFunction
from tether.http import (
    Endpoint,
    EndpointRegistry,
    HttpRequest,
    HttpResponse,
    authenticator,
    endpoint_registry,
    is_token,
    split_path,
)
from tether.runtime.asgi import Message, Receive, Scope, SendMessage, raw_headers, route_path
from tether.runtime.sessions import COOKIE, CallSession, SessionManager, SessionSlot

if TYPE_CHECKING:
    from tether.runtime.app import TetherApp

__all__ = ["API_PREFIX", "EndpointServer"]

log = logging.getLogger("tether")


API_PREFIX = "/_/api"
NOT_FOUND = "No matching API endpoint"
FAILED = "An exception was raised. Check the application logs for details."
CHALLENGE = 'Basic realm="Tether API", charset="UTF-8"'
TEXT = "text/plain; charset=utf-8"
MAX_FORM_FIELDS = 1000
"""Most fields (and files) in one form; more is a 400."""
PREFLIGHT_MAX_AGE = "600"
FRAMING = frozenset(
    ("content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer")
)
"""Headers the server writes itself: an endpoint setting them could break the framing of
the answers that follow on the connection."""
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
"""An RFC 9110 field value: no control characters."""


class HttpError(Exception):
    """Answers the request with ``status`` and a short text, without running the endpoint."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class HttpSession:
    """The session of an endpoint's call: the cookie's when it came (and may be used),
    else a fresh one that is kept (stored, and its cookie sent) only if the endpoint
    writes to it, resets it or asks its id: reading an empty session leaves no trace."""

    __slots__ = ("_call", "_fresh", "manager", "slot", "wants_cookie")

    def __init__(self, manager: SessionManager, slot: SessionSlot | None) -> None:
        self.manager = manager
        self.slot = slot
        self.wants_cookie = False
        """A fresh session was kept: the answer gives its cookie."""
        self._fresh = False
        self._call = CallSession(slot) if slot is not None else None

    def _session(self) -> CallSession:
        if self._call is None:
            token, session = self.manager.new(held=False)
            self.slot = SessionSlot(self.manager, session, token)
            self._call = CallSession(self.slot)
            self._fresh = True
        return self._call

    def _keep(self) -> None:
        """The fresh session is used for real: the store and the browser get it."""
        if self._fresh and not self.wants_cookie:
            assert self.slot is not None
            assert self.slot.session is not None
            self.manager.adopt(self.slot.session)
            self.slot.check()
            self.wants_cookie = True

    @property
    def id(self) -> str:
        call = self._session()
        self._keep()
        return call.id

    def view(self) -> MutableMapping[str, object]:
        return self._session().view()

    def reset(self) -> None:
        self._session().reset()
        self.wants_cookie = self._fresh  # (a cookie's session: its token changed)

    def save_blocking(self) -> None:
        if self._call is not None:
            if self._fresh and self._call.changed():
                self._keep()
            self._call.save_blocking()

    async def save(self) -> None:
        if self._call is not None:
            if self._fresh and self._call.changed():
                self._keep()
            await self._call.save()


class EndpointServer:
    """The ASGI app behind ``/_/api``."""

    def __init__(self, app: TetherApp, registry: EndpointRegistry = endpoint_registry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: SendMessage) -> None:
        headers = _headers(scope)
        method = str(scope["method"]).upper()
        path = _api_path(scope)
        found = self.registry.find([unquote(s) for s in split_path(path)])
        if found is None:
            await _text(404, NOT_FOUND)(scope, receive, send)
            return
        endpoint, path_params = found
        cors = self._cors(endpoint, headers)
        try:
            if method == "OPTIONS" and endpoint.enable_cors and "OPTIONS" not in endpoint.methods:
                response = self._preflight(endpoint, headers)
            elif method not in endpoint.methods:
                raise HttpError(405, "Method Not Allowed", {"allow": endpoint.allow})
            else:
                response = await self._run(
                    scope, receive, headers, method, path, endpoint, path_params
                )
        except HttpError as exc:
            response = _text(exc.status, str(exc), exc.headers)
        except Exception:  # a bug here, or user code where none was expected (get_bytes)
            log.exception("http endpoint %r (%s %r) failed", endpoint.path, method, path)
            response = _text(500, FAILED)
        for name, value in cors.items():
            vary = response.headers.get("vary")
            if name == "vary" and vary and value.lower() not in vary.lower():
                value = f"{vary}, {value}"
            response.headers[name] = value
        await response(scope, receive, send)

    # -- one request --------------------------------------------------------------------

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        method: str,
        path: str,
        endpoint: Endpoint,
        path_params: dict[str, str],
    ) -> Response:
        app = self.app
        username, password = _basic(headers.get("authorization"))
        if endpoint.require_credentials and username is None:
            raise HttpError(401, "Unauthorized", {"www-authenticate": CHALLENGE})
        user = None
        if endpoint.authenticate_users is not False:
            assert username is not None
            assert password is not None
            user = await self._authenticate(endpoint, username, password)
        body = await _read_body(scope, receive, headers, app.options.max_request_bytes)
        content_type = headers.get("content-type", "")
        request = HttpRequest(
            method=method,
            path=route_path(scope)[len(API_PREFIX) :] or "/",
            headers=_visible(headers),
            query_params=dict(
                parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            ),
            form_params=await _form(scope, body, content_type),
            body=BlobMedia(content_type or "application/octet-stream", body) if body else None,
            body_json=_json(body, content_type),
            origin=app.public_origin(scope),
            remote_address=app.client_ip(scope, raw_headers(scope)),
            username=username,
            password=password,
            user=user,
        )
        kwargs: dict[str, object] = {**request.form_params, **request.query_params, **path_params}
        _check_parameters(endpoint, kwargs)

        # A cross-site request uses the browser's session only with cross_site_session,
        # and never sets its cookie (another site could log the user in as someone else).
        cross = self._cross_site(scope, headers)
        use_cookie = endpoint.cross_site_session or not cross
        cookie_slot = await app.cookie_session(scope) if use_cookie else None
        session = HttpSession(app.dispatcher.sessions, cookie_slot)
        sent = cookie_slot.token if cookie_slot is not None else None
        result = await self._call(scope, endpoint, request, kwargs, session)
        response = _render(endpoint, result)
        if (
            not cross
            and session.slot is not None
            and (session.wants_cookie or (sent is not None and session.slot.token != sent))
        ):  # a new session, or reset_session(): the browser keeps its token
            response.raw_headers.append((b"set-cookie", app.set_cookie(scope, session.slot.token)))
        return response

    async def _call(
        self,
        scope: Scope,
        endpoint: Endpoint,
        request: HttpRequest,
        kwargs: dict[str, object],
        session: HttpSession,
    ) -> object:
        app = self.app
        dispatcher = app.dispatcher
        ip = request.remote_address
        context = CallContext(
            type="server_module",
            client=ClientInfo("http", ip, app.geoip.locate(ip) if app.geoip and ip else None),
            remote_caller=StackFrame("http", False),
        )
        cookie = session.slot
        state = CallState(
            context,
            dispatcher.caller,
            cap_session=cookie.session.cap if cookie is not None and cookie.session else None,
            session=session,
            origin=request.origin,
            request=request,
        )
        target = ServerFunction(f"http:{endpoint.path}", endpoint.fn, endpoint.is_async)
        try:
            return await dispatcher.run_local(target, [], kwargs, state, owns_session=True)
        except Exception as exc:
            log.error(
                "http endpoint %r (%s %r) raised",
                endpoint.path,
                request.method,
                scope.get("path"),
                exc_info=exc,
            )
            raise HttpError(500, FAILED) from None

    async def _authenticate(self, endpoint: Endpoint, username: str, password: str) -> object:
        check = endpoint.authenticate_users
        if check is True:
            check = authenticator()  # type: ignore[assignment]
            if check is None:
                log.error(
                    "http endpoint %r has authenticate_users=True, but no authenticator is set:"
                    " call server.set_user_authenticator(fn)",
                    endpoint.path,
                )
                raise HttpError(500, FAILED)
        assert callable(check)
        try:
            user = await asyncio.to_thread(check, username, password)
        except Exception:
            log.exception("the user authenticator of %r raised", endpoint.path)
            raise HttpError(500, FAILED) from None
        if user is None or user is False:
            raise HttpError(401, "Unauthorized", {"www-authenticate": CHALLENGE})
        return user

    # -- cross-site requests ------------------------------------------------------------

    def _cross_site(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Sent by a page of another site (its ``Origin``, else ``Sec-Fetch-Site``)."""
        if "origin" in headers:
            return not self.app.origin_allowed(scope)
        site = headers.get("sec-fetch-site")
        return site is not None and site not in ("same-origin", "none")

    def _cors(self, endpoint: Endpoint, headers: dict[str, str]) -> dict[str, str]:
        """``enable_cors``: any origin may read the answer; with ``cross_site_session`` the
        calling origin is named and may send its cookie."""
        if not endpoint.enable_cors:
            return {}
        if not endpoint.cross_site_session:
            return {"access-control-allow-origin": "*"}
        origin = headers.get("origin")
        if origin is None or origin == "null":  # a sandboxed frame or a file: page is no site
            return {"vary": "Origin"}
        return {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "vary": "Origin",
        }

    def _preflight(self, endpoint: Endpoint, headers: dict[str, str]) -> Response:
        answer = {
            "access-control-allow-methods": endpoint.allow,
            "access-control-max-age": PREFLIGHT_MAX_AGE,
        }
        asked = headers.get("access-control-request-headers")
        if asked:
            answer["access-control-allow-headers"] = asked
        return Response(status_code=204, headers=answer)  # the CORS headers come next


# -- reading the request ----------------------------------------------------------------


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-case names; a repeated header's values joined with ``", "`` (cookies: ``"; "``)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in found:
            value = found[name] + ("; " if name == "cookie" else ", ") + value
        found[name] = value
    return found


def _visible(headers: dict[str, str]) -> dict[str, str]:
    """The headers endpoint code sees: without Tether's session cookie (a page's script
    cannot read it: an endpoint that echoes headers must not hand it out)."""
    cookie = headers.get("cookie")
    if cookie is None or COOKIE not in cookie:
        return headers
    kept = [
        part.strip()
        for part in cookie.split(";")
        if part.strip() and part.strip().partition("=")[0] != COOKIE
    ]
    visible = dict(headers)
    if kept:
        visible["cookie"] = "; ".join(kept)
    else:
        del visible["cookie"]
    return visible


def _api_path(scope: Scope) -> str:
    """The path below ``/_/api``, still percent-encoded (a ``%2F`` stays in its segment)."""
    raw = scope.get("raw_path")
    text = raw.decode("latin-1").partition("?")[0] if raw else quote(str(scope["path"]))
    root = scope.get("root_path") or ""
    if root:  # mounted: drop as many segments as the mount point has
        text = "/" + "/".join(text.split("/")[1 + root.strip("/").count("/") + 1 :])
    rest = text[len(API_PREFIX) :] if text.startswith(API_PREFIX) else text
    return rest or "/"


def _basic(header: str | None) -> tuple[str | None, str | None]:
    """HTTP Basic credentials, or (None, None) when absent or malformed."""
    if header is None:
        return None, None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # not base64, not ASCII, not UTF-8
        return None, None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return username, password


async def _read_body(scope: Scope, receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The whole body, or a 413 as soon as it is known to be over ``limit`` bytes."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the request body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "the client went away before sending its whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the request body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _json(body: bytes, content_type: str) -> object:
    """The parsed body of a JSON request (``application/json``, ``*/*+json``), else None.

    Raises:
        HttpError: 400, the body is not valid JSON.
    """
    kind = _media_type(content_type)
    if not body or not (kind == "application/json" or kind.endswith("+json")):
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"the request body is not valid JSON: {exc}") from None


async def _form(scope: Scope, body: bytes, content_type: str) -> dict[str, object]:
    """The fields of an urlencoded or multipart body (files as ``Media``); else empty.

    Raises:
        HttpError: 400, the form is malformed or has too many fields.
    """
    kind = _media_type(content_type)
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {}
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request(scope, replay)
    try:
        form = await request.form(
            max_files=MAX_FORM_FIELDS, max_fields=MAX_FORM_FIELDS, max_part_size=len(body) + 1
        )
    except MultiPartException as exc:
        raise HttpError(400, f"malformed form data: {exc.message}") from None
    fields: dict[str, object] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields[name] = BlobMedia(
                    value.content_type or "application/octet-stream",
                    await value.read(),
                    name=value.filename,
                )
            else:
                fields[name] = value
    finally:
        await form.close()
    return fields


def _check_parameters(endpoint: Endpoint, kwargs: dict[str, object]) -> None:
    """A request whose parameters the function cannot take is the client's mistake: 400."""
    if endpoint.signature is None:
        return
    try:
        endpoint.signature.bind(**kwargs)
    except TypeError as exc:
        raise HttpError(400, f"bad parameters for {endpoint.path}: {exc}") from None


# -- writing the answer -----------------------------------------------------------------


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text, status_code=status, headers={"content-type": TEXT, **(headers or {})})


def _render(endpoint: Endpoint, result: object) -> Response:
    """The answer for what an endpoint returned (a 500 when it cannot be sent)."""
    status, headers, body = 200, {}, result
    if isinstance(result, HttpResponse):
        status, body = result.status, result.body
        headers = {str(k).lower(): v for k, v in result.headers.items()}
    try:
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"HttpResponse status must be an int from 200 to 599, not {status!r}")
        content, defaults = _content(body)
        if status in (204, 304):
            if content:
                raise ValueError(f"a {status} answer has no body: got {type(body).__name__}")
            defaults.pop("content-type", None)
        merged = defaults | headers
        for name, value in merged.items():
            if not is_token(name) or name in FRAMING:
                raise ValueError(f"an endpoint cannot set the header {name!r}")
            if not isinstance(value, str) or not _FIELD_VALUE.fullmatch(value):
                raise ValueError(f"header {name!r} must be one line of text, not {value!r}")
        return Response(content, status_code=status, headers=merged)
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        log.error("http endpoint %r returned what HTTP cannot carry: %s", endpoint.path, exc)
        return _text(500, FAILED)


def _content(body: object) -> tuple[bytes, dict[str, str]]:
    if body is None:
        return b"", {}
    if isinstance(body, str):
        return body.encode(), {"content-type": TEXT}
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), {"content-type": "application/octet-stream"}
    if isinstance(body, Media):
        headers = {"content-type": body.content_type or "application/octet-stream"}
        if body.name:
            headers["content-disposition"] = _inline(body.name)
        return body.get_bytes(), headers
    try:
        data = orjson.dumps(body, default=_not_json, option=orjson.OPT_PASSTHROUGH_DATACLASS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"not JSON-able: {exc.__cause__ or exc}") from None
    return data, {"content-type": "application/json"}


def _not_json(value: object) -> object:
    kind = type(value)
    if kind in portable_registry.by_class:
        raise TypeError(
            f"a portable object ({kind.__qualname__}) cannot be sent as JSON:"
            " return a dict, or use a server function"
        )
    raise TypeError(f"a {kind.__qualname__} cannot be sent as JSON")


def _inline(name: str) -> str:
    """``inline; filename=...``, with the UTF-8 form for names that are not plain ASCII."""
    plain = name.isascii() and name.isprintable() and '"' not in name and "\\" not in name
    if plain:
        return f'inline; filename="{name}"'
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
