"""Where a client is: its address behind trusted proxies, and its GeoIP location."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tether.context import Location
from tether.runtime.network import GeoIP, TrustedProxies

LYON = {
    "city": {"names": {"en": "Lyon"}},
    "subdivisions": [{"names": {"en": "Auvergne-Rhône-Alpes"}}],
    "location": {"latitude": 45.75, "longitude": 4.85},
    "country": {"iso_code": "FR", "names": {"en": "France"}},
}


def test_without_proxies_nothing_is_trusted() -> None:
    proxies = TrustedProxies()
    assert not proxies.trusts("127.0.0.1")
    assert proxies.client_of("127.0.0.1", "203.0.113.9") == "127.0.0.1"


def test_a_trusted_peer_passes_on_the_forwarded_address() -> None:
    proxies = TrustedProxies(("127.0.0.1",))
    assert proxies.trusts("127.0.0.1")
    assert proxies.client_of("127.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert proxies.client_of("127.0.0.1", " 203.0.113.9 ") == "203.0.113.9"


def test_the_client_is_the_rightmost_untrusted_hop() -> None:
    proxies = TrustedProxies(("127.0.0.1", "10.0.0.0/8"))
    chain = "198.51.100.1, 203.0.113.9, 10.0.0.2"
    assert proxies.client_of("127.0.0.1", chain) == "203.0.113.9"
    assert proxies.client_of("10.1.2.3", chain) == "203.0.113.9"


def test_garbage_hops_stop_at_the_last_valid_one() -> None:
    proxies = TrustedProxies(("127.0.0.1", "10.0.0.0/8"))
    assert proxies.client_of("127.0.0.1", "evil, 203.0.113.9") == "203.0.113.9"
    assert proxies.client_of("127.0.0.1", "evil, 10.0.0.2") == "10.0.0.2"
    assert proxies.client_of("127.0.0.1", "203.0.113.9, evil") == "127.0.0.1"
    assert proxies.client_of("127.0.0.1", "") == "127.0.0.1"


def test_an_untrusted_peer_header_is_ignored() -> None:
    proxies = TrustedProxies(("127.0.0.1", "10.0.0.0/8"))
    assert not proxies.trusts("198.51.100.7")
    assert proxies.client_of("198.51.100.7", "203.0.113.9, 10.0.0.2") == "198.51.100.7"
    assert not proxies.trusts("not-an-address")
    assert proxies.client_of("not-an-address", "203.0.113.9") == "not-an-address"


@pytest.mark.parametrize("entry", ["nonsense", "10.0.0.0/33", "", "::1/200"])
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="bad trusted proxy"):
        TrustedProxies(("127.0.0.1", entry))


def test_host_bits_in_a_network_entry_are_accepted() -> None:
    proxies = TrustedProxies(("10.1.2.3/8",))
    assert proxies.trusts("10.200.0.1")


def test_an_ipv4_peer_on_a_dual_stack_socket_is_recognised() -> None:
    proxies = TrustedProxies(("127.0.0.1",))
    assert proxies.client_of("::ffff:127.0.0.1", "203.0.113.9") == "203.0.113.9"


def test_ipv6_proxies_and_clients() -> None:
    proxies = TrustedProxies(("::1", "fd00::/8"))
    assert proxies.trusts("::1")
    assert proxies.trusts("fd12:3456::1")
    assert not proxies.trusts("127.0.0.1")
    chain = "2001:db8::7, fd00::2"
    assert proxies.client_of("::1", chain) == "2001:db8::7"
    assert proxies.client_of("2001:db8::1", chain) == "2001:db8::1"
    assert proxies.client_of("::1", "203.0.113.9, fd00::2") == "203.0.113.9"


@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    """A tiny City-style database: 203.0.113.0/24 and 2001:db8::/32 are in Lyon."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="tether test",
    )
    writer.insert_network(IPSet(["203.0.113.0/24", "2001:db8::/32"]), LYON)
    writer.insert_network(IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "US"}})
    path = tmp_path / "city.mmdb"
    writer.to_db_file(str(path))
    return path


def test_geoip_finds_the_city(city_db: Path) -> None:
    lyon = Location(
        city="Lyon",
        subdivision="Auvergne-Rhône-Alpes",
        latitude=45.75,
        longitude=4.85,
        country_code="FR",
        country="France",
    )
    geoip = GeoIP(str(city_db))
    assert geoip.locate("203.0.113.9") == lyon
    assert geoip.locate("2001:db8::1") == lyon


def test_geoip_leaves_missing_fields_empty(city_db: Path) -> None:
    assert GeoIP(str(city_db)).locate("198.51.100.1") == Location(country_code="US")


@pytest.mark.parametrize("ip", ["192.0.2.1", "2001:db9::1", "not an address", ""])
def test_geoip_does_not_know_every_address(city_db: Path, ip: str) -> None:
    assert GeoIP(str(city_db)).locate(ip) is None


def test_an_ipv6_address_in_an_ipv4_database_is_unknown(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-City")
    writer.insert_network(IPSet(["203.0.113.0/24"]), LYON)
    path = tmp_path / "v4.mmdb"
    writer.to_db_file(str(path))
    geoip = GeoIP(str(path))
    assert geoip.locate("2001:db8::1") is None
    assert geoip.locate("203.0.113.9") is not None


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the GeoIP database"):
        GeoIP(str(tmp_path / "missing.mmdb"))


@pytest.mark.parametrize("content", [b"this is not a MaxMind database\n" * 10, b""])
def test_a_garbage_database_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.mmdb"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot read the GeoIP database"):
        GeoIP(str(path))


async def test_the_server_puts_the_location_in_the_context(city_db: Path) -> None:
    """Through a trusted proxy that forwards a client in Lyon."""
    import asyncio

    import orjson
    from websockets.asyncio.client import connect as ws_connect

    import tests.apps.sessions  # noqa: F401 - registers location_of
    from tests.conftest import TIMEOUT
    from tether import testing

    async with asyncio.timeout(TIMEOUT):
        with testing.serve(geoip=str(city_db), trusted_proxies=["127.0.0.1"]) as url:
            headers = {"X-Forwarded-For": "203.0.113.9"}
            ws = url.replace("http://", "ws://") + "/_/ws"
            async with ws_connect(ws, additional_headers=headers) as sock:
                await sock.send(orjson.dumps({"key": None, "v": 8}).decode())
                assert orjson.loads(await sock.recv())["auth"] == "OK"
                call = {"type": "CALL", "id": "c", "command": "location_of", "args": []}
                await sock.send(orjson.dumps({**call, "kwargs": {}}).decode())
                reply = orjson.loads(await sock.recv())
    assert reply["response"] == {"city": "Lyon", "country": "FR"}


def test_tether_serve_refuses_an_unreadable_geoip_database(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import TIMEOUT

    result = subprocess.run(
        [
            *[sys.executable, "-m", "tether", "serve", "examples/quickstart", "--port", "9"],
            *["--geoip", str(tmp_path / "missing.mmdb")],
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot read the GeoIP database" in result.stderr
