"""The server secret: from the options, TETHER_SECRET, or the store (made once)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT
from tether import server, testing
from tether.client import AsyncClient
from tether.runtime.secret import load_secret
from tether.runtime.stores import MemoryStore, SqliteStore

KEY = "secret-test-key"


async def test_the_options_win_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_SECRET", "e" * 20)
    store = MemoryStore()
    assert await load_secret(b"o" * 16, store) == b"o" * 16
    assert await load_secret("s" * 16, store) == b"s" * 16
    assert await load_secret(None, store) == b"e" * 20


async def test_a_short_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        await load_secret("short", MemoryStore())
    monkeypatch.setenv("TETHER_SECRET", "short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        await load_secret(None, MemoryStore())


async def test_without_anything_each_memory_store_makes_a_random_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TETHER_SECRET", raising=False)
    first, second = MemoryStore(), MemoryStore()
    assert await load_secret(None, first) != await load_secret(None, second)
    assert await load_secret(None, first) == await load_secret(None, first)


async def test_the_sqlite_store_keeps_one_secret_readable_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_SECRET", raising=False)
    path = tmp_path / "data" / "tether.db"
    store = SqliteStore(path)
    await store.open()
    first = await load_secret(None, store)
    await store.close()
    assert len(first) == 32
    again = SqliteStore(path)
    await again.open()
    try:
        assert await load_secret(None, again) == first
    finally:
        await again.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_damaged_stored_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_SECRET", raising=False)
    store = MemoryStore()
    await store.secret(b"abcd")
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        await load_secret(None, store)


async def signed_by(url: str) -> server.Capability:
    async with AsyncClient(url, KEY) as trusted:
        cap = await trusted.call("cap_mint", ["kept", 1])
        assert isinstance(cap, server.Capability)
        return cap


async def scope_at(url: str, cap: server.Capability) -> object:
    async with AsyncClient(url, KEY) as trusted:
        return await trusted.call("cap_scope", cap)


async def test_capabilities_survive_a_restart_with_the_same_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_SECRET", raising=False)
    import tests.apps.capabilities  # noqa: F401 - registers cap_mint, cap_scope

    async with asyncio.timeout(TIMEOUT):
        with testing.serve(uplink_key=KEY, data_dir=str(tmp_path / "a")) as url:
            cap = await signed_by(url)
        with testing.serve(uplink_key=KEY, data_dir=str(tmp_path / "a")) as url:
            assert await scope_at(url, cap) == ["kept", 1]
        with (
            testing.serve(uplink_key=KEY, data_dir=str(tmp_path / "b")) as url,
            pytest.raises(server.PermissionDenied, match="does not verify"),
        ):
            await scope_at(url, cap)


def test_tether_serve_refuses_a_short_secret_clearly() -> None:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tether", "serve", "examples/quickstart", "--port", "9"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "TETHER_SECRET": "short"},
        check=False,
    )
    assert result.returncode == 1
    assert "Error: the server secret must be at least 16 bytes" in result.stderr
