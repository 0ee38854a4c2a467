"""HTTP endpoints registered with ``@server.http_endpoint``, and what they see and return.

Pure: the routes, the request an endpoint reads as ``server.request``, and
:class:`HttpResponse`. Serving them is ``tether.runtime.endpoints``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tether.codec import Media

__all__ = [
    "Endpoint",
    "EndpointRegistry",
    "HttpRequest",
    "HttpResponse",
    "endpoint_registry",
]

Authenticator = Callable[[str, str], object]
"""``f(username, password)``: the user those credentials log in, or None."""

_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""HTTP methods and header names are tokens (RFC 9110 §5.6.2)."""


class HttpResponse:
    """What an endpoint returns to choose the status and headers (as in Anvil).

    ``body`` is a ``str`` (sent as ``text/plain; charset=utf-8``), bytes or a ``Media``
    (its content type), or any JSON-able value (``application/json``). A
    ``Content-Type`` in ``headers`` wins over those defaults.
    """

    def __init__(
        self, status: int = 200, body: object = "", headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"HttpResponse(status={self.status!r}, body={self.body!r}, headers={self.headers!r})"


@dataclass(slots=True)
class HttpRequest:
    """``server.request`` in an HTTP endpoint.

    Attributes:
        method: ``"GET"``, ``"POST"``...
        path: the path below ``/_/api`` (``/users/3`` for ``/_/api/users/3``).
        headers: lower-case names; repeated headers joined with ``", "``. Tether's
            session cookie is removed (endpoint code never sees the token).
        query_params: the query string's parameters (the last one of a repeated name).
        form_params: the fields of an urlencoded or multipart body; uploaded files are
            ``Media`` with their name and content type.
        body: the raw body as a ``Media`` (the request's content type), None when empty.
        body_json: the parsed body when the content type is JSON, else None.
        origin: the origin this request reached (``https://app.example.com``).
        remote_address: the client's address (from a trusted proxy's ``X-Forwarded-For``).
        username, password: HTTP Basic credentials, else None.
        user: the user ``authenticate_users`` logged in, else None.
    """

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # Authorization...
    query_params: dict[str, str] = field(default_factory=dict)
    form_params: dict[str, object] = field(default_factory=dict)
    body: Media | None = None
    body_json: object = None
    origin: str = ""
    remote_address: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    user: object = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One registered endpoint.

    Attributes:
        path: as registered: ``/users/:id``.
        segments: per path segment, the literal text or a pattern whose groups are the
            ``:name`` parameters.
        methods: the methods it answers (upper case; ``HEAD`` comes with ``GET``).
    """

    path: str
    fn: Callable[..., object]
    is_async: bool
    segments: tuple[str | re.Pattern[str], ...]
    methods: tuple[str, ...]
    require_credentials: bool = False
    authenticate_users: bool | Authenticator = False
    cross_site_session: bool = False
    enable_cors: bool = False
    signature: inspect.Signature | None = None
    """To refuse a request whose parameters the function cannot take (400, not 500)."""

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The path parameters when ``segments`` (decoded) is this endpoint's path."""
        if len(segments) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for mine, theirs in zip(self.segments, segments, strict=True):
            if type(mine) is str:
                if mine != theirs:
                    return None
                continue
            assert isinstance(mine, re.Pattern)
            matched = mine.fullmatch(theirs)
            if matched is None:
                return None
            found.update(matched.groupdict())
        return found

    @property
    def allow(self) -> str:
        """The ``Allow`` header: the methods this endpoint answers."""
        return ", ".join(self.methods)


def is_token(name: str) -> bool:
    """An HTTP method or header name: an RFC 9110 token."""
    return bool(_TOKEN.match(name))


def split_path(path: str) -> list[str]:
    """``/a/b`` -> ``["a", "b"]``; ``/`` -> ``[""]``."""
    return path[1:].split("/")


def compile_path(path: str) -> tuple[str | re.Pattern[str], ...]:
    """Each segment of ``path``: literal text, or a pattern where ``:name`` matches one or
    more characters of that segment (never a ``/``).

    Raises:
        ValueError: ``path`` does not start with ``/``, or names a parameter twice.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"an http_endpoint path must start with '/', got {path!r}")
    names: set[str] = set()
    compiled: list[str | re.Pattern[str]] = []
    for segment in split_path(path):
        if _PARAM.search(segment) is None:
            compiled.append(segment)
            continue
        parts: list[str] = []
        last = 0
        for found in _PARAM.finditer(segment):
            name = found.group(1)
            if name in names:
                raise ValueError(f"http_endpoint path {path!r} names :{name} twice")
            names.add(name)
            parts.append(re.escape(segment[last : found.start()]))
            parts.append(f"(?P<{name}>.+?)")
            last = found.end()
        parts.append(re.escape(segment[last:]))
        compiled.append(re.compile("".join(parts), re.DOTALL))
    return tuple(compiled)


def normalize_methods(methods: object) -> tuple[str, ...]:
    """Upper-case method names, ``HEAD`` added when ``GET`` is there.

    Raises:
        ValueError: no methods, or one that is not an HTTP token.
    """
    if isinstance(methods, str) or not isinstance(methods, list | tuple | set | frozenset):
        raise ValueError(f"http_endpoint methods must be a list of names, got {methods!r}")
    names: list[str] = []
    for method in methods:
        if not isinstance(method, str) or not is_token(method):
            raise ValueError(f"not an HTTP method: {method!r}")
        upper = method.upper()
        if upper not in names:
            names.append(upper)
    if not names:
        raise ValueError("http_endpoint needs at least one method")
    if "GET" in names and "HEAD" not in names:
        names.append("HEAD")
    return tuple(names)


class EndpointRegistry:
    """The endpoints of this process; a literal path is found before patterns, and among
    patterns the first registered wins. Registering a path again replaces it."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}

    def register(
        self,
        fn: Callable[..., object],
        path: str,
        methods: object = ("GET", "POST"),
        *,
        require_credentials: bool = False,
        authenticate_users: bool | Authenticator = False,
        cross_site_session: bool = False,
        enable_cors: bool = False,
    ) -> Endpoint:
        """Registers ``fn`` to answer ``/_/api<path>``.

        Raises:
            TypeError: ``fn`` is not callable, or ``authenticate_users`` is neither a
                bool nor a function.
            ValueError: a bad path or method list.
        """
        if not callable(fn):
            raise TypeError(f"http_endpoint needs a function, got {fn!r}")
        if not (isinstance(authenticate_users, bool) or callable(authenticate_users)):
            raise TypeError(
                "authenticate_users must be a bool or a function f(username, password) -> user"
            )
        endpoint = Endpoint(
            path=path,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            segments=compile_path(path),
            methods=normalize_methods(methods),
            require_credentials=bool(require_credentials) or authenticate_users is not False,
            authenticate_users=authenticate_users,
            cross_site_session=bool(cross_site_session),
            enable_cors=bool(enable_cors),
            signature=_signature(fn),
        )
        self.endpoints[path] = endpoint
        return endpoint

    def find(self, path: list[str]) -> tuple[Endpoint, dict[str, str]] | None:
        """The endpoint answering the decoded path segments, and its path parameters."""
        literal = self.endpoints.get("/" + "/".join(path))
        if literal is not None and list(literal.segments) == path:
            return literal, {}
        for endpoint in self.endpoints.values():
            params = endpoint.match(path)
            if params is not None:
                return endpoint, params
        return None


def _signature(fn: Callable[..., object]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: let the call decide
        return None


endpoint_registry = EndpointRegistry()
"""The process-wide registry that ``server.http_endpoint`` fills."""

_authenticator: Authenticator | None = None


def set_authenticator(fn: Authenticator | None) -> None:
    """The function ``authenticate_users=True`` checks Basic credentials with."""
    global _authenticator
    if fn is not None and not callable(fn):
        raise TypeError("set_user_authenticator needs a function f(username, password) -> user")
    _authenticator = fn


def authenticator() -> Authenticator | None:
    """The function given to :func:`set_authenticator`, if any."""
    return _authenticator
