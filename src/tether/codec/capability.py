"""Capabilities: unforgeable tokens for a scope, and the updates that travel back with them.

A :class:`Capability` is a scope (a non-empty JSON list such as ``["video", 7]``). Only the
server can make one a peer will accept: on the way out it signs the full scope with
HMAC-SHA256 under its secret (and, for an untrusted peer, that peer's session); on the way
in it checks the signature over ``scope`` and appends the ``narrow`` list the holder may
have added. So a holder can narrow a capability but never widen or alter it.

How they are signed and written on the wire: :mod:`tether.codec.capability_wire`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final

from tether.errors import PermissionDenied

if TYPE_CHECKING:
    from tether.codec.capability_wire import HolderWire

__all__ = [
    "ANY",
    "Capability",
    "apply_updates",
    "collect_updates",
    "scope_key",
    "set_publisher",
    "set_subscriptions",
    "unwrap_capability",
]

MAX_SCOPE_BYTES: Final = 16 * 1024
"""The largest scope (as canonical JSON) a capability may have; a named limit."""
MAX_SCOPE_INT: Final = 2**53
"""Integers in a scope stay within ±2**53, so every peer (JavaScript too) reads them exactly."""

UpdateHandler = Callable[[Any], object]
UpdateGetter = Callable[[], object]
Publisher = Callable[[str, object], None]
Subscriptions = Callable[["Capability", bool], None]


class _Any:
    """The wildcard of :func:`unwrap_capability` patterns: ``Capability.ANY``."""

    _instance: ClassVar[_Any | None] = None

    def __new__(cls) -> _Any:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Capability.ANY"

    def __reduce__(self) -> str:
        return "ANY"


ANY: Final = _Any()
_NOTHING: Final = object()
_FOLD_AT: Final = 32  # queued updates folded into one past this many (bounded memory)
_publisher: Publisher | None = None
_subscriptions: Subscriptions | None = None


def set_subscriptions(subscriptions: Subscriptions | None) -> None:
    """Where ``subscribe()`` (True) and ``unsubscribe()`` (False) go: the process's
    connection (the package registers it, so this module touches no connection)."""
    global _subscriptions
    _subscriptions = subscriptions


def set_publisher(publisher: Publisher | None) -> None:
    """Where ``send_update`` also goes in a server process: the live-push hub."""
    global _publisher
    _publisher = publisher


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def scope_key(scope: list[object]) -> str:
    """The key of a scope in ``capUpdates`` and pushes: ``json.dumps`` of the full scope
    (keys sorted), as Anvil's peers write and normalise it."""
    return json.dumps(scope, sort_keys=True, allow_nan=False)


def _check_value(value: object, depth: int) -> None:
    t = type(value)
    if t is str:
        try:
            value.encode()  # type: ignore[attr-defined]
        except UnicodeEncodeError:
            raise ValueError("a string that is not valid Unicode (a lone surrogate)") from None
        return
    if value is None or t is bool:
        return
    if t is int:
        if not -MAX_SCOPE_INT <= value <= MAX_SCOPE_INT:  # type: ignore[operator]
            raise ValueError(f"integer {value} is outside ±2**53")
        return
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not a JSON number")
        return
    if depth > 32:
        raise ValueError("nested more than 32 levels deep")
    if t is list or t is tuple:
        for item in value:  # type: ignore[attr-defined]
            _check_value(item, depth + 1)
        return
    if t is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise ValueError(f"dict key {key!r} is not a string")
            _check_value(item, depth + 1)
        return
    raise ValueError(f"{t.__name__} is not a JSON value")


def _size(text: str) -> int:
    """Bytes of ``text`` as UTF-8 (a str's length is a lower bound; counted only if close)."""
    return len(text) if len(text) * 4 <= MAX_SCOPE_BYTES else len(text.encode())


def _normalize(scope: object, what: str = "scope") -> list[object]:
    """A copy of ``scope`` as plain JSON lists and dicts (keys sorted), or ValueError."""
    if type(scope) is not list and type(scope) is not tuple:
        raise ValueError(f"a capability {what} must be a list, got {type(scope).__name__}")
    _check_value(scope, 0)
    text = _canonical(scope)
    if _size(text) > MAX_SCOPE_BYTES:
        raise ValueError(f"a capability {what} is limited to {MAX_SCOPE_BYTES} bytes of JSON")
    normalized: list[object] = json.loads(text)
    return normalized


