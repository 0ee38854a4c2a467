"""How capabilities are signed, and written and read on the wire.

A :class:`Signer` makes and checks MACs for a :class:`CapabilitySession`. How a side
writes and reads capabilities is a :class:`CapabilityWire`: :class:`SigningWire` for the
server's end of a connection, :class:`HolderWire` for a client's, and :class:`LocalWire`
for copies inside one process. Each records the capabilities it wrote or read into the
list it is given, which is how updates find their way back.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from tether.codec.capability import (
    MAX_SCOPE_BYTES,
    Capability,
    _canonical,
    _normalize,
    _size,
)
from tether.errors import PermissionDenied, SerializationError

__all__ = [
    "CapabilitySession",
    "CapabilityWire",
    "HolderWire",
    "LocalWire",
    "Signer",
    "SigningWire",
]


# -- signing -----------------------------------------------------------------------------


@dataclass(slots=True)
class CapabilitySession:
    """Whom a signature is for: an untrusted peer's session (``id``) and how many times
    it invalidated its capabilities (``generation``). Trusted peers share ``id=None``."""

    id: bytes | None = None
    generation: int = 1


class Signer:
    """HMAC-SHA256 with the server's secret over (session, generation, canonical scope).

    A MAC reads ``"<generation>.<hex>"``: a signature from an older generation of the
    same session verifies but marks the capability invalid (revoked); anything else that
    does not verify is a forgery.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        self._secret = secret

    def _digest(self, scope: list[object], session: bytes | None, generation: int) -> str:
        message = b"%d\x00%s\x00%s" % (
            generation,
            session.hex().encode() if session is not None else b"-",
            _canonical(scope).encode(),
        )
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, scope: list[object], session: CapabilitySession, valid: bool = True) -> str:
        generation = session.generation if valid else 0
        return f"{generation}.{self._digest(scope, session.id, generation)}"

    def verify(self, scope: list[object], session: CapabilitySession, mac: str) -> bool | None:
        """True: valid. False: signed for this session but since revoked. None: forged."""
        generation_text, _, digest = mac.partition(".")
        if not (generation_text.isascii() and generation_text.isdigit()):
            return None
        if len(generation_text) > 12 or len(digest) != 64 or not digest.isascii():
            return None
        generation = int(generation_text)
        if generation > session.generation:
            return None
        expected = self._digest(scope, session.id, generation)
        if not hmac.compare_digest(expected, digest):
            return None
        return generation == session.generation


# -- wire forms --------------------------------------------------------------------------


class CapabilityWire:
    """How one side writes and reads capabilities; see the subclasses."""

    def encode(
        self, found: list[Capability], value: object, encoder: object
    ) -> dict[str, object] | None:
        """The objects entry for ``value`` if it is a Capability (recorded in ``found``)."""
        if type(value) is not Capability:
            return None
        found.append(value)
        return self._fields(value)

    def _fields(self, cap: Capability) -> dict[str, object]:
        raise NotImplementedError

    def decode(self, found: list[Capability], entry: dict[str, object], path: str) -> Capability:
        """The Capability an objects entry describes (recorded in ``found``)."""
        cap = self._read(entry, path)
        found.append(cap)
        return cap

    def _read(self, entry: dict[str, object], path: str) -> Capability:
        raise NotImplementedError


def _entry_scope(
    entry: Mapping[str, object], field: str, path: str, error: type[Exception]
) -> list[object]:
    try:
        return _normalize(entry.get(field, []), field)
    except ValueError as exc:
        raise error(f"bad capability at {path}: {exc}") from None


class SigningWire(CapabilityWire):
    """The server's end of one connection: signs what it sends for ``session``; checks
    what it receives, and appends the holder's ``narrow``.

    A capability without a MAC is accepted only from a trusted peer (``trusted`` may be
    set after the handshake); one whose MAC does not verify raises PermissionDenied,
    which fails that call before anything runs.
    """

    def __init__(
        self, signer: Signer, session: CapabilitySession, *, trusted: bool = False
    ) -> None:
        self.signer = signer
        self.session = session
        self.trusted = trusted

    def _fields(self, cap: Capability) -> dict[str, object]:
        scope = cap.scope
        return {
            "type": ["Capability"],
            "scope": scope,
            "mac": self.signer.sign(scope, self.session, cap.is_valid),
        }

    def _read(self, entry: dict[str, object], path: str) -> Capability:
        scope = _entry_scope(entry, "scope", path, PermissionDenied)
        narrow = _entry_scope(entry, "narrow", path, PermissionDenied)
        if not scope:
            raise PermissionDenied(f"capability with an empty scope at {path}")
        mac = entry.get("mac")
        if mac is None:
            if not self.trusted:
                raise PermissionDenied(
                    f"unsigned capability at {path}: only trusted code may mint capabilities"
                )
            if scope[0] == "_":
                raise PermissionDenied(f"capability with the reserved scope '_' at {path}")
            valid: bool | None = True
        else:
            valid = self.signer.verify(scope, self.session, mac) if type(mac) is str else None
            if valid is None:
                raise PermissionDenied(
                    f"capability at {path} does not verify (forged, tampered with or widened)"
                )
        full = scope + narrow
        if _size(_canonical(full)) > MAX_SCOPE_BYTES:
            raise PermissionDenied(f"bad capability at {path}: scope over {MAX_SCOPE_BYTES} bytes")
        return Capability._make(full, [], None, valid is True)


class HolderWire(CapabilityWire):
    """A client's end: sends back the signed scope, the MAC and what it narrowed; keeps
    the server's MAC as an opaque string.

    :meth:`invalidate` mirrors the server's ``invalidate_client_objects()`` for this
    connection: the capabilities read so far turn invalid here too.
    """

    def __init__(self) -> None:
        self.generation = 0

    def invalidate(self) -> None:
        self.generation += 1

    def _fields(self, cap: Capability) -> dict[str, object]:
        fields: dict[str, object] = {"type": ["Capability"], "scope": cap._scope, "mac": cap._mac}
        if cap._narrow:
            fields["narrow"] = cap._narrow
        return fields

    def _read(self, entry: dict[str, object], path: str) -> Capability:
        scope = _entry_scope(entry, "scope", path, SerializationError)
        mac = entry.get("mac")
        if not scope or (mac is not None and type(mac) is not str):
            raise SerializationError(f"bad capability at {path}")
        cap = Capability._make(scope, [], mac, True)
        cap._source, cap._generation = self, self.generation
        return cap


class LocalWire(CapabilityWire):
    """Copies inside one process (a nested ``server.call``): the full scope and whether
    it is still valid; nothing to sign or check."""

    def _fields(self, cap: Capability) -> dict[str, object]:
        return {"type": ["Capability"], "scope": cap.scope, "valid": cap.is_valid}

    def _read(self, entry: dict[str, object], path: str) -> Capability:
        scope = entry["scope"]
        assert type(scope) is list
        return Capability._make(scope, [], None, entry.get("valid") is True)
