"""The server secret: from the options, TETHER_SECRET, or a file made once."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT
from tether import server, testing
from tether.client import AsyncClient
from tether.runtime.secret import load_secret

KEY = "secret-test-key"


def test_the_options_win_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_SECRET", "e" * 20)
    assert load_secret(b"o" * 16, None) == b"o" * 16
    assert load_secret("s" * 16, None) == b"s" * 16
    assert load_secret(None, None) == b"e" * 20


def test_a_short_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_secret("short", None)
    monkeypatch.setenv("TETHER_SECRET", "short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_secret(None, None)


def test_without_anything_each_process_gets_a_random_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TETHER_SECRET", raising=False)
    assert load_secret(None, None) != load_secret(None, None)


def test_the_data_dir_keeps_one_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_SECRET", raising=False)
    folder = tmp_path / "data"
    first = load_secret(None, folder)
    assert len(first) == 32
    assert load_secret(None, folder) == first
    mode = (folder / "secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_damaged_secret_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_SECRET", raising=False)
    (tmp_path / "secret").write_text("not hex\n")
    with pytest.raises(ValueError, match="does not hold a hex secret"):
        load_secret(None, tmp_path)
    (tmp_path / "secret").write_text("abcd\n")
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        load_secret(None, tmp_path)


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