class Capability:
    """An unforgeable token for ``scope``, e.g. ``Capability(["videos", 42])``.

    Server code and trusted peers mint them; a client receives them from the server and
    may :meth:`narrow` them, never widen them. Equal capabilities have equal full scopes.

    Raises:
        ValueError: an empty scope, one starting with the reserved ``"_"``, or one that
            is not a list of JSON values.
    """

    ANY: ClassVar[_Any] = ANY

    __slots__ = (
        "__weakref__",
        "_generation",
        "_get",
        "_handler",
        "_key",
        "_mac",
        "_narrow",
        "_pending",
        "_scope",
        "_source",
        "_valid",
    )

    def __init__(self, scope: list[object] | tuple[object, ...]) -> None:
        full = _normalize(scope)
        if not full:
            raise ValueError("cannot construct a capability with an empty scope")
        if full[0] == "_":
            raise ValueError("a capability's scope cannot start with '_' (reserved)")
        self._init(full, [], None, True)

    def _init(
        self, scope: list[object], narrow: list[object], mac: str | None, valid: bool
    ) -> None:
        self._scope = scope
        self._narrow = narrow
        self._mac = mac
        self._valid = valid
        self._source: HolderWire | None = None  # the client connection it arrived on
        self._generation = 0
        self._key = scope_key(scope + narrow if narrow else scope)
        self._handler: UpdateHandler | None = None
        self._get: UpdateGetter | None = None
        self._pending: deque[object] = deque()  # sent, not yet taken; see _apply_update

    @classmethod
    def _make(
        cls, scope: list[object], narrow: list[object], mac: str | None, valid: bool
    ) -> Capability:
        cap = cls.__new__(cls)
        cap._init(scope, narrow, mac, valid)
        return cap

    # -- the token ----------------------------------------------------------------------

    @property
    def scope(self) -> list[object]:
        """The full scope (a new list each time)."""
        return [*self._scope, *self._narrow]

    @property
    def is_valid(self) -> bool:
        """False once the session it was signed for invalidated it
        (``server.invalidate_client_objects()``)."""
        source = self._source
        return self._valid and (source is None or source.generation == self._generation)

    def narrow(self, extra: list[object] | tuple[object, ...]) -> Capability:
        """A new, narrower capability: this scope followed by ``extra``. Works anywhere,
        without the server's secret; the original is unchanged."""
        more = _normalize(extra, "narrowing")
        if _size(_canonical([*self._scope, *self._narrow, *more])) > MAX_SCOPE_BYTES:
            raise ValueError(f"a capability scope is limited to {MAX_SCOPE_BYTES} bytes of JSON")
        cap = Capability._make(self._scope, [*self._narrow, *more], self._mac, self._valid)
        cap._source, cap._generation = self._source, self._generation
        return cap

    def __eq__(self, other: object) -> bool:
        return type(other) is Capability and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return (
            f"Capability({self.scope!r})"
            if self.is_valid
            else f"<invalid Capability {self.scope!r}>"
        )

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a Capability cannot be pickled; send it through server.call")

    # -- updates ------------------------------------------------------------------------

    def set_update_handler(
        self, apply_update: UpdateHandler, get_update: UpdateGetter | None = None
    ) -> None:
        """``apply_update(u)`` runs for every update to this capability in this process.

        With ``get_update``, nothing is queued: what ``get_update()`` returns when the
        call completes is what goes back to the caller (None for nothing).
        """
        self._handler = apply_update
        self._get = get_update

    def send_update(self, update: object) -> None:
        """Runs this process's handler at once and queues ``update`` for every caller
        that passed this capability in (dicts merge, anything else replaces). In a server
        it is also pushed at once to every connection subscribed to this scope.

        Raises:
            PermissionDenied: the capability was invalidated.
        """
        if not self.is_valid:
            raise PermissionDenied(f"capability {self.scope!r} has been invalidated")
        self._apply_update(update)
        publisher = _publisher
        if publisher is not None:
            publisher(self._key, update)

    def _apply_update(self, update: object) -> None:
        """An update arrived (or was sent here): run the handler, queue it upstream."""
        handler = self._handler
        if handler is not None:
            handler(update)
        if self._get is None:
            # No lock: deque appends and pops are atomic, so threads sending on one
            # capability never lose an update; they are merged in order when taken.
            queue = self._pending
            queue.append(dict(update) if type(update) is dict else update)  # a snapshot
            if len(queue) > _FOLD_AT:
                queue.extendleft(_fold(queue))  # older than anything appended meanwhile

    def _take_update(self) -> object:
        """What goes back to the caller now (None for nothing), and forget it."""
        getter = self._get
        if getter is not None:
            return getter()
        folded = _fold(self._pending)
        return folded[0] if folded else None

    # -- live pushes (clients) ----------------------------------------------------------

    def subscribe(self) -> None:
        """Asks the server (this process's ``server.connect`` connection) to push every
        update on this scope to this process at once, until :meth:`unsubscribe`, this
        object is collected, or the connection closes.

        Raises:
            PermissionDenied: the server does not accept this capability.
            AppOfflineError: not connected.
        """
        _subscribe(self, True)

    def unsubscribe(self) -> None:
        """Stops the pushes :meth:`subscribe` asked for."""
        _subscribe(self, False)


