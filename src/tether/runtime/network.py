"""Where a client is: its address behind trusted reverse proxies, and its location."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from tether.context import Location

__all__ = ["GeoIP", "TrustedProxies"]

log = logging.getLogger("tether")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-*`` headers are believed.

    Each entry is an address or a network (``10.0.0.0/8``). With none, the headers are
    ignored: a client could write anything in them.
    """

    def __init__(self, entries: tuple[str, ...] = ()) -> None:
        try:
            self.networks: list[Network] = [ipaddress.ip_network(e, strict=False) for e in entries]
        except ValueError as exc:
            raise ValueError(f"bad trusted proxy: {exc}") from None

    def trusts(self, ip: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's ::ffff:127.0.0.1
        return any(address in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: str) -> str:
        """The client's address: walking ``X-Forwarded-For`` from the right (the nearest
        hop), the first address that is not a trusted proxy. ``peer`` itself when it is
        not a trusted proxy."""
        if not self.trusts(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage from further out: stop at the last hop we believe
            client = hop
            if not self.trusts(hop):
                break
        return client


class GeoIP:
    """Looks addresses up in a MaxMind GeoIP2 / GeoLite2 City database (``.mmdb``)."""

    def __init__(self, path: str) -> None:
        try:
            import maxminddb
        except ImportError as exc:
            raise ValueError(
                "--geoip needs the maxminddb package: pip install tether[geoip]"
            ) from exc
        try:
            self.reader = maxminddb.open_database(path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ValueError(f"cannot read the GeoIP database {path}: {exc}") from None

    def locate(self, ip: str) -> Location | None:
        """The location of ``ip``, or None when the database does not know it."""
        try:
            found = self.reader.get(ip)
        except ValueError:
            return None
        if not isinstance(found, dict):
            return None
        location = _dict(found.get("location"))
        subdivisions = found.get("subdivisions")
        first = subdivisions[0] if isinstance(subdivisions, list) and subdivisions else None
        country = _dict(found.get("country"))
        return Location(
            city=_name(found.get("city")),
            subdivision=_name(first),
            latitude=_float(location.get("latitude")),
            longitude=_float(location.get("longitude")),
            country_code=_str(country.get("iso_code")),
            country=_name(country),
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(record: Any) -> str | None:
    return _str(_dict(_dict(record).get("names")).get("en"))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