def _subscribe(cap: Capability, on: bool) -> None:
    assert _subscriptions is not None, "registered when the tether package loads"
    _subscriptions(cap, on)


def _fold(queue: deque[object]) -> list[object]:
    """Takes every queued update, oldest first, and returns them as one (dicts merge,
    anything else replaces), or nothing when none was queued."""
    merged: object = _NOTHING
    while True:
        try:
            update = queue.popleft()
        except IndexError:
            return [] if merged is _NOTHING else [merged]
        if type(update) is dict and type(merged) is dict:
            merged.update(update)  # both are this queue's own copies
        else:
            merged = update


def unwrap_capability(cap: object, pattern: list[object] | tuple[object, ...]) -> list[object]:
    """Checks ``cap`` grants ``pattern`` and returns the matched scope elements.

    ``pattern`` matches when the scope is as long or shorter (shorter grants more) and
    each element equals the pattern's, or the pattern holds ``Capability.ANY``. The result
    has the pattern's length, padded with None where the scope was broader.

    Raises:
        PermissionDenied: not a valid Capability, too narrow, or wrong values; the message
            shows what was required and what was given.
    """
    if type(cap) is not Capability:
        raise PermissionDenied(f"not a valid Capability: found {type(cap).__name__}")
    if not cap.is_valid:
        raise PermissionDenied(f"capability {cap.scope!r} has been invalidated")
    if type(pattern) is not list and type(pattern) is not tuple:
        raise TypeError(f"the pattern must be a list, got {type(pattern).__name__}")
    scope = cap.scope
    if len(scope) > len(pattern):
        raise PermissionDenied(
            f"capability is too narrow: required {_show(pattern)}; got {_show(scope)}"
        )
    for want, got in zip(pattern, scope, strict=False):
        if want is ANY or _same(want, got):
            continue
        raise PermissionDenied(
            f"incorrect capability: required {_show(pattern)}; got {_show(scope)}"
        )
    return [*scope, *[None] * (len(pattern) - len(scope))]


def _same(want: object, got: object) -> bool:
    try:
        _check_value(want, 0)  # only JSON values can match (no int dict keys, say)
        return _canonical(want) == _canonical(got)  # strict: True is not 1, 1.0 is not 1
    except (TypeError, ValueError):
        return False


def _show(values: Iterable[object]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def collect_updates(caps: Iterable[Capability]) -> dict[str, object]:
    """The queued updates of the capabilities that arrived in a call, by scope key.

    Each capability is asked once; two with the same scope merge (dicts) or the later
    wins. Capabilities with nothing queued are left out.
    """
    out: dict[str, object] = {}
    seen: set[int] = set()
    for cap in caps:
        if id(cap) in seen:
            continue
        seen.add(id(cap))
        update = cap._take_update()
        if update is None:
            continue
        previous = out.get(cap._key)
        if type(previous) is dict and type(update) is dict:
            out[cap._key] = {**previous, **update}
        else:
            out[cap._key] = update
    return out


def apply_updates(
    caps: Iterable[Capability], updates: object, *, normalized: bool = False
) -> list[tuple[Capability, object]]:
    """Applies a reply's ``capUpdates`` to the capabilities this side sent in the call:
    each once, by full scope. Returns the capabilities updated, with their update.

    Keys from a peer are normalised (any JSON spelling of a scope matches; a key that is
    not JSON is ignored); ``normalized`` skips that for the keys of
    :func:`collect_updates`. An update for a capability that was not sent is ignored.
    """
    if type(updates) is not dict or not updates:
        return []
    by_key: dict[str, object]
    if normalized:
        by_key = updates
    else:
        by_key = {}
        for key, update in updates.items():
            try:
                by_key[scope_key(json.loads(key))] = update
            except (TypeError, ValueError):
                continue
    applied: list[tuple[Capability, object]] = []
    seen: set[int] = set()
    for cap in caps:
        if id(cap) in seen:
            continue
        seen.add(id(cap))
        update = by_key.get(cap._key, _NOTHING)
        if update is not _NOTHING:
            cap._apply_update(update)
            applied.append((cap, update))
    return applied
